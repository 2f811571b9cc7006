"""GRU-D (Che et al. 2018) and GRU-Δt: the cell against its equations, the decays computed
from times and mask, identities with the GRU, the sequence module and gradients."""

import pytest
import torch

from ctrnn.models import create
from ctrnn.models.gru_d import GRUD, GRUDCell, GRUDt, time_since_observation

D = torch.float64


def _cell(seed=0, C=3, H=4):
    torch.manual_seed(seed)
    return GRUDCell(C, H, dtype=D)


def _gru_cho(x, h, W, U, b):
    """The GRU of Cho et al. (2014), reset gate before ``U`` (the GRU-D paper's form)."""
    H = h.shape[1]
    px = x @ W.T + b
    z = torch.sigmoid(px[:, :H] + h @ U[:H].T)
    r = torch.sigmoid(px[:, H : 2 * H] + h @ U[H : 2 * H].T)
    cand = torch.tanh(px[:, 2 * H :] + (r * h) @ U[2 * H :].T)
    return (1 - z) * h + z * cand


def test_cell_is_the_papers_equations():
    cell = _cell()
    cell.x_mean.copy_(torch.tensor([0.5, -1.0, 2.0], dtype=D))
    B, C, H = 5, 3, 4
    x = torch.randn(B, C, dtype=D)
    m = (torch.rand(B, C) > 0.5).to(D)
    delta = torch.rand(B, C, dtype=D) * 3
    h, x_last = torch.randn(B, H, dtype=D), torch.randn(B, C, dtype=D)
    out = cell(torch.cat([x, m, delta], 1), torch.cat([h, x_last], 1))

    gx = torch.exp(-torch.clamp(delta @ torch.diag(cell.decay_x_weight) + cell.decay_x_bias, 0))
    gh = torch.exp(-torch.clamp(delta @ cell.decay_h.weight.T + cell.decay_h.bias, 0))
    x_hat = m * x + (1 - m) * (gx * x_last + (1 - gx) * cell.x_mean)
    h_hat = gh * h
    Wfull, b = cell.input_map.weight, cell.input_map.bias
    W, V = Wfull[:, :C], Wfull[:, C:]
    U = cell.recurrent_map.weight
    pre = x_hat @ W.T + m @ V.T + b
    z = torch.sigmoid(pre[:, :H] + h_hat @ U[:H].T)
    r = torch.sigmoid(pre[:, H : 2 * H] + h_hat @ U[H : 2 * H].T)
    cand = torch.tanh(pre[:, 2 * H :] + (r * h_hat) @ U[2 * H :].T)
    expected_h = (1 - z) * h_hat + z * cand
    torch.testing.assert_close(out[:, :H], expected_h)
    torch.testing.assert_close(out[:, H:], m * x + (1 - m) * x_last)


def test_all_observed_without_decay_or_mask_weights_is_a_gru():
    cell = _cell(1)
    C = 3
    with torch.no_grad():
        cell.decay_h.weight.zero_()
        cell.decay_h.bias.zero_()
        cell.input_map.weight[:, C:].zero_()  # V = 0
    x, h = torch.randn(6, C, dtype=D), torch.randn(6, 4, dtype=D)
    inp = torch.cat([x, torch.ones_like(x), torch.rand(6, C, dtype=D)], 1)
    out = cell(inp, torch.cat([h, torch.randn(6, C, dtype=D)], 1))[:, :4]
    W, U = cell.input_map.weight[:, :C], cell.recurrent_map.weight
    torch.testing.assert_close(out, _gru_cho(x, h, W, U, cell.input_map.bias))


def test_missing_input_decays_from_last_observation_to_the_mean():
    cell = _cell(2, C=1, H=2)
    with torch.no_grad():
        cell.decay_x_weight.fill_(1.0)
        cell.decay_x_bias.zero_()
        cell.x_mean.fill_(3.0)
    x_last = torch.tensor([[1.0]], dtype=D)
    m = torch.zeros(1, 1, dtype=D)
    for d, g in [(0.0, 1.0), (1.0, torch.exp(torch.tensor(-1.0)).item()), (50.0, 0.0)]:
        delta = torch.tensor([[d]], dtype=D)
        x_hat = cell.impute(torch.zeros(1, 1, dtype=D), m, delta, x_last)
        torch.testing.assert_close(x_hat, torch.tensor([[g * 1.0 + (1 - g) * 3.0]], dtype=D))


def test_time_since_observation_by_hand():
    times = torch.tensor([[0.0, 1.0, 3.0, 6.0, 10.0]], dtype=D)
    observed = torch.tensor([[1, 0, 0, 1, 1], [0, 1, 0, 0, 1]], dtype=torch.bool).T[None]
    delta = time_since_observation(times, observed)
    expected = torch.tensor([[0.0, 1.0, 3.0, 6.0, 4.0], [0.0, 1.0, 2.0, 5.0, 9.0]], dtype=D).T
    torch.testing.assert_close(delta[0], expected)
    # the recursion of eq. (5)
    rec = torch.zeros(5, 2, dtype=D)
    for t in range(1, 5):
        gap = times[0, t] - times[0, t - 1]
        rec[t] = torch.where(observed[0, t - 1], gap, gap + rec[t - 1])
    torch.testing.assert_close(delta[0], rec)


def _data(B=3, T=6, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=g, dtype=D)
    x[torch.rand(B, T, C, generator=g) < 0.4] = float("nan")
    x[:, 0, 0] = 1.0  # something observed at the first step
    times = torch.cumsum(torch.rand(B, T, generator=g, dtype=D) + 0.1, dim=1)
    return x, times


def test_sequence_equals_the_cell_over_the_steps():
    torch.manual_seed(0)
    model = GRUD(3, 4).to(D)
    x, times = _data()
    model.fit_mean(x)
    out, h_n = model(x, times)
    observed = ~torch.isnan(x)
    delta = time_since_observation(times, observed)
    inputs = torch.cat([torch.nan_to_num(x), observed.to(D), delta], dim=-1)
    state, states = None, []
    for xt in inputs.unbind(1):
        state = model.cell(xt, state)
        states.append(model.cell.hidden(state))
    torch.testing.assert_close(out, torch.stack(states, 1))
    torch.testing.assert_close(h_n, out[:, -1])


def test_per_sample_times_and_padding():
    torch.manual_seed(0)
    model = GRUD(3, 4).to(D)
    x, times = _data(seed=1)
    out, h_n = model(x, times)
    for i in range(3):
        o, _ = model(x[i : i + 1], times[i])
        torch.testing.assert_close(o[0], out[i])
    padded = torch.cat([x, torch.full((3, 2, 3), float("nan"), dtype=D)], dim=1)
    t_pad = torch.cat([times, times[:, -1:] + torch.tensor([1.0, 2.0], dtype=D)], dim=1)
    torch.testing.assert_close(model(padded, t_pad)[1], h_n)


def test_fit_mean_and_mask():
    model = GRUD(2, 3)
    x = torch.tensor([[[1.0, float("nan")], [3.0, 4.0]], [[5.0, 8.0], [9.0, 0.0]]])
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, 1, 0] = False
    torch.testing.assert_close(model.fit_mean(x, mask), torch.tensor([3.0, 4.0]))
    # the mask and NaN mean the same
    x2 = x.clone()
    x2[1, 1, 0] = float("nan")
    torch.testing.assert_close(model(x, mask=mask)[0], model(x2)[0])


def test_cell_unbatched_equals_batched():
    cell = _cell()
    x = torch.cat([torch.randn(3, 3), torch.ones(3, 3), torch.rand(3, 3)], 1).to(D)
    h = torch.randn(3, 7, dtype=D)
    torch.testing.assert_close(torch.stack([cell(a, b) for a, b in zip(x, h)]), cell(x, h))
    assert cell.state_size == 7 and cell.input_size == 9
    torch.testing.assert_close(cell.initial_state(2, dtype=D), torch.zeros(2, 7, dtype=D))


def test_gru_dt_is_a_gru_on_values_mask_and_gap():
    torch.manual_seed(0)
    model = GRUDt(3, 4).to(D)
    x, times = _data()
    out, _ = model(x, times)
    observed = ~torch.isnan(x)
    filled = x.clone()
    for t in range(1, x.shape[1]):  # hold the last observation
        filled[:, t] = torch.where(observed[:, t], x[:, t], filled[:, t - 1])
    filled = torch.nan_to_num(filled)
    gap = torch.cat([torch.zeros(3, 1, dtype=D), times.diff(dim=1)], 1)[..., None]
    inputs = torch.cat([filled, observed.to(D), gap], -1)
    gru, h, states = model.cell.cell, torch.zeros(3, 4, dtype=D), []
    for xt in inputs.unbind(1):
        h = gru(xt, h)
        states.append(h)
    torch.testing.assert_close(out, torch.stack(states, 1))


@pytest.mark.parametrize("name", ["gru_d", "gru_dt"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create(name, input_size=3, hidden_size=4, num_classes=2).to(D)
    if name == "gru_d":
        with torch.no_grad():  # decays active: positive rates
            model.cell.decay_x_weight.abs_()
            model.cell.decay_h.weight.abs_()
        model.fit_mean(_data(seed=3)[0])
    x, times = _data(B=4, T=8)
    out, h_n = model(x, times)
    assert out.shape == (4, 8, 4) and h_n.shape == (4, 4)
    model.classify(x, times).sum().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_errors():
    with pytest.raises(ValueError, match="expected 3 input channels"):
        GRUD(3, 4)(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="expected 3 input channels"):
        GRUDt(3, 4)(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="expected 3 channels"):
        GRUD(3, 4).fit_mean(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="without num_classes"):
        GRUD(3, 4).classify(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="without num_classes"):
        GRUDt(3, 4).classify(torch.randn(2, 5, 3))
    with pytest.raises(
        ValueError, match="unknown option 'scheme'; valid options: input_size, hidden_size"
    ):
        create("gru_d", input_size=3, hidden_size=4, scheme="euler")
    with pytest.raises(ValueError, match="expected input with 9 features"):
        GRUDCell(3, 4)(torch.randn(2, 3))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["gru_d", "gru_dt"])
def test_trains_on_gpu(name):
    torch.manual_seed(0)
    model = create(name, input_size=3, hidden_size=16, num_classes=2).cuda()
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
