"""The seed band of BN-LeNet runs (equiv.lenet.runs), `equiv runs`, and the committed runs
under reference/data/runs checked against their band. NumPy only."""
import json
import math
from pathlib import Path

import pytest

from equiv import cli, lenet, registry
from equiv.known import NET_FINDINGS, net_findings_of
from equiv.lenet import runs

RUNS = Path(__file__).resolve().parent.parent / "reference" / "data" / "runs"


def _run(label, seed, accs, losses, lr=0.1, device="cpu (x86_64)"):
    hist = [dict(epoch=i + 1, train_loss=loss, train_acc=0.5, test_acc=a, seconds=1.0 + i)
            for i, (a, loss) in enumerate(zip(accs, losses))]
    return dict(label=label, seed=seed, lr=lr, batch=128, device=device, version="x", history=hist)


def test_band_is_the_99_percent_prediction_interval():
    mean, lo, hi = runs.band([0.0, 1.0, 2.0])           # mean 1, s = 1, n = 3, t(0.995, 2) = 9.925
    assert mean == 1.0
    assert hi - mean == pytest.approx(9.925 * math.sqrt(1 + 1 / 3))
    assert mean - lo == pytest.approx(hi - mean)
    assert runs.t995(4) == 4.604 and runs.t995(25) == runs.T995[20]    # df rounded down: wider
    with pytest.raises(ValueError, match="at least 3"):
        runs.band([1.0, 2.0])


def test_summary_checks_every_run_of_the_setting(tmp_path):
    seeds = [_run("a.builtin", s, [0.80, 0.85 + 0.001 * s], [0.6 + 0.01 * s, 0.40 + 0.001 * s]) for s in range(4)]
    inside = _run("b.scratch", 0, [0.81, 0.852], [0.61, 0.401])
    acc_out = _run("c.builtin", 0, [0.81, 0.70], [0.6, 0.401])
    loss_out = _run("d.builtin", 0, [0.81, 0.851], [0.9, 0.401])
    other_lr = _run("b.scratch", 0, [0.8, 0.1], [0.6, 2.0], lr=0.5)
    for r in [*seeds, inside, acc_out, loss_out, other_lr]:
        (tmp_path / f"{r['label']}_{r['lr']}_{r['seed']}.json").write_text(json.dumps(r))
    (tmp_path / "not-a-run.json").write_text("[1, 2]")
    s = runs.summarize(runs.load(tmp_path))
    assert s["band_label"] == "a.builtin" and s["seeds"] == [0, 1, 2, 3] and s["lr"] == 0.1
    rows = {r["label"]: r for r in s["runs"] if not r["in_band_group"]}
    assert rows["b.scratch"]["acc_in_band"] and rows["b.scratch"]["loss_in_band"]
    assert not rows["c.builtin"]["acc_in_band"] and rows["c.builtin"]["loss_in_band"]
    assert rows["d.builtin"]["acc_in_band"] and not rows["d.builtin"]["loss_in_band"]
    assert rows["d.builtin"]["worst_loss_epoch"] == 1
    assert [o["lr"] for o in s["other_settings"]] == [0.5]          # a different lr is not compared
    md = runs.markdown(s)
    assert "| c.builtin | cpu | 0 | 0.7000 | **no** |" in md and "lr 0.5" in md
    with pytest.raises(ValueError, match="3 or more seeds"):
        runs.summarize(runs.load(tmp_path), label="b.scratch")


def test_cli_runs_writes_the_summary_and_exits_1_outside_the_band(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot needs: pip install matplotlib")
    for s in range(3):
        (tmp_path / f"a{s}.json").write_text(json.dumps(_run("a.builtin", s, [0.8, 0.85 + 0.002 * s], [0.5, 0.4])))
    out = tmp_path / "out"
    assert cli.main(["runs", "--folder", str(tmp_path), "--out", str(out)]) == 0
    assert (out / "summary.md").exists() and (out / "runs.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "summary.md").exists()                  # the runs' folder only with --update
    assert cli.main(["runs", "--folder", str(tmp_path), "--update"]) == 0
    assert (tmp_path / "summary.md").exists() and (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "c.json").write_text(json.dumps(_run("c.builtin", 0, [0.8, 0.5], [0.5, 0.4])))
    assert cli.main(["runs", "--folder", str(tmp_path), "--no-write"]) == 1
    assert "c.builtin seed 0 (c.json)" in capsys.readouterr().err
    assert cli.main(["runs", "--folder", str(tmp_path / "missing")]) == 2
    assert "train first" in capsys.readouterr().err
    (tmp_path / "c.json").rename(tmp_path / "e.json")              # outside, and explained by a documented finding
    ema = json.loads((tmp_path / "e.json").read_text())
    (tmp_path / "e.json").write_text(json.dumps(dict(ema, label="equinox.ema")))
    assert cli.main(["runs", "--folder", str(tmp_path), "--no-write"]) == 0
    assert "**no** (documented: equinox-ema-normalizes-with-moving-averages)" in capsys.readouterr().out


def test_a_damaged_run_is_an_error_and_a_summary_never_shrinks(tmp_path, capsys):
    for s in range(3):
        (tmp_path / f"a{s}.json").write_text(json.dumps(_run("a.builtin", s, [0.8, 0.85 + 0.002 * s], [0.5, 0.4])))
    (tmp_path / "b.json").write_text(json.dumps(_run("b.builtin", 0, [0.8, 0.85], [0.5, 0.4])))
    assert cli.main(["runs", "--folder", str(tmp_path), "--update"]) == 0
    before = (tmp_path / "summary.md").read_text()
    text = (tmp_path / "b.json").read_text()
    (tmp_path / "b.json").write_text(text[:len(text) // 2])        # truncated
    with pytest.raises(ValueError, match="b.json is not valid JSON"):
        runs.load(tmp_path)
    assert cli.main(["runs", "--folder", str(tmp_path), "--update"]) == 2
    assert "b.json" in capsys.readouterr().err
    (tmp_path / "b.json").unlink()                                  # gone: the summary would lose it
    assert cli.main(["runs", "--folder", str(tmp_path), "--update"]) == 2
    assert "b.json" in capsys.readouterr().err and (tmp_path / "summary.md").read_text() == before


# --- the committed runs ---------------------------------------------------------------

def _committed():
    if not any(RUNS.glob("*.json")):
        pytest.skip("no committed runs under reference/data/runs")
    return runs.summarize(runs.load(RUNS), documented=net_findings_of)


def test_committed_runs_cover_every_implementation():
    labels = {r["label"] for r in runs.load(RUNS)}
    missing = sorted(set(registry.lenet_labels()) - labels)
    assert not missing, f"no committed 10-epoch run for {missing}; make one with equiv train"


def test_committed_runs_are_in_the_seed_band():
    """Every final test accuracy lies in the band, except those of implementations with a documented
    whole-network divergence in float32 on any data (Equinox's mode "ema": 0.762)."""
    s = _committed()
    assert len(s["seeds"]) >= 5 and s["epochs"] == 10 and s["lr"] == 0.1 and s["batch"] == 128
    outside = [(r["label"], r["seed"], r["final_test_acc"]) for r in s["runs"]
               if not r["acc_in_band"] and not r["documented"]]
    band = s["test_acc_band"]
    assert not outside, f"outside the band [{band['lo']:.4f}, {band['hi']:.4f}]: {outside}"
    assert cli.main(["runs", "--folder", str(RUNS), "--no-write"]) == 0     # the same verdict on the command line


def test_committed_summary_is_up_to_date():
    s = _committed()
    path = RUNS / "summary.md"
    assert path.exists(), "run `equiv runs` to write reference/data/runs/summary.md"
    # written before the nets were renamed: its old labels read as the new (runs.renamed)
    assert runs.markdown(s) in runs.renamed(path.read_text()), "summary.md is stale: run `equiv runs`"


def test_committed_runs_with_old_labels_are_read_under_the_new_names(tmp_path):
    """The committed files keep the labels they were written with (tf.builtin_cpu_lr0.1_seed0.json,
    "label": "tf.builtin"); equiv runs, the report and the band read them as tf.keras."""
    files = {p.name: json.loads(p.read_text()).get("label") for p in RUNS.glob("*.json")}
    assert files.get("tf.builtin_cpu_lr0.1_seed0.json") == "tf.builtin"          # the evidence as committed
    loaded = {r["file"]: r["label"] for r in runs.load(RUNS)}
    assert loaded["tf.builtin_cpu_lr0.1_seed0.json"] == "tf.keras"
    assert loaded["jax.builtin_cpu_lr0.1_seed0.json"] == "flax.linen"
    assert not set(loaded.values()) & set(lenet.OLD_LABELS)
    for s in range(3):
        (tmp_path / f"a{s}.json").write_text(json.dumps(_run("mxnet.builtin", s, [0.8, 0.85 + 0.002 * s], [0.5, 0.4])))
    assert runs.summarize(runs.load(tmp_path), label="mxnet.builtin")["band_label"] == "mxnet.gluon"
    assert runs.renamed("Band: mxnet.builtin, | tf.builtin | (tf.builtin_cpu_lr0.5_seed0.json)") == \
        "Band: mxnet.gluon, | tf.keras | (tf.builtin_cpu_lr0.5_seed0.json)"


def test_committed_loss_curves_are_in_the_band_except_documented():
    """Every lr 0.1 loss curve lies in the seed band, except implementations with a documented
    whole-network divergence in float32 on any data (the book's JAX layer: per-row statistics
    train to a different loss); if one of those came into the band, the finding should be revisited."""
    s = _committed()
    outside = {r["label"] for r in s["runs"] if not r["loss_in_band"]}
    documented = {f.label for f in NET_FINDINGS if f.data == "any" and "float32" in f.dtypes}
    assert outside == documented
    assert all(r["documented"] for r in s["runs"] if not r["loss_in_band"])


# --- equiv bench: the arithmetic of its report (the timing itself runs in test_lenet_nets) ---

def test_bench_ratios_and_gpu_targets():
    from equiv.lenet import bench

    def res(label, spe, wall=5.0, epochs=10):
        return dict(label=label, seconds_per_epoch=spe, wall_seconds=wall, epochs=epochs)
    results = [res("torch.builtin", 0.18), res("torch.scratch", 0.9), res("flax.linen", 0.15), res("jax.scratch", 0.3)]
    assert bench.ratios(results) == {"torch": 0.9 / 0.18, "jax": 2.0}
    older = [dict(r, label="jax.builtin") if r["label"] == "flax.linen" else r for r in results]   # an older result
    assert bench.ratios(older) == bench.ratios(results)
    assert bench.check_targets(dict(device="cpu (x86_64)", results=results)) == []
    lines = bench.check_targets(dict(device="cuda:0 (NVIDIA H100)", results=results))
    assert lines[0].startswith("torch.builtin: 0.180") and lines[0].endswith("met")
    assert lines[1].startswith("flax.linen: 0.150") and lines[1].endswith("MISSED")
    assert lines[2] == "GPU tier, 10 epochs each: 20.0 s wall (target ≤ 30.0) met"
    short = [dict(r, epochs=3) for r in results]
    assert bench.check_targets(dict(device="cuda", results=short))[-1].startswith("GPU tier: not checked")
