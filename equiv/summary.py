"""The report's answers, before its matrices: per implementation and execution path, one line
"computes what the oracle computes except …" (from the check results, the measured or declared
conventions and the documented divergences); per pair of built-in layers, what differs
(equiv.port.differences: the declared conventions and defaults); per conversion or folding route,
where the model lands, what survives and what does not (equiv.routes, its findings)."""
import html

from equiv.conventions import DECLARED

# a convention value that makes an implementation compute other numbers than the oracle's plain
# setting (new-batch weight w, eps inside the root, a biased two-pass running variance updated on
# forward, plain moving averages from (0, 1), beta for a batch of one), and how the line says it
_EXCEPT = {
    ("running_var", "unbiased"): "an unbiased running variance (batch variance × m/(m − 1): the oracle's "
                                 "unbiased=True)",
    ("running_var", "none"): "no running statistics (every call normalizes with the batch's)",
    ("variance", "fast"): "a fast batch variance E[x²] − E[x]² (precision lost where |mean| ≫ std)",
    ("stats_update", "backward"): "running statistics updated only when gradients are computed",
    ("stats_update", "forward+init"): "running statistics updated at initialization too",
    ("stats_update", "never"): "running statistics never updated",
    ("debias", "zero"): "zero-debiased moving averages (hidden/(1 − decay^t) after t updates)",
    ("debias", "first"): "the first training call replaces the initial running statistics",
    ("batch_of_one", "error"): "an error for one value per channel in training",
    ("batch_of_one", "input"): "the input itself for one value per channel in training",
    ("batch_of_one", "nan"): "NaN for one value per channel in training",
}


def _conventions(name, record):
    """The measured conventions of a record, the declared ones of its layer where none were measured."""
    from equiv.paths import PATHS
    base = PATHS[name].base if name in PATHS else name
    declared = DECLARED[base].as_dict() if base in DECLARED else {}
    return base, {**declared, **(record.get("conventions") or {})}


def implementation_lines(names, records, known):
    """[(name, text, [divergence ids])] for each implementation and execution path."""
    out = []
    for n in names:
        base, conv = _conventions(n, records[n])
        items = []
        if base in DECLARED and DECLARED[base].momentum_is == "old_weight":
            items.append("its momentum is 1 − the new-batch weight")
        items += [text for (field, value), text in _EXCEPT.items() if str(conv.get(field)) == value]
        if conv.get("initial_stats") not in (None, "0, 1", "none"):
            items.append(f"initial running statistics ({conv['initial_stats']})")
        own = [d for d in known if n in d.implementations or base in d.implementations]
        items += [f"{d.id} ({', '.join(d.properties)})" for d in own]
        items += [f"FAIL {p}" for p, r in records[n]["properties"].items() if r.get("status") == "fail"]
        text = ("computes what the oracle computes except: " + "; ".join(items) if items
                else "computes what the oracle computes, with no exception")
        out.append((n, text, [d.id for d in own]))
    return out


def pair_lines(names):
    """[(a, b, text)] for each pair of built-in layers among ``names``."""
    from equiv.port import PORTABLE, differences
    layers = [n for n in PORTABLE if n in names]
    return [(a, b, "; ".join(differences(a, b)) or "no declared difference")
            for i, a in enumerate(layers) for b in layers[i + 1:]]


def route_lines():
    """[(name, text, [finding ids])] per conversion or folding route (equiv.routes): where the model lands,
    what survives and what does not, and its documented findings (equiv.known.ROUTE_KNOWN)."""
    from equiv.known import EXPORT_FINDINGS, ROUTE_KNOWN
    from equiv.routes import ROUTES, TRAINING_WORDS
    out = []
    for name, r in ROUTES.items():
        where = f"lands in {r.lands}" if r.lands else "stays in its framework"
        folds = f", folds BatchNorm into {' and '.join(r.folds)}" if r.folds else ""
        text = f"{r.pin}: {where}{folds}; keeps {', '.join(r.keeps)}"
        text += f"; loses {', '.join(r.lost)}" if r.lost else ""
        text += f"; a training-mode source becomes {TRAINING_WORDS[r.training].replace('**', '')}"
        text += f"; BN-LeNet ({', '.join(r.nets)}) through it within the lockstep bound" if r.nets else ""
        ids = [d.id for d in ROUTE_KNOWN + EXPORT_FINDINGS if name in d.implementations]
        out.append((name, text + (f"; findings: {', '.join(ids)}" if ids else "; no finding"), ids))
    return out


def option_lines():
    """[(name, text, [finding ids])] per implementation with measured layer options (equiv.conventions
    .OPTION_DECLARED, held to the option probes by equiv/suite/test_options.py) and its option findings
    (equiv.known.OPTION_KNOWN)."""
    from equiv.conventions import OPTION_DECLARED
    from equiv.known import OPTION_KNOWN
    out = []
    for name, declared in OPTION_DECLARED.items():
        ids = [d.id for d in OPTION_KNOWN if name in d.implementations]
        text = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in declared.items())
        out.append((name, text + (f"; findings: {', '.join(ids)}" if ids else "; no finding"), ids))
    return out


def lines(names, records, known):
    return implementation_lines(names, records, known), pair_lines(names), route_lines(), option_lines()


OPTIONS_INTRO = ("Each implementation under layer options (`equiv.options`: momentum=None, affine, "
                 "track_running_stats, synchronized, force_float32_reductions; run by `equiv/suite/test_options.py`, "
                 "the rest pinned in `tests/test_options_*.py`): what its option probes measure, and its findings:")


ROUTES_INTRO = ("Each conversion or folding route (`equiv.routes`; tested by `tests/test_routes_*.py`, not by "
                "`equiv check`): where the model lands, what survives and what does not:")


def route_markdown(routes, link=lambda i: i):
    return [f"- **{n}**: {_linked(t, ids, link)}" for n, t, ids in routes]


def markdown(short):
    impl, pairs, routes, options = short
    out = ["## In short", "", "Each implementation and execution path against the oracle (for the same "
           "new-batch weight and eps):", ""]
    out += [f"- **{n}**: {_linked(t, ids, lambda i: f'[{i}](#{i})')}" for n, t, ids in impl]
    if pairs:
        out += ["", "Between the built-in layers (what differs; `equiv port A B` says what to do):", ""]
        out += [f"- **{a} / {b}**: {t}" for a, b, t in pairs]
    out += ["", "## Routes", "", ROUTES_INTRO, ""] + route_markdown(routes, lambda i: f"[{i}](#{i})")
    out += ["", "## Layer options", "", OPTIONS_INTRO, ""] + route_markdown(options, lambda i: f"[{i}](#{i})")
    return out + [""]


def html_parts(short):
    impl, pairs, routes, options = short
    e = html.escape
    out = ["<h2>In short</h2><p>Each implementation and execution path against the oracle (for the same "
           "new-batch weight and eps):</p><ul>"]
    out += [f"<li><b>{e(n)}</b>: {_linked(e(t), ids, _anchor)}</li>" for n, t, ids in impl]
    out += ["</ul>"]
    if pairs:
        out += ["<p>Between the built-in layers (what differs; <code>equiv port A B</code> says what to do):</p><ul>"]
        out += [f"<li><b>{e(a)} / {e(b)}</b>: {e(t)}</li>" for a, b, t in pairs] + ["</ul>"]
    out += [f"<h2>Routes</h2><p>{e(ROUTES_INTRO).replace('`', '')}</p><ul>"]
    out += [f"<li><b>{e(n)}</b>: {_linked(e(t), ids, _anchor)}</li>" for n, t, ids in routes] + ["</ul>"]
    out += [f"<h2>Layer options</h2><p>{e(OPTIONS_INTRO).replace('`', '')}</p><ul>"]
    out += [f"<li><b>{e(n)}</b>: {_linked(e(t), ids, _anchor)}</li>" for n, t, ids in options] + ["</ul>"]
    return out


def _anchor(i):
    return f"<a href='#{html.escape(i)}'>{html.escape(i)}</a>"


def _linked(text, ids, link):
    for i in ids:
        text = text.replace(i, link(i), 1)
    return text
