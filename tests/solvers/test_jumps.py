"""Jump times: adaptive steps land on the times where the vector field is not smooth
(``ODE(f, jump_times=...)``, the knots of a CDE's path) instead of crossing them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import solvers
from solvers import CDE, ODE
from solvers._controller import refine_grid

F64 = torch.float64
# the explicit Runge–Kutta methods with an error estimate (implicit and SDE methods have
# tests of their own)
ADAPTIVE = [
    name
    for name, m in solvers.methods().items()
    if isinstance(m, solvers.ExplicitRungeKutta) and m.adaptive
]


def switch_field(s):
    """``dy/dt = 1`` before ``s`` and ``-2`` from ``s`` on (right-continuous, as paths are);
    ``s`` is ``(batch,)``. The exact solution is piecewise linear."""

    def f(t, y):
        rate = torch.where(t < s[:, None], 1.0, -2.0).to(y.dtype)
        return rate.expand_as(y)

    return f


def switch_exact(s, t):
    """``y(t)`` from ``y(0) = 0``, ``(batch, T)``."""
    return torch.where(t < s[:, None], t, s[:, None] - 2 * (t - s[:, None]))


@pytest.mark.parametrize("method", ADAPTIVE)
def test_a_switch_at_a_jump_time_is_integrated_exactly(method):
    """Every step lies on one side of the switch, where the field is constant, so each is
    exact; the stages at the end of the step that lands on the switch see the old rate, the
    next step starts with the new one. Without the jump time the steps straddle the switch
    and the error is that of the tolerance."""
    s = torch.tensor([1.0, 1.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.5, 3.0], dtype=F64)
    y0 = torch.zeros(2, 1, dtype=F64)
    exact = switch_exact(s, t)[..., None]
    kw = dict(method=method, rtol=1e-6, atol=1e-6)
    with_jump = solvers.solve(ODE(switch_field(s), jump_times=s[:1]), y0, t, **kw)
    torch.testing.assert_close(with_jump.ys, exact, rtol=0, atol=1e-13)
    without = solvers.solve(ODE(switch_field(s)), y0, t, **kw)
    assert (without.ys - exact).abs().max() > 1e-9
    assert with_jump.stats.num_function_evals < without.stats.num_function_evals


def test_per_sample_jump_times():
    """``(batch, J)`` jump times: each sample steps onto its own."""
    s = torch.tensor([0.3, 1.0, 2.2], dtype=F64)
    t = torch.linspace(0, 3, 7, dtype=F64)
    y0 = torch.zeros(3, 1, dtype=F64)
    jumps = torch.stack([s, s + 10], dim=1)  # the second lies past the end: never reached
    sol = solvers.solve(ODE(switch_field(s), jump_times=jumps), y0, t, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sol.ys, switch_exact(s, t)[..., None], rtol=0, atol=1e-13)


def test_jumps_at_output_times_and_repeated_jumps():
    """A jump on an output time, one at ``t0`` and at the end, and a repeated one."""
    s = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    jumps = torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=F64)
    sol = solvers.solve(ODE(switch_field(s), jump_times=jumps), torch.zeros(1, 1, dtype=F64), t)
    torch.testing.assert_close(sol.ys, switch_exact(s, t)[..., None], rtol=0, atol=1e-13)


@pytest.mark.parametrize("with_jumps", [False, True])
def test_function_evaluations_are_counted(with_jumps):
    """Every evaluation is counted: the starting-step heuristic's, and the extra one at each
    jump (the FSAL stage saw the left limit there)."""
    s = torch.tensor([0.7, 0.7], dtype=F64)
    calls = [0]
    base = switch_field(s)

    def f(t, y):
        calls[0] += 1
        return base(t, y)

    jumps = torch.tensor([0.7, 1.3, 2.1], dtype=F64) if with_jumps else None
    t = torch.tensor([0.0, 3.0], dtype=F64)
    sol = solvers.solve(ODE(f, jump_times=jumps), torch.zeros(2, 1, dtype=F64), t)
    assert sol.stats.num_function_evals == calls[0]


class Forced(nn.Module):
    """``dy/dt = tanh(W y) + u(t)`` with a forcing ``u`` held constant between switches."""

    def __init__(self, switches, levels):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(0.5 * torch.randn(3, 3, generator=g, dtype=F64))
        self.switches, self.levels = switches, levels

    def forward(self, t, y):
        k = torch.searchsorted(self.switches, t.contiguous(), right=True)
        return torch.tanh(y @ self.w.T) + self.levels[k]


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_gradients_with_jumps_agree_with_direct(adjoint):
    """Checkpointed segments replay the same steps (and the extra evaluations at the jumps);
    the continuous adjoint solves its own backward steps, so agrees to the tolerance."""
    switches = torch.tensor([0.4, 1.1, 1.7], dtype=F64)
    levels = torch.tensor([0.0, 1.0, -1.0, 0.5], dtype=F64)
    f = Forced(switches, levels)
    t = torch.tensor([0.0, 0.9, 2.0], dtype=F64)
    y0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    kw = dict(method="dopri5", rtol=1e-9, atol=1e-9)

    def run(adj):
        y = y0.clone().requires_grad_(True)
        sol = solvers.solve(ODE(f, jump_times=switches), y, t, adjoint=adj, **kw)
        loss = (sol.ys**2).sum()
        return (sol.ys.detach(), *torch.autograd.grad(loss, [y, f.w]))

    ref = run("direct")
    adj = solvers.CheckpointAdjoint(every=2) if adjoint == "checkpoint" else adjoint
    out = run(adj)
    tol = 0.0 if adjoint == "checkpoint" else 1e-6
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["linear", "hermite", "natural_cubic"])
def test_adaptive_cde_error_follows_the_tolerance(kind):
    """The knots are jump times of the path: the global error of an adaptive CDE solve stays
    within a small multiple of the tolerance (crossing the knots, it was 10³ times the
    tolerance on this problem)."""
    g = torch.Generator().manual_seed(3)
    B, T, C, H = 4, 12, 2, 4
    values = torch.randn(B, T, C, generator=g, dtype=F64)
    times = (0.1 + 0.4 * torch.rand(B, T, generator=g, dtype=F64)).cumsum(1)
    z0 = torch.randn(B, H, generator=g, dtype=F64)
    lin = nn.Linear(H, H * C, dtype=F64)

    def f(t, z):
        return torch.tanh(lin(z)).reshape(B, H, C)

    path = solvers.interpolate(values, times, kind=kind)
    ref = solvers.solve(CDE(f, path), z0, times, method="rk4", dt=2e-3, max_steps=10**5)
    sol = solvers.solve(CDE(f, path), z0, times, method="dopri5", rtol=1e-8, atol=1e-8)
    assert (sol.ys - ref.ys).abs().max() < 1e-6


def test_torchdiffeq_backend_takes_shared_jump_times():
    pytest.importorskip("torchdiffeq")
    s = torch.tensor([1.0, 1.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.5, 3.0], dtype=F64)
    y0 = torch.zeros(2, 1, dtype=F64)
    sol = solvers.solve(ODE(switch_field(s), jump_times=s[:1]), y0, t, backend="torchdiffeq")
    torch.testing.assert_close(sol.ys, switch_exact(s, t)[..., None], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"jump times shared by the batch.*backend='native'"):
        solvers.solve(ODE(switch_field(s), jump_times=s[:, None]), y0, t, backend="torchdiffeq")


@pytest.mark.parametrize(
    "jumps, match",
    [
        ([1.0, 2.0], r"jump_times must be a tensor, got list"),
        (torch.tensor([1, 2]), r"floating-point tensor of shape \(J,\) or \(batch, J\), got dtype"),
        (torch.zeros(1, 2, 3, dtype=F64), r"got dtype torch.float64 and shape \(1, 2, 3\)"),
        (
            torch.tensor([1.0, float("nan")], dtype=F64),
            r"must be finite; at index \(1,\) it is nan",
        ),
        (
            torch.tensor([[0.5, 1.0], [1.0, 0.5]], dtype=F64),
            r"non-decreasing; at index \(1, 1\) it goes from 1.0 to 0.5",
        ),
    ],
)
def test_bad_jump_times(jumps, match):
    with pytest.raises(ValueError, match=match):
        ODE(lambda t, y: -y, jump_times=jumps)


def test_jump_times_of_another_batch():
    ode = ODE(lambda t, y: -y, jump_times=torch.ones(3, 1, dtype=F64))
    t = torch.tensor([0.0, 2.0], dtype=F64)
    with pytest.raises(ValueError, match=r"ODE: jump_times has batch 3 but y0 has batch 2"):
        solvers.solve(ode, torch.ones(2, 1, dtype=F64), t)


# ---------------------------------------------------------------------------------------------
# Loops that step from grid point to grid point: fixed steps, and the backward solve of the
# continuous adjoint, step onto the jump times between the output times.


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_fixed_steps_land_on_jump_times_between_outputs(method):
    """Steps of 2.2 / 8 from 0 would cross the switch at 1; with the jump time the interval
    [0, 2.2] is split at 1, every step lies on one side, and the solution is exact."""
    s = torch.tensor([1.0, 1.0], dtype=F64)
    t = torch.tensor([0.0, 2.2, 3.0], dtype=F64)
    y0 = torch.zeros(2, 1, dtype=F64)
    exact = switch_exact(s, t)[..., None]
    kw = dict(method=method, dt=0.3)
    sol = solvers.solve(ODE(switch_field(s), jump_times=s[:1]), y0, t, **kw)
    torch.testing.assert_close(sol.ys, exact, rtol=0, atol=1e-13)
    without = solvers.solve(ODE(switch_field(s)), y0, t, **kw)
    assert (without.ys - exact).abs().max() > 1e-2


def test_per_sample_jump_times_with_shared_output_times():
    """Jumps ``(batch, J)`` and ``t`` ``(T,)``: each sample steps on a grid of its own
    (shorter ones padded with steps of length zero), outputs in the shape of ``t``."""
    s = torch.tensor([0.25, 1.0, 1.9], dtype=F64)
    jumps = torch.stack([s, torch.tensor([0.5, 0.5, 2.5], dtype=F64)], dim=1).sort(dim=1).values
    t = torch.linspace(0, 3, 4, dtype=F64)
    sol = solvers.solve(
        ODE(switch_field(s), jump_times=jumps),
        torch.zeros(3, 1, dtype=F64),
        t,
        method="rk4",
        dt=0.4,
    )
    assert sol.ys.shape == (3, 4, 1) and sol.ts is t
    torch.testing.assert_close(sol.ys, switch_exact(s, t)[..., None], rtol=0, atol=1e-13)


def test_gradient_with_respect_to_output_times_through_the_refined_grid():
    """y(t_end) = (1 - t0) - 2 (t_end - 1) past the switch: the gradient with respect to
    t0 is -1, to t_end -2, and to the output time in between 0."""
    s = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 2.0, 3.0], dtype=F64, requires_grad=True)
    sol = solvers.solve(
        ODE(switch_field(s), jump_times=s), torch.zeros(1, 1, dtype=F64), t, method="rk4", dt=0.3
    )
    (g,) = torch.autograd.grad(sol.ys[0, -1, 0], [t])
    torch.testing.assert_close(g, torch.tensor([-1.0, 0.0, -2.0], dtype=F64))


class Autonomous(nn.Module):
    """A CDE vector field ``f(t, z) = net(z)``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, z):
        return self.net(z)


def linear_cde_grads(adjoint, method_kw, outputs=3):
    """A CDE on a linear path (slope jumps at every knot) solved at ``outputs`` times that are
    not the knots; the solution and the gradients with respect to the data and weights."""
    g = torch.Generator().manual_seed(3)
    B, T, C, H = 3, 8, 2, 4
    values = torch.randn(B, T, C, generator=g, dtype=F64).requires_grad_(True)
    times = (0.1 + 0.4 * torch.rand(T, generator=g, dtype=F64)).cumsum(0)
    z0 = torch.randn(B, H, generator=g, dtype=F64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        f = Autonomous(
            nn.Sequential(nn.Linear(H, H * C, dtype=F64), nn.Tanh(), nn.Unflatten(1, (H, C)))
        )
    t = torch.linspace(float(times[0]), float(times[-1]), outputs, dtype=F64)
    path = solvers.interpolate(values, times, kind="linear")
    sol = solvers.solve(CDE(f, path), z0, t, adjoint=adjoint, **method_kw)
    loss = (sol.ys**2).sum()
    return (sol.ys.detach(), *torch.autograd.grad(loss, [values, *f.parameters()]))


def test_cde_off_the_knots_fixed_steps_and_backsolve():
    """Outputs between the knots: fixed RK4 steps land on the knots (error 3e-7 here; 4e-2
    crossing them), and the backward solves of backsolve, adaptive or fixed, end each piece
    on a knot, so their gradients match direct ones (to 2e-7 and 3e-6; 4e-6 and 1e-2
    crossing them)."""
    ref = linear_cde_grads("direct", dict(method="dopri5", rtol=1e-12, atol=1e-12))
    rk4 = dict(method="rk4", dt=0.01)
    direct = linear_cde_grads("direct", rk4)
    torch.testing.assert_close(direct[0], ref[0], rtol=0, atol=1e-6)
    assert_all_close(linear_cde_grads("backsolve", rk4), direct, 1e-5)
    dopri5 = dict(method="dopri5", rtol=1e-9, atol=1e-9)
    assert_all_close(
        linear_cde_grads("backsolve", dopri5), linear_cde_grads("direct", dopri5), 1e-6
    )


def assert_all_close(a, b, tol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=tol)


@pytest.mark.parametrize("adjoint", ["direct", "backsolve"])
def test_a_prepared_solve_plans_the_jump_times(adjoint, request):
    """The refined grid is planned once: calls equal solve, and read nothing back."""
    s = torch.tensor([1.0, 1.0], dtype=F64)
    t = torch.tensor([0.0, 2.0, 3.0], dtype=F64)
    ode = ODE(switch_field(s), jump_times=s[:1])
    prepared = solvers.prepare(ode, t, method="rk4", dt=0.3, adjoint=adjoint)
    y0 = torch.zeros(2, 1, dtype=F64, requires_grad=True)
    ref = solvers.solve(ode, y0, t, method="rk4", dt=0.3, adjoint=adjoint)
    (ref_g,) = torch.autograd.grad(ref.ys.sum(), [y0])
    prepared(y0)  # the first call checks the vector field
    request.getfixturevalue("forbid_host_reads")
    sol = prepared(y0)
    (g,) = torch.autograd.grad(sol.ys.sum(), [y0])
    assert torch.equal(sol.ys, ref.ys) and torch.equal(g, ref_g)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.floats(0.05, 1.0), min_size=2, max_size=6),
    jumps=st.lists(st.floats(-0.5, 5.0), max_size=6),
    on_outputs=st.integers(0, 3),
    per_sample=st.booleans(),
)
def test_refine_grid_keeps_every_output_and_every_jump_inside(steps, jumps, on_outputs, per_sample):
    """The refined grid is sorted, holds each output time where ``positions`` says and each
    jump strictly inside the span once; jumps on output times or outside add nothing."""
    t = torch.tensor([0.0, *steps], dtype=F64).cumsum(0)
    j = torch.tensor(jumps + t[1 : 1 + on_outputs].tolist(), dtype=F64).sort().values
    tt, jj = (t.expand(2, -1), j.expand(2, -1)) if per_sample else (t, j)
    out = refine_grid(tt, jj)
    inside = sorted({x for x in j.tolist() if t[0] < x < t[-1] and x not in t.tolist()})
    if not inside:
        assert out is None
        return
    grid, positions = out
    grid2 = grid if grid.ndim == 2 else grid[None]
    assert (grid2.diff(dim=1) >= 0).all()
    assert torch.equal(grid2.gather(1, positions), tt.expand_as(positions))
    for row in grid2:
        assert sorted(set(row.tolist()) - set(t.tolist())) == inside


@pytest.mark.gpu
@pytest.mark.parametrize("method_kw", [dict(method="dopri5"), dict(method="rk4", dt=0.3)])
def test_jumps_on_cuda(method_kw):
    """The same steps on the device: per-sample jump times, adaptive and fixed, exact."""
    cuda = torch.device("cuda")
    s = torch.tensor([0.3, 1.0, 2.2], dtype=F64, device=cuda)
    t = torch.linspace(0, 3, 4, dtype=F64, device=cuda)
    ode = ODE(switch_field(s), jump_times=s[:, None])
    sol = solvers.solve(ode, torch.zeros(3, 1, dtype=F64, device=cuda), t, **method_kw)
    assert sol.ys.device.type == "cuda"
    torch.testing.assert_close(sol.ys, switch_exact(s, t)[..., None], rtol=0, atol=1e-12)
