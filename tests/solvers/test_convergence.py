"""Empirical convergence order of every Runge–Kutta method, measured on y' = A y.

A is a fixed 3x3 matrix with a damped rotation (eigenvalues -0.1 ± 2i) and a decaying mode
(eigenvalue -1), coupled; the exact solution is ``matrix_exp(A t) y0``.
"""

import numpy as np
import pytest
import torch

import solvers

F64 = torch.float64
A = torch.tensor([[-0.1, 2.0, 0.0], [-2.0, -0.1, 0.0], [0.5, -0.3, -1.0]], dtype=F64)
Y0 = torch.tensor([[1.0, 0.5, -0.3], [-0.2, 1.0, 0.7]], dtype=F64)

FIXED = ["euler", "midpoint", "heun", "rk4"]
ADAPTIVE = ["bosh3", "dopri5", "tsit5"]
ALL = FIXED + ADAPTIVE

# Step sizes 2^-k per order: errors stay in the asymptotic regime and well above round-off.
STEP_EXPONENTS = {1: range(4, 9), 2: range(4, 9), 3: range(3, 8), 4: range(3, 8), 5: range(3, 7)}


def field(t, y):
    return y @ A.T


def exact(t: torch.Tensor, y0: torch.Tensor = Y0) -> torch.Tensor:
    """``(batch, T, 3)`` exact solution at the times ``t`` (``(T,)``)."""
    expm = torch.linalg.matrix_exp(A * t[:, None, None])  # (T, 3, 3)
    return torch.einsum("tij,bj->bti", expm, y0)


def fixed_version(tab: solvers.ButcherTableau) -> solvers.ButcherTableau:
    """The tableau without its error estimate: a fixed-step method of the same order."""
    return solvers.ButcherTableau(
        name=tab.name + "_fixed", a=tab.a, b=tab.b, c=tab.c, order=tab.order
    )


def embedded_version(tab: solvers.ButcherTableau) -> solvers.ButcherTableau:
    """The embedded solution ``b_hat = b - b_error`` as a fixed-step method."""
    b_hat = [b - e for b, e in zip(tab.b, tab.b_error)]
    return solvers.ButcherTableau(
        name=tab.name + "_embedded", a=tab.a, b=b_hat, c=tab.c, order=tab.error_order
    )


def measured_order(method, order: int) -> tuple[float, list[float]]:
    """Slope of log(error at t=1) against log(dt) for a fixed-step solve."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ref = exact(t)[:, -1]
    dts, errs = [], []
    for k in STEP_EXPONENTS[order]:
        dt = 2.0**-k
        sol = solvers.solve(solvers.ODE(field), Y0, t, method=method, dt=dt)
        dts.append(dt)
        errs.append(float((sol.ys[:, -1] - ref).abs().max()))
    assert min(errs) > 1e-13, f"errors reached round-off, the fit is meaningless: {errs}"
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    return float(slope), errs


@pytest.mark.parametrize("name", FIXED)
def test_fixed_step_order(name):
    method = solvers.methods()[name]
    assert not method.adaptive
    slope, errs = measured_order(name, method.order)
    assert abs(slope - method.order) < 0.3, (name, slope, errs)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_tableau_order_with_fixed_steps(name):
    tab = solvers.methods()[name].tableau
    slope, errs = measured_order(fixed_version(tab), tab.order)
    assert abs(slope - tab.order) < 0.3, (name, slope, errs)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_embedded_solution_order(name):
    tab = solvers.methods()[name].tableau
    assert tab.error_order is not None and tab.error_order < tab.order
    slope, errs = measured_order(embedded_version(tab), tab.error_order)
    assert abs(slope - tab.error_order) < 0.3, (name, slope, errs)


def test_fixed_step_order_does_not_depend_on_the_output_grid():
    """Outputs between t0 and t1 only split intervals; each still lies on a step."""
    t = torch.linspace(0.0, 1.0, 9, dtype=F64)
    sol = solvers.solve(solvers.ODE(field), Y0, t, method="rk4", dt=2.0**-7)
    err = (sol.ys - exact(t)).abs().max()
    assert err < 3e-9
    assert sol.ys.shape == (2, 9, 3)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_meets_tolerance_and_tightening_reduces_error(name):
    t = torch.linspace(0.0, 5.0, 6, dtype=F64)
    ref = exact(t)
    errs = {}
    for tol in (1e-6, 1e-8):
        sol = solvers.solve(
            solvers.ODE(field), Y0, t, method=name, rtol=tol, atol=tol, max_steps=100_000
        )
        assert sol.status == (solvers.Status.SUCCESS,) * 2
        errs[tol] = float((sol.ys - ref).abs().max())
    assert errs[1e-8] < 1e-6, errs
    assert errs[1e-8] < errs[1e-6] / 10, errs


@pytest.mark.parametrize("name", ["dopri5", "tsit5"])
def test_tight_tolerance_is_very_accurate(name):
    t = torch.linspace(0.0, 5.0, 6, dtype=F64)
    sol = solvers.solve(solvers.ODE(field), Y0, t, method=name, rtol=1e-10, atol=1e-10)
    err = float((sol.ys - exact(t)).abs().max())
    assert err < 1e-8, err


# ---------------------------------------------------------------------------------------------
# Dense output


@pytest.mark.parametrize("name", ADAPTIVE)
def test_dense_output_at_many_times_is_accurate(name):
    t = torch.linspace(0.0, 2.0, 50, dtype=F64)
    sol = solvers.solve(
        solvers.ODE(field), Y0, t, method=name, rtol=1e-10, atol=1e-10, max_steps=100_000
    )
    # Steps are not shortened to land on outputs: every output but the last is interpolated.
    err = float((sol.ys - exact(t)).abs().max())
    assert err < 1e-7, err


@pytest.mark.parametrize("name", ADAPTIVE)
def test_output_times_do_not_change_the_steps(name):
    """Outputs inside a step come from the interpolant; the steps themselves are the same."""
    coarse = torch.tensor([0.0, 4.0], dtype=F64)
    fine = torch.linspace(0.0, 4.0, 100, dtype=F64)
    a = solvers.solve(solvers.ODE(field), Y0, coarse, method=name, rtol=1e-4, atol=1e-4)
    b = solvers.solve(solvers.ODE(field), Y0, fine, method=name, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.ys[:, -1], b.ys[:, -1], rtol=0, atol=0)
    assert torch.equal(a.stats.num_accepted_steps, b.stats.num_accepted_steps)
    assert torch.equal(a.stats.num_rejected_steps, b.stats.num_rejected_steps)
    # With large steps most outputs are interpolated; they are about as accurate as the steps.
    assert a.stats.num_accepted_steps.max() < 50
    err_steps = float((a.ys[:, -1] - exact(coarse)[:, -1]).abs().max())
    err_dense = float((b.ys - exact(fine)).abs().max())
    assert err_dense < max(10 * err_steps, 1e-3), (err_dense, err_steps)


# Order of the dense output: the cubic Hermite interpolant of bosh3 is third order, the
# quartic interpolants of dopri5 and tsit5 are fourth order.
DENSE_ORDER = {"bosh3": 3, "dopri5": 4, "tsit5": 4}
DENSE_STEP_EXPONENTS = {"bosh3": range(1, 6), "dopri5": range(2, 6), "tsit5": range(2, 6)}


@pytest.mark.parametrize("theta", [0.3, 0.6])
@pytest.mark.parametrize("name", ADAPTIVE)
def test_interpolant_local_order(name, theta):
    """One accepted step of size h, output at t0 + θh: local error O(h^(p*+1)).

    At θ=0.3 the measured slope is p*+1; at other θ the leading error term can happen to be
    small for this linear problem (tsit5 at θ=0.6 measures about 6), so there only the
    lower bound is checked.
    """
    hs, errs = [], []
    for k in DENSE_STEP_EXPONENTS[name]:
        h = 2.0**-k
        t = torch.tensor([0.0, theta * h, h], dtype=F64)
        # Huge tolerances: the first step, of size h, is accepted and reaches t[-1].
        first = solvers.PIDController(first_step=h)
        sol = solvers.solve(
            solvers.ODE(field), Y0, t, method=name, controller=first, rtol=1e3, atol=1e3
        )
        assert sol.stats.num_accepted_steps.tolist() == [1, 1]
        assert sol.stats.num_rejected_steps.tolist() == [0, 0]
        hs.append(h)
        errs.append(float((sol.ys[:, 1] - exact(t)[:, 1]).abs().max()))
    assert min(errs) > 1e-13, errs
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    expected = DENSE_ORDER[name] + 1
    assert slope > expected - 0.3, (name, theta, slope, errs)
    if theta == 0.3:
        assert slope < expected + 0.3, (name, theta, slope, errs)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_interpolant_coefficients(name):
    """``B`` is ``(stages, degree)``: at θ=1 its rows sum to b; its slope at θ=0 is stage 1."""
    tab = solvers.methods()[name].tableau
    B = np.asarray(tab.interpolant, dtype=np.float64)
    assert B.shape[0] == tab.stages
    assert B.shape[1] == DENSE_ORDER[name]  # polynomial degree equals the dense order here
    np.testing.assert_allclose(B.sum(axis=1), tab.b, rtol=0, atol=1e-12)
    e1 = np.zeros(tab.stages)
    e1[0] = 1.0
    np.testing.assert_allclose(B[:, 0], e1, rtol=0, atol=1e-12)
    if tab.fsal:
        # Its slope at θ=1 is the last (FSAL) stage, f(t1, y1): the interpolant is C¹.
        powers = np.arange(1, B.shape[1] + 1)
        e_last = np.zeros(tab.stages)
        e_last[-1] = 1.0
        np.testing.assert_allclose(B @ powers, e_last, rtol=0, atol=1e-10)
