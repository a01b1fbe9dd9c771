"""The report answers first: per implementation and execution path, what it computes against the
oracle, and per pair of built-in layers, what differs; before the matrices."""
import json

import pytest

from equiv import summary
from equiv.known import KNOWN


def _record(name, conventions=None, failing=()):
    props = {p: {"status": "fail" if p in failing else "pass", "examples": 5} for p in ("train_forward", "gradients")}
    return {"adapter": name, "framework": "fw", "version": "1", "properties": props,
            "conventions": conventions or {}}


RECORDS = {"torch.builtin": _record("torch.builtin", {"running_var": "unbiased", "variance": "two-pass"}),
           "tf.keras": _record("tf.keras", {"running_var": "biased"}),
           "torch.builtin+channels_last": _record("torch.builtin+channels_last", failing=("gradients",)),
           "haiku": _record("haiku"),
           "mine:bn": _record("mine:bn", {"running_var": "biased", "variance": "two-pass"})}


def test_each_implementation_gets_one_line():
    impl, pairs, _, _ = summary.lines(list(RECORDS), RECORDS, KNOWN)
    text = {n: t for n, t, _ in impl}
    assert set(text) == set(RECORDS)
    assert "an unbiased running variance" in text["torch.builtin"]
    assert text["torch.builtin"].startswith("computes what the oracle computes except: ")
    assert "unbiased" not in text["tf.keras"] and "its momentum is 1 − the new-batch weight" in text["tf.keras"]
    # a path: the conventions of its eager layer (declared, none measured here) and its own failures
    assert "an unbiased running variance" in text["torch.builtin+channels_last"]
    assert "FAIL gradients" in text["torch.builtin+channels_last"]
    assert "zero-debiased moving averages" in text["haiku"] and "initial running statistics (0, 0)" in text["haiku"]
    assert text["mine:bn"] == "computes what the oracle computes, with no exception"
    # the documented divergences of a layer are named (and linked)
    ids = {n: i for n, _, i in impl}
    torch_ids = [d.id for d in KNOWN if "torch.builtin" in d.implementations]
    assert torch_ids and ids["torch.builtin"] == torch_ids and all(i in text["torch.builtin"] for i in torch_ids)


def test_each_pair_of_built_in_layers_says_what_differs():
    _, pairs, _, _ = summary.lines(list(RECORDS), RECORDS, KNOWN)
    assert [(a, b) for a, b, _ in pairs] == [("torch.builtin", "tf.keras"), ("torch.builtin", "haiku"),
                                             ("tf.keras", "haiku")]
    line = dict(((a, b), t) for a, b, t in pairs)[("torch.builtin", "tf.keras")]
    assert "momentum weighs the new batch in torch.builtin, the old value in tf.keras" in line
    assert "default eps 1e-05 vs 0.001" in line and "running var unbiased vs biased" in line


def test_each_route_says_where_it_lands_what_survives_and_its_findings():
    from equiv.known import ROUTE_KNOWN
    from equiv.routes import ROUTES, SURVIVES
    routes = {n: (t, i) for n, t, i in summary.route_lines()}
    assert set(routes) == set(ROUTES)
    text, ids = routes["torch.builtin+fuse_conv_bn_eval"]
    assert "stays in its framework, folds BatchNorm into conv" in text
    assert "keeps inference, eps; loses training mode, momentum" in text
    assert ids == [d.id for d in ROUTE_KNOWN if "torch.builtin+fuse_conv_bn_eval" in d.implementations] and ids
    assert all(i in text for i in ids)
    text, ids = routes["flax.linen+jax2tf"]
    assert "lands in tensorflow" in text and f"keeps {', '.join(SURVIVES)}" in text and "loses" not in text
    for n, r in ROUTES.items():   # every route keeps inference, and what it keeps is a declared survivor
        assert "inference" in r.keeps and set(r.keeps) <= set(SURVIVES), n


def test_report_answers_before_its_matrices(tmp_path):
    pytest.importorskip("matplotlib", reason="install it with: pip install matplotlib")
    from equiv import report
    from equiv.properties import PROPERTIES
    results = tmp_path / "results"
    results.mkdir()
    recs = [dict(r, properties={p: {"status": "pass", "examples": 1} for p in PROPERTIES}) for r in RECORDS.values()]
    (results / "check-x.json").write_text(json.dumps({"records": recs}))
    report.build(results, tmp_path / "out", None, KNOWN, None)
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.index("## In short") < md.index("## Properties")
    assert "- **torch.builtin / tf.keras**: momentum weighs" in md
    assert md.index("## In short") < md.index("## Routes") < md.index("## Properties")
    assert "- **tf.keras+tflite**: " in md and "[tflite-fold-bias-cancels](#tflite-fold-bias-cancels)" in md
    assert '<a id="tflite-fold-bias-cancels"></a>' in md   # the route finding the link points to
    assert md.index("## Routes") < md.index("## Layer options") < md.index("## Properties")
    assert "- **torch.builtin**: cumulative weights: 1/k" in md
    assert "[keras-synchronized-fast-variance-one-device](#keras-synchronized-fast-variance-one-device)" in md
    assert '<a id="keras-synchronized-fast-variance-one-device"></a>' in md
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.index("<h2>In short</h2>") < page.index("<h2>Properties")
    assert "<b>torch.builtin</b>: computes what the oracle computes except: its" not in page   # torch: w itself
    assert "<b>torch.builtin</b>: computes what the oracle computes except: an unbiased running variance" in page
