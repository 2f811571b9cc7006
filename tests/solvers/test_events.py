"""Terminal events: ``solve(..., event=fn)``."""

from __future__ import annotations

import math

import pytest
import torch

import solvers
from solvers import ODE, Status

F64 = torch.float64
G = 9.81


def ball(t, y):
    """Height and velocity under gravity."""
    return torch.cat([y[:, 1:], torch.full_like(y[:, :1], -G)], dim=1)


def height(t, y):
    return y[:, 0]


def landing(y0):
    h0, v0 = y0[:, 0], y0[:, 1]
    return (v0 + torch.sqrt(v0**2 + 2 * G * h0)) / G


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_the_event_time_and_its_gradient_are_exact(method):
    y0 = torch.tensor([[10.0, 0.0], [5.0, 2.0], [1.0, -3.0]], dtype=F64, requires_grad=True)
    t = torch.linspace(0, 5, 11, dtype=F64)
    sol = solvers.solve(ODE(ball), y0, t, method=method, event=height, rtol=1e-8, atol=1e-10)
    assert sol.status == (Status.EVENT,) * 3 and sol.success
    want = landing(y0)
    torch.testing.assert_close(sol.event_t, want, rtol=1e-10, atol=0)
    got = torch.autograd.grad(sol.event_t.sum(), y0)[0]
    torch.testing.assert_close(got, torch.autograd.grad(want.sum(), y0)[0], rtol=1e-8, atol=0)


def test_outputs_stop_at_the_event_and_other_samples_go_on():
    """A sample stops at its event: its outputs before are the solution, after it NaN; a
    sample whose event never happens finishes with SUCCESS and a NaN event time."""
    y0 = torch.tensor([[2.0, 0.0], [1e6, 0.0]], dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    sol = solvers.solve(ODE(ball), y0, t, event=height, rtol=1e-9, atol=1e-9)
    assert sol.status == (Status.EVENT, Status.SUCCESS)
    t_hit = math.sqrt(2 * 2.0 / G)  # 0.639
    assert math.isclose(float(sol.event_t[0]), t_hit, rel_tol=1e-10)
    assert math.isnan(float(sol.event_t[1]))
    before = t <= t_hit
    torch.testing.assert_close(sol.ys[0, before, 0], 2.0 - 0.5 * G * t[before] ** 2)
    assert torch.isnan(sol.ys[0, ~before]).all()
    torch.testing.assert_close(sol.ys[1, :, 0], 1e6 - 0.5 * G * t**2)


def test_a_neuron_that_spikes():
    """dv/dt = I - v from v = 0 spikes at v = 1 when I > 1, at t* = -log(1 - 1/I)."""
    current = torch.tensor([1.5, 3.0, 0.5], dtype=F64, requires_grad=True)
    ode = ODE(lambda t, v: current[:, None] - v)
    sol = solvers.solve(
        ode,
        torch.zeros(3, 1, dtype=F64),
        torch.tensor([0.0, 10.0], dtype=F64),
        event=lambda t, v: v[:, 0] - 1.0,
        rtol=1e-9,
        atol=1e-10,
    )
    assert sol.status == (Status.EVENT, Status.EVENT, Status.SUCCESS)
    want = -torch.log(1 - 1 / current[:2])
    torch.testing.assert_close(sol.event_t[:2], want, rtol=1e-8, atol=0)
    (g,) = torch.autograd.grad(sol.event_t[:2].sum(), [current])
    (g_want,) = torch.autograd.grad(want.sum(), [current])
    torch.testing.assert_close(g, g_want, rtol=1e-6, atol=1e-12)


def test_an_event_backwards_in_time():
    """Thrown up from the ground at t = 0 with speed 10: going back from t = 1, the ball
    was at height 0 at t = 0."""
    y1 = torch.tensor([[10.0 - 0.5 * G, 10.0 - G]], dtype=F64)
    sol = solvers.solve(
        ODE(ball), y1, torch.tensor([1.0, -5.0], dtype=F64), event=height, rtol=1e-10, atol=1e-12
    )
    assert sol.status == (Status.EVENT,)
    assert abs(float(sol.event_t[0])) < 1e-9


def test_errors():
    y0 = torch.tensor([[1.0, 0.0]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match=r"one value per sample, shape \(1,\); got \(1, 2\)"):
        solvers.solve(ODE(ball), y0, t, event=lambda t, y: y)
    with pytest.raises(ValueError, match="located on adaptive steps; pass rtol/atol"):
        solvers.solve(ODE(ball), y0, t, method="dopri5", dt=0.1, event=height)
    heun_euler = solvers.ButcherTableau(
        name="heun_euler",
        a=((1.0,),),
        b=(0.5, 0.5),
        c=(1.0,),
        order=2,
        b_error=(-0.5, 0.5),
        error_order=1,
        reference="an adaptive tableau with no interpolant",
    )
    with pytest.raises(ValueError, match="'heun_euler' has no interpolant"):
        solvers.solve(ODE(ball), y0, t, method=heun_euler, event=height)
    with pytest.raises(ValueError, match="need adjoint 'direct', got 'backsolve'"):
        solvers.solve(ODE(ball), y0, t, event=height, adjoint="backsolve")
    with pytest.raises(TypeError, match="event must be callable"):
        solvers.solve(ODE(ball), y0, t, event=0.5)
    pytest.importorskip("torchdiffeq")
    with pytest.raises(ValueError, match="'torchdiffeq' takes no event"):
        solvers.solve(ODE(ball), y0, t, event=height, backend="torchdiffeq")
