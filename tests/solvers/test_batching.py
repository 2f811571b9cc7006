"""Batching: per-sample time grids, shared grids, state shapes, T == 1 and step counters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solvers

F64 = torch.float64


def nonlinear(t, y):
    return -(y**3) + torch.sin(t)


@st.composite
def per_sample_problems(draw):
    """``(y0, t)`` with ``y0`` of shape (batch, 2) and strictly increasing ``t`` (batch, T)."""
    batch = draw(st.integers(2, 4))
    T = draw(st.integers(2, 6))
    floats = dict(allow_nan=False, allow_infinity=False)
    starts = draw(st.lists(st.floats(-2.0, 2.0, **floats), min_size=batch, max_size=batch))
    gaps = draw(
        st.lists(
            st.lists(st.floats(0.05, 1.0, **floats), min_size=T - 1, max_size=T - 1),
            min_size=batch,
            max_size=batch,
        )
    )
    y0 = draw(
        st.lists(
            st.lists(st.floats(-1.5, 1.5, **floats), min_size=2, max_size=2),
            min_size=batch,
            max_size=batch,
        )
    )
    t = torch.tensor(starts, dtype=F64)[:, None] + torch.cat(
        [torch.zeros(batch, 1, dtype=F64), torch.tensor(gaps, dtype=F64).cumsum(1)], dim=1
    )
    return torch.tensor(y0, dtype=F64), t


SOLVE_OPTIONS = {
    "dopri5": dict(method="dopri5"),
    "tsit5": dict(method="tsit5"),
    "rk4": dict(method="rk4", dt=0.1),
}


@pytest.mark.parametrize("name", list(SOLVE_OPTIONS))
@settings(max_examples=25, deadline=None)
@given(problem=per_sample_problems())
def test_batched_per_sample_solve_equals_solving_each_sample_alone(name, problem):
    y0, t = problem
    options = SOLVE_OPTIONS[name]
    batched = solvers.solve(solvers.ODE(nonlinear), y0, t, **options)
    assert batched.ys.shape == (y0.shape[0], t.shape[1], 2)
    for i in range(y0.shape[0]):
        alone = solvers.solve(solvers.ODE(nonlinear), y0[i : i + 1], t[i : i + 1], **options)
        torch.testing.assert_close(batched.ys[i : i + 1], alone.ys, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("options", SOLVE_OPTIONS.values(), ids=list(SOLVE_OPTIONS))
def test_shared_grid_equals_the_expanded_grid(options):
    y0 = torch.tensor([[0.3, -1.0], [1.2, 0.4], [-0.7, 0.9]], dtype=F64)
    t = torch.tensor([0.0, 0.35, 1.0, 2.5], dtype=F64)
    shared = solvers.solve(solvers.ODE(nonlinear), y0, t, **options)
    expanded = solvers.solve(solvers.ODE(nonlinear), y0, t.expand(3, -1), **options)
    torch.testing.assert_close(shared.ys, expanded.ys, atol=1e-12, rtol=1e-12)
    assert torch.equal(shared.stats.num_accepted_steps, expanded.stats.num_accepted_steps)
    assert shared.ts.shape == (4,)
    assert expanded.ts.shape == (3, 4)


M = torch.tensor([[-0.5, 1.0, 0.0], [-1.0, -0.5, 0.2], [0.0, 0.3, -0.2]], dtype=F64)


def matrix_field(t, y):
    return y @ M  # y: (batch, 2, 3)


@pytest.mark.parametrize(
    "options",
    [dict(method="dopri5", rtol=1e-9, atol=1e-9), dict(method="rk4", dt=0.01)],
    ids=["dopri5", "rk4"],
)
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
def test_multi_dimensional_state(options, per_sample):
    g = torch.Generator().manual_seed(0)
    y0 = torch.randn(4, 2, 3, generator=g, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0, 2.0, 2.5], dtype=F64)
    if per_sample:
        t = t + torch.tensor([0.0, 0.1, 0.25, 1.0], dtype=F64)[:, None]
    sol = solvers.solve(solvers.ODE(matrix_field), y0, t, **options)
    assert sol.ts.shape == t.shape
    torch.testing.assert_close(sol.ts, t, rtol=0, atol=0)
    assert sol.ys.shape == (4, 5, 2, 3)
    tt = t.expand(4, -1)
    elapsed = tt - tt[:, :1]  # (batch, T)
    expm = torch.linalg.matrix_exp(M * elapsed[..., None, None])  # (batch, T, 3, 3)
    exact = y0[:, None] @ expm  # (batch, T, 2, 3)
    torch.testing.assert_close(sol.ys, exact, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(sol.ys[:, 0], y0, atol=0, rtol=0)


@pytest.mark.parametrize(
    "name", [n for n, m in solvers.methods().items() if m.accepts(solvers.ODE(nonlinear))]
)
@pytest.mark.parametrize("per_sample", [False, True], ids=["shared", "per-sample"])
def test_single_output_time_returns_y0(name, per_sample):
    y0 = torch.tensor([[0.3, -1.0], [1.2, 0.4]], dtype=F64)
    t = torch.tensor([[0.5], [1.5]], dtype=F64) if per_sample else torch.tensor([0.5], dtype=F64)
    dt = None if solvers.methods()[name].adaptive else 0.1
    sol = solvers.solve(solvers.ODE(nonlinear), y0, t, method=name, dt=dt)
    assert sol.ys.shape == (2, 1, 2)
    torch.testing.assert_close(sol.ys[:, 0], y0, atol=0, rtol=0)
    assert sol.ts.shape == t.shape
    assert sol.status == (solvers.Status.SUCCESS,) * 2
    assert sol.stats.num_accepted_steps.tolist() == [0, 0]


def expected_fixed_steps(t: torch.Tensor, dt: float) -> int:
    return sum(math.ceil(d / dt) for d in np.diff(t.tolist()))


@pytest.mark.parametrize("name", ["euler", "midpoint", "heun", "rk4"])
def test_fixed_step_counts_shared_grid(name):
    y0 = torch.tensor([[0.3, -1.0], [1.2, 0.4], [0.0, 0.0]], dtype=F64)
    t = torch.tensor([0.0, 0.25, 1.0, 1.05, 2.0], dtype=F64)
    dt = 0.1
    # ceil: 3 + 8 + 1 + 10 = 22 steps
    expected = expected_fixed_steps(t, dt)
    assert expected == 22
    sol = solvers.solve(solvers.ODE(nonlinear), y0, t, method=name, dt=dt)
    assert sol.stats.num_accepted_steps.tolist() == [expected] * 3
    assert sol.stats.num_rejected_steps.tolist() == [0] * 3
    stages = solvers.methods()[name].for_terms(solvers.ODE(nonlinear).terms()).tableau.stages
    # One evaluation to check the field at t0 (reused as the first stage), then the stages.
    assert sol.stats.num_function_evals == 1 + expected * stages - 1


def test_fixed_step_counts_per_sample_grid():
    """Each sample's count is its own Σ ceil(Δ/dt), not the longest sample's."""
    y0 = torch.tensor([[0.3, -1.0], [1.2, 0.4], [0.0, 0.5]], dtype=F64)
    t = torch.tensor(
        [[0.0, 0.25, 1.0], [0.0, 0.5, 3.0], [1.0, 1.05, 1.1]],
        dtype=F64,
    )
    dt = 0.1
    expected = [expected_fixed_steps(row, dt) for row in t]
    assert expected == [3 + 8, 5 + 25, 1 + 1]
    sol = solvers.solve(solvers.ODE(nonlinear), y0, t, method="rk4", dt=dt)
    assert sol.stats.num_accepted_steps.tolist() == expected
    assert sol.stats.num_rejected_steps.tolist() == [0, 0, 0]


def test_fixed_steps_land_on_every_output():
    """Splitting each interval into ceil(Δ/dt) equal steps: euler on y' = 1 is exact."""
    y0 = torch.zeros(2, 1, dtype=F64)
    t = torch.tensor([[0.0, 0.33, 1.0, 1.7], [2.0, 2.01, 2.5, 5.0]], dtype=F64)
    sol = solvers.solve(solvers.ODE(lambda t, y: torch.ones_like(y)), y0, t, method="euler", dt=0.2)
    torch.testing.assert_close(sol.ys[..., 0], t - t[:, :1], atol=1e-14, rtol=0)


@pytest.mark.parametrize("name", ["bosh3", "dopri5", "tsit5"])
def test_adaptive_counts_accepted_and_rejected_per_sample(name):
    rates = torch.tensor([20.0, 50.0, 200.0], dtype=F64)

    def fast(t, y):
        return -rates[:, None] * (y - torch.cos(t))

    y0 = torch.ones(3, 1, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    # A first step of 10 on these time scales is rejected, and then some.
    first = solvers.PIDController(first_step=10.0)
    sol = solvers.solve(solvers.ODE(fast), y0, t, method=name, controller=first, max_steps=100_000)
    acc, rej = sol.stats.num_accepted_steps, sol.stats.num_rejected_steps
    assert acc.shape == rej.shape == (3,)
    assert acc.dtype == rej.dtype == torch.int64
    assert (acc > 0).all(), acc
    assert (rej > 0).all(), rej
    # The stiffer sample needs more steps; counts are per sample, not one for the batch.
    assert acc[0] < acc[2], acc
    for i in range(3):
        alone = solvers.solve(
            solvers.ODE(lambda t, y, r=rates[i]: -r * (y - torch.cos(t))),
            y0[i : i + 1],
            t,
            method=name,
            controller=first,
            max_steps=100_000,
        )
        assert alone.stats.num_accepted_steps.tolist() == [int(acc[i])]
        assert alone.stats.num_rejected_steps.tolist() == [int(rej[i])]
        torch.testing.assert_close(sol.ys[i : i + 1], alone.ys, atol=1e-12, rtol=1e-12)
