"""Implicit methods for stiff problems (``implicit_euler``, ``kvaerno5``): measured orders,
stiff problems against scipy's Radau and BDF, stiff recurrent models, gradients, and the
errors and statuses a user can trigger."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import solvers
from solvers._implicit import ESDIRK, ESDIRKTableau, Newton
from solvers._methods.implicit_euler import IMPLICIT_EULER_ADAPTIVE

integrate = pytest.importorskip("scipy.integrate")

F64 = torch.float64
IMPLICIT = ["implicit_euler", "kvaerno5"]
# implicit Euler with its trapezoidal error estimate (the registered one is fixed-step)
IE_ADAPTIVE = ESDIRK(IMPLICIT_EULER_ADAPTIVE)


def adaptive(name):
    return IE_ADAPTIVE if name == "implicit_euler" else name


# the linear test system of test_convergence: a damped rotation and a decaying mode
A = torch.tensor([[-0.1, 2.0, 0.0], [-2.0, -0.1, 0.0], [0.5, -0.3, -1.0]], dtype=F64)
Y0 = torch.tensor([[1.0, 0.5, -0.3], [-0.2, 1.0, 0.7]], dtype=F64)


def linear(t, y):
    return y @ A.T


def exact(t: torch.Tensor, y0: torch.Tensor = Y0) -> torch.Tensor:
    expm = torch.linalg.matrix_exp(A * t[:, None, None])
    return torch.einsum("tij,bj->bti", expm, y0)


def slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


# ---------------------------------------------------------------------------------------------
# Registry


def test_registered_with_their_problems():
    ms = solvers.methods()
    for name, order, err in (("implicit_euler", 1, None), ("kvaerno5", 5, 4)):
        m = ms[name]
        assert isinstance(m, ESDIRK)
        assert (m.order, m.error_order, m.has_dense_output) == (order, err, True)
        assert set(m.problems) == {"ODE", "CDE", "HamiltonianODE"}
        assert "implicit" in repr(m)


# ---------------------------------------------------------------------------------------------
# Orders


@pytest.mark.parametrize(
    "name, order, exponents", [("implicit_euler", 1, range(3, 7)), ("kvaerno5", 5, range(2, 6))]
)
def test_fixed_step_order(name, order, exponents):
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ref = exact(t)[:, -1]
    dts, errs = [], []
    for k in exponents:
        dt = 2.0**-k
        sol = solvers.solve(solvers.ODE(linear), Y0, t, method=name, dt=dt)
        dts.append(dt)
        errs.append(float((sol.ys[:, -1] - ref).abs().max()))
    assert min(errs) > 1e-13, errs
    assert abs(slope(dts, errs) - order) < 0.3, (name, slope(dts, errs), errs)


@pytest.mark.parametrize("m", [IE_ADAPTIVE, solvers.methods()["kvaerno5"]], ids=IMPLICIT)
def test_error_estimate_has_the_local_order(m):
    """The embedded estimate over one step shrinks like h^(error_order + 1)."""
    term = solvers.ODE(linear).terms()
    hs, ests = [], []
    for k in range(3, 8):
        h = torch.tensor([2.0**-k], dtype=F64)
        t0 = torch.zeros(1, dtype=F64)
        _, err, _, _ = m.step(term, t0, t0 + h, h, (Y0,), None)
        hs.append(float(h))
        ests.append(float(err[0].abs().max()))
    assert abs(slope(hs, ests) - (m.error_order + 1)) < 0.3, (m.name, ests)


def test_adaptive_meets_tolerance():
    t = torch.linspace(0.0, 5.0, 11, dtype=F64)  # outputs inside steps: the dense output
    sol = solvers.solve(solvers.ODE(linear), Y0, t, method="kvaerno5", rtol=1e-6, atol=1e-6)
    assert sol.status == (solvers.Status.SUCCESS,) * 2
    err = float((sol.ys - exact(t)).abs().max())
    assert err < 1e-4, err


def test_implicit_euler_error_falls_with_the_tolerance():
    """A first-order method's global error goes like the square root of the local
    tolerance."""
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    errs = []
    for tol in (1e-3, 1e-5):
        sol = solvers.solve(solvers.ODE(linear), Y0, t, method=IE_ADAPTIVE, rtol=tol, atol=tol)
        errs.append(float((sol.ys - exact(t)).abs().max()))
    assert errs[1] < errs[0] / 5 and errs[1] < 2e-2, errs


def test_dense_output_is_third_order_hermite():
    t = torch.tensor([0.0, 2.0], dtype=F64)
    sol = solvers.solve(
        solvers.ODE(linear), Y0, t, method="kvaerno5", rtol=1e-9, atol=1e-9, dense=True
    )
    q = torch.linspace(0.0, 2.0, 41, dtype=F64)
    err = float((sol.evaluate(q) - exact(q)).abs().max())
    assert err < 1e-5, err


def test_batched_solve_equals_per_sample_solves():
    t = torch.tensor([0.0, 3.0], dtype=F64)
    both = solvers.solve(solvers.ODE(linear), Y0, t, method="kvaerno5", rtol=1e-7, atol=1e-9)
    for b in range(2):
        one = solvers.solve(
            solvers.ODE(linear), Y0[b : b + 1], t, method="kvaerno5", rtol=1e-7, atol=1e-9
        )
        torch.testing.assert_close(both.ys[b], one.ys[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "newton",
    [Newton(jacobian="finite_difference"), Newton(update="newton"), Newton(max_iters=30)],
    ids=["finite_difference", "full_newton", "more_iters"],
)
def test_newton_variants_agree(newton):
    t = torch.tensor([0.0, 400.0], dtype=F64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=F64)
    ref = solvers.solve(solvers.ODE(vdp), y0, t, method="kvaerno5", rtol=1e-7, atol=1e-9)
    m = ESDIRK(solvers.methods()["kvaerno5"].tableau, newton)
    sol = solvers.solve(solvers.ODE(vdp), y0, t, method=m, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(sol.ys, ref.ys, rtol=1e-5, atol=1e-7)


def test_backwards_in_time():
    t = torch.tensor([1.0, 0.5, 0.0], dtype=F64)
    sol = solvers.solve(solvers.ODE(linear), Y0, t, method="kvaerno5", rtol=1e-9, atol=1e-9)
    expm = torch.linalg.matrix_exp(A * (t - 1.0)[:, None, None])
    torch.testing.assert_close(sol.ys, torch.einsum("tij,bj->bti", expm, Y0), rtol=0, atol=1e-6)


def test_terminal_event_on_the_hermite_interpolant():
    rot = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)
    sol = solvers.solve(
        solvers.ODE(lambda t, y: y @ rot.T),
        torch.tensor([[1.0, 0.5]], dtype=F64),
        torch.tensor([0.0, 3.0], dtype=F64),
        method="kvaerno5",
        rtol=1e-9,
        atol=1e-9,
        event=lambda t, y: y[:, 0],
    )
    # y_1(t) = e^{-t/10} (cos 2t + sin 2t / 2) vanishes at 2t = π - atan 2
    assert abs(float(sol.event_t[0]) - (math.pi - math.atan(2.0)) / 2) < 1e-6


# ---------------------------------------------------------------------------------------------
# Stiff problems against scipy


def rober(t, y):
    y1, y2, y3 = y.unbind(1)
    return torch.stack(
        [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], 1
    )


def rober_np(t, y):
    y1, y2, y3 = y
    return [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2]


MU = 1000.0


def vdp(t, y):
    return torch.stack([y[:, 1], MU * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], 1)


def vdp_np(t, y):
    return [y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]]


def scipy_reference(f, y0, ts, method="Radau", rtol=1e-10, atol=1e-14):
    r = integrate.solve_ivp(f, (ts[0], ts[-1]), y0, method=method, t_eval=ts, rtol=rtol, atol=atol)
    assert r.status == 0
    return r.y.T


def check_against_scipy(f, f_np, y0, ts, method, rtol, atol, max_steps, tol):
    ref = scipy_reference(f_np, y0, ts)
    sol = solvers.solve(
        solvers.ODE(f),
        torch.tensor([y0], dtype=F64),
        torch.tensor(ts, dtype=F64),
        method=method,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
    )
    assert sol.status == (solvers.Status.SUCCESS,)
    got = sol.ys[0].numpy()
    scale = np.abs(ref).max(0)  # per component: ROBER's y2 is 1e-5 at most
    rel = np.abs(got - ref) / (tol * scale + atol)
    assert rel.max() < 1, (got, ref)
    # scipy's own stiff solvers at the same tolerance land as close to the reference
    for meth in ("Radau", "BDF"):
        theirs = scipy_reference(f_np, y0, ts, method=meth, rtol=rtol, atol=atol)
        assert np.abs(theirs - ref).max() < 1e3 * tol * scale.max()
    return sol


@pytest.mark.parametrize("name", IMPLICIT)
def test_rober_short(name):
    rtol = 1e-6 if name == "kvaerno5" else 1e-4
    check_against_scipy(
        rober,
        rober_np,
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 40.0],
        adaptive(name),
        rtol,
        1e-10,
        2000,
        100 * rtol,
    )


def test_vdp_slow_phase_where_explicit_methods_stall():
    ts = [0.0, 200.0, 400.0]
    # outputs inside long steps come from the cubic Hermite interpolant: 1e-3 there
    sol = check_against_scipy(vdp, vdp_np, [2.0, 0.0], ts, "kvaerno5", 1e-6, 1e-8, 200, 1e-3)
    assert int(sol.stats.num_accepted_steps[0]) < 100
    stalled = solvers.solve(
        solvers.ODE(vdp),
        torch.tensor([[2.0, 0.0]], dtype=F64),
        torch.tensor(ts, dtype=F64),
        method="dopri5",
        rtol=1e-6,
        atol=1e-8,
        max_steps=500,
        throw=False,
    )
    assert stalled.status == (solvers.Status.MAX_STEPS,)


@pytest.mark.slow
def test_rober_long():
    ts = [0.0, 40.0, 1e3, 1e5]
    sol = check_against_scipy(
        rober, rober_np, [1.0, 0.0, 0.0], ts, "kvaerno5", 1e-6, 1e-10, 2000, 1e-4
    )
    assert int(sol.stats.num_accepted_steps[0]) < 500


@pytest.mark.slow
def test_vdp_full_period():
    """Van der Pol, μ = 1000, over two relaxation jumps (the period is about 1614)."""
    ts = [0.0, 1000.0, 2000.0, 3000.0]
    check_against_scipy(vdp, vdp_np, [2.0, 0.0], ts, "kvaerno5", 1e-6, 1e-8, 3000, 1e-2)


# ---------------------------------------------------------------------------------------------
# Stiff recurrent models


def _rnn_weights(d, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d)
    M = torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d)
    b = 0.1 * torch.randn(d, generator=g, dtype=F64)
    return W, M, b


def _per_sample_scipy(f_np, y0, ts):
    return np.stack([scipy_reference(f_np, y.numpy(), ts, rtol=1e-10, atol=1e-12) for y in y0])


@pytest.mark.parametrize("name", IMPLICIT)
def test_lipschitz_rnn_with_large_damping(name):
    """dh/dt = A h + tanh(W h + b), A = (M - Mᵀ)/2 - γ I with γ = 1000 (Erichson et al., 2021:
    the Lipschitz RNN's hidden matrix), a stiff linear part."""
    d, gamma = 4, 1000.0
    W, M, b = _rnn_weights(d, 0)
    Ah = (M - M.T) / 2 - gamma * torch.eye(d, dtype=F64)

    def f(t, h):
        return h @ Ah.T + torch.tanh(h @ W.T + b)

    h0 = torch.randn(2, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    ts = [0.0, 0.5, 1.0]
    rtol = 1e-6 if name == "kvaerno5" else 1e-3
    sol = solvers.solve(
        solvers.ODE(f),
        h0,
        torch.tensor(ts, dtype=F64),
        method=adaptive(name),
        rtol=rtol,
        atol=1e-6,
        max_steps=500,
    )
    assert sol.status == (solvers.Status.SUCCESS,) * 2
    An, Wn, bn = Ah.numpy(), W.numpy(), b.numpy()
    ref = _per_sample_scipy(lambda t, h: An @ h + np.tanh(Wn @ h + bn), h0, ts)
    assert np.abs(sol.ys.numpy() - ref).max() < 100 * rtol * np.abs(ref).max()
    # an explicit method needs steps below about 3.3/γ to stay stable
    explicit = solvers.solve(
        solvers.ODE(f), h0, torch.tensor(ts, dtype=F64), method="dopri5", rtol=rtol, atol=1e-6
    )
    if name == "kvaerno5":
        assert sol.stats.num_accepted_steps.max() * 5 < explicit.stats.num_accepted_steps.min()


def test_cornn_oscillator_at_small_epsilon():
    """coRNN's oscillator (Rusch & Mishra, 2021) written with the damping scale ε as a time
    scale: y' = z, ε z' = tanh(W y + 𝒲 z + b) - γ y - z, ε = 1e-3: fast relaxation of z."""
    d, eps, gamma = 6, 1e-3, 2.0
    W, Wz, b = _rnn_weights(d, 2)

    def f(t, s):
        y, z = s[:, :d], s[:, d:]
        return torch.cat([z, (torch.tanh(y @ W.T + z @ Wz.T + b) - gamma * y - z) / eps], 1)

    s0 = torch.randn(2, 2 * d, generator=torch.Generator().manual_seed(3), dtype=F64)
    ts = [0.0, 0.1, 3.0]
    sol = solvers.solve(
        solvers.ODE(f),
        s0,
        torch.tensor(ts, dtype=F64),
        method="kvaerno5",
        rtol=1e-6,
        atol=1e-8,
        max_steps=300,
    )
    assert sol.status == (solvers.Status.SUCCESS,) * 2
    Wn, Wzn, bn = W.numpy(), Wz.numpy(), b.numpy()

    def f_np(t, s):
        y, z = s[:d], s[d:]
        return np.concatenate([z, (np.tanh(Wn @ y + Wzn @ z + bn) - gamma * y - z) / eps])

    ref = _per_sample_scipy(f_np, s0, ts)
    assert np.abs(sol.ys.numpy() - ref).max() < 1e-4 * np.abs(ref).max()


# ---------------------------------------------------------------------------------------------
# Gradients


# Newton converged to round-off: gradcheck's finite differences must not see the iteration
TIGHT = Newton(rtol=1e-13, atol=1e-15, max_iters=30)


def _small_problem():
    W = torch.tensor([[-3.0, 1.0], [0.5, -20.0]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=F64, requires_grad=True)
    return W, y0


@pytest.mark.parametrize("name", IMPLICIT)
def test_direct_gradients_by_gradcheck_fixed_steps(name):
    W, y0 = _small_problem()

    def fn(y0, W, t1):
        def f(t, y):
            return torch.tanh(y @ W.T) + 0.1 * torch.sin(t) * y  # W captured by a closure

        t = torch.cat([torch.zeros(1, dtype=F64), t1])
        return solvers.solve(solvers.ODE(f), y0, t, method=method, dt=0.05).ys

    method = ESDIRK(solvers.methods()[name].tableau, TIGHT)
    t1 = torch.tensor([0.33], dtype=F64, requires_grad=True)  # not on a step: 7 steps
    assert torch.autograd.gradcheck(fn, (y0, W, t1), atol=1e-6, rtol=1e-5)


def test_direct_gradients_by_gradcheck_adaptive():
    W, y0 = _small_problem()
    layer = torch.nn.Linear(2, 2, dtype=F64)

    def fn(y0, W):
        def f(t, y):
            return torch.tanh(y @ W.T) + 0.1 * layer(y)

        t = torch.tensor([0.0, 0.3], dtype=F64)
        return solvers.solve(solvers.ODE(f), y0, t, method=method, rtol=1e-9, atol=1e-9).ys

    method = ESDIRK(solvers.methods()["kvaerno5"].tableau, TIGHT)

    assert torch.autograd.gradcheck(fn, (y0, W), atol=1e-6, rtol=1e-5)


def test_backsolve_gradients_match_direct():
    """The forward solve is implicit; the backward solve takes an explicit method (the
    backward solve of BacksolveAdjoint takes Runge–Kutta tableaus only)."""
    torch.manual_seed(0)

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 3, dtype=F64)
            self.register_buffer("damping", torch.tensor([1.0, 5.0, 20.0], dtype=F64))

        def forward(self, t, y):
            return torch.tanh(self.layer(y)) - self.damping * y

    field = Field()
    y0 = torch.randn(2, 3, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    grads = []
    for adjoint in ("direct", solvers.BacksolveAdjoint(method="dopri5", rtol=1e-10, atol=1e-10)):
        y = y0.clone().requires_grad_(True)
        sol = solvers.solve(
            solvers.ODE(field), y, t, method="kvaerno5", rtol=1e-10, atol=1e-10, adjoint=adjoint
        )
        loss = (sol.ys**2).sum()
        grads.append(torch.autograd.grad(loss, [y, *field.parameters()]))
    direct, back = grads
    for a, b in zip(direct, back):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_backsolve_with_an_implicit_backward_method_is_refused_by_name():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = Y0.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="needs a Runge–Kutta method, got 'kvaerno5'"):
        solvers.solve(solvers.ODE(linear), y0, t, method="kvaerno5", adjoint="backsolve")


# ---------------------------------------------------------------------------------------------
# Bad input, failures


def test_sde_refused_by_name():
    sde = solvers.SDE(lambda t, y: -y, lambda t, y: 0.1 * torch.ones_like(y))
    with pytest.raises(ValueError, match="method 'kvaerno5' does not accept a SDE problem"):
        solvers.solve(sde, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="kvaerno5", dt=0.1)


def test_dde_refused_by_name():
    dde = solvers.DDE(lambda t, y, yd: -yd[0], torch.tensor([0.5], dtype=F64), 1.0)
    with pytest.raises(ValueError, match="method 'implicit_euler' does not accept a DDE"):
        solvers.solve(dde, Y0, torch.tensor([0.0, 1.0], dtype=F64), method="implicit_euler", dt=0.1)


def test_newton_that_cannot_converge_gives_a_per_sample_status():
    """A single Newton iteration cannot meet the tolerance on a fast nonlinear sample: its
    steps are rejected and shrunk until the loop gives up on it (a status); the sample at
    rest converges at once and finishes."""
    m = ESDIRK(solvers.methods()["kvaerno5"].tableau, Newton(max_iters=1))
    y0 = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    problem = solvers.ODE(lambda t, y: -50 * y**3)
    sol = solvers.solve(problem, y0, t, method=m, throw=False, max_steps=40)
    assert sol.status[0] == solvers.Status.SUCCESS
    assert sol.status[1] in (solvers.Status.NONFINITE, solvers.Status.MAX_STEPS)
    torch.testing.assert_close(sol.ys[0, -1], y0[0])
    with pytest.raises(solvers.SolverError, match=r"in samples \[1\]"):
        solvers.solve(problem, y0, t, method=m, max_steps=40)


def test_newton_failure_under_constant_steps_is_a_nonfinite_sample():
    m = ESDIRK(solvers.methods()["implicit_euler"].tableau, Newton(max_iters=1))
    y0 = torch.tensor([[0.0], [1.0]], dtype=F64)
    sol = solvers.solve(
        solvers.ODE(lambda t, y: -(y**3)),
        y0,
        torch.tensor([0.0, 1.0], dtype=F64),
        method=m,
        dt=0.1,
        throw=False,
    )
    assert sol.status == (solvers.Status.SUCCESS, solvers.Status.NONFINITE)
    assert torch.isfinite(sol.ys[0]).all() and torch.isnan(sol.ys[1, -1]).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rtol": -1.0}, "rtol must be a non-negative number"),
        ({"rtol": 0.0, "atol": 0.0}, "must not both be zero"),
        ({"max_iters": 0}, "max_iters must be a positive int"),
        ({"max_iters": 2.5}, "max_iters must be a positive int"),
        ({"jacobian": "forward"}, "unknown jacobian 'forward'; valid: autograd, finite_"),
        ({"update": "broyden"}, "unknown update 'broyden'; valid: chord, newton"),
    ],
)
def test_newton_settings_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Newton(**kwargs)


def test_stepper_arguments_checked():
    with pytest.raises(TypeError, match="tableau must be an ESDIRKTableau, got str"):
        ESDIRK("kvaerno5")
    with pytest.raises(TypeError, match="newton must be a Newton, got dict"):
        ESDIRK(solvers.methods()["kvaerno5"].tableau, {})
    trapezoid = ESDIRKTableau(
        name="trapezoid_like",
        a=((0.5, 0.5),),
        b=(0.25, 0.75),
        c=(1.0,),
        order=1,
        b_error=(0.25, -0.25),
        error_order=1,
        predictor=((0.0,),),
    )
    with pytest.raises(ValueError, match="is not stiffly accurate"):
        ESDIRK(trapezoid)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"a": ((0.0, 0.0),)}, "the diagonal γ must be positive"),
        ({"c": (0.9,)}, r"c\[2\] = 0.9 is not the sum of its row"),
        ({"b": (0.5, 0.6)}, "the weights b sum to"),
        ({"b_error": (0.1, 0.1)}, "the error weights must sum to 0"),
        ({"predictor": ((0.0, 1.0),)}, "predictor row 2 has 2 entries"),
        ({"c": ()}, "c must have 1 entries"),
        ({"error_order": None}, "give both b_error and error_order, or neither"),
    ],
)
def test_tableau_checks_itself(change, match):
    base = dict(
        name="bad",
        a=((0.0, 1.0),),
        b=(0.0, 1.0),
        c=(1.0,),
        order=1,
        b_error=(-0.5, 0.5),
        error_order=1,
        predictor=((0.0,),),
    )
    with pytest.raises(ValueError, match=match):
        ESDIRKTableau(**{**base, **change})


def test_float32_stiff_solve():
    y0 = torch.tensor([[2.0, 0.0]])
    sol = solvers.solve(
        solvers.ODE(vdp), y0, torch.tensor([0.0, 200.0]), method="kvaerno5", max_steps=200
    )
    assert sol.status == (solvers.Status.SUCCESS,)
    ref = scipy_reference(vdp_np, [2.0, 0.0], [0.0, 200.0])
    assert np.abs(sol.ys[0, -1].double().numpy() - ref[-1]).max() < 1e-3
