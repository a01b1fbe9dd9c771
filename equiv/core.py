"""The adapter protocol and the declared conventions.

Canonical data crossing the protocol is NumPy, channel-first: (N, C) or (N, C, H, W), and where an
adapter declares them (``Adapter.ndims``) (N, C, L) and (N, C, D, H, W).
An adapter converts layout, dtype and device on the way in and returns float64
NumPy arrays on the way out. It translates; it never re-derives batch norm.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    # what crosses the protocol: float64 NumPy arrays, channel-first
    Float64Array = NDArray[np.float64]


class FrameworkMissing(Exception):
    """The adapter's framework is not installed; ``install`` is the command that fixes it."""

    def __init__(self, adapter: str, install: str, cause: object = "") -> None:
        super().__init__(f"{adapter}: framework not installed ({cause}); install it with: {install}")
        self.adapter, self.install, self.cause = adapter, install, cause


class Unsupported(Exception):
    """The implementation does not offer this operation, dtype or device."""


class MomentumRequired(TypeError):
    """The framework refused a layer built without a momentum: its momentum argument has no
    default (Haiku's ``decay_rate``). Raised by an adapter built with no new-batch weight."""


# the input ranks the protocol knows, channel-first
RANKS = {2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}


@dataclass(frozen=True)
class Conventions:
    """What an implementation does, declared as data. ``equiv.probes`` measures each field.

    momentum_is:    "new_batch_weight" when the framework's momentum m weighs the new batch
                    (new = (1−m)·old + m·batch, PyTorch); "old_weight" when it weighs the
                    old value (new = m·old + (1−m)·batch, Keras, Flax, MXNet).
    default_momentum: the framework's own default momentum value; None where the layer has none
                    (the argument is required, Haiku's decay_rate; or the layer keeps no
                    running statistics, stax).
    running_var:    "unbiased" (÷(m−1)) or "biased" (÷m) batch variance in the running stats;
                    "none": the layer keeps no running statistics (stax), so the inference
                    properties do not apply.
    default_eps:    eps when none is given (always inside the square root).
    channel_axis:   channel axis of the framework's native layout (1: NCHW, -1: NHWC;
                    "none": no layout is normalized per channel, as the book's JAX 4-D code).
    variance:       "two-pass" (numerically stable) or "fast" (E[x²] − E[x]²).
    stats_update:   when the running stats change in a training step: "forward",
                    "backward" (only when gradients are computed), "forward+init".
    default_mode:   what a plain call of a freshly built layer does: "training",
                    "inference" or "error" (the mode must be given).
    mode_switch:    how the user selects the mode, in the framework's words.
    batch_of_one:   a training forward with one value per channel: "error", "beta"
                    (the output is beta), "nan" or "input" (the output is x itself, Paddle).
    configurable:   whether momentum and eps can be set on the layer (False: hard-coded).
    debias:         how the first updates of a freshly built layer weigh the batch: "none" (the
                    plain moving average from the initial values), "zero" (Adam's zero debiasing,
                    average = hidden/(1 − decay^t) after t updates: Haiku, Equinox mode="batch")
                    or "first" (the first training call replaces the initial values: Equinox
                    mode="ema").
    initial_stats:  "mean, var" of the running statistics of a freshly built layer ("0, 1"; Haiku's
                    are "0, 0"); "none" without running statistics.
    """

    momentum_is: str
    default_momentum: float | None
    running_var: str
    default_eps: float
    channel_axis: int | str
    variance: str
    stats_update: str
    default_mode: str
    mode_switch: str
    batch_of_one: str
    configurable: bool = True
    debias: str = "none"
    initial_stats: str = "0, 1"

    # --- the translation, in one place -------------------------------------------------
    @overload
    def new_batch_weight(self, momentum: float) -> float: ...
    @overload
    def new_batch_weight(self, momentum: None) -> None: ...
    @overload
    def new_batch_weight(self, momentum: float | None) -> float | None: ...

    def new_batch_weight(self, momentum: float | None) -> float | None:
        """Weight w of the new batch given the framework's own momentum value (None: none)."""
        if momentum is None:
            return None
        return momentum if self.momentum_is == "new_batch_weight" else 1.0 - momentum

    @overload
    def momentum_for(self, new_batch_weight: float) -> float: ...
    @overload
    def momentum_for(self, new_batch_weight: None) -> None: ...
    @overload
    def momentum_for(self, new_batch_weight: float | None) -> float | None: ...

    def momentum_for(self, new_batch_weight: float | None) -> float | None:
        """The framework's own momentum value that gives new-batch weight w (None: none)."""
        if new_batch_weight is None:
            return None
        return new_batch_weight if self.momentum_is == "new_batch_weight" else 1.0 - new_batch_weight

    @property
    def default_new_batch_weight(self) -> float | None:
        return self.new_batch_weight(self.default_momentum)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        w = self.default_new_batch_weight
        d["new_batch_weight"] = None if w is None else round(w, 12)
        return d


class Adapter:
    """One implementation of batch norm behind one protocol.

    Subclasses set the class attributes and implement the six methods below. The
    constructor takes the canonical setting (new-batch weight, eps); ``build`` gets it
    already translated to the framework's own momentum.
    """

    name: str = ""            # "torch.builtin"
    framework: str = ""       # distribution name, for the version: "torch"
    install: str = ""         # command that installs the framework
    conventions: Conventions = None  # type: ignore[assignment]  # every adapter sets its own
    dtypes: tuple[str, ...] = ("float64", "float32")
    devices: tuple[str, ...] = ("cpu",)
    has_gradients: bool = True
    external: bool = False     # True for code given as --adapters package.module:obj
    # the input ranks it takes (RANKS); the cases draw each (equiv.strategies.cases)
    ndims: tuple[int, ...] = (2, 4)
    # the non-default layer options it builds (equiv.options): name -> values; build reads self.options
    supported_options: dict[str, tuple[Any, ...]] = {}

    # set by the constructor
    num_features: int
    ndim: int
    dtype: str
    device: str
    new_batch_weight: float | None
    eps: float
    options: dict[str, Any]

    def __init__(self, num_features: int, ndim: int, *, dtype: str = "float32", device: str = "cpu",
                 new_batch_weight: float | None = None, eps: float | None = None,
                 options: dict[str, Any] | None = None) -> None:
        from equiv.options import unsupported
        why = unsupported(type(self), options)
        if why:
            raise Unsupported(why)
        self.options = dict(options or {})
        if ndim not in RANKS:
            raise ValueError(f"ndim must be one of {', '.join(f'{k} {v}' for k, v in RANKS.items())}")
        if ndim not in self.ndims:
            raise Unsupported(f"{self.name} takes no {ndim}-D input {RANKS[ndim]} (ndims {self.ndims})")
        if dtype not in self.dtypes:
            raise Unsupported(f"{self.name} does not support dtype {dtype}")
        if device not in self.devices:
            raise Unsupported(f"{self.name} does not support device {device}")
        conv = self.conventions
        self.num_features, self.ndim, self.dtype, self.device = num_features, ndim, dtype, device
        # None: no weight given and the layer has no default momentum (build raises MomentumRequired
        # where the framework requires one)
        self.new_batch_weight = conv.default_new_batch_weight if new_batch_weight is None else float(new_batch_weight)
        self.eps = conv.default_eps if eps is None else float(eps)
        self.build(conv.momentum_for(self.new_batch_weight), self.eps)

    # --- to implement ------------------------------------------------------------------
    def build(self, momentum: float | None, eps: float) -> None:
        """Create the layer with the framework's own momentum and eps (momentum None: none given,
        for a layer without a default momentum)."""
        raise NotImplementedError

    def set_state(self, gamma: Float64Array, beta: Float64Array, running_mean: Float64Array,
                  running_var: Float64Array) -> None:
        """Load per-channel vectors (length C) into the layer."""
        raise NotImplementedError

    def get_state(self) -> dict[str, Float64Array]:
        """Dict of float64 vectors: gamma, beta, running_mean, running_var (gamma and beta only for a
        layer without running statistics)."""
        raise NotImplementedError

    def forward_train(self, x: Float64Array) -> Float64Array:
        """Training-mode forward only (running stats change only if the framework does so here)."""
        raise NotImplementedError

    def forward_infer(self, x: Float64Array) -> Float64Array:
        """Inference-mode forward from the running statistics."""
        raise NotImplementedError

    def forward_default(self, x: Float64Array) -> Float64Array:
        """The call a user makes without choosing a mode (on a freshly built layer)."""
        raise NotImplementedError

    def forward_native(self, x: Float64Array) -> Float64Array:
        """Training-mode call of the native layer on x exactly as given: no layout conversion
        (the channel-axis probe uses it)."""
        raise NotImplementedError

    def train_step(self, x: Float64Array, dy: Float64Array
                   ) -> tuple[Float64Array, Float64Array | None, Float64Array | None, Float64Array | None]:
        """One training iteration: training forward, then backward of sum(y·dy).

        Returns (y, dx, dgamma, dbeta); the running stats change as in a real training step.
        Without gradients (``has_gradients = False``) dx, dgamma and dbeta are None.
        """
        raise NotImplementedError

    # --- shared helpers ----------------------------------------------------------------
    @classmethod
    def version(cls) -> str:
        return framework_version(cls.framework)

    def __repr__(self) -> str:
        return (f"<{self.name} C={self.num_features} ndim={self.ndim} {self.dtype} {self.device} "
                f"w={self.new_batch_weight} eps={self.eps:g}{''.join(f' {k}={v}' for k, v in self.options.items())}>")


def weight_applied(momentum: float, dtype: str = "float64") -> float:
    """The new-batch weight 1 − m of a layer whose momentum m weighs the old value and is held in
    ``dtype`` (float64: as given). For m = 1 − w that is 1 − fl(1 − w): for a tiny w not exactly w
    (in float32, w = 1e-5 is applied as 1.00136e-5). An adapter reports it as its
    ``new_batch_weight``, so that the oracle runs the weight the layer really applies."""
    from equiv.dtypes import round_to
    return 1.0 - float(round_to(momentum, dtype))


def same_weight(applied: float, asked: float, dtype: str = "float64") -> bool:
    """A layer that weighs the new batch by ``applied`` honours the weight ``asked``: equal to a
    few float64 ulps. Keras and Flax reach w only as 1 − fl(1 − w) (their momentum weighs the old
    value), up to half an ulp of 1 away from w; that is the same setting, not another one. A layer
    that rounds its momentum to its ``dtype`` (Haiku's decay) reaches w as 1 − fl_dtype(1 − w):
    the same setting when 1 − w is the same number in that dtype."""
    if abs(applied - asked) <= 4 * 2.0 ** -53 * abs(asked):
        return True
    from equiv.dtypes import round_to
    return dtype != "float64" and bool(round_to(1.0 - applied, dtype) == round_to(1.0 - asked, dtype))


def framework_version(distribution: str) -> str:
    """Installed version of a distribution ("tensorflow-cpu" also answers for "tensorflow")."""
    from importlib.metadata import PackageNotFoundError, version
    for name in (distribution, distribution.removesuffix("-cpu"), distribution + "-cpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


def to_numpy(a: Any) -> Float64Array:
    """Float64 NumPy copy of a framework array (already on the host)."""
    return np.array(a, dtype=np.float64)
