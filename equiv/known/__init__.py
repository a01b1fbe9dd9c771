"""Documented findings: every way an implementation differs from the oracle, or from what a user
would expect, that the suite has measured, in one place. One module per framework
(``equiv/known/torch.py``, ``tf.py``, ``keras.py``, ``jax.py`` (Flax, the book's JAX layer, stax,
Haiku, Equinox), ``onnx.py``, ``paddle.py``, ``mxnet.py``, ``mlx.py``; ``edge.py``: the edge runtimes'
routes) lists its findings of every kind; the shapes are in ``equiv.known.base``, the regions' helpers
in ``equiv.known._regions``.

The kinds (``Finding.kind``), each a list here:

- ``KNOWN`` (``"layer"``): divergences of a layer or one of its execution paths from the oracle,
  each with the region of inputs where it shows and a witness case that shows it. The property
  tests leave each region out (and say so), and every witness runs as a strict ``xfail``: when a
  framework release fixes the behaviour the witness passes, the strict xfail turns red, and this
  list must be updated. Array-api-tests keeps its known failures the same way.
- ``OPTION_KNOWN`` (``"option"``): the same for a layer under layer options (``equiv.options``): a
  region holds only for cases carrying its setting (``option_divergences`` picks them).
- ``PARALLEL_KNOWN`` (``"data-parallel"``): the same for data-parallel implementations, on
  ``ParallelCase``s (``tests/test_parallel.py``).
- ``PARALLEL_FINDINGS`` (``"data-parallel-behaviour"``): what a distributed engine does beyond the
  numbers of one run, each pinned by the test it names.
- ``EXPORT_FINDINGS`` (``"export"``): what an exporter writes for the layer (tests/test_onnx_findings.py).
- ``NET_FINDINGS`` (``"network"``): where a whole BN-LeNet first diverges in ``equiv lockstep``
  (``net_findings`` picks a run's, ``shows`` checks a result against one).
- ``ROUTE_KNOWN`` (``"route"``): divergences of a conversion or folding route (``equiv.routes``) on
  its drawn states, each with a region and a witness state run as a strict xfail
  (``route_excluded`` picks a state's).
- ``DOC_FINDINGS`` (``"documentation"``): where a framework's documentation says what its code does not
  do, each pinned by the test it names.
- ``BOOK_NOTES`` (``"book"``): what the book's BN-LeNet code does beyond its BN layers.

``ALL`` holds every finding, ``findings(kind)`` iterates over them.
"""
from equiv.known import chainer, edge, jax, keras, mlx, mxnet, onnx, openvino, paddle, tf, tf_keras2, torch
from equiv.known._regions import everywhere
from equiv.known.base import (
    BookNote,
    Divergence,
    DocFinding,
    ExportFinding,
    Finding,
    NetFinding,
    OptionDivergence,
    ParallelDivergence,
    ParallelFinding,
    RouteDivergence,
    shows,
)

__all__ = ["ALL", "BOOK_NOTES", "BY_CONVENTION", "DOC_FINDINGS", "EXPORT_FINDINGS", "KNOWN", "NET_FINDINGS",
           "OPTION_KNOWN", "PARALLEL_FINDINGS", "PARALLEL_KNOWN", "ROUTE_KNOWN", "BookNote", "Divergence",
           "DocFinding", "ExportFinding",
           "Finding", "NetFinding", "OptionDivergence", "ParallelDivergence", "ParallelFinding", "RouteDivergence",
           "by_id", "divergences", "everywhere", "excluded", "findings", "net_findings", "option_divergences",
           "parallel_excluded", "route_excluded", "shows"]

ALL = tuple(f for m in (torch, edge, tf, tf_keras2, keras, jax, onnx, openvino, paddle, mxnet, mlx, chainer)
            for f in m.FINDINGS)


def findings(kind=None):
    """Every documented finding (of ``kind``: "layer", "data-parallel", "data-parallel-behaviour",
    "export", "network", "route", "option", "documentation", "book"), in the order of the framework modules."""
    return (f for f in ALL if kind is None or f.kind == kind)


KNOWN = list(findings(Divergence.kind))
PARALLEL_KNOWN = list(findings(ParallelDivergence.kind))
PARALLEL_FINDINGS = list(findings(ParallelFinding.kind))
EXPORT_FINDINGS = list(findings(ExportFinding.kind))
NET_FINDINGS = tuple(findings(NetFinding.kind))
BOOK_NOTES = tuple(findings(BookNote.kind))
DOC_FINDINGS = list(findings(DocFinding.kind))
ROUTE_KNOWN = list(findings(RouteDivergence.kind))
OPTION_KNOWN = list(findings(OptionDivergence.kind))


def net_findings_of(label, dtype="float32", data="fashion-mnist"):
    """The ids of the whole-network findings (NET_FINDINGS) that make a BN-LeNet label's training differ from
    the reference network's in ``dtype`` on ``data`` (a finding on "any" data applies to every data)."""
    return [f.id for f in net_findings(label, dtype, data)]


def by_id(finding_id, kind=None):
    """The first finding (of ``kind``) with this id; an id can name findings of two kinds (a layer's
    divergence and the whole network it shows in)."""
    return next(f for f in findings(kind) if f.id == finding_id)


# What an external implementation declares can imply a documented region of a registered one: a
# declared fast variance (E[x²] − E[x]²) loses what Flax's does, on the same inputs.
BY_CONVENTION = {("variance", "fast"): "flax-fast-variance-offset"}


def _names(adapter):
    """The names whose findings apply to an adapter (a name or a class): its own, and a path's base's
    (a path inherits its base's regions, unless it builds another kernel: ``ExecutionPath.inherits``)."""
    from equiv.paths import PATHS
    name = adapter if isinstance(adapter, str) else adapter.name
    return {name, PATHS[name].base} if name in PATHS and PATHS[name].inherits else {name}


def divergences(adapter, property_name=None):
    """The documented divergences of an adapter (a registered name, or a class: an external one gets
    those its declared conventions imply, ``BY_CONVENTION``)."""
    names = _names(adapter)
    found = [d for d in KNOWN if names & set(d.implementations)]
    if not isinstance(adapter, str) and getattr(adapter, "external", False):
        ids = {i for (field, value), i in BY_CONVENTION.items() if getattr(adapter.conventions, field) == value}
        found += [d for d in KNOWN if d.id in ids]
    return [d for d in found if property_name is None or property_name in d.properties]


def excluded(adapter, property_name, case):
    """The known divergence whose region holds this case, or None."""
    for d in divergences(adapter, property_name):
        if d.region(case, property_name):
            return d
    return None


def parallel_excluded(name, pc):
    """The documented data-parallel divergence of ``name`` (in ``equiv.parallel.IMPLEMENTATIONS``) whose
    region holds the ``ParallelCase`` ``pc``, or None."""
    return next((d for d in PARALLEL_KNOWN if name in d.implementations and d.region(pc)), None)


def net_findings(label, dtype, data):
    """The NetFinding entries that apply to a lockstep of ``label`` in ``dtype`` on ``data``
    ("synthetic" or "fashion-mnist")."""
    return [f for f in NET_FINDINGS
            if f.label == label and dtype in f.dtypes and (f.data == "any" or f.data == data)]


def route_excluded(route_name, state):
    """The documented route divergence (``ROUTE_KNOWN``) whose region holds the ``FoldState`` ``state``
    on this route, or None."""
    return next((d for d in ROUTE_KNOWN if route_name in d.implementations and state.layer in d.layers
                 and d.region(state)), None)


def option_divergences(adapter, property_name, options):
    """The documented divergences (``OPTION_KNOWN``) of an adapter (class or name) for a property under
    the layer options ``options``."""
    if not options:
        return []
    names = _names(adapter)
    return [d for d in OPTION_KNOWN if names & set(d.implementations) and property_name in d.properties
            and all(options.get(k) == v for k, v in d.region.setting.items())]
