"""Native adaptive solvers against scipy's DOP853 at tight tolerance on the DETEST problems.

Problem classes A (single equations) and B (small systems) of T. E. Hull, W. H. Enright,
B. M. Fellen and A. E. Sedgwick, Comparing numerical methods for ordinary differential
equations, SIAM J. Numer. Anal. 9 (1972), all on t in [0, 20].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import solvers

integrate = pytest.importorskip("scipy.integrate")

F64 = torch.float64
T_OUT = np.linspace(0.0, 20.0, 11)


@dataclass(frozen=True)
class Problem:
    numpy_f: Callable  # f(t, y) with y of shape (state,), for scipy
    torch_f: Callable  # f(t, y) with t (batch,) and y (batch, state)
    y0: tuple[float, ...]
    perturbation: float  # added to y0 for a second sample


def _b4_np(t, y):
    r = np.sqrt(y[0] ** 2 + y[1] ** 2)
    return np.array([-y[1] - y[0] * y[2] / r, y[0] - y[1] * y[2] / r, y[0] / r])


def _b4_torch(t, y):
    y1, y2, y3 = y.unbind(1)
    r = torch.sqrt(y1**2 + y2**2)
    return torch.stack([-y2 - y1 * y3 / r, y1 - y2 * y3 / r, y1 / r], dim=1)


def _stack(*cols):
    return torch.stack(cols, dim=1)


PROBLEMS = {
    "A1": Problem(lambda t, y: -y, lambda t, y: -y, (1.0,), 0.2),
    "A2": Problem(lambda t, y: -(y**3) / 2, lambda t, y: -(y**3) / 2, (1.0,), 0.2),
    "A3": Problem(lambda t, y: y * np.cos(t), lambda t, y: y * torch.cos(t), (1.0,), 0.2),
    "A4": Problem(
        lambda t, y: y / 4 * (1 - y / 20), lambda t, y: y / 4 * (1 - y / 20), (1.0,), 0.2
    ),
    "A5": Problem(
        lambda t, y: (y - t) / (y + t),
        lambda t, y: (y - t) / (y + t),
        (4.0,),
        0.2,
    ),
    "B1": Problem(
        lambda t, y: np.array([2 * (y[0] - y[0] * y[1]), -(y[1] - y[0] * y[1])]),
        lambda t, y: _stack(2 * (y[:, 0] - y[:, 0] * y[:, 1]), -(y[:, 1] - y[:, 0] * y[:, 1])),
        (1.0, 3.0),
        0.1,
    ),
    "B2": Problem(
        lambda t, y: np.array([-y[0] + y[1], y[0] - 2 * y[1] + y[2], y[1] - y[2]]),
        lambda t, y: _stack(-y[:, 0] + y[:, 1], y[:, 0] - 2 * y[:, 1] + y[:, 2], y[:, 1] - y[:, 2]),
        (2.0, 0.0, 1.0),
        0.1,
    ),
    "B3": Problem(
        lambda t, y: np.array([-y[0], y[0] - y[1] ** 2, y[1] ** 2]),
        lambda t, y: _stack(-y[:, 0], y[:, 0] - y[:, 1] ** 2, y[:, 1] ** 2),
        (1.0, 0.0, 0.0),
        0.1,
    ),
    "B4": Problem(_b4_np, _b4_torch, (3.0, 0.0, 0.0), 0.1),
    "B5": Problem(
        lambda t, y: np.array([y[1] * y[2], -y[0] * y[2], -0.51 * y[0] * y[1]]),
        lambda t, y: _stack(y[:, 1] * y[:, 2], -y[:, 0] * y[:, 2], -0.51 * y[:, 0] * y[:, 1]),
        (0.0, 1.0, 1.0),
        0.1,
    ),
}

# method: (rtol, atol, bound on the error relative to max(|reference|, FLOOR))
METHODS = {
    "dopri5": (1e-10, 1e-12, 1e-6),
    "tsit5": (1e-10, 1e-12, 1e-6),
    "bosh3": (1e-8, 1e-10, 1e-4),
}
# Components that decay towards 0 (A1, B3) are compared absolutely below this magnitude.
FLOOR = 1e-2
# bosh3 at rtol 1e-8 takes thousands of steps on these; a couple of seconds each or more.
SLOW = {("bosh3", "A3"), ("bosh3", "B1"), ("bosh3", "B4"), ("bosh3", "B5")}

_REFERENCE: dict[str, np.ndarray] = {}


def initial_states(problem: Problem) -> np.ndarray:
    y0 = np.asarray(problem.y0, dtype=np.float64)
    return np.stack([y0, y0 + problem.perturbation])


def reference(name: str) -> np.ndarray:
    """``(batch, T, state)`` from scipy's DOP853 at rtol = atol = 1e-12 (cached)."""
    if name not in _REFERENCE:
        problem = PROBLEMS[name]
        out = []
        for y0 in initial_states(problem):
            res = integrate.solve_ivp(
                problem.numpy_f,
                (T_OUT[0], T_OUT[-1]),
                y0,
                method="DOP853",
                t_eval=T_OUT,
                rtol=1e-12,
                atol=1e-12,
            )
            assert res.success, res.message
            out.append(res.y.T)
        _REFERENCE[name] = np.stack(out)
    return _REFERENCE[name]


CASES = [
    pytest.param(m, p, marks=pytest.mark.slow) if (m, p) in SLOW else pytest.param(m, p)
    for m in METHODS
    for p in PROBLEMS
]


@pytest.mark.parametrize(("method", "name"), CASES)
def test_against_scipy_dop853(method, name):
    problem = PROBLEMS[name]
    rtol, atol, bound = METHODS[method]
    y0 = torch.tensor(initial_states(problem), dtype=F64)
    t = torch.tensor(T_OUT, dtype=F64)
    sol = solvers.solve(
        solvers.ODE(problem.torch_f),
        y0,
        t,
        method=method,
        rtol=rtol,
        atol=atol,
        max_steps=100_000,
    )
    assert sol.status == (solvers.Status.SUCCESS,) * 2
    assert sol.ys.shape == (2, len(T_OUT), len(problem.y0))
    ref = reference(name)
    ys = sol.ys.numpy()
    rel = np.abs(ys - ref) / np.maximum(np.abs(ref), FLOOR)
    assert rel.max() < bound, (method, name, float(rel.max()))
    assert (sol.stats.num_accepted_steps > 0).all()


def test_per_sample_grids_against_scipy():
    """Two samples of A3 (non-autonomous) on different time grids, in one batched solve."""
    problem = PROBLEMS["A3"]
    grids = np.stack([np.linspace(0.0, 10.0, 6), np.linspace(1.0, 6.0, 6)])
    y0 = np.array([[1.0], [0.5]])
    ref = np.stack(
        [
            integrate.solve_ivp(
                problem.numpy_f,
                (g[0], g[-1]),
                y,
                method="DOP853",
                t_eval=g,
                rtol=1e-12,
                atol=1e-12,
            ).y.T
            for g, y in zip(grids, y0)
        ]
    )
    sol = solvers.solve(
        solvers.ODE(problem.torch_f),
        torch.tensor(y0, dtype=F64),
        torch.tensor(grids, dtype=F64),
        method="dopri5",
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(sol.ys.numpy(), ref, rtol=1e-7, atol=1e-9)
