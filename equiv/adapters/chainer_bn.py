"""chainer.links: ``chainer.links.BatchNormalization`` (Chainer 7.8.1, NumPy arrays on the CPU), NCHW.

Its ``decay`` weighs the old value (chainer/functions/normalization/batch_normalization.py:62-65: running
·= decay, += (1 − decay)·batch), the running variance is unbiased (:52, adjust = m/max(m − 1, 1)), eps
defaults to 2e-5 and decay to 0.9 (chainer/links/normalization/batch_normalization.py:195). The mode is
Chainer's process-wide configuration ``chainer.config.train``, True by default (a plain call trains);
the adapter sets it with ``chainer.using_config("train", ...)``. Gradients: ``y.grad = dy``,
``y.backward()`` after ``cleargrads()``.

Layer options (equiv.options): ``momentum="cumulative"`` is ``finetune=True`` at every training call
(links/normalization/batch_normalization.py:325-327: N += 1, decay = 1 − 1/N, the cumulative average
over the calls since ``start_finetuning``), ``affine`` False / "no_scale" / "no_center"
(``use_gamma``/``use_beta`` False: the link has no such parameter and applies 1 / 0, :217-228).
"""
import chainer
import numpy as np
from chainer import links

from equiv.conventions import DECLARED
from equiv.core import Adapter


class ChainerBN(Adapter):
    name, framework = "chainer.links", "chainer"
    conventions = DECLARED[name]
    dtypes = ("float64", "float32", "float16")
    ndims = (2, 3, 4, 5)   # axis None reduces over every axis but 1 (L:52-59)
    supported_options = {"momentum": ("cumulative",), "affine": (False, "no_scale", "no_center")}

    def build(self, momentum, eps):
        # the layer weighs the batch by 1 − decay (F:62-65): report that weight (1 − fl(1 − w), not w)
        self.new_batch_weight = self.conventions.new_batch_weight(momentum)
        affine = self.options.get("affine", True)
        self.link = links.BatchNormalization(self.num_features, decay=momentum, eps=eps, dtype=np.dtype(self.dtype),
                                             use_gamma=affine in (True, "no_center"),
                                             use_beta=affine in (True, "no_scale"))
        self.finetune = self.options.get("momentum") == "cumulative"

    def _a(self, a):
        return np.asarray(a, dtype=np.float64).astype(self.dtype)

    def set_state(self, gamma, beta, running_mean, running_var):
        link = self.link
        for name, v in (("gamma", gamma), ("beta", beta)):
            if getattr(link, name, None) is not None:
                getattr(link, name).array[...] = self._a(v)
        link.avg_mean[...] = self._a(running_mean).astype(link.avg_mean.dtype)
        link.avg_var[...] = self._a(running_var).astype(link.avg_var.dtype)

    def get_state(self):
        link, c = self.link, self.num_features
        f = lambda p, default: default if p is None else np.array(p.array, dtype=np.float64)  # noqa: E731
        return dict(gamma=f(getattr(link, "gamma", None), np.ones(c)), beta=f(getattr(link, "beta", None), np.zeros(c)),
                    running_mean=np.array(link.avg_mean, dtype=np.float64),
                    running_var=np.array(link.avg_var, dtype=np.float64))

    def _call(self, x, train):
        with chainer.using_config("train", train):
            y = self.link(chainer.Variable(self._a(x)), **({"finetune": True} if train and self.finetune else {}))
        return y

    def forward_train(self, x):
        return np.array(self._call(x, True).array, dtype=np.float64)

    def forward_infer(self, x):
        return np.array(self._call(x, False).array, dtype=np.float64)

    def forward_default(self, x):
        return np.array(self._call(x, chainer.config.train).array, dtype=np.float64)

    def forward_native(self, x):
        return self.forward_train(x)

    def train_step(self, x, dy):
        link = self.link
        link.cleargrads()
        xv = chainer.Variable(self._a(x))
        with chainer.using_config("train", True):
            y = link(xv, **({"finetune": True} if self.finetune else {}))
        y.grad = self._a(dy)
        y.backward()
        grad = lambda p: None if p is None else np.array(p.grad, dtype=np.float64)  # noqa: E731
        return (np.array(y.array, dtype=np.float64), np.array(xv.grad, dtype=np.float64),
                grad(getattr(link, "gamma", None)), grad(getattr(link, "beta", None)))
