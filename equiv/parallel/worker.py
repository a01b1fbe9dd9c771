"""A framework in a process of its own: started once (a fresh interpreter, ``python -m
equiv.parallel.worker``, so a framework that must be configured before it initializes, TensorFlow's
logical devices, is), reused for every call, every call under a timeout. A call that does not answer
in time (a collective that waits for a replica that never comes) kills the process and raises
``Hung``; the next call starts a fresh one.

The served module's functions take and return picklable values (NumPy arrays, numbers, dicts).
"""
import atexit
import importlib
import json
import os
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection


class Hung(RuntimeError):
    """A call to a worker did not answer within its timeout; the worker was killed."""


class WorkerError(RuntimeError):
    """A call raised in the worker (an exception that does not pickle arrives as this, with its text)."""


def _serve(conn, module, setup):
    try:
        mod = importlib.import_module(module)
        if setup:
            getattr(mod, setup[0])(**setup[1])
        conn.send(("ok", None))
    except BaseException as e:   # noqa: BLE001  reported to the caller, who raises
        conn.send(("error", _portable(e)))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, kwargs = msg
        try:
            conn.send(("ok", getattr(mod, fn)(**kwargs)))
        except Exception as e:   # noqa: BLE001
            conn.send(("error", _portable(e)))


def _portable(e):
    import pickle
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:   # noqa: BLE001
        return WorkerError(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")


class _Duplex:
    """One connection made of two pipes (a reading and a writing end)."""

    def __init__(self, rfd, wfd):
        self.r, self.w = Connection(rfd, writable=False), Connection(wfd, readable=False)

    def send(self, obj):
        self.w.send(obj)

    def recv(self):
        return self.r.recv()

    def poll(self, timeout):
        return self.r.poll(timeout)

    def close(self):
        self.r.close(), self.w.close()


class Worker:
    def __init__(self, module, setup=None, start_timeout=300, env=None):
        child_in, parent_out = os.pipe()     # (read end, write end)
        parent_in, child_out = os.pipe()
        environ = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "equiv.parallel.worker", str(child_in),
                                      str(child_out), module, json.dumps(setup)],
                                     pass_fds=(child_in, child_out), env=environ, stdin=subprocess.DEVNULL)
        os.close(child_in), os.close(child_out)
        self.conn = _Duplex(parent_in, parent_out)
        self.module = module
        self._reply(start_timeout, f"starting {module}")

    @property
    def alive(self):
        return self.proc.poll() is None

    def call(self, fn, timeout, **kwargs):
        """``module.fn(**kwargs)`` in the worker; ``Hung`` when it takes longer than ``timeout`` s."""
        try:
            self.conn.send((fn, kwargs))
        except OSError:
            self.kill()
            raise WorkerError(f"{self.module}.{fn}: the worker process is gone") from None
        return self._reply(timeout, f"{self.module}.{fn}")

    def _reply(self, timeout, what):
        try:
            ready = self.conn.poll(timeout)
        except (EOFError, OSError):
            ready = True
        if not ready:
            self.kill()
            raise Hung(f"{what}: no answer within {timeout:g} s; its process was killed")
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise WorkerError(f"{what}: the worker process died (exit code {self.proc.returncode})") from None
        if status == "error":
            raise value
        return value

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.conn.send(None)
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


_POOL = {}


def worker(module, setup=None, env=None):
    """The running worker serving ``module`` (set up by ``module.setup[0](**setup[1])``), started on
    first use and restarted after it was killed."""
    key = (module, repr(setup))
    w = _POOL.get(key)
    if w is None or not w.alive:
        w = _POOL[key] = Worker(module, setup, env=env)
    return w


@atexit.register
def close_all():
    while _POOL:
        _POOL.popitem()[1].close()


if __name__ == "__main__":
    from equiv.parallel import worker as _self  # the importable module, so its exceptions unpickle as such
    _self._serve(_self._Duplex(int(sys.argv[1]), int(sys.argv[2])), sys.argv[3], json.loads(sys.argv[4]))
