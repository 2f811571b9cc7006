"""Controlled differential equations: reduction to an ODE, every method and adjoint, gradients
with respect to the data, per-sample times and the errors a user can trigger."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import solvers
from solvers import CDE, ODE

F64 = torch.float64
B, T, C, H = 3, 6, 2, 4


class Field(nn.Module):
    """``f(t, z)`` of shape (batch, hidden, channels)."""

    def __init__(self, hidden=H, channels=C, seed=0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.l1 = nn.Linear(hidden, 8, dtype=F64)
            self.l2 = nn.Linear(8, hidden * channels, dtype=F64)
        self.hidden, self.channels = hidden, channels

    def forward(self, t, z):
        out = self.l2(torch.tanh(self.l1(z)))
        return torch.tanh(out).reshape(z.shape[0], self.hidden, self.channels)


def data(seed=0, per_sample=False, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(B, T, C, generator=g, dtype=F64)
    steps = 0.1 + 0.2 * torch.rand((B, T) if per_sample else (T,), generator=g, dtype=F64)
    times = steps.cumsum(-1)
    z0 = torch.randn(B, H, generator=g, dtype=F64)
    return values.requires_grad_(requires_grad), times, z0


def cde_methods():
    probe = CDE(Field(), solvers.interpolate(*data()[:2]))
    # the explicit methods (the implicit ones have their own tests, tests/solvers/test_implicit.py)
    return [
        name
        for name, m in solvers.methods().items()
        if m.accepts(probe) and isinstance(m, solvers.ExplicitRungeKutta)
    ]


def options(name):
    m = solvers.methods()[name]
    return dict(rtol=1e-10, atol=1e-10) if m.adaptive else dict(dt=0.05)


@pytest.mark.parametrize("method", cde_methods())
@pytest.mark.parametrize("kind", ["linear", "hermite", "natural_cubic"])
def test_a_straight_control_reduces_to_an_ode(kind, method):
    """X(t) = a + c t: dz = f(z) dX is dz/dt = f(z) c, for every method."""
    _, times, z0 = data()
    g = torch.Generator().manual_seed(5)
    a, c = (
        torch.randn(B, 1, C, generator=g, dtype=F64),
        torch.randn(B, 1, C, generator=g, dtype=F64),
    )
    values = a + c * times[None, :, None]
    f = Field()
    path = solvers.interpolate(values, times, kind=kind)
    cde = solvers.solve(CDE(f, path), z0, times, method=method, **options(method))

    def field(t, z):
        return (f(t, z) @ c[:, 0, :, None])[..., 0]

    # the same jumps as the path's knots: adaptive solves then take the same steps
    ode = solvers.solve(
        ODE(field, jump_times=path.jump_times), z0, times, method=method, **options(method)
    )
    torch.testing.assert_close(cde.ys, ode.ys, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "bosh3", "dopri5", "tsit5"])
def test_a_piecewise_linear_control_is_the_ode_of_each_interval(method):
    """On each interval dX/dt is the constant slope c_i: the CDE is the ODE dz/dt = f(z) c_i,
    solved interval after interval. Fixed steps land on the knots (the observation times);
    adaptive steps land on them as the path's jump times; stages at the end of a step see
    the slope of the interval the step lies in. Fixed steps are the same in both solves, so
    the two agree to round-off; adaptive ones to the tolerance."""
    values, times, z0 = data()
    f = Field()
    path = solvers.interpolate(values, times, kind="linear")
    kw = options(method) if solvers.methods()[method].adaptive else dict(dt=0.01)
    atol = 1e-8 if "rtol" in kw else 1e-10
    cde = solvers.solve(CDE(f, path), z0, times, method=method, **kw)
    z, out = z0, [z0]
    for i in range(T - 1):
        c = (values[:, i + 1] - values[:, i]) / (times[i + 1] - times[i])

        def field(t, z, c=c):
            return (f(t, z) @ c[:, :, None])[..., 0]

        piece = solvers.solve(ODE(field), z, times[i : i + 2], method=method, **kw)
        z = piece.ys[:, -1]
        out.append(z)
    torch.testing.assert_close(cde.ys, torch.stack(out, dim=1), rtol=0, atol=atol)


def grads(values, times, z0, f, adjoint, kind="hermite", **kw):
    path = solvers.interpolate(values, times, kind=kind)
    sol = solvers.solve(CDE(f, path), z0, times, adjoint=adjoint, **kw)
    loss = (sol.ys**2).sum() + sol.ys[:, -1, 0].sum()
    return sol.ys.detach(), torch.autograd.grad(loss, [values, z0, *f.parameters()])


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("hermite", dict(method="rk4", dt=0.02)),
        ("natural_cubic", dict(method="rk4", dt=0.02)),
        ("natural_cubic", dict(method="dopri5", rtol=1e-9, atol=1e-9)),
    ],
)
def test_the_three_adjoints_agree_on_gradients_for_f_and_the_data(kind, kw):
    values, times, z0 = data(requires_grad=True)
    z0.requires_grad_(True)
    f = Field()
    ys_d, g_direct = grads(values, times, z0, f, "direct", kind, **kw)
    ys_c, g_check = grads(values, times, z0, f, "checkpoint", kind, **kw)
    ys_b, g_back = grads(values, times, z0, f, "backsolve", kind, **kw)
    torch.testing.assert_close(ys_c, ys_d, rtol=0, atol=1e-12)
    torch.testing.assert_close(ys_b, ys_d, rtol=0, atol=1e-12)
    for gd, gc, gb in zip(g_direct, g_check, g_back):
        torch.testing.assert_close(gc, gd, rtol=1e-10, atol=1e-12)
        tol = 1e-5
        torch.testing.assert_close(gb, gd, rtol=tol, atol=tol)
    assert g_direct[0].abs().sum() > 0  # the data gets a gradient


@pytest.mark.parametrize("method", cde_methods())
@pytest.mark.parametrize("adjoint", ["direct", "checkpoint", "backsolve"])
def test_every_method_and_adjoint_runs_a_cde(method, adjoint):
    values, times, z0 = data(requires_grad=True)
    f = Field()
    path = solvers.interpolate(values, times, kind="hermite")
    kw = dict(rtol=1e-4, atol=1e-4) if solvers.methods()[method].adaptive else dict(dt=0.1)
    short = times[:3]
    sol = solvers.solve(CDE(f, path), z0, short, method=method, adjoint=adjoint, **kw)
    assert sol.ys.shape == (B, 3, H) and sol.success
    g = torch.autograd.grad(sol.ys.sum(), [values, f.l1.weight])
    assert all(torch.isfinite(x).all() for x in g)


def test_gradcheck_direct_through_data_and_f():
    values, times, z0 = data(requires_grad=True)
    values, times, z0 = values[:2, :4, :], times[:4], z0[:2, :2]

    def fn(v, w):
        def field(t, z):
            return torch.tanh(z @ w).reshape(2, 2, C)

        path = solvers.interpolate(v, times, kind="natural_cubic")
        return solvers.solve(CDE(field, path), z0, times, method="midpoint", dt=0.1).ys

    w = (0.5 * torch.randn(2, 2 * C, dtype=F64)).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (values, w))


@pytest.mark.parametrize(
    "adjoint, kw",
    [
        ("direct", dict(method="rk4", dt=0.02)),
        ("checkpoint", dict(method="rk4", dt=0.02)),
        ("backsolve", dict(method="rk4", dt=0.02)),
        ("direct", dict(method="dopri5", rtol=1e-7, atol=1e-7)),
    ],
)
def test_per_sample_times_equal_per_sample_solves(adjoint, kw):
    """Fixed steps: identical steps, so equal to round-off (the backsolve's backward pass takes
    the batch's largest step count, so its gradients agree to the methods' accuracy). Adaptive:
    round-off may flip an accept/reject decision, so they agree to the tolerance."""
    values, times, z0 = data(per_sample=True, requires_grad=True)
    f = Field()
    path = solvers.interpolate(values, times, kind="hermite")
    sol = solvers.solve(CDE(f, path), z0, times, adjoint=adjoint, **kw)
    (g,) = torch.autograd.grad(sol.ys.sum(), [values])
    for b in range(B):
        single = solvers.interpolate(values[b : b + 1], times[b], kind="hermite")
        ref = solvers.solve(CDE(f, single), z0[b : b + 1], times[b], adjoint=adjoint, **kw)
        (gb,) = torch.autograd.grad(ref.ys.sum(), [values])
        tol = 1e-5 if adjoint == "backsolve" or kw["method"] == "dopri5" else 1e-12
        torch.testing.assert_close(sol.ys[b], ref.ys[0], rtol=tol, atol=tol)
        torch.testing.assert_close(g[b], gb[b], rtol=tol, atol=tol)


def test_states_with_several_dimensions():
    values, times, _ = data()
    z0 = torch.randn(B, 2, 3, dtype=F64)
    w = torch.randn(6, 6 * C, dtype=F64) * 0.3

    def f(t, z):
        return torch.tanh(z.flatten(1) @ w).reshape(B, 2, 3, C)

    path = solvers.interpolate(values, times, kind="hermite")
    sol = solvers.solve(CDE(f, path), z0, times, method="rk4", dt=0.02)
    flat = solvers.solve(
        CDE(lambda t, z: f(t, z.reshape(B, 2, 3)).reshape(B, 6, C), path),
        z0.reshape(B, 6),
        times,
        method="rk4",
        dt=0.02,
    )
    torch.testing.assert_close(sol.ys.reshape(B, T, 6), flat.ys)


def test_parameters_are_those_of_f_and_the_path_tensors_that_require_grad():
    values, times, _ = data(requires_grad=True)
    f = Field()
    path = solvers.interpolate(values, times)
    params = CDE(f, path).parameters()
    assert len(params) == len(list(f.parameters())) + 1
    assert params[-1] is path.coefficients
    assert CDE(f, solvers.interpolate(values.detach(), times)).parameters() == tuple(f.parameters())


# ---------------------------------------------------------------------------------------------
# Errors


def test_f_of_the_wrong_shape():
    values, times, z0 = data()
    path = solvers.interpolate(values, times)
    with pytest.raises(ValueError, match=r"expected \(3, 4, 2\), got \(3, 4\)"):
        solvers.solve(CDE(lambda t, z: z, path), z0, times, method="rk4", dt=0.1)


def test_path_batch_must_match_y0():
    values, times, z0 = data()
    path = solvers.interpolate(values, times)
    with pytest.raises(ValueError, match="the path has batch 3 but y0 has batch 2"):
        solvers.solve(CDE(Field(), path), z0[:2], times, method="rk4", dt=0.1)


def test_path_dtype_must_match_y0():
    values, times, z0 = data()
    path = solvers.interpolate(values.float(), times.float())
    with pytest.raises(
        ValueError, match=r"the path has dtype torch\.float32; expected torch\.float64"
    ):
        solvers.solve(CDE(Field(), path), z0, times, method="rk4", dt=0.1)


def test_cde_arguments_are_checked():
    values, times, _ = data()
    with pytest.raises(TypeError, match="f must be callable"):
        CDE(3, solvers.interpolate(values, times))
    with pytest.raises(TypeError, match=r"path must be a path.*got Tensor"):
        CDE(Field(), values)
