"""reference/data/findings.md, generated from the measured conventions and the documented
divergences and other findings (equiv/known/): what differs, between which implementations, measured
on which input, and what a porting user must do."""
from equiv.known import (
    BOOK_NOTES,
    DOC_FINDINGS,
    EXPORT_FINDINGS,
    NET_FINDINGS,
    OPTION_KNOWN,
    PARALLEL_FINDINGS,
    PARALLEL_KNOWN,
    ROUTE_KNOWN,
)
from equiv.tables import convention_table

CONVENTION_ADVICE = {
    "new_batch_weight": ("Momentum means opposite things: PyTorch's momentum is the weight of the new "
                         "batch, Keras', Flax's, MXNet's, Paddle's and MindSpore's the weight of the old value. "
                         "Translate with "
                         "`equiv.translate(Setting(new_batch_weight=w, eps=e), adapter)`; passing the "
                         "same number to both frameworks swaps w and 1 − w."),
    "running_var": ("PyTorch and MindSpore keep an unbiased running variance (batch variance × m/(m − 1)), "
                    "the others a biased one. Inference after porting a checkpoint is unaffected (the stored "
                    "value is used as is); continued training mixes the two estimators."),
    "default_eps": ("Default eps differs. Port with the source's eps, or fold the difference into the "
                    "running variance (`equiv.port_state(..., src_eps=, dst_eps=)`)."),
    "variance": ("The fast variance E[x²] − E[x]² loses precision on inputs whose |mean| is large "
                 "against their std; pick the two-pass algorithm (Flax: use_fast_variance=False) or "
                 "center the inputs."),
    "stats_update": ("When running statistics change differs: a forward pass in training mode, or only "
                     "a backward pass, or also at initialization. Code that calls forward without "
                     "backward to 'warm up' statistics behaves differently."),
    "default_mode": ("A plain call means training in some frameworks, inference in others, an error in "
                     "Flax linen: always pass the mode explicitly when porting."),
    "batch_of_one": ("One value per channel in training: an error in PyTorch, the input itself in Paddle "
                     "(unnormalized, gamma and beta unused), beta elsewhere (MindSpore's running variance then "
                     "becomes NaN)."),
    "debias": ("Haiku and Equinox's mode='batch' zero-debias their moving averages (average = hidden/"
               "(1 − decay^t) after t updates) and Equinox's mode='ema' replaces the initial values at its "
               "first training call: a checkpoint ported into them must carry the hidden average and a "
               "large update count (or first_time False), else the first update forgets the ported "
               "statistics (docs/porting.md)."),
    "initial_stats": ("A fresh layer's running statistics are (0, 1) in most frameworks, (0, 0) in Haiku (and "
                      "Equinox's mode='ema', overwritten at the first training call): inference before any "
                      "training divides by sqrt(eps) there."),
}


def divergence_counts(known):
    """The documented divergences by kind: "layer" (the entries of ``known``, ``equiv.known.KNOWN``),
    "option" (``OPTION_KNOWN``: a layer under layer options), "route" (``ROUTE_KNOWN``) and "network"
    (the distinct ids of ``NET_FINDINGS``: one finding seen in two implementations counts once). The one
    count the report, ``equiv findings`` and the README use."""
    return {"layer": len(known), "option": len(OPTION_KNOWN), "route": len(ROUTE_KNOWN),
            "network": len({f.id for f in NET_FINDINGS})}


def divergence_phrase(known):
    n = divergence_counts(known)
    return (f"{sum(n.values())} documented divergences ({n['layer']} of the layer, `equiv.known.KNOWN`; "
            f"{n['option']} under layer options, `OPTION_KNOWN`; {n['route']} of folding routes, `ROUTE_KNOWN`; "
            f"{n['network']} of the whole BN-LeNet, `NET_FINDINGS`)")


def _names(names):
    return ", ".join(f"`{n}`" for n in names)


def _advice(d):
    return [f"What to do: {d.advice}", ""] if d.advice else []


def layer_entry(d):
    """Markdown lines of a layer's documented divergence (a ``Divergence`` or ``OptionDivergence``):
    the one rendering findings.md and the docs' findings pages share."""
    return [f"### {d.id}", "", f"- implementations: {_names(d.implementations)}",
            f"- properties affected: {', '.join(d.properties)}",
            f"- witness: `{d.witness!r}` fails `{d.witness_property}`", "", d.reason, ""] + _advice(d)


def route_entry(d):
    """Markdown lines of a route's documented divergence (``RouteDivergence``)."""
    return [f"### {d.id}", "", f"- routes: {_names(d.implementations)}", f"- layers: {', '.join(d.layers)}",
            f"- witness: `{d.witness!r}`", "", d.reason, ""] + _advice(d)


def parallel_entry(d, heading="###"):
    """Markdown lines of a documented data-parallel divergence (``ParallelDivergence``)."""
    return [f"{heading} {d.id}", "", f"- implementations: {_names(d.implementations)}",
            f"- witness: `{d.witness.case!r}` split {list(d.witness.sizes)}", "", d.reason, ""] + _advice(d)


def behaviour_entry(f, heading="###"):
    """Markdown lines of a finding pinned by a test (``ParallelFinding``, ``DocFinding``), with that test."""
    return [f"{heading} {f.id}", "", f"- implementations: {_names(f.implementations)}", f"- test: `{f.test}`", "",
            f.reason, ""] + _advice(f)


def parallel_section():
    """Markdown lines: every registered data-parallel implementation's conventions as declared
    (``equiv.parallel.conventions``: each held to the probes' measurement by
    tests/test_parallel_<engine>.py), then the documented data-parallel divergences
    (``equiv.known``). Imports no adapter module and no framework: the same text whatever is
    installed."""
    from dataclasses import fields

    from equiv.parallel import ParallelConventions
    from equiv.parallel.conventions import BASE, DECLARED, ENGINE
    names = [f.name for f in fields(ParallelConventions)]
    out = ["## Data-parallel BatchNorm (declared, measured by the probes)", "",
           "| implementation | engine | base | " + " | ".join(names) + " |",
           "|---" * (3 + len(names)) + "|"]
    for name in sorted(DECLARED):
        row = DECLARED[name].as_dict()
        out.append(f"| {name} | {ENGINE[name]} | {BASE[name]} | " + " | ".join(str(row[n]) for n in names) + " |")
    out += ["", "### Data-parallel divergences (documented, strict xfail in tests/test_parallel.py)", ""]
    for d in PARALLEL_KNOWN:
        out += parallel_entry(d, "####")
    out += ["### Data-parallel behaviours (`equiv.known.PARALLEL_FINDINGS`)", "",
            "What a BatchNorm replicated over processes does that one device does not, measured on the "
            "framework's distributed engine; each witness is pinned by the test named.", ""]
    for f in PARALLEL_FINDINGS:
        out += behaviour_entry(f, "####")
    return out


def render(conventions, known):
    """Markdown text for a {adapter: record} mapping and the list of Divergence entries."""
    records = [conventions[k] for k in sorted(conventions)]
    out = ["# Findings", "",
           "Generated by `equiv findings` from `reference/data/conventions.json` (measured by "
           "`equiv conventions`) and `equiv/known/` (each divergence's witness runs as a strict "
           "xfail in the tests). Do not edit by hand.", "",
           "## Convention differences (measured)", "", convention_table(records, markdown=True), ""]
    for field, advice in CONVENTION_ADVICE.items():
        values = {}
        for r in records:
            values.setdefault(str(r.get(field)), []).append(r["adapter"])
        if len(values) > 1:
            split = "; ".join(f"`{v}`: {', '.join(names)}" for v, names in sorted(values.items()))
            out += [f"### {field}", "", split, "", advice, ""]
    out += ["## Divergences from the oracle (documented, strict xfail)", ""]
    for d in known:
        out += layer_entry(d)
    out += parallel_section()
    out += ["## Under layer options (documented, strict xfail in tests/test_options_torch.py)", "",
            "Divergences that show only with a layer option (`equiv.options`) set.", ""]
    for d in OPTION_KNOWN:
        out += layer_entry(d)
    out += ["## Folding routes (documented, strict xfail in tests/test_routes_*.py)", "",
            "Conversion and folding routes (`equiv.routes`) on states drawn as trained networks have them.", ""]
    for d in ROUTE_KNOWN:
        out += route_entry(d)
    out += ["## Exporters and converters", "", "What an exporter or a converter makes of the layer beyond the numbers "
            "(the graph it writes, a training-mode module), pinned by `tests/test_onnx_findings.py`, "
            "`tests/test_routes_onnx_convert.py`, `tests/test_routes_openvino.py` and "
            "`tests/test_routes_probes.py`.", ""]
    out += [f"- **{f.id}**: {f.reason}" for f in EXPORT_FINDINGS]
    out += [""]
    out += ["## Documentation (what the docs say and the code does not)", "",
            "Each measured on the installed release and pinned, with the source lines, by the test named.", ""]
    for f in DOC_FINDINGS:
        out += behaviour_entry(f)
    out += ["## BN-LeNet: whole-network divergences (`equiv lockstep`)", "",
            "Each is asserted at exactly this first divergent step and layer (or, where a quantity is "
            "listed as at the tolerance, that one at the same step with the layer over it too) by "
            "`tests/test_lenet_nets.py` and `tests/test_lockstep_parallel.py`; every other implementation and dtype "
            "stays within the "
            "lockstep tolerance on synthetic and Fashion-MNIST batches.", "",
            "| finding | implementation | dtype | data | first divergence (step, kind, layer) |",
            "|---|---|---|---|---|"]
    for f in NET_FINDINGS:
        edge = f" (at the tolerance, may come first: {', '.join(f.edge)})" if f.edge else ""
        out.append(f"| {f.id} | {f.label} | {', '.join(f.dtypes)} | {f.data} | {', '.join(map(str, f.where))}{edge} |")
    out.append("")
    for f in NET_FINDINGS:
        out += [f"- **{f.id}**: {f.reason}"]
    out += ["", "## The book's BN-LeNet code, beyond its BN layers", ""]
    out += [f"- **{f.id}**: {f.reason}" for f in BOOK_NOTES]
    return "\n".join(out).rstrip() + "\n"
