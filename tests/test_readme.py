"""README.md's and the documentation site's counts and tables are generated (equiv/readme.py,
equiv/docs.py): the committed README and docs/ are what `equiv readme` and `equiv docs` write. The
README stays short, its links lead to pages that exist, and each of its commands runs as written in a
tox env or label that tox.ini defines. NumPy only."""
import configparser
import re
import shlex
from pathlib import Path

import pytest

from equiv import docs, readme

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _markers(text):
    return {m.group(1) for m in readme.MARK.finditer(text)}


def test_readme_numbers_are_generated():
    text = README.read_text()
    pages = [p.read_text() for p in DOCS.glob("*.md")]
    assert _markers(text) <= set(readme.GENERATORS)
    assert set().union(_markers(text), *map(_markers, pages)) == set(readme.GENERATORS) | set(docs.PAGE_GENERATORS), \
        "every generator fills a marked piece of the README or of a docs page"
    new = readme.render(text)
    assert new == text, f"README.md is stale ({', '.join(readme.stale(text, new))}): run `equiv readme`"


def test_docs_generated_pages_are_current():
    assert docs.stale(DOCS) == [], "run `equiv docs`"


def test_every_finding_is_on_a_framework_page():
    lists = docs.findings()
    assert set(lists) == {k for k, *_ in docs.SECTIONS}
    for kind, entries in lists.items():
        assert entries, kind
        for f in entries:
            pages = docs.pages_of(kind, f)
            assert pages and pages <= set(docs.FRAMEWORKS), (kind, f)
            ident = f[0] if isinstance(f, tuple) else f.id
            for page in pages:
                assert ident in (DOCS / "findings" / f"{page}.md").read_text(), (ident, page)


def test_page_of_names_each_framework_and_refuses_an_unknown_one():
    assert [docs.page_of(n) for n in ("torch.builtin+compile", "torch.builtin+onnx_dynamo", "tf.keras+jax",
                                      "tf.mirrored.sync", "equinox.ema", "flax.linen.pmap", "mxnet.contexts")] \
        == ["pytorch", "onnx", "keras", "tensorflow", "jax", "jax", "mxnet"]
    with pytest.raises(ValueError, match="FRAMEWORKS"):
        docs.page_of("nosuch.layer")


def test_report_and_readme_count_divergences_alike():
    from equiv.findings import divergence_counts
    from equiv.known import KNOWN, NET_FINDINGS, OPTION_KNOWN, ROUTE_KNOWN
    n = divergence_counts(KNOWN)
    assert n == {"layer": len(KNOWN), "option": len(OPTION_KNOWN), "route": len(ROUTE_KNOWN),
                 "network": len({f.id for f in NET_FINDINGS})}
    assert f"{sum(n.values())} documented divergences" in README.read_text()


def test_readme_is_short_and_its_links_lead_to_pages():
    text = README.read_text()
    assert len(text.splitlines()) <= 150, "the README stays short: move the detail to a docs page"
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert any(link.startswith("docs/findings/") for link in links)
    missing = [link for link in links if "://" not in link and not (ROOT / link).is_file()]
    assert not missing, f"README links to files that do not exist: {missing}"
    linked = {link for link in links if link.startswith("docs/")}
    pages = {str(p.relative_to(ROOT)) for p in DOCS.glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


def _commands(text):
    """The lines of the README's ```sh blocks, comments removed."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line.split("  #")[0].strip() for b in blocks for line in b.splitlines() if line.strip()]


def _tox_names():
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    envs = {e.strip() for e in ini["tox"]["envlist"].split(",")}
    labels = {line.split("=")[0].strip() for line in ini["tox"]["labels"].splitlines() if "=" in line}
    return envs, labels


def test_readme_commands_run_as_written_in_a_tox_env():
    """tox commands name envs and labels tox.ini defines, with options the main job's `equiv check`
    takes; the own-implementation commands are run as written by tests/test_installed.py; nothing else."""
    from equiv.cli import build_parser
    text = README.read_text()
    commands = _commands(text)
    for c in ("tox -m main -p auto", "tox -p auto", "tox -m main -p auto -- --profile thorough"):
        assert c in commands, f"the README gives `{c}`"
    own = [c.split("  #")[0].strip() for c in readme.own_implementation_example(text)[1]]
    envs, labels = _tox_names()
    for command in commands:
        words = shlex.split(command)
        if command in own or words[:4] == ["python3", "-m", "pip", "install"]:
            continue
        assert words[0] == "tox", f"{command}: not run by tox nor by tests/test_installed.py"
        args, _, posargs = command.partition(" -- ")
        words = shlex.split(args)
        for flag, known in (("-e", envs), ("-m", labels)):
            for i, w in enumerate(words):
                if w == flag:
                    assert words[i + 1] in known, f"{command}: tox.ini has no {words[i + 1]}"
        if posargs:
            assert "-m" in words and "main" in words, f"{command}: options reach `equiv check` in the main job only"
            build_parser().parse_args(["check", *shlex.split(posargs)])   # exits 2 on an unknown option


PLACEHOLDER = re.compile(r"\b(?:[A-Z][A-Z0-9]*|package\.module:\w+)\b")   # SRC, DST, M, ENV, CMD, E2, ...


def _documented_commands():
    """(file, command) for every command the README, CONTRIBUTING and the docs pages give: the lines of
    their ```sh blocks and their inline `equiv ...` / `tox ...` spans, optional [parts] dropped."""
    pages = [README, ROOT / "CONTRIBUTING.md", *sorted(DOCS.rglob("*.md"))]
    for page in pages:
        text = page.read_text()
        spans = _commands(text) + re.findall(r"`((?:equiv|tox)\s[^`]+)`", text)
        for command in spans:
            yield page.relative_to(ROOT), re.sub(r"\s*\[[^\]]*\]", "", command).strip()


def _names_resolve(words):
    from equiv import registry
    from equiv.lenet import current_label
    for i, w in enumerate(words[:-1]):
        if w in ("--impls", "--adapters", "--bn-equiv-impls"):
            for name in words[i + 1].split(","):
                assert ":" in name or registry.is_known(name) or registry.is_known(name, registry.PARALLEL) or \
                    registry.is_known(current_label(name), registry.LENET), f"{' '.join(words)}: {name} is unknown"


def test_every_documented_command_is_one_the_tools_take():
    """Each `equiv` command the README, CONTRIBUTING and the docs give parses with the command line as it is
    (its subcommand and options exist, its names are registered), and each `tox` one names an env or label
    of tox.ini (an `equiv` after `tox exec -e ENV --` parses too); commands with placeholders (SRC, ENV) are
    templates, skipped."""
    import contextlib
    import io

    from equiv.cli import build_parser
    envs, labels = _tox_names()
    envs |= {"report"} | {f"check-{e}" for e in envs}
    checked = 0
    for page, command in _documented_commands():
        words = shlex.split(command)
        if PLACEHOLDER.search(command.replace("--", " ")) or words[0] not in ("equiv", "tox"):
            continue
        if words[0] == "tox":
            args, _, rest = command.partition(" -- ")
            words = shlex.split(args)
            for flag, known in (("-e", envs), ("-m", labels)):
                if flag in words:
                    assert words[words.index(flag) + 1] in known, f"{page}: {command}: tox.ini has no such env"
            words = shlex.split(rest) if words[1:2] == ["exec"] else []
            if not words or words[0] != "equiv":
                checked += 1
                continue
        try:   # a bare `equiv replay` in prose names the command: it must exist (its --help exits 0)
            with contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(words[1:] + (["--help"] if len(words) == 2 else []))
        except SystemExit as e:
            assert e.code == 0, f"{page}: `{command}` is not a command equiv takes"
        _names_resolve(words)
        checked += 1
    assert checked > 100, checked
