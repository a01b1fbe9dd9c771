"""Layer states as trained networks have them, drawn by Hypothesis: a conv or linear layer and the
BatchNorm after it in inference, with its running statistics taken from the layer's own output (as
training leaves them, with some drift), in one of four kinds:

- ``ordinary``: unit-scale input, weights of std 1/sqrt(K), gamma ≈ 1, small beta;
- ``dead``: two channels whose BatchNorm saw a constant output: running variance 0 and 1e-8 (eps
  1e-5), weights 1e-3 of the others (the channel is nearly, not exactly, dead at inference);
- ``offset``: input at a large offset (|x| ≈ 10 … 1e4; float16 up to 3e3), so the layer's output and
  its running mean are large (|mean| up to ~1e4) against its spread;
- ``large_gamma``: |gamma| from 10 to 1e3;
- ``dead_large_gamma``: both at once (a channel that died with a large gamma: s up to 3e5).

A ``FoldState`` holds scalars (kind, dtype, seed, bias, stride, padding, eps) and builds its arrays
from them with NumPy, rounded to the dtype: a failing example prints as one short line.
"""
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from equiv.dtypes import representable, round_to
from reference import conv_bn as cb
from reference.batch_norm import batch_norm_infer

KINDS = ("ordinary", "dead", "offset", "large_gamma", "dead_large_gamma")
SHAPES = {"conv": ((2, 3, 6, 6), (4, 3, 3, 3)), "linear": ((4, 8), (4, 8))}   # (x, W): few shapes to compile
MAX_OFFSET = {"float16": 3e3}


@dataclass
class FoldState:
    layer: str          # "conv" (Conv2d → BatchNorm2d) or "linear" (Linear → BatchNorm1d)
    kind: str           # one of KINDS
    dtype: str
    seed: int
    bias: bool
    stride: int = 1
    padding: int = 0
    eps: float = 1e-5
    arrays: dict = field(default=None, repr=False, compare=False)

    def layer_out(self, x, w, b=None):
        if self.layer == "conv":
            return cb.conv2d(x, w, b, stride=self.stride, padding=self.padding)
        return cb.linear(x, w, b)

    def __getattr__(self, name):
        if name in ("x", "w", "b", "gamma", "beta", "running_mean", "running_var"):
            return self._arrays()[name]
        raise AttributeError(name)

    def _arrays(self):
        if self.arrays is None:
            self.arrays = self._draw()
        return self.arrays

    def _draw(self):
        rng = np.random.default_rng([self.seed, KINDS.index(self.kind)])
        r = lambda a: round_to(a, self.dtype)  # noqa: E731
        x_shape, w_shape = SHAPES[self.layer]
        c_out, k = w_shape[0], int(np.prod(w_shape[1:]))
        x = rng.standard_normal(x_shape)
        if self.kind == "offset":
            top = np.log10(MAX_OFFSET.get(self.dtype, 1e4))
            x = x + rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(1, top)
        w = rng.standard_normal(w_shape) / np.sqrt(k)
        dead = self.kind.startswith("dead")
        if dead:
            w[:2] *= 1e-3
        x, w = r(x), r(w)
        b = r(rng.standard_normal(c_out) * 0.1) if self.bias else None
        z = self.layer_out(x, w, b)
        red = (0,) + tuple(range(2, z.ndim))
        mean = z.mean(axis=red) + rng.standard_normal(c_out) * 0.1 * z.std(axis=red)
        var = z.var(axis=red) * 10.0 ** rng.uniform(-0.3, 0.3, c_out)
        if dead:
            var[:2] = (0.0, 1e-8)
        gamma = 1 + 0.3 * rng.standard_normal(c_out)
        if self.kind.endswith("large_gamma"):
            gamma = rng.choice([-1.0, 1.0], c_out) * 10.0 ** rng.uniform(1, 3, c_out)
        return dict(x=x, w=w, b=b, gamma=r(gamma), beta=r(0.3 * rng.standard_normal(c_out)),
                    running_mean=r(mean), running_var=r(var))

    @property
    def bn(self):
        return dict(gamma=self.gamma, beta=self.beta, running_mean=self.running_mean, running_var=self.running_var)

    def oracle(self):
        """The float64 output of the layer and BatchNorm (unfolded; the folded form is the same y)."""
        z = self.layer_out(self.x, self.w, self.b)
        return batch_norm_infer(z, self.gamma, self.beta, self.running_mean, self.running_var, eps=self.eps)

    def representable(self):
        """Every array and the oracle's output within the dtype's range (margin 4): a float16 model
        holds no running variance of 1e7 (an offset input with padding makes one)."""
        arrays = [a for a in self._arrays().values() if a is not None]
        return representable(self.dtype, *arrays, self.oracle())

    def bound_args(self):
        return dict(eps=self.eps, dtype=self.dtype, layer=self.layer, stride=self.stride, padding=self.padding)


@st.composite
def fold_states(draw, layer, kind, dtypes=("float32",)):
    """A FoldState of the given layer and kind; dtype, seed, bias, stride, padding and eps drawn."""
    conv = layer == "conv"
    return FoldState(layer=layer, kind=kind, dtype=draw(st.sampled_from(dtypes)), seed=draw(st.integers(0, 2**32 - 1)),
                     bias=draw(st.booleans()), stride=draw(st.sampled_from((1, 2))) if conv else 1,
                     padding=draw(st.sampled_from((0, 1))) if conv else 0,
                     eps=1e-5 if kind.startswith("dead") else draw(st.sampled_from((1e-5, 1e-3))))


def bn_input(state):
    """The input of a BatchNorm alone (the routes' "bn" layer): the state's layer output z, rounded to its dtype."""
    return round_to(state.layer_out(state.x, state.w, state.b), state.dtype)


def model_input(state, layer):
    """The NCHW (or N, C) input of the model of ``layer`` ("conv", "linear", or "bn": bn_input) in the state's dtype."""
    return np.asarray(bn_input(state) if layer == "bn" else state.x).astype(state.dtype)
