"""ODE-RNN (Rubanova et al. 2019): identities with the GRU, the Euler flow against the
explicit formula, the discretized cell, solver configurations and gradients."""

import pytest
import torch

from ctrnn.models import create
from ctrnn.models.ode_rnn import ODERNN, ODEFlow, ODERNNCell

D = torch.float64


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return ODERNN(3, 4, **kw).to(D)


def _data(B=3, T=5, C=3, seed=0, missing=0.3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=g, dtype=D)
    x[torch.rand(B, T, C, generator=g) < missing] = float("nan")
    times = torch.cumsum(torch.rand(B, T, generator=g, dtype=D) + 0.2, dim=1)
    return x, times


def _gru_inputs(x):
    m = (~torch.isnan(x)).to(x.dtype)
    return torch.cat([torch.nan_to_num(x) * m, m], dim=-1)


def test_zero_flow_is_a_gru_on_values_and_mask():
    model = _model(solver=dict(method="dopri5", rtol=1e-6, atol=1e-8))
    with torch.no_grad():
        model.flow.net[-1].weight.zero_()
        model.flow.net[-1].bias.zero_()
    x, times = _data()
    x[:, :, 0] = 1.0  # something observed at every step: no update is skipped
    out, h_n = model(x, times)
    gru, h, states = model.update.cell, torch.zeros(3, 4, dtype=D), []
    for xt in _gru_inputs(x).unbind(1):
        h = gru(xt, h)
        states.append(h)
    torch.testing.assert_close(out, torch.stack(states, 1))
    torch.testing.assert_close(h_n, out[:, -1])


def test_euler_flow_one_step_per_interval_is_the_explicit_formula():
    model = _model(solver=dict(method="euler", dt=100.0))
    x, times = _data(seed=1)
    x[1, 2] = float("nan")  # nothing observed: the update is skipped
    out, _ = model(x, times)
    inputs = _gru_inputs(x)
    f, gru = model.flow.net, model.update.cell
    h = torch.zeros(3, 4, dtype=D)
    expected = []
    for i in range(x.shape[1]):
        if i > 0:
            h = h + (times[:, i] - times[:, i - 1])[:, None] * f(h)
        observed = ~torch.isnan(x[:, i]).all(dim=1, keepdim=True)
        h = torch.where(observed, gru(inputs[:, i], h), h)
        expected.append(h)
    torch.testing.assert_close(out, torch.stack(expected, 1))


def test_discretized_cell_and_continuous_rk4_agree():
    model = _model(solver=dict(method="rk4", dt=1.0))
    x = torch.randn(2, 5, 3, dtype=D)
    cell = model.discretize("rk4", 1.0)
    assert isinstance(cell, ODERNNCell) and cell.input_size == 6
    h, states = None, []
    for i, xt in enumerate(_gru_inputs(x).unbind(1)):
        # no flow before the first observation
        h = model.update(xt, torch.zeros(2, 4, dtype=D)) if i == 0 else cell(xt, h)
        states.append(h)
    torch.testing.assert_close(model(x)[0], torch.stack(states, 1))


def test_euler_cell_is_the_explicit_formula():
    model = _model()
    cell = model.discretize("euler", 0.3)
    x, h = torch.randn(5, 6, dtype=D), torch.randn(5, 4, dtype=D)
    torch.testing.assert_close(cell(x, h), model.update.cell(x, h + 0.3 * model.flow.net(h)))
    flow_cell = model.flow.discretize("euler", 0.3)
    torch.testing.assert_close(
        flow_cell(torch.zeros(5, 1, dtype=D), h), h + 0.3 * model.flow.net(h)
    )


def test_cell_unbatched_equals_batched():
    cell = _model().discretize("rk4", 0.5)
    x, h = torch.randn(3, 6, dtype=D), torch.randn(3, 4, dtype=D)
    torch.testing.assert_close(torch.stack([cell(a, b) for a, b in zip(x, h)]), cell(x, h))


def test_per_sample_times_and_padding():
    model = _model(solver=dict(method="dopri5", rtol=1e-8, atol=1e-10))
    x, times = _data(seed=2)
    out, h_n = model(x, times)
    for i in range(3):
        torch.testing.assert_close(model(x[i : i + 1], times[i])[0][0], out[i])
    padded = torch.cat([x, torch.full((3, 2, 3), float("nan"), dtype=D)], dim=1)
    t_pad = torch.cat([times, times[:, -1:] + torch.tensor([1.0, 2.0], dtype=D)], dim=1)
    torch.testing.assert_close(model(padded, t_pad)[1], h_n)


def test_mask_equals_nan():
    model = _model()
    x, times = _data(seed=3, missing=0.0)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) > 0.3
    torch.testing.assert_close(
        model(x, times, mask)[0], model(torch.where(mask, x, float("nan")), times)[0]
    )


@pytest.mark.parametrize(
    "solver",
    [
        dict(method="rk4", dt=0.5),
        dict(method="dopri5", rtol=1e-3, atol=1e-4),
        dict(method="rk4", dt=0.5, adjoint="backsolve"),
    ],
)
def test_gradients_reach_every_parameter(solver):
    torch.manual_seed(0)
    model = create("ode_rnn", input_size=3, hidden_size=4, num_classes=2, solver=solver)
    x, times = _data(B=2, T=4)
    x, times = x.float(), times.float()
    out, h_n = model(x, times)
    assert out.shape == (2, 4, 4) and h_n.shape == (2, 4)
    model.classify(x, times).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_flow_is_a_continuous_model():
    flow = ODEFlow(4, width=8, layers=2)
    assert flow.input_size == 1 and len(flow.net) == 5
    assert flow.discretize("midpoint", 0.1)(torch.zeros(1), torch.randn(4)).shape == (4,)


def test_errors():
    with pytest.raises(ValueError, match="expected 3 input channels"):
        ODERNN(3, 4)(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="without num_classes"):
        ODERNN(3, 4).classify(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="unknown scheme"):
        ODERNN(3, 4).discretize("nope", 0.1)
    with pytest.raises(
        ValueError, match="unknown option 'scheme'; valid options: input_size, hidden_size"
    ):
        create("ode_rnn", input_size=3, hidden_size=4, scheme="euler")
    with pytest.raises(ValueError, match="nope"):
        ODERNN(3, 4, solver=dict(method="nope"))(torch.randn(2, 5, 3))
    # every interval is a per-sample grid, which only the native backend solves
    with pytest.raises(ValueError, match="backend='native'"):
        ODERNN(3, 4, solver=dict(method="rk4", dt=0.5, backend="torchdiffeq"))(torch.randn(2, 5, 3))


@pytest.mark.gpu
def test_trains_on_gpu():
    torch.manual_seed(0)
    model = create("ode_rnn", input_size=3, hidden_size=16, num_classes=2).cuda()
    x = torch.randn(32, 20, 3, device="cuda")
    y = (x[:, :, 0].sum(1) > 0).long()
    x[torch.rand_like(x) < 0.3] = float("nan")
    times = torch.cumsum(torch.rand(32, 20, device="cuda") + 0.1, dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model.classify(x, times), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
