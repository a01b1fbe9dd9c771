"""Paths of the paddle adapter: a few lines over the eager one.

``paddle.builtin`` calls ``self.layer(self._in(x))`` and returns ``self._out(y)``; a path changes the
layer's ``data_format`` and what goes in and out, nothing else.
"""
from dataclasses import replace

import numpy as np

from equiv.backends.paddle import numpy, tensor


def nhwc(base):
    """BatchNorm2D(data_format="NHWC") on channels-last input (4-D; 2-D as eager): canonical NCHW data
    is transposed to NHWC on the way in and back on the way out, gradients included. The native layout
    (forward_native, the channel-axis probe) is NHWC."""
    class NHWC(base):
        data_format = "NHWC"
        conventions = replace(base.conventions, channel_axis=-1)   # the layer's native layout

        def _in(self, x, requires_grad=False):
            if self.ndim == 4:
                x = np.transpose(np.asarray(x, dtype=np.float64), (0, 2, 3, 1))
            return tensor(x, self.dtype, requires_grad)

        def _out(self, t):
            y = numpy(t)
            return np.transpose(y, (0, 3, 1, 2)) if self.ndim == 4 else y
    return NHWC
