"""NumPy float64 oracle for batch normalization.

Depends on NumPy alone. Every function computes in float64 whatever the input
dtype, and takes the channel axis as a parameter (``axis=1`` for NCHW / NC,
``axis=-1`` for NHWC / NC).
"""
from reference.batch_norm import (
    batch_norm_backward,
    batch_norm_infer,
    batch_norm_train,
    cumulative_weight,
    update_running_stats,
)

__all__ = [
    "batch_norm_train",
    "batch_norm_infer",
    "batch_norm_backward",
    "update_running_stats",
    "cumulative_weight",
]
