"""``equiv list``: the adapters and the data-parallel implementations, installed or not."""
from equiv import registry


def add_parser(sub):
    p = sub.add_parser("list", help="list the adapters and the data-parallel implementations, "
                                    "and whether their framework is installed")
    p.set_defaults(fn=run)


def run(args):
    names = registry.known_names()
    width = max(map(len, names))
    for name in names:
        state = "installed" if registry.framework_installed(name) else f"missing ({registry.install_command(name)})"
        if not registry.implemented(name):
            state = "not yet implemented"
        print(f"{name:{width}} {state}")
    _list_parallel()
    return 0


def _list_parallel():
    """The data-parallel implementations (equiv/parallel/): name, engine, installed or not; read
    from the declared table, so no framework is imported."""
    from equiv.parallel.conventions import ENGINE
    names = registry.known_names(registry.PARALLEL)
    width = max(map(len, names))
    print("\ndata-parallel (equiv/parallel/; tests/test_parallel*.py):")
    for name in names:
        ok = registry.framework_installed(name, registry.PARALLEL)
        hint = "" if ok else f" ({registry.install_command(name, registry.PARALLEL)})"
        print(f"{name:{width}} {'installed' if ok else 'missing':9} {ENGINE[name]}{hint}")
