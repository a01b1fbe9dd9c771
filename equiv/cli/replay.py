"""``equiv replay``: one printed Case again, the oracle's values beside the implementation's."""
import os

from equiv.cli._common import UsageError, adapter_names, add_impls, load


def add_parser(sub):
    p = sub.add_parser("replay", help="replay one printed Case(...) against an implementation, values side by side",
                       description="Runs the properties (or one, --property) on exactly the case a failure "
                                   "printed and shows, for each failing comparison, the oracle's and the "
                                   "implementation's values of the worst elements side by side.")
    p.add_argument("case", help="the Case(...) line, quoted")
    p.add_argument("--property", default=None, help="one property (default: every property)")
    add_impls(p)
    p.add_argument("--device", default=os.environ.get("EQUIV_DEVICE", "cpu"), help="cpu or cuda (default cpu)")
    p.set_defaults(fn=run)


def run(args):
    """One printed Case against one implementation, the oracle's values beside the implementation's."""
    import numpy as np

    from equiv.properties import PROPERTIES, replay
    from equiv.strategies import parse_case
    from equiv.tolerance import ToleranceError
    try:
        case = parse_case(args.case)
    except ValueError as e:
        raise UsageError(f"replay: {e}") from e
    if args.property and args.property not in PROPERTIES:
        raise UsageError(f"replay: unknown property {args.property!r}; properties: {', '.join(PROPERTIES)}")
    names = adapter_names(args.impls)
    props = [args.property] if args.property else list(PROPERTIES)
    failed = False
    print(f"{case!r}")
    for name in names:
        A, missing = load(name)
        if missing:
            print(f"{name}: {missing}")
            continue
        if case.dtype not in A.dtypes:
            print(f"{name}: has no dtype {case.dtype} (it has {', '.join(A.dtypes)})")
            continue
        ndims = A.ndims
        if case.ndim not in ndims:
            print(f"{name}: takes no {case.ndim}-D input (it takes {', '.join(f'{n}-D' for n in ndims)})")
            continue
        for pname in props:
            status, detail = replay(PROPERTIES[pname], A, case, args.device)
            if status == "pass":
                print(f"{name} {pname}: pass (largest error/bound {detail:.3g})")
            elif status == "n/a":
                print(f"{name} {pname}: does not apply: {detail}")
            else:
                failed = True
                print(f"{name} {pname}: FAIL: {detail}" if not isinstance(detail, ToleranceError)
                      else f"{name} {pname}: FAIL")
                if isinstance(detail, ToleranceError):
                    print(side_by_side(detail, np))
    return 1 if failed else 0


def side_by_side(e, np, rows=8):
    """The worst elements of a failed comparison: index, oracle, implementation, |error|, bound."""
    err = np.abs(e.actual - e.expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, np.nan_to_num(err, nan=np.inf) / e.bound).ravel()
    order = np.argsort(-ratio, kind="stable")[:rows]
    lines = [f"  {e.what}: {e.ratio:.3g}× the bound at worst",
             f"  {'index':16} {'oracle':>22} {'implementation':>22} {'|error|':>10} {'bound':>10} {'ratio':>9}"]
    for flat in order:
        i = tuple(int(v) for v in np.unravel_index(flat, e.actual.shape)) if e.actual.ndim else ()
        lines.append(f"  {str(i):16} {e.expected[i]:22.15g} {e.actual[i]:22.15g} {err[i]:10.3g} "
                     f"{e.bound[i]:10.3g} {ratio[flat]:9.3g}")
    return "\n".join(lines)
