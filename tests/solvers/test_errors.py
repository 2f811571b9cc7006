"""Every error a user of ``solvers`` can trigger, and the per-sample failure statuses.

Each message must name the offending value, so the checks match on the value itself.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

import solvers
from solvers import ODE, SolverError, Status

F64 = torch.float64


def decay(t, y):
    return -y


@pytest.fixture
def y0():
    return torch.tensor([[0.1], [5.0]], dtype=F64)


@pytest.fixture
def t():
    return torch.linspace(0.0, 1.0, 11, dtype=F64)


# ---------------------------------------------------------------------------------------------
# Times


def test_shared_times_not_increasing(y0):
    t = torch.tensor([0.0, 0.1, 0.2, 0.2, 0.5], dtype=F64)
    with pytest.raises(ValueError, match="strictly increasing") as e:
        solvers.solve(ODE(decay), y0, t)
    msg = str(e.value)
    assert "t[3]" in msg and "t[2]" in msg and "0.2" in msg


def test_shared_times_decreasing_names_the_first_offence(y0):
    t = torch.tensor([0.0, 0.5, 0.4, 0.3], dtype=F64)
    with pytest.raises(ValueError) as e:
        solvers.solve(ODE(decay), y0, t)
    msg = str(e.value)
    assert "t[2] = 0.4" in msg and "t[1] = 0.5" in msg
    assert "t[3]" not in msg


def test_per_sample_times_not_increasing(y0):
    t = torch.tensor([[0.0, 0.1, 0.2, 0.3], [0.0, 0.1, 0.05, 0.3]], dtype=F64)
    with pytest.raises(ValueError, match="strictly increasing") as e:
        solvers.solve(ODE(decay), y0, t)
    msg = str(e.value)
    assert "t[1, 2]" in msg and "t[1, 1]" in msg
    assert "0.05" in msg and "0.1" in msg


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_shared_times_not_finite(y0, bad):
    t = torch.tensor([0.0, 0.1, bad, 0.3], dtype=F64)
    with pytest.raises(ValueError, match="finite") as e:
        solvers.solve(ODE(decay), y0, t)
    assert f"t[2] = {bad}" in str(e.value)


def test_per_sample_times_not_finite(y0):
    t = torch.tensor([[0.0, 0.1, 0.2, 0.3], [0.0, 0.1, math.inf, 0.3]], dtype=F64)
    with pytest.raises(ValueError, match=re.escape("t[1, 2] = inf")):
        solvers.solve(ODE(decay), y0, t)


@pytest.mark.parametrize("shape", [(), (2, 3, 4)])
def test_times_of_wrong_ndim(y0, shape):
    t = torch.zeros(shape, dtype=F64)
    with pytest.raises(ValueError, match=re.escape(f"got shape {shape}")):
        solvers.solve(ODE(decay), y0, t)


def test_times_empty(y0):
    with pytest.raises(ValueError, match="at least one time"):
        solvers.solve(ODE(decay), y0, torch.zeros(0, dtype=F64))


def test_per_sample_times_batch_mismatch(y0):
    t = torch.linspace(0, 1, 4, dtype=F64).expand(3, -1)
    with pytest.raises(ValueError) as e:
        solvers.solve(ODE(decay), y0, t)
    msg = str(e.value)
    assert "(3, 4)" in msg and "batch 3" in msg and "batch 2" in msg


def test_times_on_another_device(y0):
    t = torch.linspace(0, 1, 3, dtype=F64, device="meta")
    with pytest.raises(ValueError, match="meta") as e:
        solvers.solve(ODE(decay), y0, t)
    assert "cpu" in str(e.value)


def test_times_as_a_list_are_accepted(y0):
    sol = solvers.solve(ODE(decay), y0, [0.0, 0.5, 1.0])
    assert sol.ys.shape == (2, 3, 1)
    assert sol.ys.dtype == F64


# ---------------------------------------------------------------------------------------------
# Initial state


def test_y0_integer_dtype(t):
    with pytest.raises(ValueError, match="floating point") as e:
        solvers.solve(ODE(decay), torch.ones(2, 1, dtype=torch.long), t)
    assert "int64" in str(e.value)


def test_y0_zero_dim(t):
    with pytest.raises(ValueError, match="at least one state dimension") as e:
        solvers.solve(ODE(decay), torch.tensor(1.0, dtype=F64), t)
    assert "()" in str(e.value)


def test_y0_one_dim_says_how_to_add_a_state_dimension(t):
    with pytest.raises(ValueError, match=r"got shape \(3,\).*y0\[:, None\]"):
        solvers.solve(ODE(decay), torch.ones(3, dtype=F64), t)


def test_y0_empty_batch(t):
    with pytest.raises(ValueError, match=r"empty batch \(shape \(0, 2\)\)"):
        solvers.solve(ODE(decay), torch.ones(0, 2, dtype=F64), t)


def test_float64_times_that_float32_cannot_tell_apart():
    """Times distinct in float64 that collapse when cast to the state's float32 are named as
    such, not reported as 'not increasing'."""
    t = torch.tensor([0.0, 1.0, 1.0 + 1e-9], dtype=F64)
    with pytest.raises(ValueError, match=r"distinct in torch.float64 but equal in torch.float32"):
        solvers.solve(ODE(decay), torch.ones(2, 1), t)
    # times that survive the cast are fine
    sol = solvers.solve(ODE(decay), torch.ones(2, 1), t[:2], method="rk4", dt=0.1)
    assert sol.ys.dtype == torch.float32


def test_y0_not_a_tensor(t):
    with pytest.raises(TypeError, match="list"):
        solvers.solve(ODE(decay), [[1.0]], t)


# ---------------------------------------------------------------------------------------------
# The vector field


def test_field_returns_wrong_shape(y0, t):
    with pytest.raises(ValueError, match="expected") as e:
        solvers.solve(ODE(lambda t, y: y.sum(-1)), y0, t)
    msg = str(e.value)
    assert "got" in msg or "returned" in msg
    assert "(2,)" in msg and "(2, 1)" in msg


def test_field_returns_wrong_shape_multidimensional_state(t):
    y0 = torch.ones(2, 3, 4, dtype=F64)
    with pytest.raises(ValueError) as e:
        solvers.solve(ODE(lambda t, y: y.transpose(1, 2)), y0, t)
    msg = str(e.value)
    assert "expected" in msg and "(2, 4, 3)" in msg and "(2, 3, 4)" in msg


def test_field_returns_wrong_dtype(y0, t):
    with pytest.raises(ValueError, match="dtype") as e:
        solvers.solve(ODE(lambda t, y: y.float()), y0, t)
    msg = str(e.value)
    assert "float32" in msg and "float64" in msg


def test_field_returns_not_a_tensor(y0, t):
    with pytest.raises(ValueError, match="tensor") as e:
        solvers.solve(ODE(lambda t, y: 1.0), y0, t)
    assert "float" in str(e.value)


def test_ode_of_a_non_callable():
    with pytest.raises(TypeError, match="callable") as e:
        ODE(3)
    assert "int" in str(e.value)


def test_method_that_does_not_accept_the_problem(y0, t):
    class OtherTerm(solvers.AbstractTerm):
        def parameters(self):
            return ()

    class Other(solvers.AbstractProblem):
        def terms(self):
            return OtherTerm()

    with pytest.raises(ValueError, match="does not accept") as e:
        solvers.solve(Other(), y0, t)
    msg = str(e.value)
    assert "Other" in msg and "dopri5" in msg and "ODE" in msg


# ---------------------------------------------------------------------------------------------
# Names: methods, backends, adjoints


def test_unknown_method(y0, t):
    with pytest.raises(ValueError, match="rk45") as e:
        solvers.solve(ODE(decay), y0, t, method="rk45")
    msg = str(e.value)
    for name in solvers.methods():
        assert name in msg
    assert "dopri5" in msg and "rk4" in msg


def test_unknown_backend(y0, t):
    with pytest.raises(ValueError, match="jax") as e:
        solvers.solve(ODE(decay), y0, t, backend="jax")
    msg = str(e.value)
    assert "native" in msg and "torchdiffeq" in msg


def test_unknown_adjoint(y0, t):
    with pytest.raises(ValueError, match="'adjoint'") as e:
        solvers.solve(ODE(decay), y0, t, adjoint="adjoint")
    msg = str(e.value)
    assert "direct" in msg and "backsolve" in msg and "checkpoint" in msg


# ---------------------------------------------------------------------------------------------
# Numbers


def test_fixed_step_method_without_dt(y0, t):
    with pytest.raises(ValueError, match="dt") as e:
        solvers.solve(ODE(decay), y0, t, method="rk4")
    assert "rk4" in str(e.value)


@pytest.mark.parametrize("dt", [-0.1, 0, 0.0, math.nan, "0.1"])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_dt_not_positive(y0, t, method, dt):
    with pytest.raises(ValueError, match="dt must be a positive number") as e:
        solvers.solve(ODE(decay), y0, t, method=method, dt=dt)
    assert repr(dt) in str(e.value)


@pytest.mark.parametrize(("rtol", "atol"), [(0, 0), (0.0, 0.0), (-1e-3, 1e-6), (1e-3, -1e-6)])
def test_tolerances(y0, t, rtol, atol):
    with pytest.raises(ValueError, match="rtol and atol") as e:
        solvers.solve(ODE(decay), y0, t, rtol=rtol, atol=atol)
    msg = str(e.value)
    assert f"rtol={rtol!r}" in msg and f"atol={atol!r}" in msg


def test_one_zero_tolerance_is_fine(y0, t):
    assert solvers.solve(ODE(decay), y0, t, rtol=0.0, atol=1e-8).success
    assert solvers.solve(ODE(decay), y0, t, rtol=1e-6, atol=0.0).success


@pytest.mark.parametrize("max_steps", [0, -5, 10.0])
def test_max_steps_not_positive_integer(y0, t, max_steps):
    with pytest.raises(ValueError, match="max_steps") as e:
        solvers.solve(ODE(decay), y0, t, max_steps=max_steps)
    assert repr(max_steps) in str(e.value)


# ---------------------------------------------------------------------------------------------
# Objects: adjoints, controllers, methods


@pytest.mark.parametrize("every", [0, -1, 1.5])
def test_checkpoint_every_not_positive(every):
    with pytest.raises(ValueError, match="every") as e:
        solvers.CheckpointAdjoint(every=every)
    assert repr(every) in str(e.value)


def test_backsolve_fixed_step_backward_method_without_dt(y0, t):
    adj = solvers.BacksolveAdjoint(method="rk4")
    with pytest.raises(ValueError, match="BacksolveAdjoint") as e:
        solvers.solve(ODE(decay), y0, t, adjoint=adj)
    assert "'rk4'" in str(e.value) and "dt" in str(e.value)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (dict(safety=0.0), "safety"),
        (dict(safety=1.5), "safety"),
        (dict(factor_min=0.0), "factor_min=0.0"),
        (dict(factor_min=2.0), "factor_min=2.0"),
        (dict(factor_max=0.5), "factor_max=0.5"),
        (dict(icoeff=0.0), "icoeff"),
        (dict(icoeff=-1.0), "icoeff"),
    ],
)
def test_pid_controller_bad_parameters(options, named):
    with pytest.raises(ValueError, match="PIDController") as e:
        solvers.PIDController(**options)
    msg = str(e.value)
    assert named in msg
    assert repr(next(iter(options.values()))) in msg


def test_fixed_tableau_with_an_adaptive_controller(y0, t):
    with pytest.raises(ValueError, match="has no error estimate") as e:
        solvers.solve(ODE(decay), y0, t, method="rk4", controller=solvers.PIDController())
    assert "'rk4'" in str(e.value) and "dt" in str(e.value)


def test_adaptive_tableau_with_a_controller_is_fine(y0, t):
    pi = solvers.PIDController(0.4, 0.3)
    assert solvers.solve(ODE(decay), y0, t, method="dopri5", controller=pi).success


def test_dt_and_a_controller_together(y0, t):
    with pytest.raises(ValueError, match="pass dt or controller, not both"):
        solvers.solve(
            ODE(decay), y0, t, method="dopri5", dt=0.1, controller=solvers.PIDController()
        )


def test_a_controller_of_the_wrong_kind(y0, t):
    with pytest.raises(TypeError, match="got str"):
        solvers.solve(ODE(decay), y0, t, controller="pid")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: solvers.ConstantStepSize(0.0), "got 0.0"),
        (lambda: solvers.ConstantStepSize(float("inf")), "finite"),
        (lambda: solvers.PIDController(first_step=-1.0), "first_step .* got -1.0"),
        (lambda: solvers.StepTo(torch.tensor([0.0, 2.0, 1.0])), r"ts\[2\] = 1.0 follows"),
        (lambda: solvers.StepTo([0.0, 1.0]), "1-D floating-point tensor"),
    ],
)
def test_controllers_refuse_bad_settings(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_any_tableau_runs_with_constant_steps(y0, t):
    """dt means constant steps for every method: dopri5 with dt takes exactly the steps
    that rk4 with dt takes, and its first step is set with PIDController(first_step=...)."""
    fixed = solvers.solve(ODE(decay), y0, t, method="dopri5", dt=0.05)
    assert (fixed.stats.num_rejected_steps == 0).all()
    rk4 = solvers.solve(ODE(decay), y0, t, method="rk4", dt=0.05)
    assert fixed.stats.num_accepted_steps.tolist() == rk4.stats.num_accepted_steps.tolist()
    torch.testing.assert_close(fixed.ys, rk4.ys, rtol=1e-6, atol=0)


def test_step_to_steps_onto_the_given_times(y0, t):
    ts = torch.linspace(float(t[0]), float(t[-1]), 41, dtype=F64)
    on_grid = solvers.solve(ODE(decay), y0, t, method="rk4", controller=solvers.StepTo(ts))
    exact = y0[:, :1] * torch.exp(-(t - t[0]))
    torch.testing.assert_close(on_grid.ys[..., 0], exact, rtol=1e-6, atol=0)
    assert on_grid.stats.num_accepted_steps[0] >= 40


def test_explicit_runge_kutta_of_a_name():
    with pytest.raises(TypeError, match="ButcherTableau") as e:
        solvers.ExplicitRungeKutta("rk4")
    assert "str" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Failure statuses


def nan_in_sample_1(t, y):
    """-y, except that sample 1's field is NaN."""
    bad = torch.zeros(y.shape[0], 1, dtype=torch.bool)
    bad[1] = True
    return torch.where(bad, torch.full_like(y, math.nan), -y)


FIXED = dict(method="rk4", dt=0.01)
ADAPTIVE = dict(method="dopri5")


@pytest.mark.parametrize("options", [FIXED, ADAPTIVE], ids=["rk4", "dopri5"])
def test_nan_field_raises_naming_the_sample(y0, t, options):
    with pytest.raises(SolverError) as e:
        solvers.solve(ODE(nan_in_sample_1), y0, t, **options)
    assert e.value.status is Status.NONFINITE
    assert e.value.samples == [1]
    msg = str(e.value)
    assert "NONFINITE" in msg and "[1]" in msg and "throw=False" in msg


@pytest.mark.parametrize("options", [FIXED, ADAPTIVE], ids=["rk4", "dopri5"])
def test_nan_field_marks_only_the_failing_sample(y0, t, options):
    sol = solvers.solve(ODE(nan_in_sample_1), y0, t, throw=False, **options)
    assert sol.status == (Status.SUCCESS, Status.NONFINITE)
    assert sol.status_codes.tolist() == [0, 3]
    assert not sol.success
    clean = solvers.solve(ODE(decay), y0, t, **options)
    torch.testing.assert_close(sol.ys[0], clean.ys[0], rtol=1e-13, atol=0)
    assert torch.isfinite(sol.ys[0]).all()
    assert torch.isnan(sol.ys[1, 1:]).all()
    with pytest.raises(SolverError, match="NONFINITE"):
        sol.raise_on_failure()


def blow_up(t, y):
    return y**2


def test_blow_up_fixed_step(y0, t):
    """y' = y², y(0) = 5 blows up at t = 0.2; y(0) = 0.1 stays smooth."""
    sol = solvers.solve(ODE(blow_up), y0, t, throw=False, **FIXED)
    assert sol.status == (Status.SUCCESS, Status.NONFINITE)
    exact = 0.1 / (1 - 0.1 * t)
    torch.testing.assert_close(sol.ys[0, :, 0], exact, rtol=1e-9, atol=0)
    with pytest.raises(SolverError, match=r"NONFINITE in samples \[1\]") as e:
        solvers.solve(ODE(blow_up), y0, t, **FIXED)
    assert e.value.samples == [1]


def test_blow_up_adaptive(y0, t):
    sol = solvers.solve(ODE(blow_up), y0, t, throw=False, rtol=1e-8, atol=1e-10)
    assert sol.status[0] is Status.SUCCESS
    assert sol.status[1] in (Status.DT_UNDERFLOW, Status.NONFINITE)
    exact = 0.1 / (1 - 0.1 * t)
    torch.testing.assert_close(sol.ys[0, :, 0], exact, rtol=1e-7, atol=0)
    # Outputs before the blow-up are reached and accurate; those after it are NaN.
    torch.testing.assert_close(sol.ys[1, 1, 0], torch.tensor(10.0, dtype=F64), rtol=1e-6, atol=0)
    # (t = 0.2 is the singularity itself: any value there is acceptable.)
    assert torch.isnan(sol.ys[1, 3:]).all()
    with pytest.raises(SolverError) as e:
        solvers.solve(ODE(blow_up), y0, t, rtol=1e-8, atol=1e-10)
    assert e.value.status is sol.status[1]
    assert e.value.samples == [1]
    assert sol.status[1].name in str(e.value) and "[1]" in str(e.value)


def test_nan_after_some_time_keeps_the_earlier_outputs(y0, t):
    def f(t, y):
        late = (t > 0.45) & (torch.arange(y.shape[0])[:, None] == 1)
        return torch.where(late, torch.full_like(y, math.nan), -y)

    for options in (FIXED, ADAPTIVE):
        sol = solvers.solve(ODE(f), y0, t, throw=False, **options)
        assert sol.status[0] is Status.SUCCESS
        assert sol.status[1] is Status.NONFINITE
        exact = y0[:, 0, None] * torch.exp(-t)
        torch.testing.assert_close(sol.ys[0, :, 0], exact[0], rtol=1e-5, atol=0)
        torch.testing.assert_close(sol.ys[1, :5, 0], exact[1, :5], rtol=1e-5, atol=0)
        assert torch.isnan(sol.ys[1, 5:]).all()


def many_steps_problem():
    """Sample 1 has a ten times longer span than sample 0 on a per-sample grid."""
    y0 = torch.tensor([[0.1], [5.0]], dtype=F64)
    base = torch.linspace(0.0, 1.0, 11, dtype=F64)
    return y0, torch.stack([base, 10 * base])


@pytest.mark.parametrize(
    "options",
    [
        dict(method="rk4", dt=0.01, max_steps=150),
        dict(method="dopri5", rtol=1e-8, atol=1e-8, max_steps=30),
    ],
    ids=["rk4", "dopri5"],
)
def test_max_steps_per_sample(options):
    y0, t = many_steps_problem()
    sol = solvers.solve(ODE(decay), y0, t, throw=False, **options)
    assert sol.status == (Status.SUCCESS, Status.MAX_STEPS)
    exact = y0[:, 0, None] * torch.exp(-t)
    torch.testing.assert_close(sol.ys[0, :, 0], exact[0], rtol=1e-5, atol=0)
    reached = ~torch.isnan(sol.ys[1, :, 0])
    assert reached[0] and not reached[-1]
    # Reached outputs form a prefix and are accurate; the rest are NaN.
    n = int(reached.sum())
    assert reached[:n].all() and not reached[n:].any()
    torch.testing.assert_close(sol.ys[1, :n, 0], exact[1, :n], rtol=1e-4, atol=1e-6)
    with pytest.raises(SolverError) as e:
        solvers.solve(ODE(decay), y0, t, **options)
    assert e.value.status is Status.MAX_STEPS
    assert e.value.samples == [1]
    msg = str(e.value)
    assert "MAX_STEPS" in msg and "[1]" in msg and "max_steps" in msg


@pytest.mark.parametrize(
    "options",
    [
        dict(method="rk4", dt=0.01, max_steps=20),
        dict(method="dopri5", rtol=1e-10, atol=1e-10, max_steps=10),
    ],
    ids=["rk4", "dopri5"],
)
@pytest.mark.parametrize("batch", [1, 2])
def test_max_steps_shared_grid(y0, t, options, batch):
    y0 = y0[:batch]
    sol = solvers.solve(ODE(decay), y0, t, throw=False, **options)
    assert Status.MAX_STEPS in sol.status
    assert all(s in (Status.SUCCESS, Status.MAX_STEPS) for s in sol.status)
    assert sol.ys.shape == (batch, 11, 1)
    for i, status in enumerate(sol.status):
        if status is Status.MAX_STEPS:
            assert torch.isnan(sol.ys[i, -1]).all()
            assert not torch.isnan(sol.ys[i, 0]).any()
    failing = [i for i, s in enumerate(sol.status) if s is Status.MAX_STEPS]
    with pytest.raises(SolverError, match="MAX_STEPS") as e:
        solvers.solve(ODE(decay), y0, t, **options)
    assert e.value.status is Status.MAX_STEPS
    assert e.value.samples == failing
    assert str(failing) in str(e.value)


def test_solver_error_lists_at_most_ten_samples():
    y0 = torch.ones(12, 1, dtype=F64)
    t = torch.tensor([[0.0, 1.0]], dtype=F64).expand(12, -1) * torch.arange(1, 13)[:, None]
    with pytest.raises(SolverError) as e:
        solvers.solve(ODE(decay), y0, t, method="rk4", dt=1.0, max_steps=1)
    assert e.value.samples == list(range(1, 12))
    assert "(and 1 more)" in str(e.value)
    assert str(list(range(1, 11))) in str(e.value)


def test_failure_of_the_backsolve_backward_solve():
    """The backward solve of BacksolveAdjoint may fail too: SolverError saying so."""
    y0 = torch.tensor([[1.0]], dtype=F64, requires_grad=True)

    def f(t, y):
        return torch.sin(5 * t) * y

    adj = solvers.BacksolveAdjoint(rtol=1e-12, atol=1e-12)
    t = torch.tensor([0.0, 3.0], dtype=F64)
    sol = solvers.solve(ODE(f), y0, t, rtol=1e-3, atol=1e-3, max_steps=30, adjoint=adj)
    assert sol.success
    with pytest.raises(SolverError, match="backward solve of BacksolveAdjoint") as e:
        sol.ys.sum().backward()
    assert e.value.status is Status.MAX_STEPS


def test_status_messages():
    for status in Status:
        assert isinstance(status.message, str) and status.message
    assert "max_steps" in Status.MAX_STEPS.message
