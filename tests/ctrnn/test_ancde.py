"""Attentive neural CDE (Jhin et al., 2021): ctrnn.models.ancde."""

import math

import pytest
import torch

import solvers
from ctrnn.models import available, create
from ctrnn.models.ancde import ANCDE, AttentiveCDEModel
from ctrnn.models.ncde import build_path

RK4 = dict(method="rk4", dt=0.25)


def _data(B=3, T=5, C=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    times = torch.cumsum(0.5 + torch.rand(T, generator=g, dtype=torch.float64), 0)
    return x, times


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    opts = dict(input_size=2, hidden_size=4, attention_size=3, num_classes=3, solver=RK4) | kw
    return create("ancde", **opts).double()


def _smooth(module):
    """ReLU's kink limits every Runge–Kutta method to low order; order tests use tanh."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, torch.nn.Tanh())
        else:
            _smooth(child)
    return module


@pytest.mark.parametrize("attention", ["channelwise", "timewise"])
def test_is_registered_and_shapes(attention):
    assert "ancde" in available()
    x, times = _data()
    model = _model(attention=attention)
    assert isinstance(model, ANCDE)
    out, h_n = model(x, times)
    assert out.shape == (3, 5, 4) and h_n.shape == (3, 4)
    assert model.classify(x, times).shape == (3, 3)
    a = model.attention_weights(x, times)
    assert a.shape == (3, 5, 3 if attention == "channelwise" else 1)
    assert ((a > 0) & (a < 1)).all()


def test_with_attention_fixed_at_one_it_is_a_neural_cde():
    x, times = _data()
    ancde = _model()
    ncde = create("neural_cde", input_size=2, hidden_size=4, num_classes=3, solver=RK4).double()
    ncde.cde.field.load_state_dict(ancde.cde.top.state_dict())
    ncde.initial.load_state_dict(ancde.initial.state_dict())

    def one(h, dh=None):
        a = torch.ones((*h.shape[:-1], 3), dtype=h.dtype)
        return a, None if dh is None else torch.zeros_like(a)

    ancde.cde.attention = one
    out_a, h_a = ancde(x, times)
    out_n, h_n = ncde(x, times)
    # to round-off: the joint state [z, h] changes only the order of some float operations
    torch.testing.assert_close(out_a, out_n, rtol=0, atol=1e-14)
    torch.testing.assert_close(h_a, h_n, rtol=0, atol=1e-14)


@pytest.mark.parametrize("attention", ["channelwise", "timewise"])
def test_dY_dt_is_exact(attention):
    """``dY/dt`` in the top CDE equals the time derivative of ``Y = a ⊙ X`` along the
    solution (central differences of ``a(t) ⊙ X(t)`` around ``s``)."""
    x, times = _data()
    model = _smooth(_model(attention=attention))
    cde = model.cde
    path, _, _ = build_path(x, times, None, "test", input_size=2)
    # from an arbitrary state at s - eps: the solution on [s - eps, s + eps]
    s, eps = 2.1, 1e-4
    y0 = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grid = torch.tensor([s - eps, s, s + eps], dtype=torch.float64)
    ys = cde.solve(path, grid, y0, method="rk4", dt=eps / 8)
    Y = [cde.attention(ys[:, i, 4:])[0] * path.evaluate(grid[i]) for i in (0, 2)]
    fd = (Y[1] - Y[0]) / (2 * eps)
    h = ys[:, 1, 4:]
    X, dX = path.evaluate(grid[1]), path.derivative(grid[1])
    dh = torch.bmm(cde.bottom(None, h), dX[:, :, None])[:, :, 0]
    a, da = cde.attention(h, dh)
    torch.testing.assert_close(a * dX + da * X, fd, rtol=1e-5, atol=1e-6)
    # the top CDE's dz/dt is f(z) dY/dt with that dY/dt; the reference code's is not
    expected = torch.bmm(cde.top(None, ys[:, 1, :4]), fd[:, :, None])[:, :, 0]
    torch.testing.assert_close(
        cde.derivative(ys[:, 1], X, dX)[:, :4], expected, rtol=1e-5, atol=1e-6
    )
    cde.derivative_kind = "reference"
    assert not torch.allclose(cde.derivative(ys[:, 1], X, dX)[:, :4], expected, rtol=1e-3)


def test_hard_attention_is_binary_with_straight_through_gradients():
    torch.manual_seed(0)
    cde = AttentiveCDEModel(3, 4, 5, hard=True).double()
    h = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    dh = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    a, da = cde.attention(h, dh)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert (da == 0).all()
    w = torch.randn(6, 3, dtype=torch.float64)
    ga = torch.autograd.grad((a * w).sum() + (da * w).sum(), (h, dh))
    cde.hard = False
    s, ds = cde.attention(h, dh)
    gs = torch.autograd.grad((s * w).sum() + (ds * w).sum(), (h, dh))
    for g0, g1 in zip(ga, gs, strict=True):
        torch.testing.assert_close(g0, g1)
        assert g0.abs().sum() > 0


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(attention="timewise", observation_channels=True),
        dict(hard=True, interpolation="linear"),
    ],
)
def test_gradients_reach_every_parameter(options):
    x, times = _data()
    model = _model(**options)
    model.classify(x, times).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_per_sample_times_batched_equal_per_sample():
    x, _ = _data()
    g = torch.Generator().manual_seed(1)
    times = torch.cumsum(0.3 + torch.rand(3, 5, generator=g, dtype=torch.float64), 1)
    model = _model()
    out, _ = model(x, times)
    for i in range(3):
        o, _ = model(x[i : i + 1], times[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], o, rtol=1e-10, atol=1e-12)


def test_missing_values():
    x, times = _data()
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[:, 0] = True
    model = _model(observation_channels=True)
    with_nan = torch.where(mask, x, torch.full_like(x, float("nan")))
    torch.testing.assert_close(model(with_nan, times)[0], model(x, times, mask)[0])
    x[1, :, 1] = float("nan")
    x[2, 3:] = float("nan")
    out, h_n = model(x, times)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(h_n[2], out[2, 2])


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_adjoints_agree_with_direct(adjoint):
    x, times = _data(T=4)
    grads = {}
    for a in ("direct", adjoint):
        model = _smooth(_model(solver=dict(method="rk4", dt=0.1, adjoint=a)))
        model.classify(x, times).square().sum().backward()
        grads[a] = [p.grad for p in model.parameters()]
    tol = 1e-12 if adjoint == "checkpoint" else 1e-5
    for g0, g1 in zip(grads["direct"], grads[adjoint], strict=True):
        torch.testing.assert_close(g0, g1, rtol=tol, atol=tol)


def test_torchcde_backend_is_refused():
    x, _ = _data()
    model = _model(solver=dict(method="rk4", dt=0.25, backend="torchcde"))
    with pytest.raises(ValueError, match="native"):
        model(x)


@pytest.mark.parametrize("scheme,order", [("euler", 1), ("rk4", 4)])
def test_discretization_converges_at_the_schemes_order(scheme, order):
    torch.manual_seed(0)
    model = _smooth(ANCDE(2, 4, attention_size=3).double())
    cde = model.cde
    X0, u = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    path = solvers.interpolate(torch.stack([X0, X0 + u], dim=1), t, kind="linear")
    y0 = 0.1 * torch.randn(2, 7, dtype=torch.float64)
    exact = cde.solve(path, t, y0, method="dopri5", rtol=1e-12, atol=1e-12)[:, -1]
    errors, steps = [], [4, 8, 16, 32]
    for n in steps:
        cell, y, X = model.discretize(scheme, 1.0 / n), y0, X0
        for _ in range(n):
            y = cell(torch.cat([X, u], dim=1), y)
            X = X + u / n
        errors.append((y - exact).abs().max().item())
    slope = -(math.log(errors[-1]) - math.log(errors[0])) / (
        math.log(steps[-1]) - math.log(steps[0])
    )
    assert abs(slope - order) < 0.3, (errors, slope)


def test_errors():
    with pytest.raises(ValueError, match="attention must be one of"):
        create("ancde", input_size=2, hidden_size=4, attention="global")
    with pytest.raises(ValueError, match="derivative must be one of"):
        create("ancde", input_size=2, hidden_size=4, derivative="approximate")
    with pytest.raises(ValueError, match="attention_size must be a positive integer"):
        create("ancde", input_size=2, hidden_size=4, attention_size=0)
    with pytest.raises(ValueError, match="unknown interpolation"):
        create("ancde", input_size=2, hidden_size=4, interpolation="spline")
    with pytest.raises(ValueError, match="built without num_classes"):
        create("ancde", input_size=2, hidden_size=4).classify(torch.zeros(1, 3, 2))


@pytest.mark.gpu
def test_trains_on_gpu():
    torch.manual_seed(0)
    model = create("ancde", input_size=2, hidden_size=16, num_classes=2, solver=RK4).cuda()
    x = torch.randn(64, 10, 2, device="cuda")
    y = (x[:, :, 0].mean(1) > 0).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model.classify(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_the_paths_knots_are_jump_times_of_the_joint_ode():
    """The joint ODE's field jumps where dX/dt does (a linear path's knots): its adaptive
    steps land on them, and a tight solve agrees with RK4 steps that split every interval
    (to 2.5e-10 with 468 evaluations; crossing the knots: 9.6e-8 with 2852)."""
    x, times = _data(B=3, T=8)
    model = _smooth(_model(interpolation="linear"))  # no ReLU kinks in the state
    path = build_path(x, times, None, "test", input_size=2, interpolation="linear")[0]
    problem = model.cde.problem(path)
    assert torch.equal(problem.jump_times(), path.jump_times)
    y0 = torch.randn(3, 4 + 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tight = solvers.solve(problem, y0, times, method="dopri5", rtol=1e-10, atol=1e-10)
    fine = solvers.solve(problem, y0, times, method="rk4", dt=5e-3)
    torch.testing.assert_close(tight.ys, fine.ys, rtol=0, atol=1e-8)
