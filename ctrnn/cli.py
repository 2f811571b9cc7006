"""The ``ctrnn`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ctrnn import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrnn",
        description="Continuous-time recurrent neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "demo",
        help="train a neural ODE on a spiral with the backsolve adjoint (CPU, under a minute)",
        description="Train a neural ODE on a spiral with the backsolve adjoint.",
    )
    return parser


def _run_demo() -> int:
    # Imported here so that `ctrnn --help` stays fast and does not load the solver stack.
    from ctrnn.demo import run_spiral_demo

    losses = run_spiral_demo()
    if losses:
        print(f"demo finished: loss {losses[0]:.4g} -> {losses[-1]:.4g} over {len(losses)} steps")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ctrnn`` command.

    Args:
        argv: The arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The process exit status.
    """
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        return _run_demo()
    raise AssertionError(f"unhandled command {args.command!r}")
