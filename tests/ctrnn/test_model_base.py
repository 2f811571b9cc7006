"""The model base: cells follow torch.nn.GRUCell, discretizations agree with the continuous
solve, the sequence module handles missing values, padding and per-sample times."""

import numpy as np
import pytest
import torch
from torch import nn

import ctrnn.models as M
from ctrnn.models import AbstractContinuousRNN, SequenceModel, prepare_sequence

f64 = torch.float64


class Toy(AbstractContinuousRNN):
    """dh/dt = -h + tanh(W h + U x), a smooth test model."""

    def __init__(self, input_size=3, hidden_size=4):
        super().__init__(input_size, hidden_size)
        self.W = nn.Linear(hidden_size, hidden_size, dtype=f64)
        self.U = nn.Linear(input_size, hidden_size, bias=False, dtype=f64)

    def vector_field(self, t, h, x):
        return -h + torch.tanh(self.W(h) + self.U(x))


@pytest.fixture
def toy():
    torch.manual_seed(0)
    return Toy()


def test_euler_cell_is_the_euler_step(toy):
    cell = toy.discretize("euler", 0.1)
    x, h = torch.randn(5, 3, dtype=f64), torch.randn(5, 4, dtype=f64)
    torch.testing.assert_close(cell(x, h), h + 0.1 * toy.vector_field(None, h, x))


@pytest.mark.parametrize("scheme", ["euler", "midpoint", "heun", "rk4"])
def test_unbatched_equals_batched(toy, scheme):
    cell = toy.discretize(scheme, 0.2)
    x, h = torch.randn(3, 3, dtype=f64), torch.randn(3, 4, dtype=f64)
    batched = cell(x, h)
    for i in range(3):
        torch.testing.assert_close(cell(x[i], h[i]), batched[i])
    assert cell(x[0]).shape == (4,)


def test_discrete_mode_equals_a_fixed_step_continuous_solve(toy):
    """Discrete output i equals the continuous state after the input held from t_i acts."""
    x = torch.randn(2, 6, 3, dtype=f64)
    times = torch.arange(6, dtype=f64)
    for scheme in ("euler", "rk4"):
        discrete = SequenceModel(toy, scheme=scheme, dt=1.0)
        continuous = SequenceModel(toy, mode="continuous", solver=dict(method=scheme, dt=1.0))
        out_d, hn_d = discrete(x, times)
        out_c, hn_c = continuous(x, times)
        torch.testing.assert_close(out_d, out_c, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hn_d, hn_c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("scheme", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_discretization_converges_to_the_continuous_solve_at_its_order(toy, scheme, order):
    torch.manual_seed(1)
    x = torch.randn(2, 4, 3, dtype=f64)
    times = torch.arange(4, dtype=f64)
    exact = SequenceModel(
        toy, mode="continuous", solver=dict(method="dopri5", rtol=1e-12, atol=1e-12)
    )(x, times)[1]
    dts, errors = [0.5, 0.25, 0.125, 0.0625], []
    for dt in dts:
        # the cell of step dt, applied 1/dt times per unit interval with the input held
        cell, h = toy.discretize(scheme, dt), torch.zeros(2, 4, dtype=f64)
        for xt in x.unbind(1):
            for _ in range(round(1 / dt)):
                h = cell(xt, h)
        errors.append((h - exact).abs().max().item())
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.3, (errors, slope)


def test_missing_values_are_held_and_h_n_reads_the_last_observation():
    x = torch.tensor(
        [
            [[1.0], [float("nan")], [3.0], [float("nan")]],
            [[2.0], [4.0], [float("nan")], [float("nan")]],
        ]
    )
    values, times, observed, lengths = prepare_sequence(x, None, None, "test")
    assert observed.sum().item() == 4
    torch.testing.assert_close(
        values[..., 0], torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 4.0, 4.0, 4.0]])
    )
    assert lengths.tolist() == [3, 2]
    assert times.shape == (2, 4)
    model = M.create("gru", input_size=1, hidden_size=3)
    out, h_n = model(x)
    torch.testing.assert_close(h_n[0], out[0, 2])
    torch.testing.assert_close(h_n[1], out[1, 1])


def test_mask_marks_missing_values_like_nan():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 2)
    mask = torch.rand(2, 5, 2) > 0.3
    with_nan = x.masked_fill(~mask, float("nan"))
    model = M.create("lstm", input_size=2, hidden_size=3)
    torch.testing.assert_close(model(x, mask=mask)[0], model(with_nan)[0])


def test_per_sample_times_in_continuous_mode_equal_per_sample_solves(toy):
    torch.manual_seed(2)
    x = torch.randn(3, 5, 3, dtype=f64)
    times = torch.sort(torch.rand(3, 5, dtype=f64) * 4, dim=1).values
    model = SequenceModel(toy, mode="continuous", solver=dict(method="rk4", dt=0.1))
    out, _ = model(x, times)
    for i in range(3):
        torch.testing.assert_close(
            model(x[i : i + 1], times[i : i + 1])[0], out[i : i + 1], rtol=1e-12, atol=1e-12
        )


def test_gradients_reach_every_parameter(toy):
    model = SequenceModel(
        toy,
        mode="continuous",
        num_classes=2,
        solver=dict(method="rk4", dt=0.5, adjoint="backsolve"),
    )
    logits = model.classify(torch.randn(2, 4, 3, dtype=f64).requires_grad_())
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_create_and_available():
    assert {"gru", "lstm"} <= set(M.available())
    with pytest.raises(ValueError, match=r"unknown model .nope.; available models: .*gru"):
        M.create("nope")
    with pytest.raises(ValueError, match="model 'gru'"):
        M.create("gru", input_size=2, hidden_size=3, colour="red")


def test_bad_inputs_name_the_value(toy):
    with pytest.raises(ValueError, match="unknown scheme 'bogus'; this model accepts euler"):
        toy.discretize("bogus", 0.1)
    with pytest.raises(ValueError, match="dt must be positive, got -1"):
        toy.discretize("euler", -1)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 0"):
        Toy(3, 0)
    cell = toy.discretize("euler", 0.1)
    with pytest.raises(ValueError, match="expected input with 3 features, got 2"):
        cell(torch.randn(4, 2, dtype=f64))
    with pytest.raises(ValueError, match=r"expected hx of shape \(4, 4\), got \(4, 5\)"):
        cell(torch.randn(4, 3, dtype=f64), torch.randn(4, 5, dtype=f64))
    model = SequenceModel(toy)
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, T, channels\)"):
        model(torch.randn(4, 3, dtype=f64))
    with pytest.raises(ValueError, match="expected 3 input channels, got 2"):
        model(torch.randn(1, 4, 2, dtype=f64))
    with pytest.raises(ValueError, match="mode must be 'discrete' or 'continuous'"):
        SequenceModel(toy, mode="sideways")
    with pytest.raises(ValueError, match="continuous mode needs a continuous model"):
        SequenceModel(M.GRUCell(2, 3), mode="continuous")
    with pytest.raises(ValueError, match="built without num_classes"):
        model.classify(torch.randn(1, 4, 3, dtype=f64))


def test_state_dict_holds_each_parameter_once_and_loads_across_modes(toy):
    discrete = SequenceModel(toy, scheme="rk4", dt=0.5, num_classes=2)
    keys = set(discrete.state_dict())
    assert not any(k.startswith("cell.") for k in keys)
    torch.manual_seed(5)
    other = SequenceModel(Toy(), mode="continuous", num_classes=2)
    other.load_state_dict(discrete.state_dict())
    for (name, a), b in zip(discrete.named_parameters(), other.parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_the_derived_cell_follows_train_and_eval(toy):
    model = SequenceModel(toy, scheme="euler")
    model.eval()
    assert not model.cell.training
    model.train()
    assert model.cell.training


@pytest.mark.parametrize("adjoint", ["direct", "checkpoint", "backsolve"])
def test_an_encoder_in_front_of_a_continuous_model_gets_gradients(toy, adjoint):
    torch.manual_seed(3)
    encoder = nn.Linear(2, 3, dtype=f64)
    model = SequenceModel(
        toy, mode="continuous", solver=dict(method="rk4", dt=0.25, adjoint=adjoint)
    )
    raw = torch.randn(2, 5, 2, dtype=f64)
    model(encoder(raw))[1].pow(2).sum().backward()
    grad = encoder.weight.grad.clone()
    encoder.zero_grad()
    reference = SequenceModel(toy, mode="continuous", solver=dict(method="rk4", dt=0.25))
    reference(encoder(raw))[1].pow(2).sum().backward()
    # backsolve approximates the continuous gradient: O(dt^4) here
    tol = dict(rtol=1e-4, atol=1e-7) if adjoint == "backsolve" else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, encoder.weight.grad, **tol)


def test_the_cell_cannot_be_reassigned(toy):
    model = SequenceModel(toy)
    with pytest.raises(AttributeError, match="derived from the model"):
        model.cell = toy.discretize("rk4", 0.1)
