"""coRNN (Rusch & Mishra 2021): the paper's IMEX cell, the generic discretizations of the
first-order system, continuous mode and gradients."""

import math

import pytest
import torch

import solvers
from ctrnn.models import create
from ctrnn.models.cornn import CoRNN, CoRNNCell

D = torch.float64


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return CoRNN(3, 4, dtype=D, **kw)


def test_imex_cell_is_the_papers_scheme():
    model = _model()
    cell = model.discretize("imex", 0.1)
    x, h = torch.randn(5, 3, dtype=D), torch.randn(5, 8, dtype=D)
    y0, z0 = h[:, :4], h[:, 4:]
    y1, z1 = cell(x, h).split(4, dim=1)
    W, Wz, V = model.recurrent_y.weight, model.recurrent_z.weight, model.input_map.weight
    drive = torch.tanh(y0 @ W.T + z0 @ Wz.T + x @ V.T + model.input_map.bias)
    # z_n = z_{n-1} + Δt σ(…) - Δt γ y_{n-1} - Δt ε z_n, with z_n on both sides
    torch.testing.assert_close(z1, z0 + 0.1 * drive - 0.1 * 2.7 * y0 - 0.1 * 4.7 * z1)
    torch.testing.assert_close(y1, y0 + 0.1 * z1)


def test_explicit_damping_variant():
    model = _model()
    cell = model.discretize("imex_explicit_damping", 0.1)
    x, h = torch.randn(5, 3, dtype=D), torch.randn(5, 8, dtype=D)
    y0, z0 = h[:, :4], h[:, 4:]
    z1 = z0 + 0.1 * (model.drive(y0, z0, x) - 2.7 * y0 - 4.7 * z0)
    torch.testing.assert_close(cell(x, h), torch.cat([y0 + 0.1 * z1, z1], dim=1))


def test_euler_cell_is_the_first_order_system():
    model = _model()
    x, h = torch.randn(5, 3, dtype=D), torch.randn(5, 8, dtype=D)
    y0, z0 = h[:, :4], h[:, 4:]
    dz = model.drive(y0, z0, x) - 2.7 * y0 - 4.7 * z0
    expected = torch.cat([y0 + 0.1 * z0, z0 + 0.1 * dz], dim=1)
    torch.testing.assert_close(model.discretize("euler", 0.1)(x, h), expected)


@pytest.mark.parametrize(
    "scheme,order",
    [("imex", 1), ("imex_explicit_damping", 1), ("euler", 1), ("midpoint", 2), ("rk4", 4)],
)
def test_discretization_converges_at_its_order(scheme, order):
    model = _model(gamma=1.0, epsilon=0.5)
    x, h0 = torch.randn(2, 3, dtype=D), torch.randn(2, 8, dtype=D)
    T = 2.0
    ref = solvers.solve(
        model.problem(lambda t: x),
        h0,
        torch.tensor([0.0, T], dtype=D),
        method="dopri5",
        rtol=1e-12,
        atol=1e-12,
    ).ys[:, -1]
    steps = (8, 16, 32, 64)
    errs = []
    for N in steps:
        cell, h = model.discretize(scheme, T / N), h0
        with torch.no_grad():
            for _ in range(N):
                h = cell(x, h)
        errs.append((h - ref).abs().max().item())
    slope = (math.log(errs[0]) - math.log(errs[-1])) / math.log(steps[-1] / steps[0])
    assert abs(slope - order) < 0.3, (slope, errs)


def test_errors():
    with pytest.raises(ValueError, match="not one"):
        _model().discretize("semi_implicit_euler", 0.1)
    with pytest.raises(ValueError, match="dt must be positive"):
        _model().discretize("imex", -1.0)
    with pytest.raises(ValueError, match="unknown scheme"):
        _model().discretize("nope", 0.1)
    with pytest.raises(ValueError, match="gamma must be"):
        CoRNN(3, 4, gamma=-1.0)
    with pytest.raises(ValueError, match="scheme must be one of"):
        CoRNNCell(3, 4, scheme="rk4")
    with pytest.raises(
        ValueError, match="unknown option 'beta'; valid options: input_size, hidden_size"
    ):
        create("cornn", input_size=3, hidden_size=4, beta=1.0)


def test_cell_is_built_like_a_gru_cell():
    cell = CoRNNCell(3, 4, dt=0.05, gamma=1.0, epsilon=2.0, dtype=D)
    assert cell.state_size == 8 and cell.model.gamma == 1.0
    assert cell(torch.randn(3, dtype=D)).shape == (8,)
    assert cell.hidden(torch.randn(2, 8)).shape == (2, 4)


def test_cell_unbatched_equals_batched():
    cell = _model().discretize("imex", 0.2)
    x, h = torch.randn(3, 3, dtype=D), torch.randn(3, 8, dtype=D)
    torch.testing.assert_close(torch.stack([cell(a, b) for a, b in zip(x, h)]), cell(x, h))


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(scheme="rk4", dt=0.5),
        dict(mode="continuous", solver=dict(method="rk4", dt=0.5)),
    ],
)
def test_gradients_reach_every_parameter(options):
    torch.manual_seed(0)
    model = create("cornn", input_size=3, hidden_size=4, num_classes=2, **options)
    out, h_n = model(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 4) and h_n.shape == (2, 4)
    model.classify(torch.randn(2, 5, 3)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_continuous_rk4_equals_discrete_rk4():
    torch.manual_seed(0)
    disc = create("cornn", input_size=3, hidden_size=4, scheme="rk4", dt=1.0)
    cont = create(
        "cornn", input_size=3, hidden_size=4, mode="continuous", solver=dict(method="rk4", dt=1.0)
    )
    cont.model.load_state_dict(disc.model.state_dict())
    x = torch.randn(2, 6, 3)
    torch.testing.assert_close(cont(x)[0], disc(x)[0])


@pytest.mark.gpu
def test_trains_on_gpu():
    torch.manual_seed(0)
    model = create("cornn", input_size=3, hidden_size=16, num_classes=2, dt=0.1).cuda()
    x = torch.randn(32, 30, 3, device="cuda")
    y = (x[:, :, 0].sum(1) > 0).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model.classify(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first
