"""Gradients through a solve, measured: finite differences, adjoints against each other, memory.

Every adjoint ("direct", "checkpoint", "backsolve") is checked with ``gradcheck`` in float64
with respect to ``y0``, the times (shared and per-sample grids) and the parameters of the
vector field. Checkpointing must reproduce the direct gradients exactly; the continuous
(backsolve) adjoint must agree with them to the accuracy of its backward solve; backsolve's
memory must not depend on the number of steps.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

import solvers

F64 = torch.float64

# Tolerances of the methods under test (the brief of the design: rk4 with dt=0.1, dopri5 tight).
SETTINGS = {
    "rk4": dict(method="rk4", dt=0.1),
    "dopri5": dict(method="dopri5", rtol=1e-10, atol=1e-12),
}
ADJOINTS = ("direct", "checkpoint", "backsolve")

# Output times chosen so that no interval is a multiple of dt=0.1: a perturbation of size eps
# must not change the number of fixed steps (the map is only piecewise smooth in t).
T_SHARED = (0.0, 0.37, 0.95)
T_PER_SAMPLE = ((0.0, 0.37, 0.95), (0.1, 0.62, 1.23))


# ---------------------------------------------------------------------------------------------
# Vector fields


def mlp_weights(seed: int = 0, n: int = 2, hidden: int = 4) -> tuple[torch.Tensor, ...]:
    """Weights of a tiny ``n -> hidden -> n`` MLP, float64, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(hidden, n), (hidden,), (n, hidden), (n,)]
    scales = [0.7, 0.3, 0.7, 0.3]
    return tuple(
        (torch.randn(s, generator=g, dtype=F64) * c).requires_grad_()
        for s, c in zip(shapes, scales)
    )


def functional_field(weights):
    """``f(t, y) = (tanh(y W1ᵀ + b1) W2ᵀ + b2) cos(t)``, a closure over explicit weights."""
    w1, b1, w2, b2 = weights

    def f(t, y):
        return (torch.tanh(y @ w1.T + b1) @ w2.T + b2) * torch.cos(t)

    return f


class MLPField(nn.Module):
    """A time-dependent MLP vector field on states of any shape (flattened inside)."""

    def __init__(self, state_shape=(2,), hidden: int = 4, seed: int = 0):
        super().__init__()
        n = math.prod(state_shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.l1 = nn.Linear(n, hidden, dtype=F64)
            self.l2 = nn.Linear(hidden, n, dtype=F64)

    def forward(self, t, y):
        out = self.l2(torch.tanh(self.l1(y.flatten(1)))).reshape(y.shape)
        return out * torch.cos(t).reshape((-1,) + (1,) * (y.ndim - 1))


def adjoint_for(name: str, method: str, params=None, **backsolve_options):
    """The adjoint object to pass; backsolve gets the tight tolerances of the forward solve."""
    if name != "backsolve":
        return name
    if method == "dopri5" and not backsolve_options:
        backsolve_options = dict(rtol=1e-10, atol=1e-12)
    return solvers.BacksolveAdjoint(params=params, **backsolve_options)


def times(grid: str, requires_grad: bool = True) -> torch.Tensor:
    data = T_SHARED if grid == "shared" else T_PER_SAMPLE
    return torch.tensor(data, dtype=F64, requires_grad=requires_grad)


def initial_state(shape=(2, 2), seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=F64).requires_grad_()


# ---------------------------------------------------------------------------------------------
# gradcheck: every adjoint against finite differences


def gradcheck_tolerances(adjoint: str) -> dict:
    # backsolve approximates the continuous adjoint; direct and checkpoint differentiate the
    # computed solution itself (up to the detached step sizes, which move by O(tolerance)).
    if adjoint == "backsolve":
        return dict(eps=1e-6, atol=1e-5, rtol=1e-4)
    return dict(eps=1e-6, atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("mode", ["fast", pytest.param("every_entry", marks=pytest.mark.slow)])
@pytest.mark.parametrize("grid", ["shared", "per_sample"])
@pytest.mark.parametrize("adjoint", ADJOINTS)
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_gradcheck_y0_t_and_parameters(method, adjoint, grid, mode):
    weights = mlp_weights()
    y0 = initial_state()
    t = times(grid)

    def fn(y0, t, *w):
        adj = adjoint_for(adjoint, method, params=w)
        return solvers.solve(
            solvers.ODE(functional_field(w)), y0, t, adjoint=adj, **SETTINGS[method]
        ).ys

    # The default run checks random projections of the Jacobian (fast mode); -m slow checks
    # every entry.
    assert gradcheck(
        fn, (y0, t, *weights), fast_mode=mode == "fast", **gradcheck_tolerances(adjoint)
    )


@pytest.mark.parametrize("adjoint", ADJOINTS)
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_gradcheck_module_parameters(method, adjoint):
    """An nn.Module vector field: its parameters get gradients under every adjoint (for
    backsolve without passing them), and gradcheck perturbs them in place."""
    field = MLPField()
    y0 = initial_state().detach()
    t = times("shared", requires_grad=False)

    def fn(*_params):
        adj = adjoint_for(adjoint, method)
        return solvers.solve(solvers.ODE(field), y0, t, adjoint=adj, **SETTINGS[method]).ys

    assert gradcheck(
        fn,
        tuple(field.parameters()),
        fast_mode=method == "dopri5",
        **gradcheck_tolerances(adjoint),
    )


# ---------------------------------------------------------------------------------------------
# Adjoints against direct backpropagation


def gradients(field, y0, t, adjoint, loss=None, **options):
    """Gradients of a loss of the solution with respect to y0, t and the field's parameters."""
    y0 = y0.detach().requires_grad_()
    t = t.detach().requires_grad_()
    params = tuple(field.parameters())
    ys = solvers.solve(solvers.ODE(field), y0, t, adjoint=adjoint, **options).ys
    if loss is None:
        g = torch.Generator().manual_seed(7)
        weights = torch.randn(ys.shape, generator=g, dtype=ys.dtype).to(ys.device)
        value = (ys * weights).sum() + (ys**2).sum()
    else:
        value = loss(ys)
    grads = torch.autograd.grad(value, (y0, t, *params), allow_unused=True)
    return ys.detach(), grads


def assert_grads_close(got, expected, rtol, names=None):
    """Entry-wise relative agreement, with an absolute floor relative to each gradient's size."""
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        name = names[i] if names else f"gradient {i}"
        assert a is not None, f"{name}: no gradient"
        assert b is not None, f"{name}: no reference gradient"
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * max(scale, 1e-12), msg=name)


GRAD_NAMES = ["y0", "t", "l1.weight", "l1.bias", "l2.weight", "l2.bias"]

# Settings tight enough that the continuous adjoint matches the discrete gradient to ~1e-6.
AGREE = {
    "rk4": dict(method="rk4", dt=0.05),
    "dopri5": dict(method="dopri5", rtol=1e-10, atol=1e-12),
}


def agreement_problem(grid: str):
    """Multi-dimensional state (batch, 2, 3) with a shared or per-sample grid."""
    field = MLPField(state_shape=(2, 3), hidden=8, seed=3)
    g = torch.Generator().manual_seed(4)
    y0 = torch.randn(3, 2, 3, generator=g, dtype=F64)
    if grid == "shared":
        t = torch.tensor([0.0, 0.3, 0.75, 1.2], dtype=F64)
    else:
        t = torch.tensor(
            [[0.0, 0.3, 0.75, 1.2], [0.2, 0.5, 0.6, 1.5], [-0.4, 0.1, 0.9, 1.0]], dtype=F64
        )
    return field, y0, t


@pytest.mark.parametrize("grid", ["shared", "per_sample"])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_checkpoint_equals_direct(method, grid):
    field, y0, t = agreement_problem(grid)
    ys_d, direct = gradients(field, y0, t, "direct", **AGREE[method])
    ys_c, ckpt = gradients(field, y0, t, "checkpoint", **AGREE[method])
    torch.testing.assert_close(ys_c, ys_d, rtol=0, atol=0)
    assert_grads_close(ckpt, direct, rtol=1e-12, names=GRAD_NAMES)


@pytest.mark.parametrize("grid", ["shared", "per_sample"])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_backsolve_agrees_with_direct(method, grid):
    field, y0, t = agreement_problem(grid)
    ys_d, direct = gradients(field, y0, t, "direct", **AGREE[method])
    adj = adjoint_for("backsolve", method)
    ys_b, back = gradients(field, y0, t, adj, **AGREE[method])
    # The forward pass of backsolve is the same solve.
    torch.testing.assert_close(ys_b, ys_d, rtol=0, atol=0)
    assert_grads_close(back, direct, rtol=1e-6, names=GRAD_NAMES)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
@pytest.mark.parametrize("every", [None, 1, 3, 1000])
def test_checkpoint_every_gives_identical_gradients(every, method):
    field, y0, t = agreement_problem("per_sample")
    options = AGREE[method]
    _, direct = gradients(field, y0, t, "direct", **options)
    _, ckpt = gradients(field, y0, t, solvers.CheckpointAdjoint(every=every), **options)
    assert_grads_close(ckpt, direct, rtol=1e-12, names=GRAD_NAMES)


def test_backsolve_with_a_fixed_step_backward_method():
    """A dopri5 forward solve, an rk4 backward solve with its own step."""
    field, y0, t = agreement_problem("per_sample")
    forward = dict(method="dopri5", rtol=1e-10, atol=1e-12)
    _, direct = gradients(field, y0, t, "direct", **forward)
    adj = solvers.BacksolveAdjoint(method="rk4", dt=0.01)
    _, back = gradients(field, y0, t, adj, **forward)
    assert_grads_close(back, direct, rtol=1e-6, names=GRAD_NAMES)


def test_backsolve_fixed_step_backward_method_needs_dt():
    field, y0, t = agreement_problem("shared")
    adj = solvers.BacksolveAdjoint(method="rk4")
    with pytest.raises(ValueError, match=r"BacksolveAdjoint.*'rk4'.*fixed-step.*dt"):
        solvers.solve(solvers.ODE(field), y0, t, adjoint=adj, rtol=1e-8, atol=1e-8)


LOSSES = {
    "last": lambda ys: (ys[:, -1] ** 2).sum(),
    "middle": lambda ys: ys[:, 1].sin().sum(),
    "all": lambda ys: (ys**2).sum() + ys.sum(),
}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_losses_of_some_or_all_outputs(method, adjoint, loss):
    field, y0, t = agreement_problem("per_sample")
    _, direct = gradients(field, y0, t, "direct", loss=LOSSES[loss], **AGREE[method])
    adj = adjoint_for(adjoint, method)
    _, got = gradients(field, y0, t, adj, loss=LOSSES[loss], **AGREE[method])
    rtol = 1e-12 if adjoint == "checkpoint" else 1e-6
    assert_grads_close(got, direct, rtol=rtol, names=GRAD_NAMES)


@pytest.mark.parametrize("adjoint", ADJOINTS)
def test_gradient_through_the_initial_time_only(adjoint):
    """t with a single time: the solution is y0 itself."""
    field = MLPField()
    y0 = initial_state()
    t = torch.tensor([0.3], dtype=F64, requires_grad=True)
    ys = solvers.solve(solvers.ODE(field), y0, t, adjoint=adjoint).ys
    assert ys.shape == (2, 1, 2)
    (g,) = torch.autograd.grad(ys.sum(), y0)
    torch.testing.assert_close(g, torch.ones_like(y0))


# ---------------------------------------------------------------------------------------------
# Memory


def saved_bytes(adjoint, dt: float, backward: bool = False) -> int:
    """Bytes of tensors that autograd saves for the backward pass during one forward solve."""
    field = MLPField(state_shape=(8,), hidden=16)
    y0 = torch.linspace(-1, 1, 32, dtype=F64).reshape(4, 8).requires_grad_()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    total = [0]
    seen = set()

    def pack(x):
        # Count each storage once: the same tensor may be saved by several nodes.
        key = (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape))
        if key not in seen:
            seen.add(key)
            total[0] += x.numel() * x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        ys = solvers.solve(solvers.ODE(field), y0, t, method="rk4", dt=dt, adjoint=adjoint).ys
    if backward:  # the graph is usable
        ys.sum().backward()
        assert y0.grad is not None and t.grad is not None
        assert all(p.grad is not None for p in field.parameters())
    return total[0]


def test_backsolve_saves_the_same_memory_for_ten_times_the_steps():
    # The backward solve takes its own coarse step: only the forward pass is measured.
    adj = solvers.BacksolveAdjoint(dt=0.1)
    few = saved_bytes(adj, 0.05, backward=True)
    many = saved_bytes(adj, 0.005)
    assert few > 0
    assert many == few


def test_direct_saves_memory_proportional_to_the_steps():
    few = saved_bytes("direct", 0.05, backward=True)
    many = saved_bytes("direct", 0.005)
    assert many > 8 * few


def test_checkpoint_saves_less_than_direct():
    saved_bytes("checkpoint", 0.05, backward=True)
    assert saved_bytes("checkpoint", 0.005) < saved_bytes("direct", 0.005) / 3


def _cuda_peak(adjoint: str, steps: int) -> int:
    dev = torch.device("cuda")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        field = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64)).to(dev, F64)

    def f(t, y):
        return field(y)

    problem = solvers.ODE(f)
    params = tuple(field.parameters())
    adj = solvers.BacksolveAdjoint(params=params) if adjoint == "backsolve" else adjoint
    g = torch.Generator().manual_seed(1)
    y0 = torch.randn(64, 64, generator=g, dtype=F64).to(dev).requires_grad_()
    t = torch.tensor([0.0, 1.0], device=dev, dtype=F64)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ys = solvers.solve(problem, y0, t, method="rk4", dt=1.0 / steps, adjoint=adj).ys
    ys.square().sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert y0.grad is not None and all(p.grad is not None for p in params)
    return peak


@pytest.mark.gpu
def test_cuda_peak_memory_of_backsolve_does_not_grow_with_steps():
    few = _cuda_peak("backsolve", 100)
    many = _cuda_peak("backsolve", 1000)
    assert many < 1.5 * few, (few, many)
    few_d = _cuda_peak("direct", 100)
    many_d = _cuda_peak("direct", 1000)
    assert many_d > 3 * few_d, (few_d, many_d)


# ---------------------------------------------------------------------------------------------
# CUDA against CPU


@pytest.mark.gpu
@pytest.mark.parametrize("grid", ["shared", "per_sample"])
@pytest.mark.parametrize("adjoint", ADJOINTS)
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_cuda_matches_cpu(method, adjoint, grid):
    field, y0, t = agreement_problem(grid)
    options = AGREE[method]
    adj = adjoint_for(adjoint, method)
    ys_cpu, g_cpu = gradients(field, y0, t, adj, **options)
    cuda = torch.device("cuda")
    field_gpu = MLPField(state_shape=(2, 3), hidden=8, seed=3).to(cuda)
    field_gpu.load_state_dict(field.state_dict())
    ys_gpu, g_gpu = gradients(field_gpu, y0.to(cuda), t.to(cuda), adj, **options)
    assert ys_gpu.device.type == "cuda"
    torch.testing.assert_close(ys_gpu.cpu(), ys_cpu, rtol=1e-9, atol=1e-11)
    assert_grads_close([g.cpu() for g in g_gpu], g_cpu, rtol=1e-8, names=GRAD_NAMES)


@pytest.mark.parametrize("adjoint", ["direct", "checkpoint", "backsolve"])
def test_a_field_that_ignores_the_state(adjoint):
    """dy/dt = cos(t): y(t) = y0 + sin(t), so ∂ Σ y(t_k) / ∂y0 = T for every element. The
    adjoint's vector-Jacobian product of a field with no graph to the state is zero."""
    y0 = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    ode = solvers.ODE(lambda t, y: torch.cos(t).expand_as(y))
    sol = solvers.solve(ode, y0, t, method="rk4", dt=0.1, adjoint=adjoint)
    (g,) = torch.autograd.grad(sol.ys.sum(), [y0])
    torch.testing.assert_close(g, torch.full_like(y0, 4.0))
    torch.testing.assert_close(sol.ys[:, -1], torch.full_like(y0, math.sin(1.0)), atol=1e-7, rtol=0)
