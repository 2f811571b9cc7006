"""Empirical order of schemes on models, symplecticity of steps, energy drift."""

import math

import pytest
import torch

import ctrnn.models as M
from ctrnn.analysis import empirical_order, energy_drift, hamiltonian_energy, symplecticity_error
from ctrnn.models.hamiltonian import HamiltonianNet

D = torch.float64


@pytest.mark.parametrize(
    ("scheme", "dts", "order"),
    [
        ("euler", [0.1, 0.05, 0.025], 1),
        ("midpoint", [0.2, 0.1, 0.05], 2),
        ("rk4", [0.5, 0.25, 0.125], 4),
    ],
)
def test_order_of_runge_kutta_cells_on_a_model(scheme, dts, order):
    torch.manual_seed(0)
    model = M.create("lipschitz_rnn", input_size=2, hidden_size=4)
    x = torch.randn(2, 3, 2)
    res = empirical_order(model, x, scheme=scheme, dts=dts)
    assert res.order == pytest.approx(order, abs=0.25)
    assert res.expected == order and res.scheme == scheme
    assert (res.errors[1:] < res.errors[:-1]).all()
    assert res.dts.tolist() == dts


def test_order_of_the_symplectic_cell_and_the_delay_cell():
    torch.manual_seed(0)
    ham = M.create("hamiltonian", input_size=2, hidden_size=4)
    res = empirical_order(
        ham, torch.randn(2, 3, 2), scheme="semi_implicit_euler", dts=[0.1, 0.05, 0.025]
    )
    assert res.order == pytest.approx(1, abs=0.2)
    assert res.expected == 1
    tau = M.create("tau_gru", input_size=1, hidden_size=3, delay=1.0)
    res = empirical_order(tau, torch.randn(1, 3, 1), scheme="heun", dts=[0.25, 0.125, 0.0625])
    assert res.order == pytest.approx(2, abs=0.25)


def test_order_with_uneven_observation_times_and_its_errors():
    model = M.create("lipschitz_rnn", input_size=1, hidden_size=2)
    x = torch.randn(1, 3, 1)
    res = empirical_order(
        model, x, torch.tensor([0.0, 0.5, 1.5]), scheme="heun", dts=[0.25, 0.125, 0.0625]
    )
    assert res.order == pytest.approx(2, abs=0.25)
    with pytest.raises(ValueError, match=r"interval 0\.5 is not a whole number of steps dt = 0\.3"):
        empirical_order(model, x, torch.tensor([0.0, 0.5, 1.5]), scheme="euler", dts=[0.3, 0.1])
    with pytest.raises(ValueError, match="dts must hold at least two positive steps"):
        empirical_order(model, x, scheme="euler", dts=[0.1])
    with pytest.raises(ValueError, match=r"times must have shape \(3,\) with T ≥ 2"):
        empirical_order(model, x, torch.zeros(1, 3), scheme="euler", dts=[0.1, 0.05])
    with pytest.raises(ValueError, match="reads 1 input features"):
        empirical_order(model, torch.zeros(1, 3, 2), scheme="euler", dts=[0.1, 0.05])
    tau = M.create("tau_gru", input_size=1, hidden_size=3, delay=1.0)
    with pytest.raises(ValueError, match="leave h0 at its default"):
        empirical_order(tau, x, scheme="euler", dts=[0.5, 0.25], h0=torch.zeros(1, 3))
    with pytest.warns(UserWarning, match="at round-off level"):
        empirical_order(model, torch.zeros(1, 3, 1), scheme="rk4", dts=[0.5, 0.25])


def test_h2_layers_are_symplectic_and_h1_layers_are_not():
    torch.manual_seed(0)
    y = torch.randn(5, 6, dtype=D)
    h2 = HamiltonianNet(6, 4, h=0.3, scheme="H2", init_std=0.5).double()
    h2_first = HamiltonianNet(6, 4, h=0.3, scheme="H2_drift_first", init_std=0.5).double()
    h1 = HamiltonianNet(6, 4, h=0.3, scheme="H1", init_std=0.5).double()
    for j in range(4):
        assert symplecticity_error(lambda s, j=j: h2.layer(j, s), y).max() < 1e-13
        assert symplecticity_error(lambda s, j=j: h2_first.layer(j, s), y).max() < 1e-13
        assert symplecticity_error(lambda s, j=j: h1.layer(j, s), y).min() > 1e-3
    # the whole network: a product of symplectic maps is symplectic
    assert symplecticity_error(h2, y).max() < 1e-12


def test_symplecticity_of_the_recurrent_cells():
    torch.manual_seed(0)
    model = M.create("hamiltonian", input_size=2, hidden_size=4).double()
    y, x = torch.randn(3, 4, dtype=D), torch.randn(3, 2, dtype=D)
    for scheme in ("semi_implicit_euler", "leapfrog", "yoshida4"):
        assert symplecticity_error(model.model.discretize(scheme, 0.2), y, x).max() < 1e-13
    assert symplecticity_error(model.model.discretize("euler", 0.2), y, x).min() > 1e-4
    # RK4 is not symplectic either, but its defect is O(dt^5)
    rk4 = symplecticity_error(model.model.discretize("rk4", 0.2), y, x).max()
    assert 1e-12 < rk4 < 1e-3
    assert symplecticity_error(model, y, x).max() < 1e-13  # the SequenceModel's own cell


def test_symplecticity_errors():
    with pytest.raises(ValueError, match=r"y must have shape \(batch, 2n\)"):
        symplecticity_error(lambda s: s, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="a cell needs its input x"):
        symplecticity_error(M.create("gru", input_size=1, hidden_size=2), torch.zeros(1, 2))
    with pytest.raises(TypeError, match="step must be a map or a cell"):
        symplecticity_error(3, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"J must be \(2, 2\)"):
        symplecticity_error(lambda s: s, torch.zeros(1, 2), J=torch.eye(4))


def test_hamiltonian_energy_is_conserved_by_the_exact_flow():
    torch.manual_seed(0)
    model = M.create("hamiltonian", input_size=2, hidden_size=4, mode="continuous").double()
    y0, x = torch.randn(2, 4, dtype=D), torch.randn(2, 2, dtype=D)
    xs = x[:, None].expand(2, 2, 2)
    y1 = model.model.solve(
        xs, torch.tensor([0.0, 5.0], dtype=D), h0=y0, method="dopri5", rtol=1e-11, atol=1e-12
    )[:, -1]
    torch.testing.assert_close(hamiltonian_energy(model, y1, x), hamiltonian_energy(model, y0, x))
    assert (
        hamiltonian_energy(model, y1 + 0.1, x) - hamiltonian_energy(model, y0, x)
    ).abs().max() > 1e-3
    # split=False, J2: the full form, H = Σ log cosh(K y + U x + b)
    full = M.create(
        "hamiltonian", input_size=2, hidden_size=4, split=False, J="J2", scheme="euler"
    ).double()
    z = y0 @ full.model.K.T + full.model.input_map(x)
    expected = (torch.log(torch.cosh(z))).sum(dim=1)
    torch.testing.assert_close(hamiltonian_energy(full, y0, x), expected)


def test_energy_drift_bounded_for_symplectic_growing_for_euler():
    torch.manual_seed(0)
    model = M.create("hamiltonian", input_size=2, hidden_size=4).double()
    y0 = torch.randn(3, 4, dtype=D)
    runs = {
        s: energy_drift(model, y0, 2000, scheme=s, dt=0.1) for s in ("semi_implicit_euler", "euler")
    }
    sie, euler = runs["semi_implicit_euler"], runs["euler"]
    assert sie.energy.shape == (3, 2001) and sie.times[-1].item() == pytest.approx(200.0)
    torch.testing.assert_close(sie.drift[:, 0], torch.zeros(3, dtype=D))
    # symplectic Euler: an O(dt) oscillation, the same early and late
    early = sie.drift[:, :500].abs().max(dim=1).values
    late = sie.drift[:, 1500:].abs().max(dim=1).values
    assert (late < 2 * early + 1e-12).all()
    # explicit Euler: the energy keeps growing
    assert (euler.drift[:, -1] > 0).all()
    assert (euler.max_drift > 10 * sie.max_drift).all()
    assert (euler.drift[:, 2000] > 1.5 * euler.drift[:, 1000]).all()


def test_energy_drift_errors():
    model = M.create("hamiltonian", input_size=2, hidden_size=4)
    with pytest.raises(TypeError, match="expected a HamiltonianRNN"):
        energy_drift(M.create("gru", input_size=2, hidden_size=4), torch.zeros(1, 4), 3)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        energy_drift(model, torch.zeros(1, 4), 0)
    with pytest.raises(ValueError, match=r"y0 must have shape \(batch, 4\)"):
        energy_drift(model, torch.zeros(4), 3)


def test_logcosh_is_stable_for_large_arguments():
    model = M.create(
        "hamiltonian", input_size=1, hidden_size=2, split=False, J="J1", scheme="euler"
    ).double()
    with torch.no_grad():
        model.model.K.copy_(torch.eye(2))
        model.model.input_map.weight.zero_()
        model.model.input_map.bias.zero_()
    y = torch.tensor([[800.0, -3.0]], dtype=D)
    H = hamiltonian_energy(model, y, torch.zeros(1, 1, dtype=D))
    assert H.item() == pytest.approx(800 - math.log(2) + math.log(math.cosh(3.0)))
