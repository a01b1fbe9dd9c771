"""``equiv port SRC DST``: what to build DST with so that it computes what SRC computes, and how SRC's
state maps to DST's (``equiv.port.plan``)."""
import json

from equiv.cli._common import UsageError


def add_parser(sub):
    p = sub.add_parser("port", help="what to build DST with so it computes what SRC computes, and how SRC's "
                                    "batch-norm state maps to DST's")
    p.add_argument("src", help="the layer the checkpoint comes from (e.g. torch.builtin)")
    p.add_argument("dst", help="the layer it goes to (e.g. tf.keras)")
    p.add_argument("--momentum", type=float, help="SRC's momentum, in SRC's own meaning (default: SRC's default)")
    p.add_argument("--eps", type=float, help="SRC's eps (default: SRC's default)")
    p.add_argument("--target-eps", type=float, help="keep this eps in DST; the difference is folded into the "
                                                    "running variance")
    p.add_argument("--json", action="store_true", help="the plan as JSON")
    p.set_defaults(fn=run)


def run(args):
    from equiv.port import plan
    try:
        p = plan(args.src, args.dst, args.momentum, args.eps, args.target_eps)
    except ValueError as e:
        raise UsageError(str(e)) from e
    print(json.dumps(p.as_dict(), indent=1) if args.json else p.text().rstrip())
    return 0
