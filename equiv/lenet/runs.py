"""`equiv runs`: the agreement band from several seeds of one implementation, and every
training run of a folder checked against it.

Seeds change the initial weights and the batch order, so the spread of one implementation
over seeds is the natural yardstick for "trains the same way": two implementations that
compute the same function from the same initialization should differ by less than two
seeds of one of them. The band is the 99 % prediction interval of one more run under a
normal model of the seed-to-seed spread:

    mean ± t(0.995, n − 1) · s · sqrt(1 + 1/n)

over the n ≥ 3 runs of the band implementation (s: the sample standard deviation), for the
final test accuracy and for the training loss of every epoch (the loss curve). A run is in
the band when its final test accuracy is, and its loss curve when every epoch's loss is.
Only runs with the band's learning rate, batch and epochs are compared.

Runs written before the nets were named after their BN layers' adapters carry the old labels
(``mxnet.builtin``, in the label and the file name); they are read under the new ones
(``equiv.lenet.OLD_LABELS``: ``mxnet.gluon``), their files left as they are.
"""
import json
import math
import re
import statistics
from pathlib import Path

from equiv.lenet import OLD_LABELS, current_label

# two-sided 99 % quantiles of Student's t, by degrees of freedom (n − 1)
T995 = {2: 9.925, 3: 5.841, 4: 4.604, 5: 4.032, 6: 3.707, 7: 3.499, 8: 3.355, 9: 3.250, 10: 3.169,
        11: 3.106, 12: 3.055, 13: 3.012, 14: 2.977, 15: 2.947, 20: 2.845, 30: 2.750}


def t995(df):
    if df < 2:
        raise ValueError("a band needs at least 3 runs")
    return T995.get(df) or T995[max(k for k in T995 if k <= df)]   # rounding df down is conservative


def band(values):
    """(mean, lo, hi) of the 99 % prediction interval for one more value."""
    n = len(values)
    mean, s = statistics.fmean(values), statistics.stdev(values)
    half = t995(n - 1) * s * math.sqrt(1 + 1 / n)
    return mean, mean - half, mean + half


def _valid_run(r):
    h = r.get("history")
    keys = ("epoch", "train_loss", "train_acc", "test_acc", "seconds")
    return (isinstance(r.get("label"), str) and isinstance(h, list) and h
            and all(isinstance(e, dict) and all(isinstance(e.get(k), (int, float)) for k in keys) for e in h))


def load(folder):
    """Every run JSON (with a history) of ``folder``, sorted by file name.

    Other JSON files (summary.json, anything that is not a run) are left out; a file that is
    not valid JSON (a truncated run) or a run with a damaged history is a ValueError naming
    the file: a run is never dropped from the summary without a word."""
    out = []
    for p in sorted(Path(folder).glob("*.json")):
        try:
            r = json.loads(p.read_text())
        except ValueError as e:
            raise ValueError(f"{p} is not valid JSON ({e}): a truncated or damaged run? "
                             "Restore it (git checkout) or remove it") from None
        except OSError as e:
            raise ValueError(f"{p} cannot be read ({e.strerror or e}); restore or remove it") from None
        if not isinstance(r, dict) or "history" not in r:
            continue
        if not _valid_run(r):
            raise ValueError(f"{p} is a run whose label or per-epoch history is damaged; restore it "
                             "(git checkout) or remove it")
        r["label"], r["file"] = current_label(r["label"]), p.name
        out.append(r)
    return out


def _setting(r):
    return (r.get("lr"), r.get("batch"), len(r["history"]))


def band_group(runs, label=None):
    """The runs of the band: ``label``'s, or the implementation with the most seeds (≥ 3) in one setting."""
    groups, label = {}, current_label(label)
    for r in runs:
        groups.setdefault((r["label"], _setting(r)), {})[r.get("seed")] = r
    candidates = {k: v for k, v in groups.items() if (label is None or k[0] == label) and len(v) >= 3}
    if not candidates:
        raise ValueError(f"no implementation{' ' + label if label else ''} has runs with 3 or more seeds "
                         "in one setting; run e.g. `equiv train --framework mxnet --seed S` for S = 0..4")
    key = max(candidates, key=lambda k: (len(candidates[k]), k[0]))
    return key[0], key[1], [candidates[key][s] for s in sorted(candidates[key])]


def summarize(runs, label=None, documented=lambda label: []):
    """The band and one row per run of the band's setting (JSON-able); a run outside the band (accuracy or
    loss curve) carries ``documented``: the ids of the findings that explain it (``documented(label)``,
    equiv.known.net_findings_of), or none."""
    band_label, setting, group = band_group(runs, label)
    epochs = setting[2]
    acc = band([g["history"][-1]["test_acc"] for g in group])
    loss = [band([g["history"][e]["train_loss"] for g in group]) for e in range(epochs)]
    rows, other = [], []
    for r in runs:
        if _setting(r) != setting:
            other.append(dict(label=r["label"], file=r["file"], lr=r.get("lr"), epochs=len(r["history"]),
                              final_test_acc=r["history"][-1]["test_acc"]))
            continue
        h = r["history"]
        secs = sorted(e["seconds"] for e in h)
        rows.append(dict(
            label=r["label"], device=r.get("device", "?"), seed=r.get("seed"), file=r["file"],
            version=r.get("version"), final_test_acc=h[-1]["test_acc"], final_train_loss=h[-1]["train_loss"],
            acc_in_band=acc[1] <= h[-1]["test_acc"] <= acc[2],
            loss_in_band=all(lo <= e["train_loss"] <= hi for e, (_, lo, hi) in zip(h, loss)),
            worst_loss_epoch=max(range(epochs), key=lambda i: abs(h[i]["train_loss"] - loss[i][0])
                                 / max(loss[i][2] - loss[i][0], 1e-300)) + 1,
            median_epoch_seconds=secs[len(secs) // 2], in_band_group=r in group))
        if not (rows[-1]["acc_in_band"] and rows[-1]["loss_in_band"]):
            rows[-1]["documented"] = documented(r["label"])
    # the same seed as the band's first: identical initial weights and batch order, so what
    # remains between implementations is arithmetic (and convention) alone
    first = group[0]
    same = [r for r in runs if _setting(r) == setting and r.get("seed") == first.get("seed") and r is not first]
    same_seed = [dict(label=r["label"], device=r.get("device", "?").split(" ")[0],
                      test_acc_diff=r["history"][-1]["test_acc"] - first["history"][-1]["test_acc"],
                      max_loss_rel_diff=max(abs(a["train_loss"] - b["train_loss"]) / b["train_loss"]
                                            for a, b in zip(r["history"], first["history"])))
                 for r in same]
    return dict(band_label=band_label, lr=setting[0], batch=setting[1], epochs=epochs,
                seeds=[g.get("seed") for g in group], same_seed=same_seed,
                seed_spread=dict(test_acc_std=statistics.stdev([g["history"][-1]["test_acc"] for g in group]),
                                 final_loss_rel_std=statistics.stdev([g["history"][-1]["train_loss"] for g in group])
                                 / loss[-1][0]),
                test_acc_band=dict(zip(("mean", "lo", "hi"), acc)),
                loss_band=[dict(zip(("mean", "lo", "hi"), b)) for b in loss],
                runs=rows, other_settings=other)


def markdown(s):
    a = s["test_acc_band"]
    lines = [f"Band: {s['band_label']}, seeds {', '.join(map(str, s['seeds']))} (lr {s['lr']:g}, batch "
             f"{s['batch']}, {s['epochs']} epochs): final test accuracy {a['mean']:.4f}, 99 % prediction "
             f"interval [{a['lo']:.4f}, {a['hi']:.4f}].", "",
             "| implementation | device | seed | test acc | in band | train loss | loss curve in band | s/epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(s["runs"], key=lambda r: (not r["in_band_group"], r["label"], r["seed"])):
        why = f" (documented: {', '.join(r['documented'])})" if r.get("documented") else ""
        lines.append(f"| {r['label']} | {r['device'].split(' ')[0]} | {r['seed']} | {r['final_test_acc']:.4f} | "
                     f"{'yes' if r['acc_in_band'] else '**no**' + why} | {r['final_train_loss']:.4f} | "
                     f"{'yes' if r['loss_in_band'] else '**no** (worst: epoch %d)%s' % (r['worst_loss_epoch'], why)} | "
                     f"{r['median_epoch_seconds']:.2f} |")
    if s["same_seed"]:
        sp = s["seed_spread"]
        lines += ["", f"Same seed ({s['seeds'][0]}) as the band's first run of {s['band_label']}: same initial "
                  "weights and batch order. Difference in final test accuracy and largest relative difference "
                  f"of an epoch's training loss (for scale, over seeds: test accuracy std {sp['test_acc_std']:.4f}, "
                  f"final loss relative std {sp['final_loss_rel_std']:.2e}):", "",
                  "| implementation | device | Δ test acc | max rel. Δ loss |", "|---|---|---|---|"]
        lines += [f"| {d['label']} | {d['device']} | {d['test_acc_diff']:+.4f} | {d['max_loss_rel_diff']:.1e} |"
                  for d in sorted(s["same_seed"], key=lambda d: d["label"])]
    if s["other_settings"]:
        lines += ["", "Other settings (not compared with the band):", ""]
        lines += [f"- {o['label']}, lr {o['lr']:g}, {o['epochs']} epochs: final test accuracy "
                  f"{o['final_test_acc']:.4f} ({o['file']})" for o in s["other_settings"]]
    return "\n".join(lines) + "\n"


def renamed(text):
    """``text`` written before the rename (a committed summary.md) with every old label replaced by its
    net's label; file names (``mxnet.builtin_cpu_lr0.1_seed0.json``) keep theirs."""
    return re.sub(r"\b(" + "|".join(map(re.escape, OLD_LABELS)) + r")\b(?!_)", lambda m: OLD_LABELS[m[1]], text)
