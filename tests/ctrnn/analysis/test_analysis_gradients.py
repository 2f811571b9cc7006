"""Gradient norms through time, and their growth rate against the largest exponent."""

import math

import pytest
import torch

import ctrnn.models as M
from ctrnn.analysis import gradient_growth, gradient_norms
from ctrnn.models.hamiltonian import HamiltonianNet

D = torch.float64


class LinearCell(M.AbstractCell):
    """``h' = A h + U x``: the gradient through ``t`` steps is ``(Aᵀ)^t`` applied to ∂L/∂h_T."""

    def __init__(self, A, input_size=2):
        super().__init__(input_size, A.shape[0])
        g = torch.Generator().manual_seed(5)
        self.A = A
        self.U = torch.randn(A.shape[0], input_size, generator=g, dtype=A.dtype)

    def step(self, x, h):
        return h @ self.A.T + x @ self.U.T


class TanhCell(M.AbstractCell):
    """``h' = tanh(W h + U x)`` with ``W ~ N(0, gain² / H)``: chaotic for a large gain."""

    def __init__(self, hidden_size, gain, seed=1):
        super().__init__(1, hidden_size)
        g = torch.Generator().manual_seed(seed)
        self.W = gain * torch.randn(hidden_size, hidden_size, generator=g, dtype=D)
        self.W /= math.sqrt(hidden_size)
        self.U = torch.randn(hidden_size, 1, generator=g, dtype=D)

    def step(self, x, h):
        return torch.tanh(h @ self.W.T + x @ self.U.T)


def orthogonal(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D))[0]


@pytest.mark.parametrize("rho", [0.9, 1.1])
def test_linear_rnn_gradients_scale_by_the_spectral_radius_per_step(rho):
    cell = LinearCell(rho * orthogonal(6))
    x = torch.randn(3, 30, 2, dtype=D)
    g = gradient_norms(cell, x)
    assert g.shape == (3, 31)
    # h_n.sum(): ∂L/∂h_T is the ones vector; each step back multiplies by ρ Qᵀ
    torch.testing.assert_close(g[:, -1], torch.full((3,), math.sqrt(6), dtype=D))
    torch.testing.assert_close(g[:, :-1] / g[:, 1:], torch.full((3, 30), rho, dtype=D))


def test_non_normal_linear_rnn_grows_at_the_spectral_radius_asymptotically():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(5, 5, generator=g, dtype=D)
    A = 0.8 * A / torch.linalg.eigvals(A).abs().max()
    growth = gradient_growth(LinearCell(A), torch.randn(2, 200, 2, dtype=D), skip=40)
    torch.testing.assert_close(
        growth.rate, torch.full((2,), math.log(0.8), dtype=D), atol=0.01, rtol=0
    )
    torch.testing.assert_close(growth.lyapunov, growth.rate, atol=0.01, rtol=0)


@pytest.mark.parametrize("gain", [0.5, 3.0])
def test_gradient_growth_rate_is_the_largest_exponent(gain):
    # Mikhaeil et al. (2022): stable (gain 0.5, λ < 0): gradients vanish at rate λ_max;
    # chaotic (gain 3, λ > 0): they explode at that rate
    cell = TanhCell(64, gain)
    gen = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(8, 300, 1, generator=gen, dtype=D)
    h0 = 0.5 * torch.randn(8, 64, generator=gen, dtype=D)
    growth = gradient_growth(cell, x, h0=h0)
    lam = growth.lyapunov.mean().item()
    assert (lam < -0.3) if gain < 1 else (lam > 0.15)
    assert growth.rate.mean().item() == pytest.approx(lam, abs=0.02)
    torch.testing.assert_close(growth.rate, growth.lyapunov, atol=0.05, rtol=0)
    assert growth.window == (30, 270)


def test_sequence_model_norms_follow_its_forward_and_its_padding():
    torch.manual_seed(0)
    model = M.create("gru", input_size=2, hidden_size=3).double()
    x = torch.randn(2, 10, 2, dtype=D)
    x[1, 6:] = float("nan")  # sample 1 ends after step 6
    g = gradient_norms(model, x)
    assert g.shape == (2, 11)
    # the loss reads h_n, the state after each sample's last observation
    assert g[0, -1].item() == pytest.approx(math.sqrt(3))
    assert g[1, 6].item() == pytest.approx(math.sqrt(3))
    assert (g[1, 7:] == 0).all()
    # ∂L/∂h_0 by plain autograd through the model's forward, from a leaf initial state
    h0 = torch.zeros(2, 3, dtype=D, requires_grad=True)
    cell, h, values = model.cell, h0, torch.nan_to_num(x)
    values[1, 6:] = values[1, 5]
    for t in range(10):
        h = cell(values[:, t], h)
        if t == 5:
            h_last1 = h[1]
    (grad,) = torch.autograd.grad(h[0].sum() + h_last1.sum(), h0)
    torch.testing.assert_close(g[:, 0], grad.norm(dim=1))


def test_custom_loss_and_initial_state():
    cell = LinearCell(0.5 * orthogonal(4))
    x = torch.randn(2, 5, 2, dtype=D)
    g = gradient_norms(
        cell, x, loss=lambda out, h_n: 3 * out[:, 2].sum(), h0=torch.ones(2, 4, dtype=D)
    )
    # the loss reads h_3 only: 3·‖1‖ there, halved per step back, zero after it
    torch.testing.assert_close(g[:, 3], torch.full((2,), 6.0, dtype=D))
    torch.testing.assert_close(g[:, 0], torch.full((2,), 6.0 / 8, dtype=D))
    assert (g[:, 4:] == 0).all()


@pytest.mark.parametrize("adjoint", ["direct", "backsolve", "checkpoint"])
def test_continuous_models_under_every_adjoint(adjoint):
    torch.manual_seed(0)
    kw = dict(input_size=2, hidden_size=3)
    discrete = M.create("lipschitz_rnn", scheme="rk4", dt=1.0, **kw).double()
    continuous = M.create(
        "lipschitz_rnn", mode="continuous", solver=dict(method="rk4", dt=1.0, adjoint=adjoint), **kw
    ).double()
    continuous.load_state_dict(discrete.state_dict())
    x = torch.randn(2, 8, 2, dtype=D)
    # one RK4 step per unit interval: the continuous mode equals the discrete RK4 cell; the
    # backsolve adjoint integrates the adjoint equation backwards, exact to RK4's error
    expected = gradient_norms(discrete, x)
    tol = dict(rtol=2e-3, atol=0) if adjoint == "backsolve" else {}
    torch.testing.assert_close(gradient_norms(continuous, x), expected, **tol)


def test_continuous_gradient_growth_matches_the_flow_exponent():
    torch.manual_seed(1)
    model = M.create(
        "lipschitz_rnn",
        input_size=1,
        hidden_size=3,
        mode="continuous",
        solver=dict(method="rk4", dt=0.5),
    ).double()
    growth = gradient_growth(model, torch.zeros(1, 80, 1, dtype=D), h0=torch.ones(1, 3, dtype=D))
    assert growth.rate.item() == pytest.approx(growth.lyapunov.item(), abs=0.02)


def test_hamiltonian_net_norms_are_the_gradients_at_each_layer():
    torch.manual_seed(0)
    net = HamiltonianNet(4, 16, h=0.2, scheme="H2").double()
    y0 = torch.randn(3, 4, dtype=D)
    g = gradient_norms(net, y0)
    assert g.shape == (3, 17)
    y = y0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(y).sum(), y)
    torch.testing.assert_close(g[:, 0], grad.norm(dim=1))
    torch.testing.assert_close(g[:, -1], torch.full((3,), 2.0, dtype=D))


def test_errors():
    cell = LinearCell(orthogonal(3))
    x = torch.zeros(1, 4, 2, dtype=D)
    with pytest.raises(ValueError, match="a bare cell takes no times or mask"):
        gradient_norms(cell, x, times=torch.arange(4.0))
    with pytest.raises(ValueError, match="a HamiltonianNet takes no times or mask"):
        gradient_norms(HamiltonianNet(4, 2), torch.zeros(1, 4), times=torch.arange(4.0))
    with pytest.raises(TypeError, match="expected a SequenceModel, a cell or a HamiltonianNet"):
        gradient_norms(M.create("ode_rnn", input_size=2, hidden_size=3), x)
    with pytest.raises(ValueError, match=r"loss.* must return a scalar tensor, got \(1, 3\)"):
        gradient_norms(cell, x, loss=lambda out, h_n: h_n)
    with pytest.raises(ValueError, match="expected 2 input channels, got 3"):
        gradient_norms(M.create("gru", input_size=2, hidden_size=3), torch.zeros(1, 4, 3))
    tau = M.create("tau_gru", input_size=2, hidden_size=3, delay=2.0, mode="continuous")
    with pytest.raises(ValueError, match="delay equation"):
        gradient_norms(tau, torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="leaves no window to fit"):
        gradient_growth(cell, x, transient=2, skip=1)
    exploding = LinearCell(50.0 * orthogonal(3).float())
    with pytest.raises(ValueError, match=r"overflow to inf or NaN in torch\.float32"):
        gradient_growth(exploding, torch.zeros(1, 40, 2))
