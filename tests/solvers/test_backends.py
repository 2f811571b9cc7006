"""The torchdiffeq backend against the native one: solutions, gradients and refusals."""

from __future__ import annotations

import math

import pytest
import torch
from peer_problem import F64, problem

import solvers
from solvers import ODE, SolverError, Status

torchdiffeq = pytest.importorskip("torchdiffeq")


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_torchdiffeq_is_listed():
    assert "torchdiffeq" in solvers.backends()
    assert "native" in solvers.backends()


# bosh3 is third order: it needs a tighter tolerance for both solutions to be within 1e-7
# (torchdiffeq's outputs, interpolated, are the less accurate of the two).
@pytest.mark.parametrize(
    ("method", "rtol", "atol"), [("dopri5", 1e-10, 1e-12), ("bosh3", 1e-11, 1e-13)]
)
def test_adaptive_methods_agree(method, rtol, atol):
    field, y0, t = problem()
    opts = dict(method=method, rtol=rtol, atol=atol)
    with torch.no_grad():
        native = solvers.solve(ODE(field), y0, t, **opts)
        peer = solvers.solve(ODE(field), y0, t, backend="torchdiffeq", **opts)
    assert peer.ys.shape == native.ys.shape == (3, 11, 2, 3)
    assert peer.success and peer.status == (Status.SUCCESS,) * 3
    assert relative_error(peer.ys, native.ys) < 1e-7
    torch.testing.assert_close(peer.ys[:, 0], y0, rtol=0, atol=0)
    assert peer.stats.num_function_evals > 1


@pytest.mark.parametrize(
    ("method", "tolerance"),
    [
        # The same method on the same grid: agreement to round-off.
        ("euler", 1e-12),
        ("midpoint", 1e-12),
        ("heun", 1e-12),
        # torchdiffeq's rk4 is the 3/8 rule: agreement to the methods' error.
        ("rk4", 1e-6),
    ],
)
def test_fixed_step_methods_agree(method, tolerance):
    field, y0, t = problem()  # dt divides every interval exactly
    with torch.no_grad():
        native = solvers.solve(ODE(field), y0, t, method=method, dt=0.01)
        peer = solvers.solve(ODE(field), y0, t, method=method, dt=0.01, backend="torchdiffeq")
    assert peer.success
    assert relative_error(peer.ys, native.ys) < tolerance


def test_rk4_difference_is_the_methods_error():
    """Halving dt shrinks the native/torchdiffeq rk4 difference like dt⁴."""
    field, y0, t = problem()
    diffs = []
    for dt in (0.1, 0.05):
        with torch.no_grad():
            native = solvers.solve(ODE(field), y0, t, method="rk4", dt=dt)
            peer = solvers.solve(ODE(field), y0, t, method="rk4", dt=dt, backend="torchdiffeq")
        diffs.append((peer.ys - native.ys).abs().max().item())
    assert 0 < diffs[1] < diffs[0]
    assert math.log2(diffs[0] / diffs[1]) > 3.5


def gradients(adjoint, backend, **opts):
    field, y0, t = problem()
    y0 = y0.requires_grad_()
    t = t.requires_grad_()
    ys = solvers.solve(ODE(field), y0, t, adjoint=adjoint, backend=backend, **opts).ys
    g = torch.Generator().manual_seed(2)
    w = torch.randn(ys.shape, generator=g, dtype=F64)
    loss = (ys * w).sum() + (ys[:, -1] ** 2).sum()
    return list(torch.autograd.grad(loss, (y0, t, *field.parameters())))


GRAD_NAMES = ["y0", "t", "l1.weight", "l1.bias", "l2.weight", "l2.bias"]


def assert_grads_close(got, expected, rtol, names=GRAD_NAMES):
    assert len(got) == len(expected) == len(names)
    for name, a, b in zip(names, got, expected):
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale, msg=name)


def test_torchdiffeq_backsolve_gradients_agree_with_native_direct():
    opts = dict(method="dopri5", rtol=1e-10, atol=1e-12)
    reference = gradients("direct", "native", **opts)
    peer = gradients("backsolve", "torchdiffeq", **opts)
    assert_grads_close(peer, reference, rtol=1e-6)


def test_torchdiffeq_backsolve_with_explicit_params():
    """BacksolveAdjoint(params=...) reaches tensors a plain function closes over."""
    g = torch.Generator().manual_seed(3)
    a = (torch.randn(2, 2, generator=g, dtype=F64) * 0.5).requires_grad_()

    def f(t, y):
        return torch.tanh(y @ a.T) * torch.cos(t)

    y0 = torch.randn(4, 2, generator=g, dtype=F64)
    t = torch.linspace(0, 1, 5, dtype=F64)
    opts = dict(method="dopri5", rtol=1e-10, atol=1e-12)
    ys = solvers.solve(ODE(f), y0, t, **opts).ys
    (expected,) = torch.autograd.grad(ys.square().sum(), a)
    adj = solvers.BacksolveAdjoint(params=[a])
    ys = solvers.solve(ODE(f), y0, t, backend="torchdiffeq", adjoint=adj, **opts).ys
    (got,) = torch.autograd.grad(ys.square().sum(), a)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def test_torchdiffeq_direct_gradients_agree_with_native_direct():
    opts = dict(method="dopri5", rtol=1e-10, atol=1e-12)
    reference = gradients("direct", "native", **opts)
    peer = gradients("direct", "torchdiffeq", **opts)
    assert_grads_close(peer, reference, rtol=1e-6)


def test_torchdiffeq_direct_euler_gradients_are_the_same_discretisation():
    """Same method, same grid: identical gradients with respect to y0 and the parameters.

    (Not t: torchdiffeq steps on a fixed grid and interpolates to the outputs, the native
    solver stretches its steps to end on every output, so d ys / d t differ by O(dt).)
    """
    opts = dict(method="euler", dt=0.01)
    reference = gradients("direct", "native", **opts)
    peer = gradients("direct", "torchdiffeq", **opts)
    del reference[1], peer[1]
    assert_grads_close(peer, reference, rtol=1e-9, names=GRAD_NAMES[:1] + GRAD_NAMES[2:])


def test_nonfinite_sample_is_marked():
    def f(t, y):
        bad = torch.zeros(y.shape[0], 1, dtype=torch.bool)
        bad[1] = True
        return torch.where(bad, torch.full_like(y, math.nan), -y)

    y0 = torch.ones(3, 1, dtype=F64)
    t = torch.linspace(0, 1, 6, dtype=F64)
    sol = solvers.solve(ODE(f), y0, t, method="rk4", dt=0.1, backend="torchdiffeq", throw=False)
    assert sol.status == (Status.SUCCESS, Status.NONFINITE, Status.SUCCESS)
    torch.testing.assert_close(sol.ys[0, :, 0], torch.exp(-t), rtol=1e-6, atol=0)
    with pytest.raises(SolverError, match=r"NONFINITE in samples \[1\]"):
        solvers.solve(ODE(f), y0, t, method="rk4", dt=0.1, backend="torchdiffeq")


def test_max_steps_raises_solver_error():
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.linspace(0, 10, 3, dtype=F64)
    with pytest.raises(SolverError) as e:
        solvers.solve(
            ODE(lambda t, y: -y), y0, t, rtol=1e-10, atol=1e-10, max_steps=5, backend="torchdiffeq"
        )
    assert e.value.status is Status.MAX_STEPS
    assert e.value.samples == [0, 1]
    assert "torchdiffeq" in str(e.value)


# ---------------------------------------------------------------------------------------------
# What the torchdiffeq backend cannot do


def test_per_sample_times_refused():
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([[0.0, 1.0], [0.0, 2.0]], dtype=F64)
    with pytest.raises(ValueError, match="native") as e:
        solvers.solve(ODE(lambda t, y: -y), y0, t, backend="torchdiffeq")
    assert "(2, 2)" in str(e.value)


def test_checkpoint_adjoint_refused():
    field, y0, t = problem()
    for adjoint in ("checkpoint", solvers.CheckpointAdjoint(every=3)):
        with pytest.raises(ValueError, match="checkpoint") as e:
            solvers.solve(ODE(field), y0, t, backend="torchdiffeq", adjoint=adjoint)
        assert "native" in str(e.value)


def test_unknown_adjoint_object_refused():
    class Mine(solvers.AbstractAdjoint):
        name = "mine"

    field, y0, t = problem()
    with pytest.raises(ValueError, match="direct") as e:
        solvers.solve(ODE(field), y0, t, backend="torchdiffeq", adjoint=Mine())
    assert "backsolve" in str(e.value)


def test_method_it_lacks_refused():
    field, y0, t = problem()
    with pytest.raises(ValueError, match="tsit5") as e:
        solvers.solve(ODE(field), y0, t, method="tsit5", backend="torchdiffeq")
    msg = str(e.value)
    for offered in ("euler", "midpoint", "heun", "rk4", "bosh3", "dopri5"):
        assert offered in msg
    assert "native" in msg


def test_non_ode_problem_refused():
    class Decay(solvers.AbstractDerivativeTerm):
        def derivative(self, t, y):
            return (-y[0],)

        def parameters(self):
            return ()

    class Other(solvers.AbstractProblem):
        def terms(self):
            return Decay()

    method = "dopri5"  # a Runge–Kutta method accepts any term that gives dy/dt
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    assert solvers.solve(Other(), y0, t, method=method).success
    with pytest.raises(ValueError, match="ODE") as e:
        solvers.solve(Other(), y0, t, method=method, backend="torchdiffeq")
    assert "Other" in str(e.value) and "native" in str(e.value)
