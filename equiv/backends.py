"""Per-framework facts of the process, read without importing the framework: the start of the backend
layer, which the adapters' registry and the execution paths both ask (neither imports the other for it)."""
import json
import os
import sys
from pathlib import Path


def keras_backend():
    """The Keras backend of this process, without importing Keras: Keras' own answer once it is imported,
    else $KERAS_BACKEND, else keras.json's "backend" ($KERAS_HOME or ~/.keras), else "tensorflow"."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"
