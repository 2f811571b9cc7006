"""Hamiltonian problems and the symplectic methods, measured.

Symplecticity of one step (``Mᵀ J M = J`` to round-off), convergence order against exact
solutions, bounded energy error over 10⁴ steps (while explicit Euler's grows), the three
ways to build a problem agreeing, every Runge–Kutta method solving the problem through its
vector field, gradients (direct = checkpoint, finite differences, backsolve), and every
error message a user can trigger.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd import gradcheck

import solvers
from solvers import HamiltonianODE
from solvers._controller import ConstantStepSize, fixed_schedule
from solvers._hamiltonian import SplittingScheme, SymplecticSplitting
from solvers._integrate import integrate

F64 = torch.float64
SYMPLECTIC = {
    "semi_implicit_euler": 1,
    "semi_implicit_euler_drift_first": 1,
    "leapfrog": 2,
    "yoshida4": 4,
}


def canonical_J(n: int) -> torch.Tensor:
    eye, zero = torch.eye(n, dtype=F64), torch.zeros(n, n, dtype=F64)
    return torch.cat([torch.cat([zero, -eye], 1), torch.cat([eye, zero], 1)], 0)


# ---------------------------------------------------------------------------------------------
# Problems


def pendulum() -> HamiltonianODE:
    """``H = p²/2 - cos q``."""
    return HamiltonianODE(dp=lambda t, q: -torch.sin(q), dq=lambda t, p: p)


# A coupled, anharmonic, time-dependent separable system in three dimensions:
# T(t, p) = ½ (1 + ¼ sin t) pᵀ M⁻¹ p,  V(t, q) = (1 + ½ cos t)(½ qᵀ K q + ¼ Σ q⁴).
MINV = torch.tensor([[1.0, 0.2, 0.0], [0.2, 0.8, 0.1], [0.0, 0.1, 1.5]], dtype=F64)
K = torch.tensor([[2.0, -0.5, 0.3], [-0.5, 1.0, 0.0], [0.3, 0.0, 3.0]], dtype=F64)


def coupled_dp(t, q):
    return -(1 + 0.5 * torch.cos(t)) * (q @ K + q**3)


def coupled_dq(t, p):
    return (1 + 0.25 * torch.sin(t)) * (p @ MINV)


def coupled() -> HamiltonianODE:
    return HamiltonianODE(dp=coupled_dp, dq=coupled_dq)


def coupled_kinetic(t, p):
    return 0.5 * (1 + 0.25 * torch.sin(t)) * ((p @ MINV) * p).sum(1)


def coupled_potential(t, q):
    return (1 + 0.5 * torch.cos(t)) * (0.5 * ((q @ K) * q).sum(1) + 0.25 * (q**4).sum(1))


# Harmonic oscillators with frequencies ω: H = Σ (p²/2 + ω² q²/2).
OMEGA = torch.tensor([1.0, 2.0], dtype=F64)


def oscillator(omega: torch.Tensor = OMEGA) -> HamiltonianODE:
    return HamiltonianODE(dp=lambda t, q: -(omega**2) * q, dq=lambda t, p: p)


def oscillator_exact(y0: torch.Tensor, t: float, omega: torch.Tensor = OMEGA) -> torch.Tensor:
    n = y0.shape[1] // 2
    p0, q0 = y0[:, :n], y0[:, n:]
    c, s = torch.cos(omega * t), torch.sin(omega * t)
    return torch.cat([p0 * c - q0 * omega * s, q0 * c + p0 / omega * s], dim=1)


def energy(y: torch.Tensor, omega: torch.Tensor = OMEGA) -> torch.Tensor:
    n = y.shape[-1] // 2
    p, q = y[..., :n], y[..., n:]
    return 0.5 * (p**2 + (omega * q) ** 2).sum(-1)


Y0_OSC = torch.tensor([[0.3, -0.2, 1.0, 0.5], [-0.7, 0.4, 0.1, -0.3]], dtype=F64)


# ---------------------------------------------------------------------------------------------
# Symplecticity of one step


def one_step_jacobian(problem, method, y: torch.Tensor, h: float, t0: float = 0.0):
    t = torch.tensor([t0, t0 + h], dtype=F64)

    def step(y_):
        return solvers.solve(problem, y_[None], t, method=method, dt=h).ys[0, -1]

    return torch.autograd.functional.jacobian(step, y)


CASES = {
    "pendulum": (pendulum, torch.tensor([0.4, 2.5], dtype=F64)),
    "coupled": (coupled, torch.tensor([0.3, -0.5, 0.8, 1.1, -0.4, 0.6], dtype=F64)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", list(SYMPLECTIC))
def test_one_step_is_symplectic(method, case):
    make, y = CASES[case]
    n = y.shape[0] // 2
    J = canonical_J(n)
    for h, t0 in ((0.1, 0.0), (0.37, 1.3)):
        M = one_step_jacobian(make(), method, y, h, t0)
        assert (M.T @ J @ M - J).abs().max() < 1e-12
        # volume preservation follows
        assert abs(torch.linalg.det(M).item() - 1) < 1e-12


def test_runge_kutta_step_is_not_symplectic():
    # the check above discriminates: rk4's step misses Mᵀ J M = J by far more than round-off
    make, y = CASES["pendulum"]
    M = one_step_jacobian(make(), "rk4", y, 0.3)
    J = canonical_J(1)
    assert (M.T @ J @ M - J).abs().max() > 1e-6


# ---------------------------------------------------------------------------------------------
# Convergence order


def slope(dts, errs) -> float:
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


STEP_EXPONENTS = {1: range(5, 10), 2: range(4, 9), 4: range(2, 7)}


@pytest.mark.parametrize("method", list(SYMPLECTIC))
def test_order_on_harmonic_oscillator(method):
    order = SYMPLECTIC[method]
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ref = oscillator_exact(Y0_OSC, 1.0)
    dts, errs = [], []
    for k in STEP_EXPONENTS[order]:
        dt = 2.0**-k
        sol = solvers.solve(oscillator(), Y0_OSC, t, method=method, dt=dt)
        dts.append(dt)
        errs.append(float((sol.ys[:, -1] - ref).abs().max()))
    assert min(errs) > 1e-12, errs
    assert abs(slope(dts, errs) - order) < 0.3, (errs, slope(dts, errs))


@pytest.mark.parametrize("method", list(SYMPLECTIC))
def test_order_with_time_dependent_halves(method):
    # Both dp and dq depend on t: the kicks and drifts must see the right times to keep
    # the order (the reference is dopri5 at tight tolerances).
    order = SYMPLECTIC[method]
    y0 = torch.tensor([[0.3, -0.5, 0.8, 1.1, -0.4, 0.6]], dtype=F64)
    t = torch.tensor([0.2, 1.2], dtype=F64)
    ref = solvers.solve(coupled(), y0, t, method="dopri5", rtol=1e-13, atol=1e-13).ys[:, -1]
    dts, errs = [], []
    for k in STEP_EXPONENTS[order]:
        dt = 2.0**-k
        sol = solvers.solve(coupled(), y0, t, method=method, dt=dt)
        dts.append(dt)
        errs.append(float((sol.ys[:, -1] - ref).abs().max()))
    assert min(errs) > 1e-10, errs
    assert abs(slope(dts, errs) - order) < 0.3, (errs, slope(dts, errs))


# ---------------------------------------------------------------------------------------------
# Energy over long times


def energy_errors(method: str) -> torch.Tensor:
    """``|H(t) - H(0)|`` at each of 10⁴ steps of dt = 0.1 on a harmonic oscillator."""
    omega = torch.ones(1, dtype=F64)
    y0 = torch.tensor([[0.0, 1.0]], dtype=F64)
    t = torch.linspace(0, 1000, 10_001, dtype=F64)
    sol = solvers.solve(oscillator(omega), y0, t, method=method, dt=0.1, max_steps=20_000)
    assert sol.stats.num_accepted_steps.tolist() == [10_000]
    H = energy(sol.ys[0], omega)
    return (H - H[0]).abs()


def test_energy_error_stays_bounded_while_explicit_euler_grows():
    bounds = {"semi_implicit_euler": 0.05, "leapfrog": 2e-3, "yoshida4": 1e-5}
    worst = {}
    for method, bound in bounds.items():
        err = energy_errors(method)
        worst[method] = float(err.max())
        assert worst[method] < bound, (method, worst[method])
        # no drift: the last thousand steps are no worse than the first thousand
        assert float(err[-1000:].max()) <= 1.01 * float(err[:1000].max()) + 1e-15
    euler = energy_errors("euler")
    H = euler + 0.5
    assert bool((H.diff() > 0).all()), "explicit Euler's energy grows at every step"
    assert float(euler[-1]) > 10 * float(euler[1000])
    assert float(euler[-1]) > 10 * worst["semi_implicit_euler"]


# ---------------------------------------------------------------------------------------------
# The Runge–Kutta methods and the three constructors


@pytest.mark.parametrize(
    "method, options, tol",
    [
        ("rk4", dict(dt=0.01), 1e-8),
        ("dopri5", dict(rtol=1e-10, atol=1e-12), 1e-8),
        ("tsit5", dict(rtol=1e-10, atol=1e-12), 1e-8),
    ],
)
def test_runge_kutta_methods_solve_it_through_the_vector_field(method, options, tol):
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    sol = solvers.solve(oscillator(), Y0_OSC, t, method=method, **options)
    assert sol.ys.shape == (2, 3, 4)
    assert (sol.ys[:, -1] - oscillator_exact(Y0_OSC, 1.0)).abs().max() < tol
    as_ode = solvers.solve(
        solvers.ODE(oscillator().vector_field), Y0_OSC, t, method=method, **options
    )
    torch.testing.assert_close(sol.ys, as_ode.ys, rtol=0, atol=0)


def test_vector_field_is_momenta_first():
    y = torch.tensor([[2.0, 3.0]], dtype=F64)  # p = 2, q = 3
    f = pendulum().vector_field(torch.zeros(1, dtype=F64), y)
    torch.testing.assert_close(f, torch.tensor([[-math.sin(3.0), 2.0]], dtype=F64))


def coupled_grad_H(t, y):
    n = y.shape[1] // 2
    p, q = y[:, :n], y[:, n:]
    return torch.cat([coupled_dq(t, p), -coupled_dp(t, q)], dim=1)


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "rk4"])
def test_from_hamiltonian_agrees_with_the_explicit_halves(method):
    y0 = torch.tensor([[0.3, -0.5, 0.8, 1.1, -0.4, 0.6], [0.1, 0.2, -0.3, 0.0, 0.5, -1.0]])
    y0 = y0.to(F64)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    explicit = solvers.solve(coupled(), y0, t, method=method, dt=0.05)
    built = HamiltonianODE.from_hamiltonian(coupled_kinetic, coupled_potential)
    auto = solvers.solve(built, y0, t, method=method, dt=0.05)
    torch.testing.assert_close(auto.ys, explicit.ys, rtol=1e-13, atol=1e-13)


def test_from_gradient_agrees_with_the_explicit_halves():
    y0 = torch.tensor([[0.3, -0.5, 0.8, 1.1, -0.4, 0.6]], dtype=F64)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    explicit = solvers.solve(coupled(), y0, t, method="rk4", dt=0.05)
    for J in (None, canonical_J(3)):
        general = HamiltonianODE.from_gradient(coupled_grad_H, J=J)
        assert not general.separable
        with pytest.raises(ValueError, match="no separable halves"):
            general.dp(torch.zeros(1, dtype=F64), y0[:, 3:])
        sol = solvers.solve(general, y0, t, method="rk4", dt=0.05)
        torch.testing.assert_close(sol.ys, explicit.ys, rtol=1e-14, atol=1e-14)


def test_from_gradient_with_a_noncanonical_J():
    # J = -J_canonical reverses time: the solution runs the oscillator backwards
    general = HamiltonianODE.from_gradient(
        lambda t, y: y * torch.cat([torch.ones(2), OMEGA**2]).to(F64), J=-canonical_J(2)
    )
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = solvers.solve(general, Y0_OSC, t, method="dopri5", rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sol.ys[:, -1], oscillator_exact(Y0_OSC, -1.0), rtol=0, atol=1e-8)


def test_from_hamiltonian_works_without_gradient_recording():
    built = HamiltonianODE.from_hamiltonian(coupled_kinetic, coupled_potential)
    y = torch.randn(4, 6, dtype=F64)
    tt = torch.zeros(4, dtype=F64)
    with torch.no_grad():
        f = built.vector_field(tt, y)
    assert not f.requires_grad
    torch.testing.assert_close(f, coupled().vector_field(tt, y), rtol=1e-14, atol=1e-14)


class Quadratic(nn.Module):
    def forward(self, t, x):
        return 0.5 * (x**2).sum(1)


def test_from_hamiltonian_keeps_no_graph_that_nothing_needs():
    y0 = torch.tensor([[0.3, -0.5]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    frozen = HamiltonianODE.from_hamiltonian(Quadratic(), Quadratic())
    assert not solvers.solve(frozen, y0, t, method="leapfrog", dt=0.1).ys.requires_grad
    # with trainable parameters or an input that needs a gradient, the graph is kept
    problem, params = learned_problem()
    ys = solvers.solve(problem, torch.cat([y0, y0], 1), t, method="leapfrog", dt=0.1).ys
    assert all(g is not None for g in torch.autograd.grad(ys.sum(), params))
    y0g = y0.clone().requires_grad_()
    ys = solvers.solve(frozen, y0g, t, method="leapfrog", dt=0.1).ys
    (g,) = torch.autograd.grad(ys[0, -1, 1], y0g)
    exact = torch.tensor([[math.sin(1.0), math.cos(1.0)]], dtype=F64)  # ∂q(1)/∂(p0, q0)
    torch.testing.assert_close(g, exact, rtol=0, atol=5e-3)


# ---------------------------------------------------------------------------------------------
# The stepping machinery


def test_registry_entries():
    registry = solvers.methods()
    for name, order in SYMPLECTIC.items():
        method = registry[name]
        assert isinstance(method, SymplecticSplitting)
        assert method.name == name and method.order == order and not method.adaptive
        assert method.problems == ("HamiltonianODE",)
        assert len(method.scheme.reference) > 10
    for name in ("euler", "rk4", "dopri5"):
        assert registry[name].accepts(pendulum())


@pytest.mark.parametrize("method, per_step", [("leapfrog", 1), ("yoshida4", 3)])
def test_the_shared_force_is_evaluated_once(method, per_step):
    calls = {"dp": 0, "dq": 0}

    def dp(t, q):
        calls["dp"] += 1
        return -q

    def dq(t, p):
        calls["dq"] += 1
        return p

    y0 = torch.tensor([[0.0, 1.0]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = solvers.solve(HamiltonianODE(dp, dq), y0, t, method=method, dt=0.1)
    # one evaluation of each at t0 (the shape check, reused as the first force), then per step
    assert calls == {"dp": 1 + 10 * per_step, "dq": 1 + 10 * per_step}
    assert sol.stats.num_function_evals == 1 + 10 * per_step


@settings(max_examples=15, deadline=None)
@given(
    method=st.sampled_from(list(SYMPLECTIC)),
    offsets=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
    dt=st.sampled_from([0.05, 0.13, 0.3]),
)
def test_a_batched_solve_equals_the_per_sample_solves(method, offsets, dt):
    y0 = torch.tensor([[0.3, -0.5, 0.8, 1.1, -0.4, 0.6]], dtype=F64).repeat(3, 1)
    y0 = y0 * torch.tensor([1.0, -0.5, 2.0], dtype=F64)[:, None]
    t = (
        torch.tensor([0.0, 0.3, 1.0], dtype=F64) * torch.tensor([1.0, 1.5, 0.7], dtype=F64)[:, None]
        + torch.tensor(offsets, dtype=F64)[:, None]
    )
    batched = solvers.solve(coupled(), y0, t, method=method, dt=dt)
    for b in range(3):
        single = solvers.solve(coupled(), y0[b : b + 1], t[b], method=method, dt=dt)
        torch.testing.assert_close(batched.ys[b], single.ys[0], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("method", list(SYMPLECTIC))
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
def test_single_output_time_returns_y0(method, per_sample):
    t = torch.tensor([[0.5], [1.5]], dtype=F64) if per_sample else torch.tensor([0.5], dtype=F64)
    sol = solvers.solve(oscillator(), Y0_OSC, t, method=method, dt=0.1)
    assert sol.ys.shape == (2, 1, 4)
    torch.testing.assert_close(sol.ys[:, 0], Y0_OSC, atol=0, rtol=0)
    assert sol.stats.num_accepted_steps.tolist() == [0, 0]


def test_max_steps_marks_the_samples():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(solvers.SolverError, match="MAX_STEPS"):
        solvers.solve(pendulum(), Y0_OSC[:, :2], t, method="leapfrog", dt=0.01, max_steps=50)
    sol = solvers.solve(
        pendulum(), Y0_OSC[:, :2], t, method="leapfrog", dt=0.01, max_steps=50, throw=False
    )
    assert sol.status == (solvers.Status.MAX_STEPS,) * 2
    assert bool(sol.ys[:, -1].isnan().all())


@pytest.mark.parametrize("checkpoint_every", [None, 3])
@pytest.mark.parametrize("per_sample", [False, True])
def test_the_loop_reads_nothing_back(per_sample, checkpoint_every, request):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    problem = HamiltonianODE(dp=lambda t, q: net(q) * torch.cos(t), dq=lambda t, p: p)
    y0 = torch.randn(3, 4, requires_grad=True)
    t = torch.linspace(0, 1, 5)
    lanes_t = (t + 0.1 * torch.arange(3)[:, None]) if per_sample else t[None]
    method = solvers.methods()["yoshida4"]
    # the schedule's host reads happen before the loop: plan it first, then forbid them
    schedule = fixed_schedule(lanes_t, 0.05, 10_000)
    request.getfixturevalue("forbid_host_reads")
    out = integrate(
        method,
        problem.terms(),
        (y0,),
        lanes_t,
        ConstantStepSize(0.05),
        schedule=schedule,
        checkpoint_every=checkpoint_every,
    )
    ys = out.ys[0]
    assert ys.shape == (3, 5, 4)
    ys.pow(2).sum().backward()
    assert y0.grad is not None and y0.grad.shape == y0.shape


# ---------------------------------------------------------------------------------------------
# Gradients


class Potential(nn.Module):
    """A small learned potential ``V(q) = Σ softplus(W q + b)``: the force is ``-∇V``."""

    def __init__(self, n: int = 2, hidden: int = 5, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lin = nn.Linear(n, hidden, dtype=F64)

    def forward(self, t, q):
        return nn.functional.softplus(self.lin(q)).sum(1) * (1 + 0.3 * torch.sin(t))


def learned_problem() -> tuple[HamiltonianODE, tuple[torch.Tensor, ...]]:
    V = Potential()
    problem = HamiltonianODE.from_hamiltonian(lambda t, p: 0.5 * (p**2).sum(1), V)
    return problem, tuple(V.parameters())


def loss_and_grads(method, adjoint, t_data=((0.0, 0.37, 0.95), (0.1, 0.62, 1.23))):
    problem, params = learned_problem()
    y0 = torch.tensor([[0.3, -0.5, 0.8, 1.1], [0.1, 0.2, -0.3, 0.4]], dtype=F64)
    y0.requires_grad_()
    t = torch.tensor(t_data, dtype=F64, requires_grad=True)
    sol = solvers.solve(problem, y0, t, method=method, dt=0.1, adjoint=adjoint)
    loss = (sol.ys**2).sum() + sol.ys[:, -1, 0].sum()
    grads = torch.autograd.grad(loss, (y0, t, *params))
    return loss, grads


@pytest.mark.parametrize("every", [None, 1, 4])
@pytest.mark.parametrize("method", list(SYMPLECTIC))
def test_checkpoint_gradients_equal_direct(method, every):
    loss_d, direct = loss_and_grads(method, "direct")
    loss_c, ckpt = loss_and_grads(method, solvers.CheckpointAdjoint(every))
    torch.testing.assert_close(loss_c, loss_d, rtol=0, atol=0)
    for a, b in zip(ckpt, direct):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_gradcheck_direct(method):
    weights = (
        torch.tensor([[0.5, -0.3], [0.2, 0.8]], dtype=F64, requires_grad=True),
        torch.tensor([0.1, -0.2], dtype=F64, requires_grad=True),
    )
    y0 = torch.tensor([[0.3, -0.5, 0.8, 1.1]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.37, 0.95], dtype=F64, requires_grad=True)

    def fn(y0, t, w, b):
        problem = HamiltonianODE(
            dp=lambda t_, q: -torch.tanh(q @ w.T + b) * torch.cos(t_),
            dq=lambda t_, p: p,
        )
        return solvers.solve(problem, y0, t, method=method, dt=0.1).ys

    assert gradcheck(fn, (y0, t, *weights), eps=1e-6, atol=1e-8, rtol=1e-7)


def test_backsolve_with_rk4_matches_direct():
    loss_d, direct = loss_and_grads("rk4", "direct")
    loss_b, back = loss_and_grads("rk4", solvers.BacksolveAdjoint(dt=0.01))
    torch.testing.assert_close(loss_b, loss_d, rtol=0, atol=0)
    for a, b in zip(back, direct):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_backsolve_after_a_symplectic_forward_solve():
    # the forward solve is leapfrog's; the backward solve is rk4's, on the vector field
    _, direct = loss_and_grads("leapfrog", "direct")
    _, back = loss_and_grads("leapfrog", solvers.BacksolveAdjoint(method="rk4", dt=0.01))
    for a, b in zip(back, direct):
        torch.testing.assert_close(a, b, rtol=0, atol=0.02)


# ---------------------------------------------------------------------------------------------
# Errors a user can trigger


@pytest.mark.parametrize("method", list(SYMPLECTIC))
def test_symplectic_method_rejects_the_general_form(method):
    general = HamiltonianODE.from_gradient(coupled_grad_H)
    y0 = torch.ones(1, 6, dtype=F64)
    with pytest.raises(ValueError, match="separable") as e:
        solvers.solve(general, y0, torch.tensor([0.0, 1.0], dtype=F64), method=method, dt=0.1)
    assert repr(method) in str(e.value) and "from_gradient" in str(e.value)


def test_symplectic_method_rejects_an_ode():
    with pytest.raises(ValueError, match="'leapfrog' does not accept a ODE problem") as e:
        solvers.solve(
            solvers.ODE(lambda t, y: -y), torch.ones(1, 2), [0.0, 1.0], method="leapfrog", dt=0.1
        )
    assert "HamiltonianODE" in str(e.value)


def test_backsolve_needs_a_runge_kutta_method_for_the_backward_solve():
    y0 = torch.ones(1, 2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="Runge–Kutta"):
        solvers.solve(pendulum(), y0, [0.0, 1.0], method="leapfrog", dt=0.1, adjoint="backsolve")


def test_J_must_be_skew_symmetric():
    J = canonical_J(2)
    J[0, 3] = 0.25  # was 0
    with pytest.raises(ValueError, match=r"skew-symmetric.*0\.25"):
        HamiltonianODE.from_gradient(coupled_grad_H, J=J)
    with pytest.raises(ValueError, match=r"square \(2n, 2n\).*\(4, 3\)"):
        HamiltonianODE.from_gradient(coupled_grad_H, J=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"expected J of shape \(6, 6\)"):
        solvers.solve(
            HamiltonianODE.from_gradient(coupled_grad_H, J=canonical_J(2)),
            torch.ones(1, 6, dtype=F64),
            [0.0, 1.0],
            method="rk4",
            dt=0.1,
        )


@pytest.mark.parametrize("shape", [(3, 5), (3, 2, 2)])
def test_state_must_be_batch_by_2n(shape):
    with pytest.raises(ValueError, match=r"shape \(batch, 2n\).*got y0 of shape"):
        solvers.solve(pendulum(), torch.ones(shape), [0.0, 1.0], method="leapfrog", dt=0.1)


def test_halves_must_return_the_right_shape():
    bad = HamiltonianODE(dp=lambda t, q: q[:, :1], dq=lambda t, p: p)
    with pytest.raises(ValueError, match=r"dp at t0 returned \(2, 1\); expected shape \(2, 2\)"):
        solvers.solve(bad, torch.ones(2, 4), [0.0, 1.0], method="leapfrog", dt=0.1)
    bad = HamiltonianODE(dp=lambda t, q: -q, dq=lambda t, p: None)
    with pytest.raises(ValueError, match=r"dq at t0 returned NoneType"):
        solvers.solve(bad, torch.ones(2, 4), [0.0, 1.0], method="leapfrog", dt=0.1)


def test_hamiltonian_parts_must_return_one_value_per_sample():
    bad = HamiltonianODE.from_hamiltonian(
        lambda t, p: 0.5 * p**2, lambda t, q: -torch.cos(q).sum(1)
    )
    with pytest.raises(ValueError, match=r"kinetic returned \(2, 2\); expected one value"):
        solvers.solve(bad, torch.ones(2, 4), [0.0, 1.0], method="leapfrog", dt=0.1)


def test_constructors_reject_non_callables():
    with pytest.raises(TypeError, match="dq must be callable"):
        HamiltonianODE(dp=lambda t, q: -q, dq=3)
    with pytest.raises(TypeError, match="potential must be callable"):
        HamiltonianODE.from_hamiltonian(lambda t, p: p, "V")
    with pytest.raises(TypeError, match="grad_H must be callable"):
        HamiltonianODE.from_gradient(None)


def test_splitting_scheme_validates_itself():
    with pytest.raises(ValueError, match=r"kicks sum to 0\.5"):
        SplittingScheme(name="bad", kicks=(0.25, 0.25), drifts=(1.0,), order=2)
    with pytest.raises(ValueError, match=r"drifts sum to 2\.0"):
        SplittingScheme(name="bad", kicks=(0.5, 0.5), drifts=(2.0,), order=2)
    with pytest.raises(ValueError, match="1 drifts need 2 kicks"):
        SplittingScheme(name="bad", kicks=(1.0,), drifts=(1.0,), order=1)
    with pytest.raises(ValueError, match="order must be a positive integer"):
        SplittingScheme(name="bad", kicks=(0.5, 0.5), drifts=(1.0,), order=0)
    with pytest.raises(TypeError, match="must be a SplittingScheme"):
        SymplecticSplitting("leapfrog")


def test_a_custom_scheme_is_a_method_object():
    # position Verlet (drift–kick–drift) written as a scheme: still order 2, still symplectic
    dkd = SymplecticSplitting(
        SplittingScheme(name="position_verlet", kicks=(0.0, 1.0, 0.0), drifts=(0.5, 0.5), order=2)
    )
    make, y = CASES["coupled"]
    M = one_step_jacobian(make(), dkd, y, 0.2, 0.5)
    J = canonical_J(3)
    assert (M.T @ J @ M - J).abs().max() < 1e-12
    t = torch.tensor([0.0, 1.0], dtype=F64)
    errs = [
        float(
            (
                solvers.solve(oscillator(), Y0_OSC, t, method=dkd, dt=dt).ys[:, -1]
                - oscillator_exact(Y0_OSC, 1.0)
            )
            .abs()
            .max()
        )
        for dt in (1 / 16, 1 / 32, 1 / 64)
    ]
    assert abs(slope([1 / 16, 1 / 32, 1 / 64], errs) - 2) < 0.3


def test_jump_times_of_a_forcing_are_stepped_onto():
    """A force that switches at t = 1 (right-continuous): with the jump time, dopri5's
    adaptive steps land on it and the solution is as accurate as the tolerance says."""

    def dp(t, q):
        return torch.where(t < 1.0, 1.0, -2.0).to(q.dtype).expand_as(q)

    h = HamiltonianODE(dp=dp, dq=lambda t, p: p)
    y0 = torch.zeros(2, 2, dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    # p(2) = 1 - 2 = -1; q(2) = 1/2 + (1 - 1) = 0.5 + ∫_1^2 (1 - 2 (s - 1)) ds = 0.5 + 0 = 0.5
    exact = torch.tensor([-1.0, 0.5], dtype=F64)
    with_jumps = h.with_jump_times(torch.tensor([1.0], dtype=F64))
    assert with_jumps.jump_times() is not None and h.jump_times() is None
    sol = solvers.solve(with_jumps, y0, t, method="dopri5", rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sol.ys[0, -1], exact, rtol=0, atol=1e-10)
