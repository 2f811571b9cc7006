"""Defects found by running the peer libraries' tests against ``solvers``, each with the
input that triggered it (issue: one integration loop for every problem)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import solvers
from solvers import CDE, ODE, Status

F64 = torch.float64


def test_backsolve_with_fixed_backward_steps_and_a_0_dim_parameter():
    """Was an IndexError: the parameter-gradient part of the augmented state was recorded
    and stacked along a dimension that a 0-dim tensor does not have."""
    rate = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    grads = []
    for adjoint in ("direct", solvers.BacksolveAdjoint(params=[rate])):
        sol = solvers.solve(
            ODE(lambda t, y: -rate * y), y0, t, method="rk4", dt=0.01, adjoint=adjoint
        )
        (g,) = torch.autograd.grad(sol.ys[:, -1].sum(), [rate])
        grads.append(g)
    assert grads[1].shape == ()
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-8, atol=0)
    torch.testing.assert_close(grads[0], torch.tensor(-2 * math.exp(-0.7), dtype=F64))


class Field(nn.Module):
    def __init__(self, hidden=3, channels=2):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(hidden, hidden * channels, dtype=F64)
        self.shape = (hidden, channels)

    def forward(self, t, z):
        return torch.tanh(self.lin(z)).reshape(z.shape[0], *self.shape)


def _cde_data():
    g = torch.Generator().manual_seed(2)
    values = torch.randn(2, 6, 2, generator=g, dtype=F64)
    times = torch.tensor([0.0, 0.3, 0.5, 1.0, 1.4, 2.0], dtype=F64)
    return values, times, torch.randn(2, 3, generator=g, dtype=F64)


@pytest.mark.parametrize("grad_of", ["times", "values", "both"])
def test_cde_backsolve_through_the_path(grad_of):
    """Was 'backward through the graph a second time' when the path's times required grad:
    each backward step differentiated through the graph that built the path, and freed it.
    The adjoint now differentiates with respect to leaf copies of the path's tensors, and
    agrees with direct backpropagation."""
    values, times, z0 = _cde_data()
    f = Field()
    out = []
    for adjoint in ("direct", "backsolve"):
        v = values.clone().requires_grad_(grad_of in ("values", "both"))
        tt = times.clone().requires_grad_(grad_of in ("times", "both"))
        path = solvers.interpolate(v, tt, kind="hermite")
        sol = solvers.solve(CDE(f, path), z0, tt.detach(), method="rk4", dt=0.01, adjoint=adjoint)
        inputs = [x for x in (v, tt) if x.requires_grad]
        out.append(torch.autograd.grad((sol.ys**2).sum(), inputs))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_nan_is_nonfinite_in_float32_adaptive():
    """Was DT_UNDERFLOW ('may be stiff'): in float32 the step size reached the resolution of
    t before ten NaN rejections in a row."""

    def f(t, y):
        return torch.where(t > 0.3, torch.full_like(y, math.nan), -y)

    sol = solvers.solve(ODE(f), torch.ones(2, 2), torch.linspace(0, 1, 5), throw=False)
    assert sol.status == (Status.NONFINITE, Status.NONFINITE)


def test_nan_y0_is_nonfinite():
    y0 = torch.tensor([[1.0], [math.nan]], dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    for kw in (dict(), dict(method="rk4", dt=0.1)):
        sol = solvers.solve(ODE(lambda t, y: -y), y0, t, throw=False, **kw)
        assert sol.status == (Status.SUCCESS, Status.NONFINITE)
        exact = torch.tensor(math.exp(-1), dtype=F64)
        torch.testing.assert_close(sol.ys[0, -1, 0], exact, rtol=1e-5, atol=0)


def test_nan_is_nonfinite_through_torchdiffeq():
    pytest.importorskip("torchdiffeq")

    def f(t, y):
        return torch.where(t > 0.3, torch.full_like(y, math.nan), -y)

    sol = solvers.solve(
        ODE(f),
        torch.ones(2, 1, dtype=F64),
        torch.linspace(0, 1, 3, dtype=F64),
        backend="torchdiffeq",
        throw=False,
    )
    assert sol.status == (Status.NONFINITE, Status.NONFINITE)


def test_backsolve_under_throw_false_keeps_the_other_samples_gradients():
    """Was a SolverError for the whole batch in backward: a sample whose forward solve failed
    poisoned the one backward lane. It now takes no part; the others get their gradients."""
    w = torch.tensor(0.5, dtype=F64, requires_grad=True)

    def f(t, y):
        blow = torch.tensor([0.0, 1.0], dtype=F64)[:, None]
        return -w * y + blow * y**3

    y0 = torch.tensor([[1.0], [3.0]], dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    back = solvers.BacksolveAdjoint(params=[w], rtol=1e-9, atol=1e-9)
    sol = solvers.solve(ODE(f), y0, t, adjoint=back, throw=False, rtol=1e-8, atol=1e-8)
    assert sol.status[0] is Status.SUCCESS and sol.status[1] is not Status.SUCCESS
    (g,) = torch.autograd.grad(sol.ys[0, -1, 0], [w])
    # y0 = 1 decays as exp(-w t): d y(1) / dw = -exp(-w)
    torch.testing.assert_close(g, torch.tensor(-math.exp(-0.5), dtype=F64), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(dt=0), "dt must be a positive number, got 0"),
        (dict(dt=-0.1), "got -0.1"),
        (dict(rtol=-1), "rtol must be a non-negative number, got -1"),
        (dict(atol=float("nan")), "atol must be a non-negative number"),
        (dict(rtol=0, atol=0), "must not both be zero"),
        (dict(method="nope"), "unknown method 'nope'"),
        (dict(params=[1.0]), r"params\[0\] must be a tensor"),
    ],
)
def test_backsolve_adjoint_refuses_bad_settings(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        solvers.BacksolveAdjoint(**options)


def test_backsolve_refuses_tensors_captured_by_a_closure():
    """Was silent: a tensor that a plain function captures got no gradient."""
    w = torch.tensor([0.5], dtype=F64, requires_grad=True)
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"1 tensor\(s\) that require grad .*\(1,\).*params="):
        solvers.solve(ODE(lambda t, y: -w * y), y0, t, adjoint="backsolve")
    # listed as params it is differentiated
    sol = solvers.solve(
        ODE(lambda t, y: -w * y), y0, t, adjoint=solvers.BacksolveAdjoint(params=[w])
    )
    (g,) = torch.autograd.grad(sol.ys[:, -1].sum(), [w])
    torch.testing.assert_close(g, torch.tensor([-2 * math.exp(-0.5)], dtype=F64), rtol=1e-4, atol=0)
    # a tensor derived from a parameter is traced back to it
    net = nn.Linear(1, 1, dtype=F64)
    scale = net.weight * 2
    with pytest.raises(ValueError, match="require grad but are not among its parameters"):
        solvers.solve(ODE(lambda t, y: scale * y), y0, t, adjoint="backsolve")


def test_time_reaches_the_field_shaped_to_broadcast():
    """t is (batch, 1, ..., 1): torchdiffeq-style `-sin(t) * y` is right when batch equals
    the state size (it silently was not with a (batch,) t)."""
    seen = []

    def f(t, y):
        seen.append(tuple(t.shape))
        return -torch.sin(t) * y

    y0 = torch.ones(3, 3, dtype=F64)
    t = torch.tensor([[0.0, 1.0], [0.5, 1.0], [0.2, 2.0]], dtype=F64)
    sol = solvers.solve(ODE(f), y0, t, method="rk4", dt=0.01)
    assert set(seen) == {(3, 1)}
    exact = torch.exp(torch.cos(t[:, 1]) - torch.cos(t[:, 0]))
    torch.testing.assert_close(sol.ys[:, -1, 0], exact, rtol=1e-8, atol=0)


def test_default_method_per_problem():
    """Was: solve(SDE(...)) failed on the default dopri5."""
    t = torch.linspace(0, 1, 3, dtype=F64)
    y0 = torch.ones(2, 1, dtype=F64)
    ito = solvers.SDE(lambda t, y: -y, lambda t, y: 0.1 * y)
    strat = solvers.SDE(lambda t, y: -y, lambda t, y: 0.1 * y, sde_type="stratonovich")
    assert solvers.solve(ito, y0, t, dt=0.01).success
    assert solvers.solve(strat, y0, t, dt=0.01).success
    with pytest.raises(ValueError, match=r"'euler_maruyama' has strong order 0.5 .* Pass dt"):
        solvers.solve(ito, y0, t)
    assert solvers.solve(ODE(lambda t, y: -y), y0, t).success


def test_backsolve_with_computed_parameters():
    """A parameter computed from another (``w2 = 2 w``) passed as ``params``: the backward
    solve differentiates with respect to it at every stage without freeing the graph that
    computed it, and the gradient reaches ``w``."""
    w = torch.tensor([0.5], dtype=F64, requires_grad=True)
    w2 = 2 * w
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    back = solvers.BacksolveAdjoint(params=[w2])
    sol = solvers.solve(ODE(lambda t, y: -w2 * y), y0, t, adjoint=back)
    (g,) = torch.autograd.grad(sol.ys[:, -1].sum(), [w])
    # y(1) = exp(-2 w): d/dw summed over 2 samples = -4 exp(-1)
    torch.testing.assert_close(g, torch.tensor([-4 * math.exp(-1)], dtype=F64), rtol=1e-4, atol=0)
