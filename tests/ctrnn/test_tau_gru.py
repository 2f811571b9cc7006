"""τ-GRU (Erichson, Lim, Mahoney 2022): the paper's cell, its continuous delay equation, and
the discretizations between them."""

import math

import numpy as np
import pytest
import torch

from ctrnn.models import SequenceModel, available, create
from ctrnn.models.tau_gru import TauGRU, TauGRUCell, TauGRURungeKuttaCell

F64 = torch.float64


def _paper_sequence(cell: TauGRUCell, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations written out with W1..W4, U1..U4, b1..b4 and a list of states."""
    H, m = cell.hidden_size, cell.delay
    W1, W3, W4 = cell.hidden_proj.weight.split(H)
    W2 = cell.delayed_proj.weight
    U1, U2, U3, U4 = cell.input_proj.weight.split(H)
    b1, b2, b3, b4 = cell.input_proj.bias.split(H)
    hs = [torch.zeros(x.shape[0], H, dtype=x.dtype)]
    for n in range(x.shape[1]):
        xn, hn = x[:, n], hs[-1]
        hd = hs[n - m] if n - m >= 0 else torch.zeros_like(hn)
        u = torch.tanh(hn @ W1.T + xn @ U1.T + b1)
        z = torch.tanh(hd @ W2.T + xn @ U2.T + b2)
        g = torch.sigmoid(hn @ W3.T + xn @ U3.T + b3)
        a = torch.sigmoid(hn @ W4.T + xn @ U4.T + b4)
        hs.append((1 - g) * hn + g * (u + a * z))
    return torch.stack(hs[1:], dim=1)


def _run(cell, x):
    h, out = None, []
    for xt in x.unbind(1):
        h = cell(xt, h)
        out.append(cell.hidden(h))
    return torch.stack(out, dim=1)


def test_registered():
    assert "tau_gru" in available()
    model = create("tau_gru", input_size=2, hidden_size=3, delay=2, num_classes=4)
    assert isinstance(model.cell, TauGRUCell) and model.cell.delay == 2
    out, h_n = model(torch.randn(5, 6, 2))
    assert out.shape == (5, 6, 3) and h_n.shape == (5, 3)
    assert model.classify(torch.randn(5, 6, 2)).shape == (5, 4)


def test_cell_is_the_papers_equations():
    torch.manual_seed(0)
    cell = TauGRUCell(3, 4, delay=3, dtype=F64)
    x = torch.randn(2, 11, 3, dtype=F64)
    torch.testing.assert_close(_run(cell, x), _paper_sequence(cell, x), rtol=0, atol=1e-12)
    assert cell.state_size == 4 * 4


@pytest.mark.parametrize("delayed_input", [False, True])
def test_structural_identity_euler_dt1(delayed_input):
    """Paper cell == discretize("euler", 1) == the DDE solved by explicit Euler, Δt = 1, τ = m."""
    torch.manual_seed(1)
    model = TauGRU(2, 4, delay=3, delayed_input=delayed_input, dtype=F64)
    x = torch.randn(3, 10, 2, dtype=F64)
    cell = model.discretize("euler", 1.0)
    assert isinstance(cell, TauGRUCell) and cell.delay == 3 and cell.gate_dt is None
    assert cell.input_proj is model.input_proj  # shares the parameters
    discrete, _ = SequenceModel(model, mode="discrete")(x)
    continuous, _ = SequenceModel(model, mode="continuous", solver=dict(method="euler", dt=1.0))(x)
    generic = _run(TauGRURungeKuttaCell(model, _tableau("euler"), 1.0, 3), x)
    torch.testing.assert_close(discrete, continuous, rtol=0, atol=1e-12)
    torch.testing.assert_close(discrete, generic, rtol=0, atol=1e-12)
    if not delayed_input:
        torch.testing.assert_close(discrete, _paper_sequence(cell, x), rtol=0, atol=1e-12)


def _tableau(name):
    import solvers

    return solvers.methods()[name].tableau


@pytest.mark.parametrize("scheme", ["euler", "heun"])
def test_cell_equals_fixed_step_solve(scheme):
    """Schemes without half-step nodes: the cell is the solver's step, on irregular inputs."""
    torch.manual_seed(7)
    model = TauGRU(2, 3, delay=1.0, delayed_input=scheme == "heun", dtype=F64)
    x = torch.randn(2, 8, 2, dtype=F64)
    t = torch.arange(8, dtype=F64) * 0.5
    # observations 0.5 apart, each one step dt = 0.5: time_scale says that a gap of 0.5 is
    # one step
    a, _ = SequenceModel(model, mode="discrete", scheme=scheme, dt=0.5, time_scale=0.5)(x, t)
    b, _ = SequenceModel(model, mode="continuous", solver=dict(method=scheme, dt=0.5))(x, t)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_euler_with_dt_is_gate_scaling():
    torch.manual_seed(2)
    model = TauGRU(2, 3, delay=1.0, alpha=0.7, beta=1.3, dtype=F64)
    cell = model.discretize("euler", 0.25)
    assert cell.delay == 4 and cell.gate_dt == 0.25
    x = torch.randn(2, 9, 2, dtype=F64)
    generic = _run(TauGRURungeKuttaCell(model, _tableau("euler"), 0.25, 4), x)
    torch.testing.assert_close(_run(cell, x), generic, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def reference():
    """Constant input; τ = 1; the DDE solved by dopri5 at tight tolerances on [0, 3]."""
    torch.manual_seed(0)
    model = TauGRU(2, 4, delay=1.0, dtype=F64)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)  # a solution that moves, so that the errors are well above round-off
    x = torch.randn(3, 2, dtype=F64)
    ts = torch.tensor([0.0, 3.0], dtype=F64)
    with torch.no_grad():
        ref = model.solve(x[:, None].expand(-1, 2, -1), ts, method="dopri5", rtol=1e-12, atol=1e-12)
    return model, x, ref[:, -1]


@pytest.mark.parametrize(
    ("scheme", "order"), [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)]
)
def test_discretization_converges_at_scheme_order(reference, scheme, order):
    """discretize(scheme, dt) with τ = m dt converges to the continuous solve at its order."""
    model, x, ref = reference
    dts = [1 / 2, 1 / 4, 1 / 8, 1 / 16]
    errs = []
    for dt in dts:
        cell = model.discretize(scheme, dt)
        h = None
        with torch.no_grad():
            for _ in range(round(3.0 / dt)):
                h = cell(x, h)
        errs.append((cell.hidden(h) - ref).abs().max().item())
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.35, (scheme, errs, slope)


def test_gradients_reach_every_parameter():
    torch.manual_seed(3)
    for mode, solver in [
        ("discrete", None),
        ("continuous", dict(method="rk4", dt=0.5, adjoint="checkpoint")),
    ]:
        model = create(
            "tau_gru",
            input_size=2,
            hidden_size=3,
            delay=2,
            mode=mode,
            solver=solver,
            num_classes=2,
            delayed_input=True,
        )
        model.classify(torch.randn(2, 6, 2)).sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (mode, name)


@pytest.mark.parametrize("scheme", ["euler", "rk4"])
def test_unbatched_equals_batched(scheme):
    torch.manual_seed(4)
    model = TauGRU(3, 4, delay=2.0, delayed_input=True, dtype=F64)
    cell = model.discretize(scheme, 1.0)
    x = torch.randn(3, dtype=F64)
    hx = torch.randn(cell.state_size, dtype=F64)
    torch.testing.assert_close(cell(x, hx), cell(x[None], hx[None])[0], rtol=0, atol=0)
    assert cell(x).shape == (cell.state_size,)


def test_rk4_state_carries_half_step_buffer():
    model = TauGRU(2, 3, delay=2.0, delayed_input=True)
    cell = model.discretize("rk4", 0.5)  # m = 4
    assert cell.state_size == 5 * 3 + 4 * 2 + 4 * 3
    assert model.discretize("heun", 0.5).state_size == 5 * 3 + 4 * 2


def test_irregular_times_continuous():
    torch.manual_seed(5)
    model = create(
        "tau_gru",
        input_size=2,
        hidden_size=3,
        delay=0.5,
        mode="continuous",
        solver=dict(method="dopri5", rtol=1e-5, atol=1e-6),
    )
    times = torch.tensor([[0.0, 0.3, 1.1, 1.5], [0.0, 0.7, 0.9, 2.0]])
    out, _ = model(torch.randn(2, 4, 2), times)
    assert out.shape == (2, 4, 3) and torch.isfinite(out).all()


def test_errors():
    model = TauGRU(2, 3, delay=1.0)
    with pytest.raises(ValueError, match="whole number"):
        model.discretize("euler", 0.3)
    with pytest.raises(ValueError, match="whole number"):
        model.discretize("rk4", 2.0)
    with pytest.raises(ValueError, match="unknown scheme 'dopri5'"):
        model.discretize("dopri5", 0.5)
    with pytest.raises(ValueError, match="dt must be positive"):
        model.discretize("euler", 0.0)
    with pytest.raises(ValueError, match="delay must be positive"):
        TauGRU(2, 3, delay=0.0)
    with pytest.raises(ValueError, match="delay must be a positive number of steps"):
        TauGRUCell(2, 3, delay=0)
    with pytest.raises(ValueError, match="gate_dt must be positive"):
        TauGRUCell(2, 3, delay=1, gate_dt=-1.0)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        TauGRUCell(2, 3, delay=1, alpha=math.inf)
    with pytest.raises(ValueError, match="needs h_delayed"):
        model.vector_field(None, torch.zeros(1, 3), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="has a stage at c"):
        TauGRURungeKuttaCell(model, _tableau("bosh3"), 0.5, 2)
    with pytest.raises(
        ValueError, match="unknown option 'gamma'; valid options: input_size, hidden_size"
    ):
        create("tau_gru", input_size=2, hidden_size=3, gamma=1.0)


def test_backsolve_is_rejected():
    model = create(
        "tau_gru",
        input_size=2,
        hidden_size=3,
        delay=1.0,
        mode="continuous",
        solver=dict(method="rk4", dt=0.5, adjoint="backsolve"),
    )
    with pytest.raises(ValueError, match="backsolve"):
        model(torch.randn(2, 4, 2))


@pytest.mark.gpu
@pytest.mark.parametrize("adjoint", ["direct", "checkpoint"])
def test_trains_on_cuda(adjoint):
    torch.manual_seed(6)
    device = torch.device("cuda")
    model = create(
        "tau_gru",
        input_size=3,
        hidden_size=8,
        delay=2.0,
        mode="continuous",
        solver=dict(method="rk4", dt=0.5, adjoint=adjoint),
        num_classes=2,
    ).to(device)
    x = torch.randn(16, 10, 3, device=device)
    y = (x[:, :, 0].sum(1) > 0).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.classify(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_continuous_default_is_fixed_step_rk4_on_the_observation_grid():
    """dopri5 does not step onto the held input's jumps in a delay equation yet; the default
    cuts each observation gap into RK4 steps of dt / 4."""
    torch.manual_seed(8)
    model = create("tau_gru", input_size=2, hidden_size=3, delay=1.0, mode="continuous")
    assert model.solver == dict(method="rk4", dt=0.25)
    model = model.double()
    times = torch.tensor([[0.0, 0.3, 1.1, 1.5, 2.6], [0.0, 0.7, 0.9, 2.0, 2.2]], dtype=F64)
    x = torch.randn(2, 5, 2, dtype=F64)
    fine = SequenceModel(model.model, mode="continuous", solver=dict(method="rk4", dt=0.01))
    with torch.no_grad():
        error = (model(x, times)[0] - fine(x, times)[0]).abs().max().item()
    assert error < 1e-3, error
