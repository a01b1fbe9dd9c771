"""MindSpore's backend: the process's MindSpore setup."""
import mindspore as ms

_ready = False


def setup():
    """PyNative mode (eager) on the CPU, process-wide and once (``equiv.registry`` calls it before it
    loads the adapter, the adapter again as it builds a layer)."""
    global _ready
    if not _ready:
        _ready = True
        ms.set_context(mode=ms.PYNATIVE_MODE)
        ms.set_device("CPU")
