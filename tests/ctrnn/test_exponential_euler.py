"""The exponential Euler scheme: models that split their vector field as ``L h + N(h, x)``
(the Lipschitz RNN, coRNN) discretize into a cell that integrates ``L`` exactly."""

import copy

import pytest
import torch

from ctrnn.analysis import empirical_order
from ctrnn.models import ExponentialEulerCell, create
from ctrnn.models._base import phi_propagators
from ctrnn.models.cornn import CoRNN
from ctrnn.models.lipschitz import LipschitzRNN

D = torch.float64


def _lipschitz(**kw):
    torch.manual_seed(0)
    return LipschitzRNN(3, 4, dtype=D, **kw)


def test_the_split_and_the_schemes():
    m = _lipschitz()
    torch.testing.assert_close(m.linear_part(), m.dynamics.matrices()[0])
    assert "exponential_euler" in m.schemes()
    assert isinstance(m.discretize("exponential_euler", 0.1), ExponentialEulerCell)
    c = CoRNN(3, 2, gamma=2.0, epsilon=0.5, dtype=D)
    L = c.linear_part()
    h = torch.randn(5, 4, dtype=D)
    x = torch.randn(5, 3, dtype=D)
    y, z = h.split(2, dim=1)
    nonlinear = torch.cat([torch.zeros_like(z), c.drive(y, z, x)], dim=1)
    t = torch.zeros(5, dtype=D)
    torch.testing.assert_close(c.vector_field(t, h, x), h @ L.T + nonlinear)
    flow = create("ode_rnn", input_size=3, hidden_size=4).flow
    assert flow.linear_part() is None and "exponential_euler" not in flow.schemes()
    with pytest.raises(ValueError, match="unknown scheme 'exponential_euler'"):
        flow.discretize("exponential_euler", 0.1)


def test_exact_when_the_nonlinear_part_is_constant():
    """W = 0 (M_W = 0, γ_W = 0), U = 0: N = tanh(b) whatever h, so dh/dt = A h + c has the
    solution exp(tA) h0 + A⁻¹ (exp(tA) - I) c, which the cell reproduces at any step size."""
    m = _lipschitz(init_std=4.0, gamma_W=0.0)
    with torch.no_grad():
        m.dynamics.M_W.zero_()
        m.dynamics.U.weight.zero_()
        m.dynamics.U.bias.copy_(torch.tensor([0.3, -0.2, 0.5, 1.0], dtype=D))
    A = m.linear_part().detach()
    c = torch.tanh(m.dynamics.U.bias.detach())
    h0 = torch.randn(2, 4, dtype=D)
    x = torch.randn(2, 3, dtype=D)
    T, steps = 1.5, 5
    E = torch.linalg.matrix_exp(T * A)
    exact = h0 @ E.T + torch.linalg.solve(A, (E - torch.eye(4, dtype=D)) @ c)
    cell, euler = m.discretize("exponential_euler", T / steps), m.discretize("euler", T / steps)
    h, he = h0, h0
    for _ in range(steps):
        h, he = cell(x, h), euler(x, he)
    torch.testing.assert_close(h, exact, rtol=0, atol=1e-12)
    assert (he - exact).abs().max() > 1e-2


@pytest.mark.parametrize("model", ["lipschitz", "cornn"])
def test_first_order(model):
    torch.manual_seed(0)
    m = _lipschitz(init_std=8.0) if model == "lipschitz" else CoRNN(3, 4, dtype=D)
    x = torch.randn(2, 4, 3, dtype=D)
    r = empirical_order(m, x, scheme="exponential_euler", dts=[0.1, 0.05, 0.025, 0.0125])
    assert abs(r.order - 1) < 0.3, r


def test_a_stiff_linear_part_stays_stable():
    """γ_A = 50 puts A's eigenvalues near -50: Euler with Δt = 0.1 multiplies by about
    |1 - 5| = 4 per step and blows up; exponential Euler decays as the equation does."""
    m = _lipschitz(gamma_A=50.0)
    x = torch.randn(3, 3, dtype=D)
    h0 = torch.randn(3, 4, dtype=D)
    cell, euler = m.discretize("exponential_euler", 0.1), m.discretize("euler", 0.1)
    h, he = h0, h0
    with torch.no_grad():
        for _ in range(40):
            h, he = cell(x, h), euler(x, he)
    assert he.abs().max() > 1e6
    assert h.abs().max() < 1.0


def test_diagonal_and_matrix_propagators_agree():
    d = torch.tensor([-3.0, 0.0, 1e-7, 2.0], dtype=D)
    E, P = phi_propagators(d, 0.25)
    Em, Pm = phi_propagators(torch.diag(d), 0.25)
    torch.testing.assert_close(E, Em.diagonal(), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(P, Pm.diagonal(), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(P[1], torch.tensor(0.25, dtype=D))  # φ₁(0) = 1


def test_a_sequence_model_trains_through_the_cell():
    torch.manual_seed(0)
    seq = create(
        "lipschitz_rnn", input_size=3, hidden_size=4, scheme="exponential_euler", dt=0.1
    ).double()
    out, h_n = seq(torch.randn(2, 6, 3, dtype=D))
    assert out.shape == (2, 6, 4) and h_n.shape == (2, 4)
    h_n.pow(2).sum().backward()
    assert seq.model.dynamics.M_A.grad is not None and seq.model.dynamics.M_A.grad.abs().sum() > 0


def test_the_propagators_are_reused_until_the_parameters_change():
    """One matrix exponential serves every step; an optimiser step, a backward pass, or a
    copy of the model gets fresh ones, and the results equal those of a new cell."""
    torch.manual_seed(0)
    seq = create(
        "lipschitz_rnn", input_size=3, hidden_size=4, scheme="exponential_euler", dt=0.1
    ).double()
    x = torch.randn(2, 6, 3, dtype=D)
    first = seq.cell.propagators(D, x.device)
    assert all(a is b for a, b in zip(seq.cell.propagators(D, x.device), first))
    # gradient accumulation: two backward passes without a step between them
    seq(x)[1].sum().backward()
    g = seq.model.dynamics.M_A.grad.clone()
    seq(x)[1].sum().backward()
    torch.testing.assert_close(seq.model.dynamics.M_A.grad, 2 * g)
    torch.optim.SGD(seq.parameters(), lr=0.1).step()
    _, h_n = seq(x)
    fresh = seq.model.discretize("exponential_euler", 0.1)
    h = torch.zeros(2, 4, dtype=D)
    for n in range(6):
        h = fresh(x[:, n], h)
    torch.testing.assert_close(h_n, h, rtol=0, atol=1e-14)
    copied = copy.deepcopy(seq)
    torch.testing.assert_close(copied(x)[1], h_n)
