"""Neural CDE (Kidger et al., 2020): ctrnn.models.ncde."""

import math

import pytest
import torch

import solvers
from ctrnn.models import available, create
from ctrnn.models.ncde import NeuralCDE, NeuralCDEModel

RK4 = dict(method="rk4", dt=0.25)


def _data(B=3, T=6, C=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    times = torch.cumsum(0.5 + torch.rand(T, generator=g, dtype=torch.float64), 0)
    return x, times


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    opts = dict(input_size=2, hidden_size=4, num_classes=3, solver=RK4) | kw
    return create("neural_cde", **opts).double()


def _smooth(module):
    """ReLU's kink limits every Runge–Kutta method to low order; order tests use tanh."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, torch.nn.Tanh())
        else:
            _smooth(child)
    return module


def test_is_registered_and_shapes():
    assert "neural_cde" in available()
    x, times = _data()
    model = _model()
    assert isinstance(model, NeuralCDE)
    out, h_n = model(x, times)
    assert out.shape == (3, 6, 4) and h_n.shape == (3, 4)
    torch.testing.assert_close(h_n, out[:, -1])
    assert model.classify(x, times).shape == (3, 3)


def test_initial_state_is_zeta_of_the_first_observation():
    x, times = _data()
    model = _model()
    out, _ = model(x, times)
    # the time channel (t - t_0) / (t_last - t_0) is 0 at the first observation
    X0 = torch.cat([torch.zeros(3, 1, dtype=x.dtype), x[:, 0]], dim=1)
    torch.testing.assert_close(out[:, 0], model.initial(X0))


@pytest.mark.parametrize("interpolation", ["hermite", "linear", "rectilinear", "natural_cubic"])
@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_gradients_reach_every_parameter(interpolation, mode):
    x, times = _data()
    model = _model(interpolation=interpolation, mode=mode, observation_channels=True)
    model.classify(x, times).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_per_sample_times_batched_equal_per_sample():
    x, _ = _data()
    g = torch.Generator().manual_seed(1)
    times = torch.cumsum(0.3 + torch.rand(3, 6, generator=g, dtype=torch.float64), 1)
    model = _model()
    out, h_n = model(x, times)
    for i in range(3):
        o, h = model(x[i : i + 1], times[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], o, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(h_n[i : i + 1], h, rtol=1e-10, atol=1e-12)


def test_nan_and_mask_give_the_same_model():
    x, times = _data()
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[:, 0] = True
    model = _model(observation_channels=True)
    with_nan = torch.where(mask, x, torch.full_like(x, float("nan")))
    torch.testing.assert_close(model(with_nan, times)[0], model(x, times, mask)[0])
    # the observation channels see the mask: a different mask changes the result
    assert not torch.allclose(model(x, times)[0], model(x, times, mask)[0])


def test_missing_channel_and_trailing_padding():
    x, times = _data()
    x[1, :, 1] = float("nan")  # never observed: filled with 0
    x[2, 4:] = float("nan")  # shorter series, padded at the end
    out, h_n = _model(observation_channels=True)(x, times)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(h_n[2], out[2, 3])
    torch.testing.assert_close(h_n[:2], out[:2, -1])


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_adjoints_agree_with_direct(adjoint):
    x, times = _data()
    grads = {}
    for a in ("direct", adjoint):
        model = _smooth(_model(solver=dict(method="rk4", dt=0.1, adjoint=a)))
        model.classify(x, times).square().sum().backward()
        grads[a] = [p.grad for p in model.parameters()]
    tol = 1e-12 if adjoint == "checkpoint" else 1e-4  # backsolve: to O(dt⁴)
    for g0, g1 in zip(grads["direct"], grads[adjoint], strict=True):
        torch.testing.assert_close(g0, g1, rtol=tol, atol=tol)


def test_torchcde_backend_agrees_with_native():
    pytest.importorskip("torchcde")
    x, _ = _data()  # unit-spaced times: torchdiffeq's fixed steps land on them
    native = _smooth(_model(solver=dict(method="rk4", dt=0.125)))
    peer = _smooth(_model(solver=dict(method="rk4", dt=0.125, backend="torchcde")))
    torch.testing.assert_close(native(x)[0], peer(x)[0], rtol=1e-5, atol=1e-5)


def _linear_path_solution(model, u):
    """The continuous solve on the linear path ``X(t) = t u``, ``t`` in [0, 1]."""
    t = torch.tensor([0.0, 1.0], dtype=u.dtype)
    path = solvers.interpolate(torch.stack([torch.zeros_like(u), u], dim=1), t, kind="linear")
    z0 = torch.full((u.shape[0], model.hidden_size), 0.1, dtype=u.dtype)
    return z0, model.solve(path, t, z0, method="dopri5", rtol=1e-12, atol=1e-12)[:, -1]


@pytest.mark.parametrize("scheme,order", [("euler", 1), ("rk4", 4)])
def test_discretization_converges_at_the_schemes_order(scheme, order):
    torch.manual_seed(0)
    model = _smooth(NeuralCDEModel(3, 4).double())
    u = torch.randn(2, 3, dtype=torch.float64)
    z0, exact = _linear_path_solution(model, u)
    errors, steps = [], [4, 8, 16, 32]
    for n in steps:
        cell, z = model.discretize(scheme, 1.0 / n), z0
        for _ in range(n):
            z = cell(u, z)
        errors.append((z - exact).abs().max().item())
    slope = -(math.log(errors[-1]) - math.log(errors[0])) / (
        math.log(steps[-1]) - math.log(steps[0])
    )
    assert abs(slope - order) < 0.3, (errors, slope)


def test_discrete_mode_is_euler_on_the_increments():
    x, times = _data()
    model = _model(mode="discrete", scheme="euler", dt=0.7)
    out, _ = model(x, times)
    tau = (times - times[0]) / (times[-1] - times[0])  # the scaled time channel
    X = torch.cat([tau.expand(3, -1)[..., None], x], dim=2)
    z = model.initial(X[:, 0])
    for n in range(5):
        z = z + torch.bmm(model.cde.field(None, z), (X[:, n + 1] - X[:, n])[:, :, None])[:, :, 0]
        torch.testing.assert_close(out[:, n + 1], z)


def test_errors():
    x, times = _data()
    with pytest.raises(ValueError, match="unknown interpolation"):
        create("neural_cde", input_size=2, hidden_size=4, interpolation="spline")
    with pytest.raises(ValueError, match="mode must be"):
        create("neural_cde", input_size=2, hidden_size=4, mode="hybrid")
    with pytest.raises(ValueError, match="unknown scheme"):
        create("neural_cde", input_size=2, hidden_size=4, mode="discrete", scheme="leapfrog")
    model = create("neural_cde", input_size=3, hidden_size=4).double()
    with pytest.raises(ValueError, match="expected 3 input channels, got 2"):
        model(x, times)
    with pytest.raises(ValueError, match="built without num_classes"):
        model.classify(torch.zeros(1, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2 time steps"):
        model(torch.zeros(1, 1, 3, dtype=torch.float64))


@pytest.mark.gpu
def test_trains_on_gpu():
    torch.manual_seed(0)
    model = create("neural_cde", input_size=2, hidden_size=16, num_classes=2, solver=RK4).cuda()
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


def test_discrete_state_dict_holds_each_parameter_once_and_loads_into_continuous_mode():
    discrete = create(
        "neural_cde",
        input_size=2,
        hidden_size=3,
        mode="discrete",
        scheme="rk4",
        dt=0.5,
        num_classes=2,
    )
    assert not any(k.startswith("cell") for k in discrete.state_dict())
    continuous = create("neural_cde", input_size=2, hidden_size=3, num_classes=2)
    continuous.load_state_dict(discrete.state_dict())


def test_time_is_one_channel_scaled_to_each_samples_span():
    """An untrained model on long series starts near chance: the time channel runs over
    [0, 1] (it was raw t: cross-entropy 76 against log 4 = 1.39 in this setting)."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 150, 3), torch.randint(0, 4, (8,))
    losses = {}
    for time_channel in ("span", 1.0):
        torch.manual_seed(1)
        model = create(
            "neural_cde",
            input_size=3,
            hidden_size=8,
            num_classes=4,
            time_channel=time_channel,
            solver=dict(method="rk4", dt=1.0),
        )
        with torch.no_grad():
            losses[time_channel] = torch.nn.functional.cross_entropy(model.classify(x), y).item()
    assert losses["span"] < 3 * math.log(4) < losses[1.0]
    times = torch.tensor([[0.0, 2.0, 3.0, 7.0], [1.0, 1.5, 4.0, 0.0]])  # the second padded
    x = torch.randn(2, 4, 2, dtype=torch.float64)
    x[1, 3] = float("nan")
    path, _, _ = _model().path(x, times)
    torch.testing.assert_close(
        path.values[..., 0],
        torch.tensor([[0.0, 2 / 7, 3 / 7, 1.0], [0.0, 0.5 / 3, 1.0, 1 + 2.5 / 3]], dtype=x.dtype),
    )
    assert create("neural_cde", input_size=2, hidden_size=3, time_channel=None).cde.input_size == 2
    with pytest.raises(ValueError, match="time_channel must be 'span', a positive number or None"):
        create("neural_cde", input_size=2, hidden_size=3, time_channel="raw")
