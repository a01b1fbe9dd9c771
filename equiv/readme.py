"""The numbers and tables of README.md, generated from the code and the committed data.

README.md marks each generated piece as ``<!-- equiv:NAME -->...<!-- /equiv:NAME -->``;
``render(text)`` replaces what is between the markers with ``GENERATORS[NAME]()``, so a
count is typed nowhere: ``equiv readme`` rewrites the README, ``equiv readme --check`` (and
``tests/test_readme.py``) fail when it is stale. NumPy only.
"""
import json
import re
from pathlib import Path

import reference

DATA = Path(reference.__file__).parent / "data"
MARK = re.compile(r"<!-- equiv:([\w-]+) -->(.*?)<!-- /equiv:\1 -->", re.S)


def divergences():
    from equiv.findings import divergence_phrase
    from equiv.known import KNOWN
    return divergence_phrase(KNOWN)


def vectors():
    index = json.loads((DATA / "vectors" / "index.json").read_text())
    return f"{len(index['cases'])} golden cases"


def _sci(v, digits=2):
    """2.1e-12, 6.9e-5, 1e-5: the README's way of writing small numbers."""
    if not (isinstance(v, float) and v > 0):
        return str(v)
    mant, exp = f"{v:.{digits - 1}e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def _eps(v):
    return _sci(v, 1)


def conventions():
    conv = json.loads((DATA / "conventions.json").read_text())
    return "\n\n" + conventions_rows(conv) + "\n\n"


def conventions_rows(conv):
    """The Markdown table of the measured conventions of a {name: record} mapping, in adapter order."""
    head = ("adapter", "new-batch weight", "running var", "default eps", "channel axis", "variance",
            "stats update", "default mode", "batch of one", "debias", "initial stats")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in sorted(conv, key=_adapter_order):
        r = conv[name]
        w = r["new_batch_weight"]
        rows.append("| " + " | ".join([name, f"{w:g}" if isinstance(w, (int, float)) else str(w), r["running_var"],
                                       _eps(r["default_eps"]),
                                       str(r["channel_axis"]), r["variance"], r["stats_update"],
                                       r["default_mode"], r["batch_of_one"], r["debias"],
                                       r["initial_stats"]]) + " |")
    return "\n".join(rows)


def conventions_summary():
    """The measured conventions of the layers themselves (no execution path), for the README."""
    conv = json.loads((DATA / "conventions.json").read_text())
    return "\n\n" + conventions_rows({n: r for n, r in conv.items() if "+" not in n}) + "\n\n"


def _adapter_order(name):
    fw = ["torch", "tf", "flax", "jax", "equinox", "haiku", "mxnet"]
    return (fw.index(name.split(".")[0]) if name.split(".")[0] in fw else len(fw), name)


def flax_versions():
    from equiv.fingerprint import _key
    versions = sorted({p.stem for p in (DATA / "fingerprints" / "flax.linen").glob("*.json")}, key=_key)
    return " and ".join([", ".join(versions[:-1]), versions[-1]] if len(versions) > 1 else versions)


def lockstep_tolerance():
    from equiv.lenet.lockstep import tolerance
    return f"float64 {_sci(tolerance('float64', 128))}, float32 {_sci(tolerance('float32', 128))} at batch 128"


# the tox env whose tests run each data-parallel framework (tests/test_parallel.py and its own file)
PARALLEL_ENVS = {"torch": "torch", "tensorflow": "tf", "mxnet": "mxnet", "flax": "jax"}


def parallel():
    """The data-parallel implementations with their declared rows (equiv.parallel.conventions), the
    tox env that runs them and the ids of their findings (equiv.known)."""
    from dataclasses import fields

    from equiv.known import PARALLEL_FINDINGS, PARALLEL_KNOWN
    from equiv.parallel import IMPLEMENTATIONS, ParallelConventions
    from equiv.parallel.conventions import BASE, DECLARED
    names = [f.name for f in fields(ParallelConventions)]
    head = ("name", "base", *(n.replace("_", " ") for n in names), "tox env", "findings")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in sorted(DECLARED, key=_adapter_order):
        row = DECLARED[name].as_dict()
        ids = [d.id for d in (*PARALLEL_KNOWN, *PARALLEL_FINDINGS) if name in d.implementations]
        rows.append("| " + " | ".join([f"`{name}`", BASE[name], *(str(row[n]) for n in names),
                                       PARALLEL_ENVS[IMPLEMENTATIONS[name][2]], ", ".join(ids) or "–"]) + " |")
    return "\n\n" + "\n".join(rows) + "\n\n"


GENERATORS = {"divergences": divergences, "vectors": vectors, "conventions": conventions,
              "conventions-summary": conventions_summary,
              "flax-versions": flax_versions, "lockstep-tolerance": lockstep_tolerance, "parallel": parallel}


def render(text):
    """``text`` with every marked piece regenerated; ValueError for an unknown marker."""
    def sub(m):
        name = m.group(1)
        if name not in GENERATORS:
            raise ValueError(f"unknown generated piece <!-- equiv:{name} -->; use one of: {', '.join(GENERATORS)}")
        return f"<!-- equiv:{name} -->{GENERATORS[name]()}<!-- /equiv:{name} -->"
    return MARK.sub(sub, text)


def stale(text, new):
    """Names of the marked pieces whose content differs between ``text`` and ``new``."""
    old = {m.group(1): m.group(2) for m in MARK.finditer(text)}
    return sorted(n for n, body in ((m.group(1), m.group(2)) for m in MARK.finditer(new)) if old.get(n) != body)


def own_implementation_example(text):
    """(the Python code, the shell commands) of README.md's "Testing your own implementation":
    its ``mybn.py`` and the commands run beside it, as tests/test_installed.py and
    scripts/plugin_times.py use them."""
    section = text[text.index("## Testing your own implementation"):]
    section = section[:section.index("\n## ", 5)]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```sh\n(.*?)```", section, re.S).group(1).strip().splitlines()
    return code, commands
