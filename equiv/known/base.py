"""The shapes of a documented finding: one base, ``Finding`` (an id, the implementations it applies
to, what differs and why with the measured numbers, and what a user must do about it), extended by
each kind of finding with what its tests need to pin it.

``kind`` names the kind (a class constant): ``"layer"`` (``Divergence``: one BatchNorm layer, or one
execution path of it, against the oracle), ``"option"`` (``OptionDivergence``: a layer under layer
options), ``"data-parallel"`` (``ParallelDivergence``), ``"data-parallel-behaviour"`` (``ParallelFinding``),
``"export"`` (``ExportFinding``), ``"network"`` (``NetFinding``: a whole BN-LeNet in ``equiv lockstep``),
``"route"`` (``RouteDivergence``: a conversion or folding route, ``equiv.routes``) and ``"book"``
(``BookNote``: what the book's BN-LeNet code does beyond its BN layers)."""
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from equiv.strategies import Case, ParallelCase


@dataclass(frozen=True, kw_only=True)
class Finding:
    kind: ClassVar[str] = ""
    id: str
    implementations: tuple    # the names it applies to: adapters (and paths), data-parallel or BN-LeNet labels
    reason: str               # what differs and why, with the measured numbers
    advice: str = ""          # what a user porting a model or checkpoint must do about it


@dataclass(frozen=True, kw_only=True)
class Divergence(Finding):
    """A layer's (or an execution path's) divergence from the oracle: the region of inputs where it
    shows (the property tests leave it out and say so) and a witness case that shows it (run as a
    strict xfail: when a release fixes the behaviour the witness passes and the test turns red).
    ``implementations``: adapter and path names; the reason gives the measured error on the witness."""
    kind: ClassVar[str] = "layer"
    properties: tuple         # property names whose region it removes
    region: Callable          # (Case, property name) -> bool: the inputs where it shows
    witness: Case             # one case in the region
    witness_property: str     # the property that fails on the witness


@dataclass(frozen=True, kw_only=True)
class OptionDivergence(Divergence):
    """A layer's divergence that shows only under layer options (``equiv.options``: ``momentum=None``,
    ``track_running_stats=False``, ...): its region (``equiv.known._regions.under``) holds only for cases
    that carry the setting, and its witness is such a case (tests/test_options_torch.py)."""
    kind: ClassVar[str] = "option"


@dataclass(frozen=True, kw_only=True)
class ParallelDivergence(Finding):
    """A data-parallel implementation's divergence from the oracle, written as ``Divergence``: the
    region and the witness are ``ParallelCase``s, a global batch and its split over replicas
    (``tests/test_parallel.py`` leaves the region out and runs the witness as a strict xfail).
    ``implementations``: names in ``equiv.parallel.IMPLEMENTATIONS``."""
    kind: ClassVar[str] = "data-parallel"
    region: Callable          # ParallelCase -> bool
    witness: ParallelCase


@dataclass(frozen=True, kw_only=True)
class ParallelFinding(Finding):
    """A behaviour of a data-parallel engine beyond the numbers of one run (whose replica a checkpoint
    holds, how gradients are scaled, what an empty shard does, what refuses to run), measured on a
    witness run that ``test`` pins (a strict xfail where the layer departs from what a user would
    expect, a plain assertion of the measured value otherwise)."""
    kind: ClassVar[str] = "data-parallel-behaviour"
    test: str                 # the test that runs the witness: tests/<file>::<name>


@dataclass(frozen=True, kw_only=True)
class ExportFinding(Finding):
    """What an exporter does to the layer beyond the numbers, pinned (graph and versions) by
    ``tests/test_onnx_findings.py``. ``implementations``: the export paths."""
    kind: ClassVar[str] = "export"


@dataclass(frozen=True, kw_only=True)
class NetFinding(Finding):
    """A documented difference of a whole BN-LeNet from the reference (``equiv lockstep``), measured on
    the one BN-LeNet label in ``implementations``.

    ``where`` = (step, kind, layer): the first divergence lockstep names, for each dtype in
    ``dtypes`` on ``data`` ("any": the synthetic test batches too; "fashion-mnist": only the
    real data, batch 128), as measured with the tests' seeds (3 synthetic, 0 Fashion-MNIST).
    ``tests/test_lenet_nets.py`` asserts exactly that place, so a fix upstream makes the test
    fail until the entry goes. The layer can move with the seed while the mechanism stays (the
    float32 sequential sums, seed 1: step 1 again, but first over tolerance in sig1, 8.5e-5).

    ``edge``: quantities of ``where``'s step (lockstep's keys, "param:bn3.beta") measured within a
    few percent of the tolerance, over it on some CPUs and under it on others (the vector ISA picks
    the kernels, and so the rounding): lockstep may name one of them first, and ``shows`` accepts
    that as long as ``where`` is over the tolerance too. Each is listed with its measured ratios.
    """
    kind: ClassVar[str] = "network"
    dtypes: tuple
    data: str
    where: tuple
    edge: tuple = ()

    @property
    def label(self):
        """The BN-LeNet label (``equiv lockstep --impls``) it is measured on."""
        return self.implementations[0]


@dataclass(frozen=True, kw_only=True)
class RouteDivergence(Finding):
    """A conversion or folding route's divergence from the oracle (``equiv.routes``), written as
    ``Divergence`` on the route's drawn states (``equiv.routes.states.FoldState``): the region of states
    where it shows (the route properties leave it out) and a witness state that runs as a strict xfail
    (tests/test_routes_*.py). ``implementations``: route names; ``layers``: "conv", "linear", "bn" (the
    BatchNorm alone, on the layer's output)."""
    kind: ClassVar[str] = "route"
    layers: tuple
    region: Callable          # FoldState -> bool
    witness: Any              # a FoldState in the region


@dataclass(frozen=True, kw_only=True)
class DocFinding(Finding):
    """Where a framework's documentation of a layer or op says what its code does not do, measured on the
    installed release and pinned by ``test`` (tests/<file>::<name>) with the source lines of both."""
    kind: ClassVar[str] = "documentation"
    test: str


@dataclass(frozen=True, kw_only=True)
class BookNote(Finding):
    """What the book's own BN-LeNet code does differently, beyond its BN layers (measured by tests).
    ``implementations``: the BN-LeNet labels of the book's tab."""
    kind: ClassVar[str] = "book"


def _key(kind, layer):
    return "loss" if kind == "loss" else f"{kind}:{layer}"


def shows(finding, r):
    """Whether the lockstep result ``r`` diverges where ``finding`` (a NetFinding) says: its first divergence is
    ``finding.where``, or one of ``finding.edge`` at that step with ``where`` over the tolerance as well."""
    f = r["first_divergence"]
    if f is None or f["step"] != finding.where[0]:
        return False
    named, documented = _key(f["kind"], f["layer"]), _key(*finding.where[1:])
    return named == documented or (named in finding.edge
                                   and r["per_step"][f["step"] - 1]["rel_error"][documented] > f["tolerance"])
