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
    demo = commands.add_parser(
        "demo",
        help="train a neural ODE on a spiral with the backsolve adjoint (CPU, about a minute)",
        description="Train a neural ODE on a spiral with the backsolve adjoint.",
    )
    demo.add_argument(
        "--iterations", type=_positive_int, default=300, help="training iterations (default 300)"
    )
    demo.add_argument("--method", default="rk4", help="solver method (default rk4)")
    demo.add_argument(
        "--adjoint",
        default="backsolve",
        choices=("direct", "backsolve", "checkpoint"),
        help="how gradients are computed (default backsolve)",
    )
    demo.add_argument("--seed", type=int, default=0)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _run_demo(args: argparse.Namespace) -> int:
    # Imported here so that `ctrnn --help` stays fast and does not load the solver stack.
    import solvers
    from ctrnn.demo import run_spiral_demo

    if args.method not in solvers.methods():
        raise SystemExit(
            f"ctrnn demo: unknown method {args.method!r}; valid: {', '.join(solvers.methods())}"
        )
    print(
        f"Fitting a neural ODE to a spiral: method {args.method}, adjoint {args.adjoint}, "
        f"{args.iterations} iterations of 20 windows with per-sample time grids"
    )
    result = run_spiral_demo(
        args.iterations, method=args.method, adjoint=args.adjoint, seed=args.seed, log=print
    )
    first, last = result.losses[0], result.losses[-1]
    print(
        f"demo finished in {result.seconds:.1f} s: held-out L1 loss {first:.4f} -> {last:.4f}; "
        f"whole trajectory from its first point: L1 {result.trajectory_loss:.4f}"
    )
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
        return _run_demo(args)
    raise AssertionError(f"unhandled command {args.command!r}")
