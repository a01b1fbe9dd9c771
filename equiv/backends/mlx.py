"""MLX's backend: the process's MLX setup."""
import mlx.core as mx


def setup():
    """Every array on MLX's CPU device, process-wide (``equiv.registry`` calls it before it loads the
    adapter, the adapter again as it builds a layer)."""
    mx.set_default_device(mx.cpu)
