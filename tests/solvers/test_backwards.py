"""Solves backwards in time: a strictly decreasing ``t`` (shared or per sample)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

import solvers
from solvers import CDE, DDE, ODE, SDE, HamiltonianODE

F64 = torch.float64


def field(t, y):
    return -torch.sin(t) * y


def exact(y0, a, b):
    """y(b) from y(a) = y0 for dy/dt = -sin(t) y."""
    return y0 * torch.exp(torch.cos(b) - torch.cos(a))


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="rk4", dt=0.01),
        dict(method="dopri5", rtol=1e-10, atol=1e-12),
        dict(method="tsit5", rtol=1e-10, atol=1e-12, adjoint="checkpoint"),
    ],
)
def test_shared_and_per_sample_decreasing_times(kw):
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    t = torch.tensor([2.0, 1.5, 0.2, -1.0], dtype=F64)
    sol = solvers.solve(ODE(field), y0, t, **kw)
    assert sol.ts is t and sol.ys.shape == (2, 4, 1)
    torch.testing.assert_close(sol.ys[..., 0], exact(y0, t[0], t), rtol=1e-8, atol=0)
    per_sample = torch.stack([t, t - 0.5])
    sol = solvers.solve(ODE(field), y0, per_sample, **kw)
    want = exact(y0, per_sample[:, :1], per_sample)
    torch.testing.assert_close(sol.ys[..., 0], want, rtol=1e-8, atol=0)


def test_forwards_then_backwards_returns_to_the_start():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16, dtype=F64), nn.Tanh(), nn.Linear(16, 3, dtype=F64))
    ode = ODE(lambda t, y: net(y) * torch.cos(t))
    y0 = torch.randn(4, 3, dtype=F64)
    kw = dict(method="dopri5", rtol=1e-11, atol=1e-12)
    end = solvers.solve(ode, y0, torch.tensor([0.0, 1.3], dtype=F64), **kw).ys[:, -1]
    back = solvers.solve(ode, end, torch.tensor([1.3, 0.0], dtype=F64), **kw).ys[:, -1]
    torch.testing.assert_close(back, y0, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("adjoint", ["direct", "backsolve"])
def test_gradients_match_finite_differences(adjoint):
    w = torch.tensor([0.7, -0.3], dtype=F64, requires_grad=True)

    def fn(y0, t, w):
        ode = ODE(lambda s, y: -w * torch.sin(s) * y + 0.1 * y**2)
        adj = (
            solvers.BacksolveAdjoint(params=[w], rtol=1e-10, atol=1e-12)
            if adjoint != "direct"
            else adjoint
        )
        return solvers.solve(ode, y0, t, method="dopri5", rtol=1e-10, atol=1e-12, adjoint=adj).ys

    y0 = torch.tensor([[0.5, 1.0], [0.2, -0.4]], dtype=F64, requires_grad=True)
    t = torch.tensor([1.0, 0.4, -0.5], dtype=F64, requires_grad=True)
    tol = dict(atol=1e-5, rtol=1e-4) if adjoint == "backsolve" else dict(atol=1e-7, rtol=1e-6)
    assert gradcheck(fn, (y0, t, w), eps=1e-6, **tol)


def test_jump_times_are_stepped_onto_backwards():
    """A rate that is 1 before s and -2 from s on (right-continuous): backwards from 3 to 0
    with the jump time, the piecewise-linear solution comes out exact, fixed or adaptive."""

    def switch(t, y):
        return torch.where(t < 1.0, 1.0, -2.0).to(y.dtype).expand_as(y)

    t = torch.tensor([3.0, 1.5, 0.0], dtype=F64)
    y3 = torch.zeros(2, 1, dtype=F64)
    # y(t) = y(3) + 2 (3 - t) for t >= 1; below 1 it falls by 1 per unit of t going down
    want = torch.tensor([0.0, 3.0, 3.0], dtype=F64)
    want[2] = 4.0 - 1.0
    ode = ODE(switch, jump_times=torch.tensor([1.0], dtype=F64))
    for kw in (dict(method="rk4", dt=0.3), dict(method="dopri5")):
        sol = solvers.solve(ode, y3, t, **kw)
        torch.testing.assert_close(sol.ys[0, :, 0], want, rtol=0, atol=1e-9)


def test_a_cde_solved_backwards_returns_to_its_start():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(2, 6, 2, generator=g, dtype=F64)
    times = torch.linspace(0, 2, 6, dtype=F64)
    path = solvers.interpolate(values, times, kind="hermite")
    w = torch.randn(3, 6, generator=g, dtype=F64) * 0.5

    def f(t, z):
        return torch.tanh(z @ w).reshape(z.shape[0], 3, 2)

    z0 = torch.randn(2, 3, generator=g, dtype=F64)
    kw = dict(method="rk4", dt=0.005)
    end = solvers.solve(CDE(f, path), z0, times, **kw).ys[:, -1]
    back = solvers.solve(CDE(f, path), end, times.flip(0), **kw).ys[:, -1]
    torch.testing.assert_close(back, z0, rtol=0, atol=1e-8)


def test_leapfrog_backwards_undoes_leapfrog_forwards():
    """Leapfrog is time-reversible: the backwards solve with the same steps retraces the
    forward one to round-off, and the reversed system is still separable."""
    h = HamiltonianODE(dp=lambda t, q: -torch.sin(q), dq=lambda t, p: p)
    y0 = torch.tensor([[0.3, 1.0], [-0.5, 2.0]], dtype=F64)
    fw = solvers.solve(h, y0, torch.tensor([0.0, 3.0], dtype=F64), method="leapfrog", dt=0.01)
    bw = solvers.solve(
        h, fw.ys[:, -1], torch.tensor([3.0, 0.0], dtype=F64), method="leapfrog", dt=0.01
    )
    torch.testing.assert_close(bw.ys[:, -1], y0, rtol=0, atol=1e-12)


def test_agrees_with_torchdiffeq_backwards():
    pytest.importorskip("torchdiffeq")
    import torchdiffeq

    y0 = torch.tensor([[1.0, -0.5]], dtype=F64)
    t = torch.tensor([1.0, 0.0, -2.0], dtype=F64)
    mine = solvers.solve(ODE(field), y0, t, method="rk4", dt=0.05).ys
    peer = torchdiffeq.odeint(field, y0, t, method="rk4", options=dict(step_size=0.05))
    # two fourth-order methods (torchdiffeq's rk4 is the 3/8 rule) at h = 0.05
    torch.testing.assert_close(mine[:, -1], peer[-1], rtol=1e-6, atol=0)
    torch.testing.assert_close(mine[0, -1, 0], exact(y0, t[0], t[-1])[0, 0], rtol=1e-6, atol=0)


def test_errors():
    y0 = torch.ones(2, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"it starts decreasing, but t\[2\] = 0.5 is not less"):
        solvers.solve(ODE(field), y0, torch.tensor([1.0, 0.0, 0.5], dtype=F64))
    with pytest.raises(ValueError, match=r"or strictly decreasing.*t\[2\] = 0.5 is not greater"):
        solvers.solve(ODE(field), y0, torch.tensor([0.0, 1.0, 0.5], dtype=F64))
    per_sample = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"it starts decreasing, but t\[1, 1\] = 1.0"):
        solvers.solve(ODE(field), y0, per_sample)
    backwards = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(ValueError, match="SDE problem is solved forwards in time only"):
        solvers.solve(SDE(field, field), y0, backwards, dt=0.1)
    dde = DDE(lambda t, y, yd: -yd[:, 0], delays=0.5, history=torch.zeros(1, 1, dtype=F64))
    with pytest.raises(ValueError, match="DDE problem is solved forwards in time only"):
        solvers.solve(dde, y0, backwards, method="rk4", dt=0.1)
    pytest.importorskip("torchdiffeq")
    with pytest.raises(ValueError, match=r"does not solve backwards in time.*'native' does"):
        solvers.solve(ODE(field), y0, backwards, method="rk4", dt=0.1, backend="torchdiffeq")
    assert math.isfinite(float(solvers.solve(ODE(field), y0, backwards).ys[0, -1, 0]))
