"""Dtypes the suite knows: their unit roundoff and rounding of float64 data to them in NumPy."""
import numpy as np

# Unit roundoff u = 2^-p for p significand bits (round to nearest).
UNIT_ROUNDOFF = {
    "float64": 2.0 ** -53,
    "float32": 2.0 ** -24,
    "float16": 2.0 ** -11,
    "bfloat16": 2.0 ** -8,
}
# Underflow: absolute error of one rounding in the subnormal range (half the smallest
# subnormal); below the smallest normal number, rounding error is absolute, not relative.
UNDERFLOW = {
    "float64": 2.0 ** -1075,
    "float32": 2.0 ** -150,
    "float16": 2.0 ** -25,
    "bfloat16": 2.0 ** -134,
}
# Largest finite value, for strategies that must stay in range.
MAX_VALUE = {"float64": 1.8e308, "float32": 3.4e38, "float16": 65504.0, "bfloat16": 3.39e38}
DTYPES = tuple(UNIT_ROUNDOFF)


def round_to(a, dtype):
    """Round float64 data to ``dtype`` and return it as float64 (what the framework sees, exactly)."""
    a = np.asarray(a, dtype=np.float64)
    if dtype == "bfloat16":
        # bfloat16 is the top 16 bits of a float32: round to nearest even on the dropped bits.
        bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.astype(np.uint32).view(np.float32).astype(np.float64)
    return a.astype(dtype).astype(np.float64)


def representable(dtype, *arrays, margin=4.0):
    """True when every value is finite and |value| · margin fits the dtype's range."""
    import numpy as _np
    return all(_np.all(_np.isfinite(a)) and _np.abs(a).max(initial=0.0) * margin < MAX_VALUE[dtype]
               for a in arrays)
