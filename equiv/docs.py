"""The generated parts of the documentation site (docs/, Sphinx + MyST Markdown).

One findings page per framework, ``docs/findings/<page>.md``, from the finding lists and the measured
conventions (each finding on the page of every framework whose implementations it names), the index of
those pages, and the marked numbers and tables of the hand-written pages (the markers and generators
of equiv.readme). ``equiv docs`` writes them; ``equiv docs --check`` and tests/test_readme.py fail
while one is stale. NumPy only: no framework is imported.
"""
import json
from pathlib import Path

from equiv import readme
from equiv.findings import behaviour_entry, layer_entry, parallel_entry, route_entry

# findings page -> (title, the first part of the adapter names it holds)
FRAMEWORKS = {
    "pytorch": ("PyTorch", ("torch",)),
    "tensorflow": ("TensorFlow and Keras on TensorFlow", ("tf", "tf_keras")),
    "keras": ("Keras 3 on JAX, PyTorch and NumPy", ()),
    "jax": ("JAX: Flax, Equinox, Haiku, stax and the book's layer", ("flax", "jax", "equinox", "haiku")),
    "mxnet": ("MXNet", ("mxnet",)),
    "onnx": ("ONNX and onnxruntime", ("onnx",)),
    "paddle": ("PaddlePaddle", ("paddle",)),
    "mindspore": ("MindSpore", ("mindspore",)),
    "tinygrad": ("tinygrad", ("tinygrad",)),
    "mlx": ("MLX", ("mlx",)),
    "chainer": ("Chainer", ("chainer",)),
}
# execution paths that run on another framework than their base adapter's (equiv/paths)
PATH_PAGES = {"onnx": "onnx", "onnx_dynamo": "onnx", "jax": "keras", "torch": "keras", "numpy": "keras"}
NOTES = "notes"   # docs/findings/notes/<page>.md: hand-written measurements a page includes


def findings():
    """Every list of documented findings (``equiv.known``), by the section that renders it."""
    from equiv.known import (
        BOOK_NOTES,
        DOC_FINDINGS,
        EXPORT_FINDINGS,
        KNOWN,
        NET_FINDINGS,
        OPTION_KNOWN,
        PARALLEL_FINDINGS,
        PARALLEL_KNOWN,
        ROUTE_KNOWN,
    )
    return {"layer": KNOWN, "option": OPTION_KNOWN, "route": ROUTE_KNOWN, "parallel": PARALLEL_KNOWN,
            "parallel_behaviour": PARALLEL_FINDINGS,
            "export": EXPORT_FINDINGS, "doc": DOC_FINDINGS, "net": NET_FINDINGS, "book": BOOK_NOTES}


def page_of(name):
    """The findings page of an adapter, path, data-parallel or BN-LeNet implementation name."""
    base, _, path = name.partition("+")
    if path in PATH_PAGES:
        return PATH_PAGES[path]
    first = base.split(".")[0]
    page = next((p for p, (_, firsts) in FRAMEWORKS.items() if first in firsts), None)
    if page is None:
        raise ValueError(f"no findings page for {name!r}: add its framework to equiv.docs.FRAMEWORKS")
    return page


def pages_of(kind, f):
    """The pages a finding of ``kind`` belongs on."""
    return {page_of(n) for n in f.implementations}


def _net(fs):
    out = ["| finding | implementation | dtype | data | first divergence (step, kind, layer) |",
           "|---|---|---|---|---|"]
    for f in fs:
        edge = f" (at the tolerance, may come first: {', '.join(f.edge)})" if f.edge else ""
        out.append(f"| {f.id} | `{f.label}` | {', '.join(f.dtypes)} | {f.data} | "
                   f"{', '.join(map(str, f.where))}{edge} |")
    return out + [""] + [f"- **{f.id}** (`{f.label}`): {f.reason}" for f in fs] + [""]


SECTIONS = (   # kind, heading, what the section's entries are, how one renders
    ("layer", "Divergences from the oracle",
     "Documented, each with the region of inputs where it shows (the properties leave it out and say so) "
     "and a witness that runs as a strict xfail (`tests/test_known.py`).", layer_entry),
    ("option", "Under layer options",
     "Divergences that show only with a layer option (`equiv.options`) set; each witness runs as a strict "
     "xfail (`tests/test_options_torch.py`).", layer_entry),
    ("route", "Folding routes",
     "Conversion and folding routes (`equiv.routes`) on states drawn as trained networks have them; each "
     "witness runs as a strict xfail (`tests/test_routes_*.py`).", route_entry),
    ("parallel", "Data-parallel divergences",
     "Documented, strict xfail in `tests/test_parallel.py`.", parallel_entry),
    ("parallel_behaviour", "Data-parallel behaviours",
     "What a BatchNorm replicated over processes does that one device does not; each pinned by the test named.",
     behaviour_entry),
    ("export", "Exporters and converters", "What an exporter or a converter makes of the layer beyond the numbers "
     "(the graph it writes, a training-mode module), pinned with its graph and versions by "
     "`tests/test_onnx_findings.py`, `tests/test_routes_onnx_convert.py`, `tests/test_routes_openvino.py` and "
     "`tests/test_routes_probes.py`.",
     lambda f: [f"- **{f.id}**: {f.reason}", ""]),
    ("doc", "Documentation", "Where the framework's documentation says what its code does not do; each pinned, "
     "with the source lines, by the test named.", behaviour_entry),
    ("net", "BN-LeNet: whole-network divergences",
     "Each asserted at exactly this first divergent step and layer by `tests/test_lenet_nets.py` and "
     "`tests/test_lockstep_parallel.py` (`equiv lockstep`).", None),
    ("book", "The book's BN-LeNet code, beyond its BN layers", "", lambda f: [f"- **{f.id}**: {f.reason}", ""]),
)


def _conventions(page):
    conv = json.loads((readme.DATA / "conventions.json").read_text())
    names = sorted((n for n in conv if page_of(n) == page), key=readme._adapter_order)
    if not names:
        return []
    table = readme.conventions_rows({n: conv[n] for n in names})
    return ["## Measured conventions", "",
            "Every value measured by running the implementation (`equiv conventions`, "
            "`reference/data/conventions.json`); the columns: [conventions](../conventions.md).", "", table, ""]


def framework_page(page, docs):
    """The Markdown of ``docs/findings/<page>.md``."""
    title, _ = FRAMEWORKS[page]
    out = [f"# {title}", "",
           "Generated by `equiv docs` from the measured conventions and the documented findings; do not edit "
           f"by hand (what is measured beyond the lists: `docs/findings/{NOTES}/{page}.md`).", ""]
    out += _conventions(page)
    notes = docs / "findings" / NOTES / f"{page}.md"
    if notes.is_file():
        out += ["## Measured behaviour", "", notes.read_text().strip(), ""]
    for kind, heading, what, render in SECTIONS:
        entries = [f for f in findings()[kind] if page in pages_of(kind, f)]
        if not entries:
            continue
        out += [f"## {heading}", ""] + ([what, ""] if what else [])
        out += _net(entries) if kind == "net" else [line for f in entries for line in render(f)]
    return "\n".join(out).rstrip() + "\n"


def findings_index():
    """The Markdown of ``docs/findings/index.md``: the pages, with their counts."""
    lists = findings()
    head = ("framework", "divergences", "data-parallel", "exporters", "BN-LeNet", "book")
    kinds = (("layer",), ("parallel", "parallel_behaviour"), ("export",), ("net",), ("book",))
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for page, (title, _) in FRAMEWORKS.items():
        counts = [sum(page in pages_of(k, f) for k in ks for f in lists[k]) for ks in kinds]
        rows.append(f"| [{title}]({page}.md) | " + " | ".join(str(c) for c in counts) + " |")
    toc = ["```{toctree}", ":hidden:", "", *FRAMEWORKS, "```"]
    return "\n".join(["# Findings", "",
                      f"{readme.divergences()}, and the data-parallel, exporter and book findings, one page per "
                      "framework: a finding that names implementations of several frameworks is on each of their "
                      "pages. Generated by `equiv docs`; all of them in one file: `reference/data/findings.md` "
                      "(`equiv findings`).", "", *rows, "", *toc]) + "\n"


def own_example(docs):
    """The README's own-implementation example (its mybn.py and its commands), for a docs page."""
    code, commands = readme.own_implementation_example((Path(docs).parent / "README.md").read_text())
    return ("\n\nIn `mybn.py`:\n\n```python\n" + code + "```\n\nThen, in a virtual environment, from the folder "
            "that holds `mybn.py`:\n\n```sh\n" + "\n".join(commands) + "\n```\n\n")


def routes_table(docs):
    """One row per conversion or folding route (equiv.routes): the tool and its pin, where the model lands,
    what it folds, what survives and what does not, the dtypes run, the findings (linked to their page)."""
    from equiv.known import EXPORT_FINDINGS, ROUTE_KNOWN
    from equiv.routes import ROUTES, TRAINING_WORDS
    out = ["", "", "| route | pin | lands in | folds into | keeps | loses | a training-mode source becomes | dtypes "
           "| findings |", "|---|---|---|---|---|---|---|---|---|"]
    for n, r in ROUTES.items():
        ids = [f"[{d.id}](findings/{page_of(n)}.md)" for d in ROUTE_KNOWN + EXPORT_FINDINGS if n in d.implementations]
        out.append(f"| `{n}` | {r.pin} | {r.lands or 'its own framework'} | "
                   f"{', '.join(r.folds) or '—'} | {', '.join(r.keeps)} | {', '.join(r.lost) or '—'} | "
                   f"{TRAINING_WORDS[r.training]} | {', '.join(r.dtypes)} | {', '.join(ids) or '—'} |")
    out += ["", "What each route runs, on what:", ""]
    whole = ("; and on the whole BN-LeNet ({}), its logits within the lockstep bound "
             "(tests/test_lenet_routes.py)")
    out += [f"- `{n}`: `{r.tool}`, on {r.source}" + (whole.format(", ".join(r.nets)) if r.nets else "")
            for n, r in ROUTES.items()]
    return "\n".join(out) + "\n\n"


def routes_not_run(docs):
    """One row per route tool that does not install or run here (equiv.routes.NOT_RUN), with the reason."""
    from equiv.routes import NOT_RUN
    if not NOT_RUN:
        return "\n\nNone: every route tool named by the routes above installs and runs here.\n\n"
    out = ["", "", "| tool | route | what was tried | what happened (measured) | measured on |",
           "|---|---|---|---|---|"]
    out += [f"| {t.tool} | `{t.route}` | {t.tried} | {t.reason} | {t.measured} |" for t in NOT_RUN.values()]
    return "\n".join(out) + "\n\n"


# the marked pieces that only docs pages have: name -> function of the docs folder
PAGE_GENERATORS = {"own-example": own_example, "routes": routes_table, "routes-not-run": routes_not_run}


def render(text, docs):
    """``text`` of a docs page with its marked pieces regenerated (equiv.readme's and PAGE_GENERATORS');
    ValueError for an unknown marker."""
    def sub(m):
        name = m.group(1)
        if name in PAGE_GENERATORS:
            body = PAGE_GENERATORS[name](docs)
        elif name in readme.GENERATORS:
            body = readme.GENERATORS[name]()
        else:
            raise ValueError(f"unknown generated piece <!-- equiv:{name} -->; use one of: "
                             f"{', '.join([*readme.GENERATORS, *PAGE_GENERATORS])}")
        return f"<!-- equiv:{name} -->{body}<!-- /equiv:{name} -->"
    return readme.MARK.sub(sub, text)


def generated(docs):
    """{path: text} of every generated page under ``docs``, and of every hand-written page with markers."""
    docs = Path(docs)
    out = {docs / "findings" / "index.md": findings_index()}
    out.update({docs / "findings" / f"{p}.md": framework_page(p, docs) for p in FRAMEWORKS})
    for path in sorted(docs.glob("*.md")):
        text = path.read_text()
        if readme.MARK.search(text):
            out[path] = render(text, docs)
    return out


def stale(docs):
    """The generated pages under ``docs`` that differ from what ``generated`` makes."""
    if not (Path(docs) / "conf.py").is_file():
        raise ValueError(f"{docs} is not the documentation folder (no conf.py there); give --dir docs")
    return sorted(str(p) for p, text in generated(docs).items() if not p.is_file() or p.read_text() != text)


def write(docs):
    """Write every stale generated page under ``docs`` (each checked first, then written atomically);
    the paths written. ValueError when ``docs`` is not the documentation folder."""
    from equiv import io
    docs = Path(docs)
    if not (docs / "conf.py").is_file():
        raise ValueError(f"{docs} is not the documentation folder (no conf.py there); give --dir docs")
    pages = {p: t for p, t in generated(docs).items() if not p.is_file() or p.read_text() != t}
    for p in pages:
        io.check_file(p, "--dir")
    for p, text in pages.items():
        io.write_text(p, text)
    return sorted(str(p) for p in pages)
