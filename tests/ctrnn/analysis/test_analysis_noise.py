"""Noise and stability: the noise-injected RNN with and without its noise."""

import math

import numpy as np
import pytest
import torch

import ctrnn.models as M
from ctrnn.analysis import NoiseStudy, noise_study

D = torch.float64


def diagonal_noisy_rnn(hidden_size, dt, sigma_mult, sigma_add=0.0, variant="paper"):
    """A noise-injected RNN whose drift Jacobian is -γ I (M_A = M_W = 0)."""
    model = M.create(
        "noisy_rnn",
        input_size=1,
        hidden_size=hidden_size,
        dt=dt,
        sigma_add=sigma_add,
        sigma_mult=sigma_mult,
        gamma_A=0.5,
        variant=variant,
    ).double()
    with torch.no_grad():
        model.model.dynamics.M_A.zero_()
        model.model.dynamics.M_W.zero_()
    return model


def expected_log_multiplier(a, s):
    """E log|a + s ξ|, ξ ~ N(0, 1), by quadrature on a fine grid."""
    xi = np.linspace(-12, 12, 2_000_001)
    density = np.exp(-(xi**2) / 2) / math.sqrt(2 * math.pi)
    values = np.log(np.abs(a + s * xi) + 1e-300)
    return float(np.trapezoid(values * density, xi))


def test_multiplicative_noise_lowers_every_exponent_by_its_ito_correction():
    # With A = -γ I and W = -γ_W I the Jacobian of the Euler–Maruyama step is diagonal,
    # (1 - dt γ_eff) + σ ΔB per unit: each exponent is E log|1 - dt γ_eff + σ √dt ξ|, and
    # the noise shifts it by about -σ² dt / 2 per step (-σ²/2 per unit time).
    dt, sigma, H = 0.1, 1.0, 4
    model = diagonal_noisy_rnn(H, dt, sigma)
    x = torch.zeros(32, 250, 1, dtype=D)
    study = noise_study(model, x, h0=0.1 * torch.ones(32, H, dtype=D), seed=0)
    assert isinstance(study, NoiseStudy) and study.dt == dt
    gamma = 0.5 + model.model.dynamics.gamma_W  # tanh'(0) = 1 at h = 0 with zero input
    a = 1 - dt * gamma
    torch.testing.assert_close(
        study.exponents_clean, torch.full((32, H), math.log(a), dtype=D), atol=1e-3, rtol=0
    )
    expected = expected_log_multiplier(a, sigma * math.sqrt(dt))
    assert study.exponents_noisy.mean().item() == pytest.approx(expected, abs=0.01)
    # -σ²/2 per unit time to leading order in dt; at dt = 0.1 the higher orders add ~40 %
    shift_per_time = (study.exponents_noisy - study.exponents_clean).mean().item() / dt
    assert -(sigma**2) < shift_per_time < -(sigma**2) / 2
    # the gradients through the same noise vanish faster: log ‖∂L/∂h_0‖ falls by about
    # 250 times the shift per step (-0.06), give or take the noise's spread
    log_clean = study.gradients_clean[:, 0].log().mean().item()
    log_noisy = study.gradients_noisy[:, 0].log().mean().item()
    assert log_noisy < log_clean - 8


def test_additive_noise_leaves_a_linear_spectrum_unchanged():
    model = diagonal_noisy_rnn(3, 0.1, sigma_mult=0.0, sigma_add=0.5)
    x = torch.zeros(2, 200, 1, dtype=D)
    study = noise_study(model, x, transient=20)
    # the drift is linear near 0 up to tanh'(·) ≈ 1: the noise moves the state, not the slope
    torch.testing.assert_close(study.exponents_noisy, study.exponents_clean, atol=2e-3, rtol=0)
    assert study.gradients_clean.shape == (2, 201)


def test_code_variant_and_a_sequence_model_in_evaluation_mode():
    model = diagonal_noisy_rnn(3, 0.1, sigma_mult=0.5, sigma_add=0.1, variant="code").eval()
    x = torch.zeros(2, 100, 1, dtype=D)
    study = noise_study(model, x, k=2)
    assert study.exponents_noisy.shape == (2, 2)
    # the noise is drawn whatever the mode, and the model's mode is left as it was
    assert not model.training
    assert (study.exponents_noisy != study.exponents_clean).any()
    # m ~ U[1 - σ_mult, 1) scales the step d: the contraction weakens, exponents rise
    assert (study.exponents_noisy > study.exponents_clean).all()


def test_errors():
    with pytest.raises(TypeError, match="expected a NoisyRNN or a SequenceModel holding one"):
        noise_study(M.create("gru", input_size=1, hidden_size=2), torch.zeros(1, 5, 1))
    quiet = M.create("noisy_rnn", input_size=1, hidden_size=2, sigma_add=0.0, sigma_mult=0.0)
    with pytest.raises(ValueError, match="injects no noise"):
        noise_study(quiet, torch.zeros(1, 5, 1))
