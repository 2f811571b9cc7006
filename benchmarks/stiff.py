"""Stiff problems: the native implicit methods against scipy's Radau and BDF, in one run.

ROBER (Robertson's chemical kinetics, t in [0, 1e5]) and Van der Pol with mu = 1000
(t in [0, 3000], two relaxation jumps), one sample each, float64, on the CPU. Reports
accepted and rejected steps, evaluations of the vector field (and Jacobians), the wall time
(median of the repeats) and the largest error relative to a tight Radau reference.

    python benchmarks/stiff.py [--repeats 3]

Prints a markdown section to paste under "## Stiff problems" in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import solvers
from benchmarks._common import cpu_model, git_commit, loadavg

MU = 1000.0


def rober(t, y):
    y1, y2, y3 = y.unbind(1)
    return torch.stack(
        [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], 1
    )


def rober_np(t, y):
    y1, y2, y3 = y
    return [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2]


def vdp(t, y):
    return torch.stack([y[:, 1], MU * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], 1)


def vdp_np(t, y):
    return [y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]]


PROBLEMS = {
    "ROBER": (rober, rober_np, [1.0, 0.0, 0.0], [0.0, 40.0, 1e3, 1e5], 1e-6, 1e-10),
    "Van der Pol, μ = 1000": (vdp, vdp_np, [2.0, 0.0], [0.0, 1000.0, 2000.0, 3000.0], 1e-6, 1e-8),
}


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def section(name, f, f_np, y0, ts, rtol, atol, repeats) -> list[str]:
    """The table of one problem."""
    span = (ts[0], ts[-1])
    ref = solve_ivp(f_np, span, y0, method="Radau", t_eval=ts, rtol=1e-11, atol=1e-14).y.T
    scale = np.abs(ref).max(0) + atol
    rows = [
        "",
        f"### {name}: t ∈ [{ts[0]:g}, {ts[-1]:g}], rtol = {rtol:g}, atol = {atol:g}",
        "",
        "| solver | accepted steps | rejected steps | evaluations | Jacobians | median s | "
        "max error / max abs(y) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in ("Radau", "BDF"):
        run = partial(
            solve_ivp, f_np, span, y0, method=method, rtol=rtol, atol=atol, dense_output=True
        )
        r, sec = timed(run, repeats)
        err = float((np.abs(r.sol(ts).T - ref) / scale).max())
        rows.append(
            f"| scipy {method} | {len(r.t) - 1} | — | {r.nfev} | {r.njev} | {sec:.3f} | {err:.1e} |"
        )
    y0t = torch.tensor([y0], dtype=torch.float64)
    tst = torch.tensor(ts, dtype=torch.float64)
    run = partial(
        solvers.solve,
        solvers.ODE(f),
        y0t,
        tst,
        method="kvaerno5",
        rtol=rtol,
        atol=atol,
        max_steps=100_000,
    )
    sol, sec = timed(run, repeats)
    acc = int(sol.stats.num_accepted_steps[0])
    rej = int(sol.stats.num_rejected_steps[0])
    err = float((np.abs(sol.ys[0].numpy() - ref) / scale).max())
    rows.append(
        f"| native kvaerno5 | {acc} | {rej} | {sol.stats.num_function_evals} | {acc + rej} | "
        f"{sec:.3f} | {err:.1e} |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load0 = loadavg()
    lines = [
        "## Stiff problems",
        "",
        f"- Machine: {cpu_model()}, 1 torch thread; CPU",
        f"- torch {torch.__version__}, Python {platform.python_version()}; commit {git_commit()}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Command: `python benchmarks/stiff.py --repeats {args.repeats}`",
    ]
    body = []
    for name, spec in PROBLEMS.items():
        body += section(name, *spec, args.repeats)
    lines.append(
        f"- 1-minute load average at start / end: {load0} / {loadavg()} (the machine's cores "
        "are shared; above their number, other processes compete for them)"
    )
    lines.append(
        "- scipy counts the Jacobians it computed (finite differences, `njev`) and reuses them "
        "across steps; native `kvaerno5` computes one (autograd) per attempted step (the column), "
        "and more where a stage falls back to full Newton. scipy's "
        "rejected steps are not reported."
    )
    print("\n".join(lines + body))


if __name__ == "__main__":
    main()
