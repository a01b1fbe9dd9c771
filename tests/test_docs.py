"""The documentation site (docs/: Sphinx and MyST Markdown) builds with warnings as errors, and its pages
render in a real headless browser (Debian's chromium): the index, a findings page per framework, the
conventions table. The docs tox env builds the site (sphinx-build -W, into EQUIV_DOCS_HTML) and runs this
file; without Sphinx it skips."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="needs Sphinx and MyST-Parser: tox -e docs")
pytest.importorskip("myst_parser", reason="needs MyST-Parser: tox -e docs")

from equiv.docs import FRAMEWORKS  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    """The built site: the docs env's build (EQUIV_DOCS_HTML), else one built here with -W."""
    given = os.environ.get("EQUIV_DOCS_HTML")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("html")
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr[-3000:]
    return out


def test_every_page_is_built(html):
    pages = {p.relative_to(DOCS).with_suffix(".html") for p in DOCS.rglob("*.md") if "notes" not in p.parts}
    assert Path("porting.html") in pages and {Path("findings") / f"{f}.html" for f in FRAMEWORKS} <= pages
    missing = [str(p) for p in pages | {Path("pick-two.html")} if not (html / p).is_file()]
    assert not missing, f"not built: {missing}"


def _dom(browser, page, profile):
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=120).stdout


def _text(dom):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_pages_render_in_headless_chromium(html, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("install it with: apt-get install chromium")
    first_finding = re.search(r"^### (\S+)", (DOCS / "findings" / "pytorch.md").read_text(), re.M).group(1)
    expect = {   # page: (text it shows, least number of table rows)
        "index.html": (["bn-equiv", "Getting started", "Findings", "Porting"], 0),   # and the table of contents
        "findings/pytorch.html": (["PyTorch", "Measured conventions", "torch.builtin", first_finding], 2),
        "conventions.html": (["new-batch weight", "running var", "torch.builtin", "tinygrad.builtin"], 30),
    }
    for page, (texts, rows) in expect.items():
        dom = _dom(browser, html / page, tmp_path / "profile")
        text = _text(dom)
        assert "</html>" in dom, f"{page}: no page rendered: {dom[-500:]}"
        for t in texts:
            assert t in text, f"{page}: {t!r} not shown"
        if rows:
            assert "<table" in dom and dom.count("<tr") >= rows + 1, f"{page}: table missing or short"
        else:
            assert dom.count('class="toctree-l1"') >= 10, f"{page}: table of contents missing"
        assert "system-message" not in dom and "problematic" not in dom, f"{page}: a Sphinx error is rendered"
