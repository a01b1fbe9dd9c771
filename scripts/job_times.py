"""How long a tox command takes in a clone, per environment: setup and command seconds.

    python scripts/job_times.py --clone /tmp/fresh --out job_main.json -- tox -m main -p auto
    UV_CACHE_DIR=/tmp/empty-uv python scripts/job_times.py --clone /tmp/fresh --out cold.json -- tox -m main -p auto

Runs the command (everything after ``--``) in the clone's folder, its output passed through and
kept, and writes JSON: the command, the clone's commit and which tox environments it held
before the run, the machine (cores, CPU model, memory), the load average before, during
(sampled every 5 s) and after, the caches (pip's and uv's folder as the environment names
them, ``PIP_CACHE_DIR`` / ``UV_CACHE_DIR`` or their defaults, and the compile caches the checks
fill, torch inductor's and equiv's JAX cache: size and files, before and after), per environment
the outcome and tox's own setup and command seconds (its final summary lines,
``name: OK (T=setup[a]+cmd[b] seconds)``) and the time its completion was printed, and the total
wall time. For an empty-cache run point ``UV_CACHE_DIR`` / ``PIP_CACHE_DIR`` at a new
folder: the script never clears a cache. A measurement, not a test: on a shared machine the load
recorded beside each figure says what it is worth. An existing ``--out`` is not overwritten.
"""
import argparse
import getpass
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

# tox 4's final summary, one line per environment (tox's run command, its _report function):
#   "  check-torch: OK (512.31=setup[20.10]+cmd[492.21] seconds)", "  x: FAIL code 1 (...)",
#   "  x: SKIP (0.00 seconds)"
SUMMARY = re.compile(r"^  (?P<env>[\w.+-]+): (?P<status>.+?) \((?P<total>[\d.]+)"
                     r"(?:=setup\[(?P<setup>[\d.]+)\]\+cmd\[(?P<cmd>[\d.,]*)\])? seconds\)\s*$")
# printed as each environment ends: "check-torch: OK ✔ in 8 minutes 3.1 seconds" (one env at a
# time) or "✔ OK check-torch in 8 minutes 3.1 seconds" (-p)
DONE = re.compile(r"^(?:(?P<a>[\w.+-]+): (?:OK|FAIL|SKIP)\b.*\bin\b|[✔✖⚠]? ?(?:OK|FAIL|SKIP)\w* (?P<b>[\w.+-]+) in\b)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _du(path):
    if not path or not os.path.isdir(path):
        return {"path": path, "exists": False}
    size = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(root, n))
            except OSError:
                continue
            size += st.st_blocks * 512
            files += 1
    return {"path": path, "exists": True, "mib": round(size / 2**20, 1), "files": files}


def _caches():
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    pip_dir = os.environ.get("PIP_CACHE_DIR") or os.path.join(xdg, "pip")
    uv_dir = os.environ.get("UV_CACHE_DIR") or os.path.join(xdg, "uv")
    # the compile caches the checks fill: torch inductor's (torch.compile; tempfile.gettempdir() unless
    # TORCHINDUCTOR_CACHE_DIR) and JAX's persistent cache that equiv/backends/jax.py turns on
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(),
                                                                          f"torchinductor_{user}")
    jax = os.environ.get("EQUIV_JAX_CACHE") or os.path.join(xdg, "bn-equiv", "jax")
    return {"pip": _du(pip_dir), "uv": _du(uv_dir), "torchinductor": _du(inductor), "equiv_jax": _du(jax),
            "PIP_NO_CACHE_DIR": os.environ.get("PIP_NO_CACHE_DIR"), "UV_NO_CACHE": os.environ.get("UV_NO_CACHE")}


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        return None


def _out(cmd, cwd):
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _tox_envs(clone):
    work = os.path.join(clone, ".tox")
    if not os.path.isdir(work):
        return []
    return sorted(n for n in os.listdir(work)
                  if os.path.isfile(os.path.join(work, n, ".tox-info.json")))


def parse_summary(lines):
    envs = {}
    for line in lines:
        m = SUMMARY.match(ANSI.sub("", line))
        if not m:
            continue
        cmd = [float(x) for x in m["cmd"].split(",") if x] if m["cmd"] else []
        envs[m["env"]] = {"status": m["status"], "seconds": float(m["total"]),
                          "setup_seconds": float(m["setup"]) if m["setup"] else None,
                          "cmd_seconds": round(sum(cmd), 2) if m["cmd"] is not None else None,
                          "cmd_seconds_each": cmd}
    return envs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 usage="%(prog)s --clone DIR --out FILE [--note TEXT] -- COMMAND ...")
    ap.add_argument("--clone", required=True, help="the clone to run the command in")
    ap.add_argument("--out", required=True, help="JSON file to write (not overwritten)")
    ap.add_argument("--log", help="also keep the command's output in this file")
    ap.add_argument("--note", default="", help="what this run is (fresh clone, warm cache, ...), kept in the JSON")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to time after --, e.g. -- tox -m main -p auto")
    clone = os.path.abspath(args.clone)
    if not os.path.isdir(clone):
        ap.error(f"--clone {clone} is not a folder")
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        ap.error(f"--out {out} exists; not overwritten")
    if not os.path.isdir(os.path.dirname(out)):
        ap.error(f"--out: folder {os.path.dirname(out)} does not exist")

    record = {
        "command": command if len(command) > 1 else shlex.split(command[0]),
        "command_line": shlex.join(command),
        "script": "python scripts/job_times.py " + shlex.join((argv if argv is not None else sys.argv[1:])),
        "note": args.note,
        "clone": clone,
        "commit": _out(["git", "rev-parse", "HEAD"], clone),
        "dirty": bool(_out(["git", "status", "--porcelain", "--untracked-files=no"], clone)),
        "tox_envs_before": _tox_envs(clone),
        "date_start": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cores": os.cpu_count(), "cpu_model": _cpu_model(), "mem_gib": _mem_gib(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "tox": _out(["tox", "--version"], clone), "uv": _out(["uv", "--version"], clone)
                    if shutil.which("uv") else None},
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k in ("CI", "PIP_FIND_LINKS", "PIP_CACHE_DIR", "UV_CACHE_DIR", "UV_FIND_LINKS",
                         "TORCH_SPEC", "EQUIV_PROFILE", "EQUIV_JAX_CACHE",
                         "TORCHINDUCTOR_CACHE_DIR")},
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "caches_before": _caches(),
    }

    samples, stop = [], threading.Event()

    def sample():
        while not stop.wait(5):
            samples.append(round(os.getloadavg()[0], 2))

    lines, done_at = [], {}
    log = open(args.log, "w") if args.log else None
    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    sampler.start()
    proc = subprocess.Popen(command, cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if log:
            log.write(line)
        plain = ANSI.sub("", line.rstrip("\n"))
        lines.append(plain)
        m = DONE.match(plain)
        if m and not SUMMARY.match(plain):
            done_at.setdefault(m["a"] or m["b"], round(time.monotonic() - t0, 1))
    code = proc.wait()
    wall = time.monotonic() - t0
    stop.set()
    sampler.join()
    if log:
        log.close()

    envs = parse_summary(lines)
    for name, t in done_at.items():
        if name in envs:
            envs[name]["done_at_seconds"] = t
    record.update({
        "exit_code": code,
        "wall_seconds": round(wall, 1),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "loadavg_1min_during": {"samples": len(samples), "mean": round(sum(samples) / len(samples), 2)
                                if samples else None, "max": max(samples) if samples else None},
        "caches_after": _caches(),
        "tox_envs_after": _tox_envs(clone),
        "envs": envs,
        "setup_seconds_sum": round(sum(e["setup_seconds"] or 0 for e in envs.values()), 1),
        "cmd_seconds_sum": round(sum(e["cmd_seconds"] or 0 for e in envs.values()), 1),
    })
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, out)
    print(f"\n{record['command_line']}: exit {code}, {wall:.0f} s wall, load {record['loadavg_before']} -> "
          f"{record['loadavg_after']}; written to {out}", file=sys.stderr)
    for name, e in envs.items():
        print(f"  {name:20s} {e['status']:10s} setup {e['setup_seconds']} s  cmd {e['cmd_seconds']} s",
              file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
