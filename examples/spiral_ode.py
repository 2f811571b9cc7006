"""Fit a neural ODE to a spiral, with gradients from the backsolve adjoint.

    python examples/spiral_ode.py --iterations 300 --method rk4 --adjoint backsolve

Random windows of the trajectory form a batch in which every sample has its own time grid;
the whole batch is one solve.
"""

import argparse

import solvers
from ctrnn.demo import run_spiral_demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--method", default="rk4", choices=sorted(solvers.methods()))
    parser.add_argument(
        "--adjoint", default="backsolve", choices=("direct", "backsolve", "checkpoint")
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_spiral_demo(
        args.iterations, method=args.method, adjoint=args.adjoint, seed=args.seed, log=print
    )
    print(f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f} in {result.seconds:.1f} s")
    return result


if __name__ == "__main__":
    main()
