"""Jacobian spectra and stability functions of explicit Runge–Kutta methods."""

import math

import numpy as np
import pytest
import torch

import ctrnn.models as M
import solvers
from ctrnn.analysis import (
    cell_jacobian_eigenvalues,
    in_stability_region,
    stability_function,
    stability_polynomial,
    vector_field_eigenvalues,
)

D = torch.float64


def test_stability_polynomials_are_the_taylor_polynomials_of_exp():
    np.testing.assert_allclose(stability_polynomial("euler"), [1, 1])
    np.testing.assert_allclose(stability_polynomial("midpoint"), [1, 1, 0.5])
    np.testing.assert_allclose(stability_polynomial("heun"), [1, 1, 0.5])
    rk4 = [1 / math.factorial(j) for j in range(5)]
    np.testing.assert_allclose(stability_polynomial("rk4"), rk4, rtol=1e-15)
    # dopri5: order 5 on 7 stages; the FSAL stage adds nothing, so degree 6 with
    # c_6 = 1/600 (Hairer & Wanner II, IV.2) and c_7 = 0
    dp = stability_polynomial(solvers.methods()["dopri5"])
    np.testing.assert_allclose(dp[:6], [1 / math.factorial(j) for j in range(6)], rtol=1e-13)
    assert dp[6] == pytest.approx(1 / 600) and dp[7] == pytest.approx(0.0, abs=1e-15)


def test_stability_function_from_the_resolvent_matches_the_polynomial():
    z = np.random.default_rng(0).normal(size=(4, 5)) + 1j * np.random.default_rng(1).normal(
        size=(4, 5)
    )
    for name in ("euler", "heun", "rk4", "bosh3", "tsit5"):
        poly = stability_polynomial(name)
        np.testing.assert_allclose(
            stability_function(name, z), np.polynomial.polynomial.polyval(z, poly), rtol=1e-12
        )
    np.testing.assert_allclose(stability_function("euler", z), 1 + z)
    tableau = solvers.methods()["rk4"].tableau
    np.testing.assert_allclose(
        stability_function(tableau, torch.tensor([-1.0 + 0j])), [3 / 8], rtol=1e-15
    )


def test_stability_regions():
    # Euler: the unit disc about -1
    assert in_stability_region("euler", np.array([-1.0, -2.0, -0.5 + 0.5j])).all()
    assert not in_stability_region("euler", np.array([-2.1, 0.1, 1j])).any()
    # RK4 on the real axis: stable down to -2.7853 (Hairer & Wanner II, IV.2)
    assert in_stability_region("rk4", np.array([-2.78])).all()
    assert not in_stability_region("rk4", np.array([-2.79])).any()
    # and on the imaginary axis up to 2√2
    assert in_stability_region("rk4", np.array([2.82j])).all()
    assert not in_stability_region("rk4", np.array([2.84j])).any()


def test_stability_function_errors():
    with pytest.raises(ValueError, match=r"explicit Runge–Kutta methods .* got 'leapfrog'"):
        stability_polynomial("leapfrog")
    with pytest.raises(ValueError, match="got 'nope'"):
        stability_function("nope", [0.0])


def test_cell_jacobian_eigenvalues_of_a_linear_cell():
    torch.manual_seed(0)
    model = M.create("lipschitz_rnn", input_size=2, hidden_size=3, scheme="euler", dt=0.5)
    model = model.double()
    with torch.no_grad():
        model.model.dynamics.M_W.zero_()  # W = -γ I: F(h) = A h + tanh(-γ h + U x)
    x = torch.randn(2, 6, 2, dtype=D)
    eig = cell_jacobian_eigenvalues(model, x)
    assert eig.shape == (2, 6, 3) and eig.is_complex()
    # along the run: I + dt (A - γ diag(1 - tanh²(-γ h + U x)))
    A, _ = model.model.dynamics.matrices()
    gamma = model.model.dynamics.gamma_W
    h = torch.zeros(2, 3, dtype=D)
    with torch.no_grad():
        for t in range(6):
            u = model.model.dynamics.U(x[:, t])
            for b in range(2):
                pre = -gamma * h[b] + u[b]
                J = torch.eye(3, dtype=D) + 0.5 * (A - gamma * torch.diag(1 - torch.tanh(pre) ** 2))
                expected = torch.linalg.eigvals(J)
                got = eig[b, t]
                torch.testing.assert_close(
                    got[got.real.argsort()], expected[expected.real.argsort()], atol=1e-12, rtol=0
                )
            h = model.cell(x[:, t], h)
    with pytest.raises(ValueError, match="RungeKuttaCell reads 2 input features"):
        cell_jacobian_eigenvalues(model, torch.zeros(1, 3, 1, dtype=D))


def test_vector_field_eigenvalues_of_a_hamiltonian_model_are_symmetric():
    torch.manual_seed(0)
    model = M.create("hamiltonian", input_size=2, hidden_size=6).double()
    h = torch.randn(4, 5, 6, dtype=D)
    x = torch.randn(4, 5, 2, dtype=D)
    lam = vector_field_eigenvalues(model, h, x)
    assert lam.shape == (4, 5, 6)
    # J S with S symmetric: the spectrum is symmetric under λ -> -λ
    flat = lam.reshape(-1, 6)
    for row in flat:
        distance = (row[:, None] + row[None, :]).abs().min(dim=1).values  # |λ_i - (-λ_j)|
        assert distance.max() < 1e-10


def test_vector_field_eigenvalues_with_a_delayed_state():
    model = M.create("tau_gru", input_size=1, hidden_size=3, delay=2.0).double()
    h = torch.randn(2, 3, dtype=D)
    lam = vector_field_eigenvalues(
        model, h, torch.randn(2, 1, dtype=D), h_delayed=torch.zeros(2, 3, dtype=D)
    )
    assert lam.shape == (2, 3) and torch.isfinite(lam.real).all()
    with pytest.raises(ValueError, match=r"expected h \(\.\.\., 3\) and x \(\.\.\., 1\)"):
        vector_field_eigenvalues(model, h, torch.zeros(2, 2, dtype=D))
