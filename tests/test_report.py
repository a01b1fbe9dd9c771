"""`equiv report`: Markdown and self-contained HTML from check results; the HTML renders in
a real headless browser (Debian's chromium) with its tables and plots."""
import json
import shutil
import subprocess

import pytest

pytest.importorskip("matplotlib", reason="install it with: pip install matplotlib")

from equiv import report  # noqa: E402
from equiv.known import KNOWN  # noqa: E402
from equiv.properties import PROPERTIES  # noqa: E402


def _record(name, status="pass"):
    props = {p: {"status": "pass", "examples": 5, "excluded": 0, "worst": 0.3, "seconds": 0.1,
                 "ratios": {"float32": [0.01, 0.2, 0.3], "float64": [0.0, 0.1]}} for p in PROPERTIES}
    props["gradients"] = {"status": "fail", "error": "AssertionError: dx: max |error| 1 is 9× the bound"} \
        if status == "mixed" else props["gradients"]
    return {"adapter": name, "framework": "fw", "version": "1.2.3", "device": "cpu", "profile": "ci",
            "properties": props, "mismatches": [],
            "conventions": {"new_batch_weight": 0.1, "running_var": "biased", "default_eps": 1e-5}}


@pytest.fixture
def built(tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    results.mkdir()
    runs.mkdir()
    (results / "check-a.json").write_text(json.dumps({"records": [_record("alpha.builtin")]}))
    (results / "check-b.json").write_text(json.dumps({"records": [_record("beta.scratch", "mixed"),
                                                                   {"adapter": "gamma", "missing": "pip"}]}))
    (runs / "run.json").write_text(json.dumps({"label": "alpha", "history": [
        {"epoch": e, "train_loss": 1 / e, "train_acc": 0.5 + e / 30, "test_acc": 0.5 + e / 40, "seconds": 1.0}
        for e in range(1, 4)]}))
    paths = report.build(results, tmp_path / "out", None, KNOWN, runs)
    return tmp_path / "out", paths


def test_markdown_has_matrix_conventions_findings_and_plots(built):
    out, paths = built
    md = (out / "report.md").read_text()
    assert "| alpha.builtin | pass |" in md
    assert "FAIL" in md and "**beta.scratch gradients**" in md
    assert "| gamma |" not in md                   # not installed: no row
    from equiv.known import NET_FINDINGS, OPTION_KNOWN, ROUTE_KNOWN
    n = len(KNOWN) + len(OPTION_KNOWN) + len(ROUTE_KNOWN) + len({f.id for f in NET_FINDINGS})   # every kind
    assert f"{n} documented divergences ({len(KNOWN)} of the layer" in md
    assert "**gluon-float32-sequential-sum** (mxnet.gluon BN-LeNet, float32, first at step 1 param bn3.beta" in md
    assert "![Error distributions](errors.png)" in md and "![BN-LeNet training curves](training.png)" in md
    for p in paths:
        assert p.exists() and p.stat().st_size > 0


def test_html_is_self_contained(built):
    out, _ = built
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "src='errors.png'" not in page and "http" not in page.split("<body>")[1]


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no results"):
        report.build(tmp_path, tmp_path / "out")


def test_html_renders_in_headless_chromium(built, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("install it with: apt-get install chromium")
    out, _ = built
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(args + ["--dump-dom", (out / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-images-loaded="2"' in dom, dom[-500:]     # both plots decoded
    assert dom.count("<table>") >= 4 and "alpha.builtin" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(args + [f"--screenshot={shot}", "--window-size=1200,900", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_matrix_is_grouped_by_framework_and_path_and_names_each_divergence(tmp_path):
    """~25 implementations stay readable: one table per framework, each adapter followed by its paths;
    a cell names (and links) the divergence whose region left cases out, with the cases per dtype;
    at a glance, each path against its eager layer."""
    results = tmp_path / "results"
    results.mkdir()
    eager, path = _record("torch.builtin"), _record("torch.builtin+channels_last")
    for rec in (eager, path):
        rec["properties"]["train_forward"].update(
            status="documented", excluded_by={"torch-fp16-invstd-overflow": {"float16": 3}})
    path["properties"]["gradients"]["status"] = "documented"      # region never drawn: a plain pass
    recs = [path, _record("tests.planted:correct"), eager, _record("mxnet.gluon")]
    (results / "check-x.json").write_text(json.dumps({"records": recs}))
    report.build(results, tmp_path / "out", None, KNOWN, None)
    md = (tmp_path / "out" / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert headings == ["### mxnet", "### torch", "### your own (--adapters package.module:obj)"]
    torch_table = md[md.index("### torch"):md.index("### your own")]
    assert torch_table.index("| torch.builtin |") < torch_table.index("| torch.builtin+channels_last |")
    cell = "pass outside [torch-fp16-invstd-overflow](#torch-fp16-invstd-overflow) (3 float16 cases)"
    assert f"| torch.builtin+channels_last | {cell} | pass | pass | pass | pass |" in md
    assert '<a id="torch-fp16-invstd-overflow"></a>' in md
    glance = md[md.index("## At a glance"):md.index("## Measured conventions")]
    assert "**torch.builtin+channels_last** (eager: torch.builtin): no documented difference" in glance
    assert "mxnet.gluon" not in glance and "torch.builtin** (" not in glance
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<a href='#torch-fp16-invstd-overflow'>" in page and "<li id='torch-fp16-invstd-overflow'>" in page
