"""The ``equiv`` command line: one module per command or group of commands, each declaring its arguments
(``add_parser(sub)``) beside its body (``run(args)``). Nothing outside this package imports it; it sits on top."""
import argparse
import os
import sys

from equiv import io
from equiv.cli import (
    check,
    conventions,
    data,
    distributed,
    fingerprint,
    generate,
    lenet,
    lenet_runs,
    listing,
    port,
    replay,
)
from equiv.cli._common import UsageError

DESCRIPTION = """\
bn-equiv: batch norm is "the same layer" in every framework, yet it is not. This tool
runs each implementation (framework built-ins and the book's from-scratch versions)
against a NumPy float64 oracle under Hypothesis, measures its conventions (momentum
meaning, running-variance estimator, default eps, variance algorithm, when running
stats update, default mode, batch of one) and prints what it found.
"""

EPILOG = """\
examples:
  equiv list                                   adapters, installed or not
  equiv check                                  every installed adapter
  equiv check --impls torch.builtin            one adapter
  equiv check --impls mypkg.bn:batch_norm      your own implementation (see README)
  equiv replay "Case(...)" --impls A           one failing case again, oracle beside implementation
  equiv distributed --impls torch.ddp          data-parallel BatchNorm against the oracle, conventions measured
  equiv conventions                            measure; merge into results/conventions.*
  equiv conventions --data reference/data      ... into the committed table (never with older releases)
  equiv findings                               write reference/data/findings.md
  equiv porting                                write docs/porting.md from the measured conventions
  equiv port torch.builtin tf.keras            one pair: DST's arguments and the state mapping
  equiv vectors                                regenerate the golden vectors into results/vectors/
  equiv data [--data-dir D] [--download]       find and verify Fashion-MNIST
  equiv lockstep --impls torch.builtin         BN-LeNet beside the NumPy reference, per layer
  equiv train --impls torch.builtin --epochs 10  full Fashion-MNIST run, JSON + PNG into results/runs/
  equiv runs                                   accuracy band from seeds; every run checked against it
  equiv bench --device cuda                    s/epoch per implementation, scratch/built-in ratios
  equiv report                                 results/*.json -> report/report.md, report.html
  equiv fingerprint [--save]                   compare installed frameworks with stored fingerprints
  equiv readme [--check]                       regenerate the numbers and tables of README.md
  equiv docs [--check]                         regenerate the documentation site's generated pages (docs/)

--impls names the implementations in every command (--adapters, and train's --framework/--impl,
are older spellings of it).

Commands that write results write under results/ unless given --out (or --data); committed
evidence under reference/data is written only when named, and never replaced by fewer or
older rows.

exit status: 0 all properties pass (documented divergences count as pass), 1 a property
failed or a convention differs from its declaration, 2 a usage error.
"""

# The commands in the order of `equiv --help`: each function adds one subcommand to the parser.
COMMANDS = (listing.add_parser, check.add_parser, distributed.add_parser, replay.add_parser,
            conventions.add_parser, generate.add_findings, generate.add_report, fingerprint.add_parser,
            data.add_parser, lenet.add_lockstep, lenet.add_train, lenet_runs.add_runs, lenet_runs.add_bench,
            generate.add_porting, port.add_parser, generate.add_vectors, generate.add_readme, generate.add_docs)
# A new command: a module of its own here with add_parser(sub), which declares its
# arguments and sets fn=run, and run(args), which returns the exit status; its add_parser named above.


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the option, the problem, where to look)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser():
    parser = Parser(prog="equiv", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _quiet_frameworks():
    """TensorFlow's C++ info lines (oneDNN, CPU features, absl) and its retracing warnings are
    not the tool's output: keep them out of check and fingerprint (set the variable to see them)."""
    import logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv=None):
    _quiet_frameworks()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    try:
        return args.fn(args)
    except (UsageError, io.OutputError, io.WouldLoseData) as e:
        print(f"equiv: error: {e}", file=sys.stderr)
        return 2
