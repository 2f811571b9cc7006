"""The contract every model of ``ctrnn.models.available()`` keeps, in each of its modes:
it builds, runs on NaN-holed per-sample irregular data, padding never changes a sample's
result, observation times are read, the unbatched cell equals the batched one, the state
dict loads across modes, float64 works, and gradients reach every parameter."""

import pytest
import torch

import ctrnn.models as M
from ctrnn.models import AbstractSequenceModel, spec

F64 = torch.float64
C, H, K = 3, 4, 2
#: small settings that keep every model quick (a delay the short series reach)
OPTIONS = {"tau_gru": dict(delay=2.0)}


def _modes(name):
    return ("discrete", "continuous") if "mode" in spec(name).options() else (None,)


CASES = [(n, mode) for n in M.available() for mode in _modes(n)]
IDS = [f"{n}-{mode}" if mode else n for n, mode in CASES]


def _build(name, mode, seed=0, **extra):
    torch.manual_seed(seed)
    options = dict(input_size=C, hidden_size=H, num_classes=K, **OPTIONS.get(name, {}))
    options.update(extra)
    if mode is not None:
        options["mode"] = mode
    return M.create(name, **options).double().eval()


def _data(seed=1, B=3, T=7):
    """NaN-holed values and per-sample irregular, strictly increasing times."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=g, dtype=F64)
    x[torch.rand(B, T, C, generator=g) < 0.25] = float("nan")
    x[:, 0, 0] = 0.5  # every sample observed at its first time
    gaps = 0.3 + 1.4 * torch.rand(B, T, generator=g, dtype=F64)
    times = torch.cumsum(gaps, dim=1) - gaps[:, :1]
    return x, times


@pytest.mark.parametrize(("name", "mode"), CASES, ids=IDS)
def test_builds_and_runs_on_irregular_data_with_missing_values(name, mode):
    model = _build(name, mode)
    assert isinstance(model, AbstractSequenceModel)
    assert model.hidden_size == H and model.input_size == C
    x, times = _data()
    out, h_n = model(x, times)
    assert out.shape == (3, 7, H) and h_n.shape == (3, H)
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all()
    assert model.classify(x, times).shape == (3, K)


def _padding_cases():
    for (name, mode), case_id in zip(CASES, IDS):
        yield pytest.param(name, mode, id=case_id)


@pytest.mark.parametrize(("name", "mode"), list(_padding_cases()))
def test_padding_never_changes_a_samples_result(name, mode):
    """Each sample alone equals the same sample padded in a batch: NaN values and times that
    are not even increasing (zeros) after its last observation."""
    model = _build(name, mode)
    x, times = _data(B=3, T=8)
    lengths = [8, 5, 3]
    padded, padded_times = x.clone(), times.clone()
    for b, L in enumerate(lengths):
        padded[b, L:] = float("nan")
        padded_times[b, L:] = 0.0
    _, h_batch = model(padded, padded_times)
    for b, L in enumerate(lengths):
        h_alone = model(x[b : b + 1, :L], times[b : b + 1, :L])[1]
        torch.testing.assert_close(h_batch[b], h_alone[0], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(("name", "mode"), CASES, ids=IDS)
def test_observation_times_are_read(name, mode):
    model = _build(name, mode)
    x, times = _data()
    uniform = torch.arange(7, dtype=F64)
    a, b = model(x, times)[1], model(x, uniform)[1]
    if spec(name).reads_times:
        assert (a - b).abs().max() > 1e-6, "the output does not depend on the times"
    else:
        # the GRU and LSTM baselines read no times (declared in their spec, documented)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _cell(model):
    cell = getattr(model, "cell", None)
    return cell if cell is not None else model.discretize()


@pytest.mark.parametrize("name", M.available())
def test_unbatched_cell_equals_batched(name):
    model = _build(name, "discrete" if "mode" in spec(name).options() else None)
    cell = _cell(model)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, cell.input_size, generator=g, dtype=F64)
    h = 0.1 * torch.randn(3, cell.state_size, generator=g, dtype=F64)
    steps = [None]
    if cell.takes_dt:
        steps.append(torch.full((3,), cell.dt, dtype=F64))
    for dt in steps:
        batched = cell(x, h, dt)
        for i in range(3):
            one = cell(x[i], h[i], None if dt is None else dt[i])
            torch.testing.assert_close(one, batched[i], rtol=0, atol=1e-15)
    assert cell(x[0]).shape == (cell.state_size,)


@pytest.mark.parametrize("name", M.available())
def test_state_dict_loads_in_every_mode(name):
    modes = _modes(name)
    source = _build(name, modes[0], seed=0)
    x, times = _data()
    for mode in modes:
        target = _build(name, mode, seed=1)
        target.load_state_dict(source.state_dict())
        for (key, a), b in zip(source.named_parameters(), target.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
        if mode == modes[0]:
            torch.testing.assert_close(target(x, times)[1], source(x, times)[1], rtol=0, atol=0)


@pytest.mark.parametrize(("name", "mode"), CASES, ids=IDS)
def test_dtypes(name, mode):
    model = _build(name, mode)
    x, times = _data()
    assert model(x, times)[0].dtype == F64
    with pytest.raises(ValueError, match=r"x has dtype torch\.float32 but the model.s parameters"):
        model(x.float(), times)
    with pytest.raises(ValueError, match=r"x has no time steps .* T must be ≥ 1"):
        model(x[:, :0], times[:, :0])


@pytest.mark.parametrize(("name", "mode"), CASES, ids=IDS)
def test_gradients_reach_every_parameter(name, mode):
    model = _build(name, mode).train()
    if name == "gru_d":
        # γ_x = exp(-relu(W δ + b)): at this seed every W δ + b starts in relu's flat part
        torch.nn.init.constant_(model.cell.decay_x_weight, 0.5)
    x, times = _data(T=9)
    model.classify(x, times).pow(2).sum().backward()
    for key, p in model.named_parameters():
        assert p.grad is not None, key
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key


@pytest.mark.parametrize(("name", "mode"), CASES, ids=IDS)
def test_times_that_go_backwards_or_are_nan_are_refused(name, mode):
    model = _build(name, mode)
    x, times = _data()
    back = times.clone()
    back[1, 4] = back[1, 2]
    with pytest.raises(ValueError, match=r"strictly increasing.*times\[1, 4\]"):
        model(x, back)
    nan = times.clone()
    nan[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"times must be finite; sample 2 has times\[2, 3\] = nan"):
        model(x, nan)
