"""`equiv report`: one Markdown file and one self-contained HTML page from what the tox
environments produced.

Inputs: the JSON files of `equiv check --out DIR` (one per environment), the measured
conventions (reference/data/conventions.json), the documented divergences
(equiv/known/) and BN-LeNet training runs (reference/data/runs/*.json, when present:
{"label": ..., "history": [{"epoch", "train_loss", "train_acc", "test_acc", "seconds"}]}).
Plots are PNG files made with matplotlib, beside the Markdown and embedded in the HTML.
"""
import base64
import html
import json
import shutil
from pathlib import Path

from equiv import io

STATUS = {"pass": ("pass", "#2e7d32"), "documented": ("documented divergence", "#f9a825"),
          "fail": ("FAIL", "#c62828"), "n/a": ("n/a", "#9e9e9e")}


def _check_record(path, i, rec):
    """ValueError naming the file unless ``rec`` is a record of `equiv check`."""
    def bad(what):
        return ValueError(f"{path}: record {i} {what}, so it is not a result of `equiv check`; "
                          f"remove the file or rerun `equiv check --out {path.parent}`")
    if not isinstance(rec, dict) or not isinstance(rec.get("adapter"), str):
        raise bad("has no adapter name")
    if "missing" in rec:
        return
    props = rec.get("properties")
    if not isinstance(props, dict):
        raise bad("has no 'properties'")
    for name, res in props.items():
        if not isinstance(res, dict) or res.get("status") not in STATUS:
            raise bad(f"has no valid status for property {name}")
    for key in ("framework", "version"):
        if key not in rec:
            raise bad(f"has no '{key}'")
    if not isinstance(rec.get("conventions", {}), dict):
        raise bad("has conventions that are not a mapping")


def load_results(results_dir):
    """{adapter: record} merged from every check-*.json in the folder (later files win)."""
    folder = Path(results_dir)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ValueError(f"--results {folder} {what}; give the folder of `equiv check --out` "
                         f"(run `equiv check --out {folder}` first)")
    merged = {}
    for path in sorted(folder.glob("check-*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); remove it or rerun `equiv check --out`") from None
        except OSError as e:
            raise ValueError(f"{path} cannot be read ({e.strerror or e}); remove it or rerun "
                             "`equiv check --out`") from None
        if not isinstance(data, dict) or not isinstance(data.get("records"), list):
            raise ValueError(f"{path} is not a result of `equiv check` (no list of records); remove it "
                             f"or rerun `equiv check --out {folder}`")
        for i, rec in enumerate(data["records"]):
            _check_record(path, i, rec)
            if "missing" not in rec:
                merged[rec["adapter"]] = rec
    return merged


def load_runs(runs_dir):
    from equiv.lenet import runs
    return runs.load(runs_dir) if Path(runs_dir).is_dir() else []


def _runs_summary(runs_dir):
    """(summary, its Markdown) of ``equiv runs`` for the folder, or (None, why not)."""
    from equiv.lenet import runs
    try:
        summary = runs.summarize(runs.load(runs_dir))
    except ValueError as e:
        return None, str(e)
    return summary, runs.markdown(summary)


def _plot_errors(records, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    names = sorted(records)
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.6 * max(1, len(names))))
    seen = set()
    colors = {"float64": "#1565c0", "float32": "#2e7d32", "float16": "#ef6c00", "bfloat16": "#6a1b9a"}
    for i, name in enumerate(names):
        by_dtype = {}
        for res in records[name]["properties"].values():
            for dtype, ratios in res.get("ratios", {}).items():
                by_dtype.setdefault(dtype, []).extend(ratios)
        for j, (dtype, ratios) in enumerate(sorted(by_dtype.items())):
            r = np.log10(np.maximum(np.asarray(ratios), 1e-8))
            y = i + (j - 1.5) * 0.15 + np.random.default_rng(i * 10 + j).uniform(-0.05, 0.05, len(r))
            ax.scatter(r, y, s=4, alpha=0.5, color=colors.get(dtype, "k"),
                       label=None if dtype in seen else dtype)
            seen.add(dtype)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, markerscale=3)
    ax.axvline(0, color="#c62828", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("log10(error / bound) per example (≤ 0 passes)")
    ax.set_title("Error against the oracle, relative to the tolerance bound")
    fig.tight_layout()
    with io.atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _order(name):
    """Sort key and group of an implementation: by framework, each adapter followed by its paths;
    external implementations last."""
    from equiv.paths import PATHS
    base = PATHS[name].base if name in PATHS else name
    group = "your own (--adapters package.module:obj)" if ":" in name else base.split(".")[0]
    return (":" in name, group, base, name != base, name), group


def _cell(res):
    """(text, [divergence ids]) of one property result: pass, fail, n/a, or pass outside the
    documented regions that left cases out, with how many cases of which dtype each took."""
    status = res.get("status", "n/a")
    if status != "documented":
        return STATUS[status][0], []
    by = res.get("excluded_by") or {}
    if not by:              # no drawn case fell in a documented region
        return "pass", []
    parts = [(i, ", ".join(f"{n} {dt} case{'s' * (n != 1)}" for dt, n in sorted(c.items())))
             for i, c in sorted(by.items())]
    return "pass outside " + "; ".join(f"{i} ({w})" for i, w in parts), [i for i, _ in parts]


def _at_a_glance(names, records, known):
    """One line per execution path: does it compute the same numbers as its eager counterpart?"""
    from equiv.paths import PATHS
    lines = []
    for n in names:
        if n not in PATHS:
            continue
        base = PATHS[n].base
        own = [d for d in known if n in d.implementations]
        fails = [p for p, r in records[n]["properties"].items() if r.get("status") == "fail"]
        if not own and not fails:
            lines.append((n, base, "no documented difference from the eager layer; every property passes "
                                   "or is left out only where the eager layer's own divergences are", []))
        else:
            what = [f"{d.id} ({', '.join(d.properties)})" for d in own] + [f"FAIL {p}" for p in fails]
            lines.append((n, base, "differs: " + "; ".join(what), [d.id for d in own]))
    return lines


def build(results_dir, out_dir, conventions=None, known=(), runs_dir=None):
    """Write report.md, report.html and the PNG plots into out_dir; returns their paths.

    Every input is read and checked before anything is written; a folder this creates is
    removed again when the report fails."""
    out = Path(out_dir)
    io.check_dir(out, "--out")
    records = load_results(results_dir)
    if not records:
        raise ValueError(f"no results in {results_dir}: run `equiv check --out {results_dir}` first")
    runs = load_runs(runs_dir) if runs_dir else []
    created = not out.exists()
    try:
        return _build(records, out, conventions, known, runs, runs_dir)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _build(records, out, conventions, known, runs, runs_dir):
    from equiv.properties import PROPERTIES
    from equiv.tables import CONVENTION_FIELDS
    out.mkdir(parents=True, exist_ok=True)
    images = []
    _plot_errors(records, out / "errors.png")
    images.append(("Error distributions", "errors.png"))
    band, band_md = (None, "")
    if runs:
        from equiv.lenet.train import plot_runs
        plot_runs(runs_dir, out / "training.png")
        images.append(("BN-LeNet training curves", "training.png"))
        band, band_md = _runs_summary(runs_dir)

    names = sorted(records, key=lambda n: _order(n)[0])
    groups = {}
    for n in names:
        groups.setdefault(_order(n)[1], []).append(n)
    props = list(PROPERTIES)
    cells = {n: [_cell(records[n]["properties"].get(p, {})) for p in props] for n in names}
    glance = _at_a_glance(names, records, known)
    from equiv import summary  # the answers first: one line per implementation and per pair of layers
    short = summary.lines(names, records, known)
    versions = [(n, records[n]["framework"], records[n]["version"], records[n].get("device", "cpu"),
                 records[n].get("profile", "") + (f", seed {records[n]['seed']}" if records[n].get("seed") is not None
                                                   else "")) for n in names]
    conv = conventions or {n: records[n]["conventions"] for n in names}
    conv_rows = [[n] + [str(conv[n].get(f, "")) for f in CONVENTION_FIELDS] for n in sorted(conv)]
    timing = [(n, f"{sum(r.get('seconds', 0) for r in records[n]['properties'].values()):.1f}",
               f"{sum(records[n].get('probe_seconds', {}).values()):.1f}" if "probe_seconds" in records[n] else "",
               str(sum(r.get("examples", 0) for r in records[n]["properties"].values()))) for n in names]
    failures = [(n, p, records[n]["properties"][p].get("error", "")) for n in names for p in props
                if records[n]["properties"].get(p, {}).get("status") == "fail"]
    from equiv.findings import divergence_phrase
    findings = [(d.id, ", ".join(d.implementations), d.reason) for d in known]
    from equiv.known import NET_FINDINGS, ROUTE_KNOWN  # whole-network (BN-LeNet lockstep) and route divergences
    findings += [(d.id, ", ".join(d.implementations), d.reason) for d in ROUTE_KNOWN if d not in known]
    from equiv.known import OPTION_KNOWN  # the option findings the "Layer options" section links to
    findings += [(d.id, ", ".join(d.implementations), d.reason) for d in OPTION_KNOWN if d not in known]
    findings += [(f.id, f"{f.label} BN-LeNet, {'/'.join(f.dtypes)}, first at step {f.where[0]} "
                        f"{f.where[1]} {f.where[2]} ({f.data} data)", f.reason) for f in NET_FINDINGS]

    # --- Markdown -------------------------------------------------------------------------
    def md_table(header, rows):
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows])
    md = ["# bn-equiv report", "",
          f"{len(names)} implementations, {len(props)} properties, {divergence_phrase(known)}, "
          f"{len(failures)} failures.", ""] + summary.markdown(short) + [
          "## Properties (implementation × property), by framework and path", "",
          "A cell is pass, FAIL, n/a, or *pass outside* the documented divergences whose region "
          "left drawn cases out (the divergence, linked, and the cases it took per dtype).", ""]

    def md_cell(text, ids):
        for i in ids:
            text = text.replace(i, f"[{i}](#{i})", 1)
        return text
    for group, members in groups.items():
        md += [f"### {group}", "", md_table(["adapter"] + props, [[n] + [md_cell(*c) for c in cells[n]]
                                                                   for n in members]), ""]
    if glance:
        md += ["## At a glance: each execution path against its eager layer", ""]
        md += [f"- **{n}** (eager: {b}): {md_cell(t, ids)}" for n, b, t, ids in glance]
        md += [""]
    md += ["## Measured conventions", "", md_table(["adapter"] + list(CONVENTION_FIELDS), conv_rows), "",
           "## Documented divergences", ""]
    md += [f'- <a id="{i}"></a>**{i}** ({a}): {r}' for i, a, r in findings] or ["none"]
    if failures:
        md += ["", "## Failures", ""] + [f"- **{n} {p}**: {e}" for n, p, e in failures]
    for title, png in images:
        md += ["", f"## {title}", "", f"![{title}]({png})"]
    if not runs:
        md += ["", "## BN-LeNet training curves", "", "No training runs in reference/data/runs yet."]
    else:
        md += ["", "## BN-LeNet runs against the seed band", "", band_md]
    md += ["", "## Timings and versions", "",
           md_table(["adapter", "property seconds", "probe seconds", "examples"], timing), "",
           md_table(["adapter", "framework", "version", "device", "Hypothesis profile"], versions), ""]
    io.write_text(out / "report.md", "\n".join(md))

    # --- HTML -----------------------------------------------------------------------------
    e = html.escape

    def h_table(header, rows, colour=None):
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = ""
        for r in rows:
            cells = ""
            for j, c in enumerate(r):
                style = f' style="background:{colour(c)};color:white"' if colour and j and colour(c) else ""
                cells += f"<td{style}>{e(str(c))}</td>"
            body += f"<tr>{cells}</tr>"
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    colour_of = {v[0]: v[1] for v in STATUS.values()}
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>bn-equiv report</title><style>",
             "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}",
             "</style></head><body><h1>bn-equiv report</h1>",
             f"<p>{len(names)} implementations, {len(props)} properties, {e(divergence_phrase(known))}, "
             f"{len(failures)} failures.</p>"] + summary.html_parts(short) + [
             "<h2>Properties, by framework and path</h2>"]

    def h_linked(text, ids):
        out = e(text)
        for i in ids:
            out = out.replace(e(i), f"<a href='#{e(i)}'>{e(i)}</a>", 1)
        return out

    def h_cell(text, ids):
        colour = colour_of.get(text) or (colour_of["pass"] if text.startswith("pass") else None)
        style = f" style='background:{colour};color:white'" if colour else ""
        return f"<td{style}>{h_linked(text, ids)}</td>"
    for group, members in groups.items():
        head = "".join(f"<th>{e(h)}</th>" for h in ["adapter"] + props)
        body = "".join(f"<tr><td>{e(n)}</td>" + "".join(h_cell(*c) for c in cells[n]) + "</tr>" for n in members)
        parts += [f"<h3>{e(group)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"]
    if glance:
        parts += ["<h2>At a glance: each execution path against its eager layer</h2><ul>"]
        parts += [f"<li><b>{e(n)}</b> (eager: {e(b)}): {h_linked(t, ids)}</li>" for n, b, t, ids in glance]
        parts += ["</ul>"]
    parts += ["<h2>Measured conventions</h2>", h_table(["adapter"] + list(CONVENTION_FIELDS), conv_rows),
              "<h2>Documented divergences</h2><ul>"]
    parts += [f"<li id='{e(i)}'><b>{e(i)}</b> ({e(a)}): {e(r)}</li>" for i, a, r in findings] + ["</ul>"]
    if failures:
        parts += (["<h2>Failures</h2><ul>"] + [f"<li><b>{e(n)} {e(p)}</b>: {e(x)}</li>" for n, p, x in failures]
                  + ["</ul>"])
    for title, png in images:
        data = base64.b64encode((out / png).read_bytes()).decode()
        parts += [f"<h2>{e(title)}</h2>", f"<img alt='{e(title)}' src='data:image/png;base64,{data}'>"]
    if not runs:
        parts += ["<h2>BN-LeNet training curves</h2><p>No training runs in reference/data/runs yet.</p>"]
    elif band is None:
        parts += ["<h2>BN-LeNet runs against the seed band</h2>", f"<p>{e(band_md)}</p>"]
    else:
        a = band["test_acc_band"]
        parts += ["<h2>BN-LeNet runs against the seed band</h2>",
                  f"<p>Band: {e(band['band_label'])}, seeds {e(', '.join(map(str, band['seeds'])))}: final test "
                  f"accuracy {a['mean']:.4f}, 99 % prediction interval [{a['lo']:.4f}, {a['hi']:.4f}].</p>",
                  h_table(["implementation", "device", "seed", "test acc", "in band", "loss curve in band",
                           "s/epoch"],
                          [[r["label"], r["device"].split(" ")[0], r["seed"], f"{r['final_test_acc']:.4f}",
                            "yes" if r["acc_in_band"] else "no", "yes" if r["loss_in_band"] else "no",
                            f"{r['median_epoch_seconds']:.2f}"] for r in band["runs"]])]
    parts += ["<h2>Timings and versions</h2>",
              h_table(["adapter", "property seconds", "probe seconds", "examples"], timing),
              h_table(["adapter", "framework", "version", "device", "Hypothesis profile"], versions),
              # a self-check a headless browser can read back: how many plots decoded
              "<script>window.addEventListener('load',function(){var n=0;"
              "document.querySelectorAll('img').forEach(function(i){if(i.naturalWidth>0)n++;});"
              "document.body.setAttribute('data-images-loaded',n);});</script>",
              "</body></html>"]
    io.write_text(out / "report.html", "\n".join(parts))
    return [out / "report.md", out / "report.html"] + [out / png for _, png in images]
