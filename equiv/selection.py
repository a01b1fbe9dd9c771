"""Which implementations run: ``--adapters``, else ``$EQUIV_ADAPTERS``, else every registered
adapter whose framework is installed. One rule for ``equiv`` and for the pytest plugin."""
import os

from equiv import registry


class SelectionError(ValueError):
    """The selection names nothing that can run; the message says what to do."""


def adapter_names(spec=None, environ=None):
    """The names to run, in the order given. ``spec`` None falls back to ``$EQUIV_ADAPTERS``."""
    environ = os.environ if environ is None else environ
    origin = "--adapters"
    if spec is None and environ.get("EQUIV_ADAPTERS") is not None:
        spec, origin = environ["EQUIV_ADAPTERS"], "EQUIV_ADAPTERS"
    if spec is None:
        names = registry.available()
        if not names:
            raise SelectionError("no framework is installed, so no registered adapter can run; install one "
                                 f"(e.g. {registry.install_command('torch.builtin')}) or give your own with "
                                 "--adapters package.module:obj")
        return names
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise SelectionError(f"{origin} {spec!r} names no adapter; give names such as torch.builtin "
                             "(see: equiv list) or package.module:obj")
    unknown = [n for n in names if ":" not in n and not registry.is_known(n)]
    if unknown:
        raise SelectionError(f"{origin}: unknown adapter(s) {', '.join(unknown)}; use one of "
                             f"{', '.join(registry.known_names())} (see: equiv list), or package.module:obj "
                             "for your own")
    missing = [n for n in names if ":" not in n and not registry.framework_installed(n)]
    if missing and len(missing) == len(names):
        raise SelectionError(f"{origin}: none of the selected adapters can run here; install: " + "; ".join(
            f"`{registry.install_command(n)}` for {n}" for n in missing))
    return names
