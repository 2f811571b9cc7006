"""Dense output: ``solve(..., dense=True)`` then ``Solution.evaluate(t)``."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

import solvers
from solvers import ODE

F64 = torch.float64


def field(t, y):
    return -torch.sin(t) * y


def exact(y0, a, b):
    return y0 * torch.exp(torch.cos(b) - torch.cos(a))


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
@pytest.mark.parametrize("kw", [dict(rtol=1e-10, atol=1e-12), dict(dt=0.01)])
def test_evaluate_anywhere_in_the_span(method, kw):
    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    t = torch.tensor([0.0, 3.0], dtype=F64)
    sol = solvers.solve(ODE(field), y0, t, method=method, dense=True, **kw)
    q = torch.linspace(0, 3, 31, dtype=F64)
    got = sol.evaluate(q)
    assert got.shape == (2, 31, 1)
    tol = 1e-6 if method == "bosh3" else 1e-8
    torch.testing.assert_close(got[..., 0], exact(y0, t[0], q), rtol=tol, atol=0)
    # at the output times it is the solution itself
    torch.testing.assert_close(sol.evaluate(t), sol.ys, rtol=1e-12, atol=1e-14)


def test_per_sample_grids_and_queries():
    y0 = torch.tensor([[1.0], [0.5], [2.0]], dtype=F64)
    t = torch.tensor([[0.0, 1.0, 2.0], [0.5, 1.0, 4.0], [-1.0, 0.0, 0.5]], dtype=F64)
    sol = solvers.solve(ODE(field), y0, t, dense=True, rtol=1e-10, atol=1e-12)
    q = t[:, :1] + torch.tensor([0.0, 0.1, 0.7, 1.0], dtype=F64) * (t[:, -1:] - t[:, :1])
    torch.testing.assert_close(sol.evaluate(q)[..., 0], exact(y0, t[:, :1], q), rtol=1e-8, atol=0)


def test_backwards_in_time():
    y0 = torch.ones(1, 1, dtype=F64)
    t = torch.tensor([2.0, -1.0], dtype=F64)
    sol = solvers.solve(ODE(field), y0, t, dense=True, rtol=1e-10, atol=1e-12)
    q = torch.tensor([1.5, 0.0, -0.9], dtype=F64)
    torch.testing.assert_close(sol.evaluate(q)[0, :, 0], exact(y0, t[0], q)[0], rtol=1e-8, atol=0)


def test_evaluate_is_differentiable_under_direct():
    w = torch.tensor([0.8], dtype=F64, requires_grad=True)

    def fn(y0, w, q):
        ode = ODE(lambda t, y: -w * torch.sin(t) * y)
        t = torch.tensor([0.0, 2.0], dtype=F64)
        return solvers.solve(ode, y0, t, dense=True, rtol=1e-9, atol=1e-12).evaluate(q)

    y0 = torch.tensor([[1.0, -0.5]], dtype=F64, requires_grad=True)
    q = torch.tensor([0.3, 1.1, 1.9], dtype=F64, requires_grad=True)
    assert gradcheck(fn, (y0, w, q), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_backsolve_gives_values():
    y0 = torch.ones(2, 1, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = solvers.solve(ODE(field), y0, t, dense=True, adjoint="backsolve", rtol=1e-9, atol=1e-12)
    q = torch.tensor([0.25], dtype=F64)
    torch.testing.assert_close(sol.evaluate(q)[0, 0, 0], exact(1.0, t[0], q)[0], rtol=1e-8, atol=0)


def test_a_failed_sample_is_nan_past_its_last_step():
    def f(t, y):
        second = torch.arange(y.shape[0])[:, None] == 1
        return torch.where((t > 0.5) & second, torch.full_like(y, math.nan), -y)

    y0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    sol = solvers.solve(ODE(f), y0, torch.tensor([0.0, 2.0], dtype=F64), dense=True, throw=False)
    assert sol.status[1] is solvers.Status.NONFINITE
    got = sol.evaluate(torch.tensor([0.2, 1.9], dtype=F64))
    assert torch.isfinite(got[0]).all() and torch.isfinite(got[1, 0]).all()
    assert torch.isnan(got[1, 1]).all()


def test_errors():
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    plain = solvers.solve(ODE(field), y0, t)
    with pytest.raises(ValueError, match="solve with dense=True"):
        plain.evaluate(t)
    with pytest.raises(ValueError, match=r"'rk4' has no dense output.*bosh3, dopri5, tsit5"):
        solvers.solve(ODE(field), y0, t, method="rk4", dt=0.1, dense=True)
    with pytest.raises(ValueError, match="not available with adjoint 'checkpoint'"):
        solvers.solve(ODE(field), y0, t, dense=True, adjoint="checkpoint")
    sol = solvers.solve(ODE(field), y0, t, dense=True)
    with pytest.raises(ValueError, match=r"t = 1.5 \(query 1\) lies outside the solved span"):
        sol.evaluate(torch.tensor([0.5, 1.5], dtype=F64))
    with pytest.raises(ValueError, match=r"shape \(Q,\) or \(batch, Q\)"):
        sol.evaluate(torch.zeros(3, 2, dtype=F64))
    dde = solvers.DDE(lambda t, y, yd: -yd[:, 0], delays=0.5, history=torch.zeros(1, 1, dtype=F64))
    with pytest.raises(ValueError, match="not available for a DDE problem"):
        solvers.solve(dde, y0, t, method="dopri5", dense=True)
    pytest.importorskip("torchdiffeq")
    with pytest.raises(ValueError, match="'torchdiffeq' has no dense output"):
        solvers.solve(ODE(field), y0, t, dense=True, backend="torchdiffeq")
