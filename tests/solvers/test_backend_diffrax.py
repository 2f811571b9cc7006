"""The diffrax backend against the native one: solutions, gradients, failures and refusals.

Each new configuration (method, adjoint, tolerances, shapes) compiles diffrax's loop once,
a few seconds on a CPU; the default run keeps to a handful of them.
"""

from __future__ import annotations

import sys

import pytest
import torch
from peer_problem import F64, problem
from torch import nn

import solvers
from solvers import CDE, ODE, SolverError, Status

pytest.importorskip("diffrax")


def solution_and_grads(field, y0, t, **kw):
    y = y0.clone().requires_grad_(True)
    sol = solvers.solve(ODE(field), y, t, **kw)
    loss = (sol.ys**2).sum()
    return (sol, *torch.autograd.grad(loss, [y, *field.parameters()]))


def assert_all_close(a, b, tol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def test_diffrax_is_listed():
    assert "diffrax" in solvers.backends()


@pytest.mark.parametrize(
    "method",
    ["rk4", "heun", *(pytest.param(m, marks=pytest.mark.slow) for m in ("euler", "midpoint"))],
)
def test_fixed_steps_agree_with_native_to_round_off(method):
    """diffrax steps on the native grid (StepTo), so both take the same steps of the same
    tableau: solutions and direct gradients agree to round-off."""
    field, y0, t = problem(6)
    sol, *grads = solution_and_grads(field, y0, t, method=method, dt=0.05, backend="diffrax")
    ref, *ref_grads = solution_and_grads(field, y0, t, method=method, dt=0.05)
    torch.testing.assert_close(sol.ys, ref.ys, rtol=0, atol=1e-13)
    assert_all_close(grads, ref_grads, 1e-12)
    # diffrax evaluates every stage; the native loop reuses the check at t0 as the first stage
    assert sol.stats.num_function_evals == ref.stats.num_function_evals + 1
    assert sol.stats.num_accepted_steps.tolist() == [20, 20, 20]


@pytest.mark.parametrize(
    "method", ["dopri5", *(pytest.param(m, marks=pytest.mark.slow) for m in ("tsit5", "bosh3"))]
)
def test_adaptive_methods_agree_with_native(method):
    """diffrax's own tableaus and PID controller: agreement to the tolerance."""
    field, y0, t = problem(6)
    kw = dict(method=method, rtol=1e-10, atol=1e-10)
    sol, *grads = solution_and_grads(field, y0, t, backend="diffrax", **kw)
    ref, *ref_grads = solution_and_grads(field, y0, t, **kw)
    torch.testing.assert_close(sol.ys, ref.ys, rtol=0, atol=1e-8)
    assert_all_close(grads, ref_grads, 1e-7)
    assert sol.success and (sol.stats.num_accepted_steps > 0).all()


def test_adjoints_agree():
    """diffrax's BacksolveAdjoint against its checkpointed direct gradient (to the
    tolerance), and against the native backsolve with the same fixed backward steps (to
    round-off: both integrate the same adjoint equation by the same Euler steps)."""
    field, y0, t = problem(6)
    kw = dict(method="dopri5", rtol=1e-10, atol=1e-10, backend="diffrax")
    _, *direct = solution_and_grads(field, y0, t, **kw)
    _, *back = solution_and_grads(field, y0, t, adjoint="backsolve", **kw)
    assert_all_close(back, direct, 1e-7)
    euler = dict(method="euler", dt=0.01, adjoint="backsolve")
    _, *mine = solution_and_grads(field, y0, t, backend="diffrax", **euler)
    _, *native = solution_and_grads(field, y0, t, **euler)
    assert_all_close(mine, native, 1e-12)


@pytest.mark.slow
def test_checkpoint_adjoint_equals_direct():
    field, y0, t = problem(6)
    kw = dict(method="rk4", dt=0.02, backend="diffrax")
    _, *direct = solution_and_grads(field, y0, t, **kw)
    _, *ckpt = solution_and_grads(field, y0, t, adjoint=solvers.CheckpointAdjoint(every=7), **kw)
    assert_all_close(ckpt, direct, 1e-13)


def cde_data():
    g = torch.Generator().manual_seed(2)
    B, T, C, H = 3, 8, 2, 4
    values = torch.randn(B, T, C, generator=g, dtype=F64).requires_grad_(True)
    times = (0.1 + 0.3 * torch.rand(T, generator=g, dtype=F64)).cumsum(0)
    z0 = torch.randn(B, H, generator=g, dtype=F64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lin = nn.Linear(H, H * C, dtype=F64)

    def f(t, z):
        return torch.tanh(lin(z)).reshape(B, H, C)

    return f, values, times, z0


def cde_solution_and_grad(kind, **kw):
    f, values, times, z0 = cde_data()
    path = solvers.interpolate(values, times, kind=kind)
    sol = solvers.solve(CDE(f, path), z0, times, **kw)
    return sol.ys, torch.autograd.grad(sol.ys.sum(), [values])[0]


def test_cde_agrees_with_native_and_differentiates_the_data():
    """Fixed steps on a Hermite path: round-off. Adaptive steps on a linear path, whose
    slope jumps at every knot: the knots go to diffrax as jump_ts, so both solvers step
    onto them and agree to the tolerance."""
    rk4 = dict(method="rk4", dt=0.05)
    mine = cde_solution_and_grad("hermite", backend="diffrax", **rk4)
    assert_all_close(mine, cde_solution_and_grad("hermite", **rk4), 1e-12)
    tight = dict(method="dopri5", rtol=1e-10, atol=1e-10)
    mine = cde_solution_and_grad("linear", backend="diffrax", **tight)
    assert_all_close(mine, cde_solution_and_grad("linear", **tight), 1e-7)


def test_float32_without_gradients():
    y0 = torch.randn(2, 3)
    t = torch.linspace(0.0, 1.0, 4)
    sol = solvers.solve(ODE(lambda t, y: -y), y0, t, backend="diffrax")
    assert sol.ys.dtype == torch.float32 and not sol.ys.requires_grad
    exact = y0[:, None] * torch.exp(-t)[None, :, None]
    torch.testing.assert_close(sol.ys, exact, rtol=1e-5, atol=1e-5)


def test_max_steps_marks_every_sample():
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    ode = ODE(lambda t, y: -y)
    kw = dict(method="euler", dt=0.01, backend="diffrax", max_steps=30)
    sol = solvers.solve(ode, y0, t, throw=False, **kw)
    assert sol.status == (Status.MAX_STEPS, Status.MAX_STEPS)
    assert torch.isnan(sol.ys[:, -1]).all() and torch.isfinite(sol.ys[:, :2]).all()
    with pytest.raises(SolverError, match=r"MAX_STEPS in samples \[0, 1\].*diffrax"):
        solvers.solve(ode, y0, t, **kw)


RALSTON = solvers.ButcherTableau(name="ralston", a=((2 / 3,),), b=(0.25, 0.75), c=(2 / 3,), order=2)


def sde():
    return solvers.SDE(lambda t, y: -y, lambda t, y: 0.1 * torch.ones_like(y))


@pytest.mark.parametrize(
    "make, kw, match",
    [
        (
            lambda: sde(),
            dict(method="euler_maruyama", dt=0.1),
            r"solves ODE, CDE problems only, got SDE",
        ),
        (
            lambda: ODE(lambda t, y: -y),
            dict(t=torch.linspace(0, 1, 3, dtype=F64).expand(2, 3)),
            r"one time grid shared by the batch, got t of shape \(2, 3\)",
        ),
        (
            lambda: ODE(lambda t, y: -y),
            dict(t=torch.linspace(0, 1, 3, dtype=F64).requires_grad_(True)),
            r"does not differentiate with respect to t",
        ),
        (
            lambda: ODE(lambda t, y: -y),
            dict(method=RALSTON, dt=0.1),
            r"has no method 'ralston'; it offers euler, midpoint",
        ),
        (
            lambda: ODE(lambda t, y: -y, jump_times=torch.ones(2, 1, dtype=F64)),
            dict(),
            r"jump times shared by the batch, got shape \(2, 1\)",
        ),
        (
            lambda: ODE(lambda t, y: -y),
            dict(adjoint=solvers.BacksolveAdjoint(method="rk4")),
            r"backward method 'rk4' is fixed-step; pass dt to BacksolveAdjoint",
        ),
    ],
)
def test_refusals(make, kw, match):
    kw = dict(kw)
    t = kw.pop("t", torch.linspace(0, 1, 3, dtype=F64))
    with pytest.raises(ValueError, match=match):
        solvers.solve(make(), torch.ones(2, 1, dtype=F64), t, backend="diffrax", **kw)


def test_jump_times_reach_diffrax():
    """A rate that switches at t = 1: with the jump time, every step of diffrax's lies on
    one side of it and the piecewise-linear solution comes out exact."""

    def f(t, y):
        return torch.where(t < 1.0, 1.0, -2.0).to(y.dtype).expand_as(y)

    t = torch.tensor([0.0, 0.5, 1.5, 3.0], dtype=F64)
    ode = ODE(f, jump_times=torch.tensor([1.0], dtype=F64))
    sol = solvers.solve(ode, torch.zeros(2, 1, dtype=F64), t, backend="diffrax")
    exact = torch.tensor([0.0, 0.5, 0.0, -3.0], dtype=F64).expand(2, 4)[..., None]
    torch.testing.assert_close(sol.ys, exact, rtol=0, atol=1e-12)


def test_fixed_steps_split_at_jump_times_like_native():
    """The switch at 1 lies inside the output interval [0, 2.2]: both backends split it
    there. The method is Euler, which has no stage at the end of a step, where diffrax would
    see the rate after the switch (it has no left limits)."""

    def f(t, y):
        return torch.where(t < 1.0, 1.0, -2.0).to(y.dtype).expand_as(y)

    t = torch.tensor([0.0, 2.2, 3.0], dtype=F64)
    ode = ODE(f, jump_times=torch.tensor([1.0], dtype=F64))
    kw = dict(method="euler", dt=0.3)
    mine = solvers.solve(ode, torch.zeros(2, 1, dtype=F64), t, backend="diffrax", **kw)
    native = solvers.solve(ode, torch.zeros(2, 1, dtype=F64), t, **kw)
    torch.testing.assert_close(mine.ys, native.ys, rtol=0, atol=1e-13)
    assert mine.stats.num_accepted_steps.tolist() == native.stats.num_accepted_steps.tolist()


@pytest.mark.gpu
def test_a_cuda_state_goes_through_diffrax_and_back():
    """The field runs on the device of y0; the solution and the gradients come back there."""
    field, y0, t = problem(6)
    kw = dict(method="rk4", dt=0.05, backend="diffrax")
    ref, *ref_grads = solution_and_grads(field, y0, t, **kw)
    cuda = torch.device("cuda")
    sol, *grads = solution_and_grads(field.to(cuda), y0.to(cuda), t.to(cuda), **kw)
    assert sol.ys.device.type == "cuda" and all(g.device.type == "cuda" for g in grads)
    torch.testing.assert_close(sol.ys.cpu(), ref.ys, rtol=0, atol=1e-12)
    assert_all_close([g.cpu() for g in grads], ref_grads, 1e-11)


def test_a_missing_jax_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffrax", None)  # import diffrax now raises
    with pytest.raises(ImportError, match=r'needs jax and diffrax .*pip install "ctrnn\[jax\]"'):
        solvers.solve(
            ODE(lambda t, y: -y), torch.ones(1, 1), torch.linspace(0, 1, 2), backend="diffrax"
        )
