"""The command line (equiv/cli/): every command's --help, the one name for "which implementations"
(--impls) and its older spellings, the pytest plugin's prefixed options and their short aliases, and the
command line on top of everything (nothing else imports it)."""
import ast
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from equiv import lenet
from equiv.cli import build_parser, main
from equiv.cli import lenet as cli_lenet

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)
CASE = "Case(dtype='float64', shape=(4, 2), seed=0)"


def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_every_command_is_there():
    assert COMMANDS == sorted(["list", "check", "distributed", "replay", "conventions", "findings", "report",
                               "fingerprint", "data", "lockstep", "train", "runs", "bench", "porting",
                               "vectors", "readme", "docs", "port"])


@pytest.mark.parametrize("argv", [[], *([c] for c in COMMANDS)], ids=lambda a: " ".join(a) or "equiv")
def test_help_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: equiv {' '.join(argv)}".rstrip())


@pytest.mark.parametrize("command", ["check", "replay", "conventions", "fingerprint"])
def test_adapters_is_an_alias_of_impls(command):
    before = [CASE] if command == "replay" else []
    new = parse(command, *before, "--impls", "torch.builtin,mypkg.bn:f")
    old = parse(command, *before, "--adapters", "torch.builtin,mypkg.bn:f")
    assert vars(new) == vars(old) and new.impls == "torch.builtin,mypkg.bn:f"
    assert parse(command, *before).impls is None
    assert "alias: --adapters" in build_parser()._subparsers._group_actions[0].choices[command].format_help()


def test_the_nets_old_labels_are_aliases_of_their_names():
    assert lenet.OLD_LABELS == {"tf.builtin": "tf.keras", "jax.builtin": "flax.linen", "mxnet.builtin": "mxnet.gluon"}
    assert cli_lenet.labels_of(" tf.builtin,jax.builtin,, mxnet.builtin,torch.builtin,tf.mirrored,tf.keras") == \
        ["tf.keras", "flax.linen", "mxnet.gluon", "torch.builtin", "tf.mirrored", "tf.keras"]
    for command in ("lockstep", "bench", "train"):
        assert cli_lenet.labels_of(parse(command, "--impls", "tf.builtin").impls) == ["tf.keras"]
        assert "jax.builtin for flax.linen" in " ".join(
            build_parser()._subparsers._group_actions[0].choices[command].format_help().split())


@pytest.mark.parametrize("old, new", [
    ([], "torch.builtin"),
    (["--framework", "torch", "--impl", "builtin"], "torch.builtin"),
    (["--framework", "tf"], "tf.keras"),
    (["--impl", "scratch"], "torch.scratch"),
    (["--impl", "jax.scratch"], "jax.scratch"),
    (["--framework", "mxnet", "--impl", "builtin"], "mxnet.gluon"),
    (["--framework", "jax", "--impl", "builtin"], "flax.linen"),
    (["--impl", "tf.builtin"], "tf.keras"),
    (["--impl", "tf.keras"], "tf.keras"),
])
def test_train_framework_and_impl_are_aliases_of_impls(old, new):
    assert cli_lenet.train_label(parse("train", *old)) == new
    assert cli_lenet.train_label(parse("train", "--impls", new)) == new


@pytest.mark.parametrize("argv, says", [
    (["--impls", "torch.builtin,torch.scratch"], "trains one implementation"),
    (["--impls", ","], "trains one implementation"),
    (["--impls", "torch.builtin", "--framework", "torch"], "give --impls alone"),
    (["--impls", "torch.builtin", "--impl", "scratch"], "give --impls alone"),
])
def test_train_refuses_two_implementations_in_one_line(argv, says, capsys):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("equiv: error: ") and says in err, err


def _imports(path):
    """The modules a source file imports, relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def test_nothing_outside_the_cli_imports_it():
    """The command line sits on top: no module of equiv/ or reference/ outside equiv/cli/ imports it
    (equiv/__main__.py, `python -m equiv`, is the command line's own entry point)."""
    sources = [p for d in ("equiv", "reference") for p in (ROOT / d).rglob("*.py")]
    cli = ROOT / "equiv" / "cli"
    assert any(p.parent == cli for p in sources)
    outside = [p for p in sources if cli not in p.parents and p != ROOT / "equiv" / "__main__.py"]
    found = sorted(str(p.relative_to(ROOT)) for p in outside
                   if any(m == "equiv.cli" or m.startswith("equiv.cli.") for m in _imports(p)))
    assert not found, f"these import the command line: {found}"
    assert not (ROOT / "equiv" / "cli.py").exists() and not (ROOT / "equiv" / "lenet" / "cli_glue.py").exists()


def _plugin_run(tmp_path, *options):
    """pytest in a subprocess on a test that reads the plugin's options back."""
    (tmp_path / "test_options.py").write_text(
        "def test_options(request):\n"
        "    print('impls=%s device=%s' % (request.config.getoption('bn_equiv_impls'),\n"
        "                                  request.config.getoption('bn_equiv_device')))\n")
    load = [] if any(ep.value == "equiv.pytest_plugin" for ep in entry_points(group="pytest11")) \
        else ["-p", "equiv.pytest_plugin"]
    env = {k: v for k, v in os.environ.items() if k not in ("EQUIV_ADAPTERS", "EQUIV_DEVICE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *load, *options,
                        "test_options.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return [line for line in r.stdout.splitlines() if line.startswith(("impls=", "bn-equiv adapters:"))]


def test_plugin_options_have_the_project_prefix_and_keep_their_short_aliases(tmp_path):
    new = _plugin_run(tmp_path, "--bn-equiv-impls", "tests.planted:correct", "--bn-equiv-device", "cuda")
    old = _plugin_run(tmp_path, "--adapters", "tests.planted:correct", "--bn-device", "cuda")
    assert new == old and "impls=tests.planted:correct device=cuda" in new, new
