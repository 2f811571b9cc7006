"""The drop-in front-ends of ``solvers.compat`` against the installed peers, as references.

Fixed-step methods that take the same steps with the same tableau on the same Brownian path
agree to round-off; adaptive ones to the tolerance (the step-size controllers differ).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import solvers
from solvers.compat import torchcde as ccde
from solvers.compat import torchdiffeq as cdiff
from solvers.compat import torchsde as csde

tdiff = pytest.importorskip("torchdiffeq")
tcde = pytest.importorskip("torchcde")
tsde = pytest.importorskip("torchsde")

D = torch.float64


def field(t, y):
    return -torch.sin(t) * y + torch.cos(3 * t)


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=D))

    def forward(self, t, y):
        return torch.tanh(y @ self.w) * torch.cos(t)


# ---------------------------------------------------------------------------------------------
# torchdiffeq


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "heun3", "rk4"])
@pytest.mark.parametrize("reverse", [False, True])
def test_odeint_fixed_steps_equal_torchdiffeq(method, reverse):
    y0 = torch.randn(3, 2, dtype=D, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0, 2, 9, dtype=D)
    t = t.flip(0) if reverse else t
    for options in (None, {"step_size": 0.125}):
        ref = tdiff.odeint(field, y0, t, method=method, options=options)
        got = cdiff.odeint(field, y0, t, method=method, options=options)
        assert got.shape == ref.shape == (9, 3, 2)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


def test_odeint_rk4_is_the_three_eighths_rule():
    """torchdiffeq's rk4 is Kutta's 3/8 rule, which the front-end maps to ``RK4_38``; the
    native ``rk4`` is the classical tableau: the same order, a different error constant."""
    y0 = torch.ones(1, 2, dtype=D)
    t = torch.linspace(0, 2, 5, dtype=D)
    ref = tdiff.odeint(field, y0, t, method="rk4")
    three_eighths = solvers.solve(solvers.ODE(field), y0, t, method=cdiff.RK4_38, dt=0.5).ys
    classical = solvers.solve(solvers.ODE(field), y0, t, method="rk4", dt=0.5).ys
    torch.testing.assert_close(three_eighths.transpose(0, 1), ref, rtol=0, atol=1e-14)
    gap = float((classical.transpose(0, 1) - ref).abs().max())
    assert 5e-4 < gap < 2e-3  # measured 9.3e-4: both fourth order, other error constants


def test_odeint_implicit_euler_is_backward_euler():
    # dy/dt = -3y: each backward Euler step divides by 1 + 3h
    y0, t = torch.ones(2, dtype=D), torch.linspace(0, 1, 5, dtype=D)
    for options, n, h in ((None, 4, 0.25), ({"step_size": 0.125}, 8, 0.125)):
        y = cdiff.odeint(lambda t, y: -3 * y, y0, t, method="implicit_euler", options=options)
        torch.testing.assert_close(y[-1], y0 / (1 + 3 * h) ** n, rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_odeint_adaptive_agrees_to_tolerance(method):
    y0 = torch.randn(3, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0, 2, 7, dtype=D)
    for tt in (t, t.flip(0)):
        ref = tdiff.odeint(field, y0, tt, method=method)  # rtol 1e-7, atol 1e-9 (defaults)
        got = cdiff.odeint(field, y0, tt, method=method)
        tol = 1e-5 if method == "dopri5" else 1e-4
        torch.testing.assert_close(got, ref, rtol=0, atol=tol)
    assert cdiff.odeint(field, y0, t).shape == (7, 3, 2)  # dopri5 by default


def test_odeint_exact_solution():
    # dy/dt = -y: y(t) = y0 exp(-t), to the default tolerances
    y0 = torch.tensor(2.0, dtype=D)
    t = torch.linspace(0, 3, 4, dtype=D)
    got = cdiff.odeint(lambda t, y: -y, y0, t)
    assert got.shape == (4,)
    torch.testing.assert_close(got, 2 * torch.exp(-t), rtol=1e-6, atol=1e-8)


def test_odeint_scalar_and_tuple_states_and_zero_dim_time():
    seen = []

    def f(t, y):
        seen.append(t.shape)
        a, b = y
        assert a.shape == (2,) and b.shape == ()
        return a * b, -b

    y0 = (torch.tensor([1.0, 2.0], dtype=D), torch.tensor(0.5, dtype=D))
    t = torch.linspace(0, 1, 4, dtype=D)
    got = cdiff.odeint(f, y0, t, rtol=1e-10, atol=1e-12)
    ref = tdiff.odeint(f, y0, t, rtol=1e-10, atol=1e-12)
    assert isinstance(got, tuple) and got[0].shape == (4, 2) and got[1].shape == (4,)
    assert set(seen) == {torch.Size([])}
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)
    one = cdiff.odeint(f, y0, t[:1])
    assert one[0].shape == (1, 2) and torch.equal(one[1][0], y0[1])


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_odeint_adjoint_gradients(method):
    t = torch.linspace(0, 2, 5, dtype=D)
    grads = {}
    for name, fn in (
        ("direct", cdiff.odeint),
        ("adjoint", cdiff.odeint_adjoint),
        ("peer", tdiff.odeint_adjoint),
    ):
        mod = Linear()
        y0 = torch.randn(3, 2, dtype=D, generator=torch.Generator().manual_seed(2))
        y0.requires_grad_()
        kwargs = {"rtol": 1e-10, "atol": 1e-12} if method == "dopri5" else {}
        fn(mod, y0, t, method=method, **kwargs).pow(2).sum().backward()
        grads[name] = (y0.grad, mod.w.grad)
    for name in ("adjoint", "peer"):
        for a, b in zip(grads[name], grads["direct"]):
            tol = 1e-6 if method == "dopri5" else 1e-2  # a one-step-per-output backward RK4
            torch.testing.assert_close(a, b, rtol=0, atol=tol)


def test_odeint_gradcheck_y0():
    t = torch.linspace(0, 1, 3, dtype=D)
    y0 = torch.tensor([0.3, -0.2], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda y: cdiff.odeint(lambda t, y: -y + torch.sin(t), y, t, method="rk4"), (y0,)
    )


def test_odeint_options_grid_jumps_first_step():
    y0 = torch.tensor([1.0], dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    # grid_constructor: ten Euler steps of 0.1 on dy/dt = y
    out = cdiff.odeint(
        lambda t, y: y,
        y0,
        t,
        method="euler",
        options={"grid_constructor": lambda f, y0, t: torch.linspace(0, 1, 11, dtype=D)},
    )
    torch.testing.assert_close(out[1], y0 * 1.1**10, rtol=1e-12, atol=0)

    def jump(t, y):
        return torch.where(t < 0.5, -0.5 * y, y**2)

    ref = tdiff.odeint(jump, y0, t, rtol=1e-9, atol=1e-9, method="dopri5",
                       options={"jump_t": torch.tensor([0.5])})  # fmt: skip
    got = cdiff.odeint(jump, y0, t, rtol=1e-9, atol=1e-9, method="dopri5",
                       options={"jump_t": torch.tensor([0.5]), "first_step": 1e-3})  # fmt: skip
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-7)


def test_odeint_max_num_steps():
    with pytest.raises(solvers.SolverError, match="MAX_STEPS"):
        cdiff.odeint(field, torch.ones(2, dtype=D), torch.tensor([0.0, 50.0], dtype=D),
                     method="dopri5", options={"max_num_steps": 5})  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "nope"}, "'nope' is unknown"),
        ({"method": "dopri8"}, "'dopri8' is a torchdiffeq method without a native counterpart"),
        ({"method": "implicit_adams"}, "without a native counterpart"),
        ({"method": "radauIIA5"}, "only implicit_euler is native"),
        ({"method": "scipy_solver"}, "without a native counterpart"),
        ({"method": "dopri5", "options": {"norm": None}}, "option 'norm' is not supported"),
        ({"method": "dopri5", "options": {"step_size": 0.1}}, "'step_size' is not supported"),
        ({"method": "rk4", "options": {"first_step": 0.1}}, "'first_step' is not supported"),
        ({"method": "rk4", "options": {"perturb": True}}, "perturb=True is not supported"),
        ({"method": "rk4", "options": {"interp": "cubic"}}, "interp='cubic' is not supported"),
        ({"options": {"step_size": 0.1}}, "'step_size' is not supported for the adaptive"),
    ],
)
def test_odeint_named_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cdiff.odeint(field, torch.ones(2, dtype=D), torch.linspace(0, 1, 3, dtype=D), **kwargs)


def test_odeint_event_falling_ball_equals_torchdiffeq():
    def ball(t, y):
        return torch.stack([y[1], -9.81 * torch.ones_like(y[1])])

    out = {}
    for lib in (tdiff, cdiff):
        y0 = torch.tensor([10.0, 0.0], dtype=D, requires_grad=True)
        t0 = torch.tensor(0.0, dtype=D)
        event_t, sol = lib.odeint_event(ball, y0, t0, event_fn=lambda t, y: y[0], method="dopri5")
        (event_t + sol[-1].sum()).backward()
        out[lib] = (event_t.detach(), sol.detach(), y0.grad)
    event_t, sol, _ = out[cdiff]
    assert event_t.shape == () and sol.shape == (2, 2)
    torch.testing.assert_close(event_t, torch.tensor(math.sqrt(20 / 9.81), dtype=D))
    for a, b in zip(out[cdiff], out[tdiff]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)
    # backwards in time, through odeint(event_fn=...): h(t) = 10 - 4.905 (t - 3)^2 hits
    # 10 - 4.905 * 9 at t = 0
    event_t, sol = cdiff.odeint(ball, torch.tensor([10.0, 0.0], dtype=D),
                                torch.tensor([3.0, 2.0], dtype=D), method="dopri5",
                                event_fn=lambda t, y: y[0] - 10 + 4.905 * 9)  # fmt: skip
    torch.testing.assert_close(event_t, torch.tensor(0.0, dtype=D), rtol=0, atol=1e-8)


def test_odeint_events_and_adjoint_params_errors():
    y0, t = torch.ones(2, dtype=D), torch.linspace(0, 1, 3, dtype=D)
    with pytest.raises(ValueError, match="event_fn with the fixed-step method 'rk4'"):
        cdiff.odeint(field, y0, t, method="rk4", event_fn=lambda t, y: y.sum())
    with pytest.raises(ValueError, match="odeint_adjoint: event_fn is not supported"):
        cdiff.odeint_adjoint(Linear(), y0, t, event_fn=lambda t, y: y.sum())
    with pytest.raises(ValueError, match="odeint_interface other than"):
        cdiff.odeint_event(field, y0, t[0], event_fn=lambda t, y: y.sum(),
                           odeint_interface=cdiff.odeint_adjoint)  # fmt: skip
    with pytest.raises(RuntimeError, match="did not cross zero"):
        cdiff.odeint(lambda t, y: torch.ones_like(y), y0, t, event_fn=lambda t, y: y.sum())
    with pytest.raises(ValueError, match=r"func must be an nn\.Module"):
        cdiff.odeint_adjoint(field, y0, t)
    with pytest.raises(ValueError, match="adjoint_options cannot be inferred"):
        cdiff.odeint_adjoint(Linear(), y0, t, method="rk4", options={"step_size": 0.1},
                             adjoint_method="dopri5")  # fmt: skip
    with pytest.raises(ValueError, match="grid_constructor is not supported for the backward"):
        cdiff.odeint_adjoint(
            Linear(), y0, t, method="euler",
            options={"grid_constructor": lambda f, y, t: torch.linspace(0, 1, 5, dtype=D)},
        )  # fmt: skip
    with pytest.raises(ValueError, match="func returned shape"):
        cdiff.odeint(lambda t, y: torch.ones(3, dtype=D), y0, t)


def test_odeint_callbacks_warn():
    mod = Linear()
    mod.callback_step = lambda t0, y0, dt: None
    with pytest.warns(UserWarning, match="callback_step is not called"):
        cdiff.odeint(mod, torch.ones(2, dtype=D), torch.linspace(0, 1, 3, dtype=D))


# ---------------------------------------------------------------------------------------------
# torchcde


def _series(missing: bool):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 4, dtype=D, generator=g)
    if missing:
        x[0, 1, 2, 1] = x[1, 0, 0, 2] = math.nan
        x[1, 2, 5:, 3] = x[0, 0, :3, 0] = math.nan
    t = torch.sort(torch.rand(7, dtype=D, generator=g)).values * 5
    return x, t


COEFFS = [
    "linear_interpolation_coeffs",
    "natural_cubic_coeffs",
    "natural_cubic_spline_coeffs",
    "hermite_cubic_coefficients_with_backward_differences",
]


@pytest.mark.parametrize("name", COEFFS)
@pytest.mark.parametrize("missing", [False, True])
def test_cde_coefficients_equal_torchcde(name, missing):
    x, t = _series(missing)
    for tt in (None, t):
        ref = getattr(tcde, name)(x, tt)
        got = getattr(ccde, name)(x, tt)
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_cde_rectilinear_coefficients_equal_torchcde():
    x, _ = _series(True)
    x = torch.cat([torch.arange(7, dtype=D)[:, None].expand(2, 3, 7, 1), x], dim=-1)
    x[..., 0, :] = 0.0  # a causal start: no warning
    ref = tcde.linear_interpolation_coeffs(x, rectilinear=0)
    got = ccde.linear_interpolation_coeffs(x, rectilinear=0)
    assert got.shape == ref.shape == (2, 3, 13, 5)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("cls", "coeffs"),
    [
        ("LinearInterpolation", "linear_interpolation_coeffs"),
        ("CubicSpline", "natural_cubic_coeffs"),
        ("CubicSpline", "hermite_cubic_coefficients_with_backward_differences"),
    ],
)
def test_cde_interpolation_classes_equal_torchcde(cls, coeffs):
    x, t = _series(True)
    ref = getattr(tcde, cls)(getattr(tcde, coeffs)(x, t), t)
    got = getattr(ccde, cls)(getattr(ccde, coeffs)(x, t), t)
    torch.testing.assert_close(got.interval, ref.interval)
    torch.testing.assert_close(got.grid_points, ref.grid_points)
    for s in (t[0], t[3], 0.5 * (t[2] + t[3]), t[-1], t[-1] + 1):  # on knots: left pieces
        torch.testing.assert_close(got.evaluate(s), ref.evaluate(s), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got.derivative(s), ref.derivative(s), rtol=1e-10, atol=1e-10)
    assert got.evaluate(t[1]).shape == (2, 3, 4)


class CDEField(torch.nn.Module):
    def __init__(self, hidden=5, channels=4):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(hidden, hidden * channels, dtype=D)
        self.shape = (hidden, channels)

    def forward(self, t, z):
        return torch.tanh(self.lin(z)).unflatten(-1, self.shape)


@pytest.mark.parametrize("adjoint", [False, True])
def test_cdeint_fixed_steps_equal_torchcde(adjoint):
    x, t = _series(False)
    z0 = torch.randn(2, 3, 5, dtype=D, generator=torch.Generator().manual_seed(4))
    X = tcde.CubicSpline(tcde.natural_cubic_coeffs(x, t), t)
    Y = ccde.CubicSpline(ccde.natural_cubic_coeffs(x, t), t)
    f = CDEField()
    ref = tcde.cdeint(X, f, z0, X.grid_points, adjoint=adjoint, method="rk4")
    got = ccde.cdeint(Y, f, z0, Y.grid_points, adjoint=adjoint, method="rk4")
    assert got.shape == ref.shape == (2, 3, 7, 5)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_cdeint_adaptive_and_gradients():
    x, t = _series(False)
    x, t = x[:1, :1], t  # one series: the adaptive solve is one sample, as in torchcde
    z0 = torch.randn(1, 1, 5, dtype=D, generator=torch.Generator().manual_seed(5))
    Y = ccde.CubicSpline(ccde.hermite_cubic_coefficients_with_backward_differences(x, t), t)
    X = tcde.CubicSpline(tcde.hermite_cubic_coefficients_with_backward_differences(x, t), t)
    f = CDEField()
    tight = {"rtol": 1e-7, "atol": 1e-9, "options": {"jump_t": t}, "method": "dopri5"}
    ref = tcde.cdeint(X, f, z0, X.interval, adjoint=False, **tight)
    got = ccde.cdeint(Y, f, z0, Y.interval, adjoint=False, **tight)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    grads = []
    for adjoint in (False, True):
        f.zero_grad()
        out = ccde.cdeint(Y, f, z0, t, adjoint=adjoint, method="rk4", options={"step_size": 0.01})
        out.sum().backward()
        grads.append(f.lin.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-5)


def test_cdeint_torchsde_backend_equals_torchdiffeq_backend():
    x, t = _series(False)
    x, z0 = x[0], torch.randn(3, 5, dtype=D)
    Y = ccde.LinearInterpolation(ccde.linear_interpolation_coeffs(x, t), t)
    f = CDEField()
    a = ccde.cdeint(Y, f, z0, t, adjoint=False, backend="torchsde", method="heun", dt=0.05)
    b = ccde.cdeint(Y, f, z0, t, adjoint=False, method="heun2", options={"step_size": 0.05})
    assert a.shape == (3, 7, 5)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)  # zero noise: the same Heun steps


def test_cdeint_named_errors():
    x, t = _series(False)
    Y = ccde.CubicSpline(ccde.natural_cubic_coeffs(x, t), t)
    z0 = torch.zeros(2, 3, 5, dtype=D)
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        ccde.cdeint(Y, CDEField(), z0, t, backend="jax")
    with pytest.raises(ValueError, match=r"func returned shape \(2, 3, 5, 3\)"):
        ccde.cdeint(Y, CDEField(channels=3), z0, t)
    with pytest.raises(ValueError, match="X must have a derivative"):
        ccde.cdeint(object(), CDEField(), z0, t)
    with pytest.raises(ValueError, match="backend='torchsde' needs z0 of shape"):
        ccde.cdeint(Y, CDEField(), z0, t, backend="torchsde")
    with pytest.raises(ValueError, match="t must be strictly increasing"):
        ccde.natural_cubic_coeffs(x, t.flip(0))
    with pytest.raises(ValueError, match="must equal the length of t"):
        ccde.linear_interpolation_coeffs(x, t[:3])
    with pytest.warns(UserWarning, match="begins with missing values"):
        xr = torch.cat([torch.arange(7, dtype=D)[:, None].expand(2, 3, 7, 1), x], dim=-1)
        xr[0, 0, 0, 1] = math.nan
        ccde.linear_interpolation_coeffs(xr, rectilinear=0)


# ---------------------------------------------------------------------------------------------
# torchsde


class SDEModel(torch.nn.Module):
    def __init__(self, noise_type="diagonal", sde_type="ito"):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        self.a = torch.nn.Parameter(torch.tensor(0.5, dtype=D))

    def f(self, t, y):
        assert t.ndim == 0
        return -self.a * y + torch.sin(t)

    def g(self, t, y):
        g = 0.3 * torch.cos(y)
        if self.noise_type == "diagonal":
            return g
        if self.noise_type == "scalar":
            return g[..., None]
        return g[..., None].expand(-1, -1, 2)


@pytest.mark.parametrize(
    ("sde_type", "method", "options"),
    [
        ("ito", "euler", None),
        ("ito", "milstein", {"grad_free": True}),
        ("stratonovich", "heun", None),
        ("stratonovich", "midpoint", None),
        ("stratonovich", "euler_heun", None),
        ("stratonovich", "reversible_heun", None),
    ],
)
def test_sdeint_equals_torchsde_on_its_brownian_interval(sde_type, method, options):
    y0 = torch.randn(4, 3, dtype=D, generator=torch.Generator().manual_seed(6))
    t = torch.linspace(0, 1, 5, dtype=D)
    bm = tsde.BrownianInterval(0.0, 1.0, (4, 3), dtype=D, entropy=1)
    kw = {"bm": bm, "method": method, "dt": 1 / 64, "options": options}
    ref = tsde.sdeint(SDEModel("diagonal", sde_type), y0, t, **kw)
    got = csde.sdeint(SDEModel("diagonal", sde_type), y0, t, **kw)
    assert got.shape == ref.shape == (5, 4, 3)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("noise_type", ["scalar", "general", "additive"])
def test_sdeint_noise_types_and_defaults(noise_type):
    y0 = torch.randn(4, 3, dtype=D)
    t = [0.0, 0.5, 1.0]
    m = 1 if noise_type == "scalar" else 2
    bm = csde.BrownianInterval(0.0, 1.0, (4, m), dtype=D, entropy=2)
    out = csde.sdeint(SDEModel(noise_type), y0, t, bm=bm, dt=0.01)
    assert out.shape == (3, 4, 3) and torch.equal(out[0], y0)
    torch.manual_seed(7)
    a = csde.sdeint(SDEModel(noise_type), y0, t)
    torch.manual_seed(7)
    b = csde.sdeint(SDEModel(noise_type), y0, t)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the global seed fixes the path


def test_brownian_interval():
    bm = csde.BrownianInterval(0.0, 2.0, (3, 2), dtype=D, entropy=5)
    assert bm.shape == (3, 2)
    w = bm(0.3, 1.7)
    torch.testing.assert_close(bm(0.3, 1.0) + bm(1.0, 1.7), w, rtol=0, atol=1e-12)
    torch.testing.assert_close(bm(1.7) - bm(0.3), w, rtol=0, atol=1e-12)
    torch.testing.assert_close(bm(0.3, 1.7), w, rtol=0, atol=0)  # reproducible
    many = csde.BrownianInterval(0.0, 1.0, (20000,), dtype=D, entropy=6)(0.25, 0.75)
    assert abs(float(many.var()) - 0.5) < 0.03
    with pytest.raises(ValueError, match="levy_area_approximation='space-time' is not supported"):
        csde.BrownianInterval(0.0, 1.0, (2, 2), levy_area_approximation="space-time")
    with pytest.raises(ValueError, match="return_U and return_A"):
        bm(0.0, 1.0, return_U=True)


@pytest.mark.parametrize("method", ["reversible_heun", "midpoint"])
def test_sdeint_adjoint_gradients_equal_direct(method):
    t = torch.linspace(0, 1, 3, dtype=D)
    bm = csde.BrownianInterval(0.0, 1.0, (4, 3), dtype=D, entropy=8)
    grads = []
    for fn in (csde.sdeint, csde.sdeint_adjoint):
        sde = SDEModel("diagonal", "stratonovich")
        y0 = torch.linspace(-1, 1, 12, dtype=D).reshape(4, 3).requires_grad_()
        fn(sde, y0, t, bm=bm, method=method, dt=1 / 32).pow(2).sum().backward()
        grads.append((y0.grad, sde.a.grad))
    # reversible Heun's steps are inverted exactly; the stochastic adjoint of the midpoint
    # rule solves the adjoint SDE backwards on the same path: equal as dt -> 0 only
    rtol = 1e-8 if method == "reversible_heun" else 1e-2
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-10)


def test_sdeint_with_a_solvers_brownian_path():
    bm = solvers.BrownianPath(0.0, 1.0, (4, 3), seed=3, dtype=D)
    y0 = torch.zeros(4, 3, dtype=D)
    t = torch.linspace(0, 1, 3, dtype=D)
    sde = SDEModel("diagonal", "ito")
    got = csde.sdeint(sde, y0, t, bm=bm, dt=1 / 16)
    ref = solvers.solve(
        solvers.SDE(lambda t, y: sde.f(t[0, 0], y), lambda t, y: sde.g(t[0, 0], y), brownian=bm),
        y0, t, method="euler_maruyama", dt=1 / 16,
    ).ys  # fmt: skip
    torch.testing.assert_close(got, ref.transpose(0, 1), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"adaptive": True}, "adaptive=True is not supported"),
        ({"method": "srk"}, "'srk' has no native counterpart"),
        ({"method": "log_ode"}, "'log_ode' has no native counterpart"),
        ({"method": "heun"}, "'heun' does not handle ito SDEs here"),
        ({"method": "rk45"}, "unknown method 'rk45'"),
        ({"logqp": True}, "logqp=True is not supported"),
        ({"extra": True}, "extra=True is not supported"),
        ({"names": {"prior_drift": "h"}}, r"names \['prior_drift'\] are not supported"),
        ({"options": {"trapezoidal_approx": False}}, "options .* are not supported"),
        ({"foo": 1}, r"unexpected arguments \['foo'\]"),
    ],
)
def test_sdeint_named_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        csde.sdeint(SDEModel(), torch.zeros(2, 3, dtype=D), [0.0, 1.0], **kwargs)


def test_sdeint_adjoint_named_errors():
    y0, t = torch.zeros(2, 3, dtype=D), [0.0, 1.0]

    class Plain:
        noise_type, sde_type = "diagonal", "stratonovich"
        f = g = staticmethod(lambda t, y: y)

    with pytest.raises(ValueError, match=r"sde must be an nn\.Module"):
        csde.sdeint_adjoint(Plain(), y0, t)
    with pytest.raises(ValueError, match="adjoint_method='euler' is not supported"):
        csde.sdeint_adjoint(SDEModel("diagonal", "stratonovich"), y0, t, adjoint_method="euler")
    with pytest.raises(ValueError, match="handles stratonovich SDEs; got an ito SDE"):
        csde.sdeint_adjoint(SDEModel("diagonal", "ito"), y0, t)


def test_sdeint_names_rename_drift_and_diffusion():
    class Renamed:
        noise_type, sde_type = "diagonal", "ito"

        def drift(self, t, y):
            return -y

        def diffusion(self, t, y):
            return 0.1 * torch.ones_like(y)

    out = csde.sdeint(Renamed(), torch.ones(2, 3, dtype=D), [0.0, 1.0],
                      names={"drift": "drift", "diffusion": "diffusion"})  # fmt: skip
    assert out.shape == (2, 2, 3)


# ---------------------------------------------------------------------------------------------
# the peers' own suites (needs clones of the peers' repositories)


@pytest.mark.slow
@pytest.mark.parametrize("peer", ["torchdiffeq", "torchcde", "torchsde"])
def test_peer_suite_runs(peer, tmp_path):
    """``benchmarks/peer_suites.py`` on the peer's published tests; set
    ``CTRNN_PEER_<NAME>`` to a clone of the peer's repository."""
    source = os.environ.get(f"CTRNN_PEER_{peer.upper()}")
    if not source:
        pytest.skip(f"set CTRNN_PEER_{peer.upper()} to a clone of {peer}'s repository")
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "r.json"
    subprocess.run(
        [sys.executable, str(root / "benchmarks" / "peer_suites.py"),
         "--source", f"{peer}={source}", "--json", str(out)],
        check=True, timeout=3600,
    )  # fmt: skip
    import json

    (res,) = json.loads(out.read_text())
    assert res["counts"].get("passed", 0) > 0


def test_cdeint_adjoint_through_computed_coefficients():
    """torchcde's way of learning through the path: the coefficients, computed from data that
    requires grad, in ``adjoint_params``; the front-end solves on leaf copies of them and
    routes the gradients back through the graph that computed them."""
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        t = torch.linspace(0, 3, 4, dtype=D, requires_grad=True)
        path = torch.rand(1, 4, 2, dtype=D, requires_grad=True)
        coeffs = ccde.natural_cubic_coeffs(path, t)
        f = CDEField(hidden=3, channels=2)
        kwargs = {"adjoint_params": (*f.parameters(), coeffs, t)} if adjoint else {}
        z0 = torch.rand(1, 3, dtype=D, requires_grad=True)
        tight = {"rtol": 1e-10, "atol": 1e-12, "options": {"jump_t": t.detach()}}
        X = ccde.CubicSpline(coeffs, t)
        z = ccde.cdeint(X, f, z0, t[[0, -1]].detach(), adjoint=adjoint, **tight, **kwargs)
        z[:, 1].sum().backward()
        grads.append([x.grad for x in (t, path, z0, f.lin.weight)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
