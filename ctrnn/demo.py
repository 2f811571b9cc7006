"""The demo job: fit a neural ODE to a spiral, gradients by the backsolve adjoint.

The training data is a trajectory of the cubic spiral ``dy/dt = (y³) Aᵀ`` with
``A = [[-0.1, 2], [-2, -0.1]]`` (the example of Chen et al., Neural ordinary differential
equations, NeurIPS 2018), generated here with a tight dopri5 solve: nothing is downloaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import solvers

__all__ = ["SpiralResult", "run_spiral_demo", "spiral_trajectory"]

_TRUE_A = ((-0.1, 2.0), (-2.0, -0.1))


def spiral_trajectory(n_points: int = 1000, t_end: float = 25.0, dtype=torch.float32):
    """The ground-truth spiral: times ``(n_points,)`` and states ``(n_points, 2)``."""
    A = torch.tensor(_TRUE_A, dtype=torch.float64)
    t = torch.linspace(0.0, t_end, n_points, dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    sol = solvers.solve(solvers.ODE(lambda t, y: (y**3) @ A.T), y0, t, rtol=1e-9, atol=1e-10)
    return t.to(dtype), sol.ys[0].to(dtype)


class CubicODEFunc(nn.Module):
    """``dy/dt = MLP(y³)``: a 2 → hidden → 2 network with tanh."""

    def __init__(self, hidden: int = 50):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, t, y):
        return self.net(y**3)


@dataclass
class SpiralResult:
    losses: list[float]  # full-trajectory L1 loss at each evaluation
    iterations: list[int]
    seconds: float


def run_spiral_demo(
    iterations: int = 300,
    *,
    batch_size: int = 20,
    batch_time: int = 10,
    eval_every: int = 25,
    method: str = "dopri5",
    adjoint: str = "backsolve",
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> SpiralResult:
    """Train a neural ODE on random windows of the spiral; evaluate on the whole trajectory.

    Returns the evaluation losses (mean absolute error of the whole predicted trajectory);
    ``log`` receives one line per evaluation.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    t, true_y = spiral_trajectory()
    func = CubicODEFunc()
    opt = torch.optim.Adam(func.parameters(), lr=1e-3)
    options = dict(method=method, rtol=1e-5, atol=1e-6, adjoint=adjoint)
    if not solvers.methods()[method].adaptive:
        options["dt"] = float(t[1] - t[0])
    start = time.perf_counter()
    losses, its = [], []

    def evaluate(it):
        with torch.no_grad():
            pred = solvers.solve(solvers.ODE(func), true_y[:1], t, **options).ys[0]
        loss = (pred - true_y).abs().mean().item()
        losses.append(loss)
        its.append(it)
        if log is not None:
            log(
                f"iteration {it:4d}   trajectory L1 loss {loss:.4f}   "
                f"({time.perf_counter() - start:.1f} s)"
            )

    evaluate(0)
    for it in range(1, iterations + 1):
        # per-sample time grids: each window keeps its own times, in one batched solve
        s = torch.randint(0, len(t) - batch_time, (batch_size,), generator=gen)
        idx = s[:, None] + torch.arange(batch_time)
        pred = solvers.solve(solvers.ODE(func), true_y[s], t[idx], **options).ys
        loss = (pred - true_y[idx]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % eval_every == 0 or it == iterations:
            evaluate(it)
    return SpiralResult(losses, its, time.perf_counter() - start)
