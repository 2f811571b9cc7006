"""Adaptive SDE steps: an SDE with rtol/atol and no dt steps adaptively on its Brownian
path (step doubling for the error; a rejected step and its retry see the same noise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import solvers
from solvers import SDE, BrownianPath

F64 = torch.float64
MU, SIGMA = 0.5, 0.8


def gbm_case(sde_type, batch=200, seed=3):
    bm = BrownianPath(0.0, 1.0, (batch, 1), seed=seed, dtype=F64)
    drift = MU if sde_type == "ito" else MU - 0.5 * SIGMA**2
    sde = SDE(lambda t, y: drift * y, lambda t, y: SIGMA * y, brownian=bm, sde_type=sde_type)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    w = bm.values(t[:, None])[:, :, 0].T  # (batch, 3)
    exact = torch.exp((MU - 0.5 * SIGMA**2) * t + SIGMA * w)
    return sde, torch.ones(batch, 1, dtype=F64), t, exact


@pytest.mark.parametrize(
    ("method", "sde_type"),
    [("milstein", "ito"), ("heun", "stratonovich"), ("reversible_heun", "stratonovich")],
)
def test_strong_error_falls_with_the_tolerance(method, sde_type):
    sde, y0, t, exact = gbm_case(sde_type)
    errors, steps = [], []
    for tol in (1e-1, 1e-2, 1e-3):
        sol = solvers.solve(sde, y0, t, method=method, rtol=tol, atol=tol)
        errors.append(float((sol.ys[..., 0] - exact).abs().mean()))
        steps.append(float(sol.stats.num_accepted_steps.float().mean()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.3 * errors[0], errors
    assert steps[0] < steps[1] < steps[2], steps
    # the slope of the error against the tolerance, over two decades
    slope = np.polyfit(np.log([1e-1, 1e-2, 1e-3]), np.log(errors), 1)[0]
    assert slope > 0.25, (slope, errors)


def test_rejected_steps_see_the_same_noise():
    """The same problem solved twice adaptively gives the same numbers; per-sample steps:
    a sample alone equals the sample in the batch."""
    sde, y0, t, _ = gbm_case("stratonovich", batch=6)
    a = solvers.solve(sde, y0, t, method="heun", rtol=1e-3, atol=1e-3)
    b = solvers.solve(sde, y0, t, method="heun", rtol=1e-3, atol=1e-3)
    assert (a.stats.num_rejected_steps > 0).any()
    torch.testing.assert_close(a.ys, b.ys, rtol=0, atol=0)


def test_the_default_path_and_additive_euler_maruyama():
    """Without a user path, the solve queries the path of its seed over the span; with
    additive noise Euler–Maruyama has strong order 1 and adapts."""
    sde = SDE(lambda t, y: -y, lambda t, y: torch.full_like(y, 0.5), noise="additive", seed=4)
    y0 = torch.ones(50, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    sol = solvers.solve(sde, y0, t, rtol=1e-3, atol=1e-3)
    assert sol.success and sol.ys.shape == (50, 3, 1)
    bm = BrownianPath(0.0, 2.0, (50, 1), seed=4, dtype=F64)
    same = SDE(lambda t, y: -y, lambda t, y: torch.full_like(y, 0.5), noise="additive", brownian=bm)
    again = solvers.solve(same, y0, t, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(sol.ys, again.ys, rtol=0, atol=0)


def test_gradients_flow_through_adaptive_steps():
    w = torch.tensor(0.3, dtype=F64, requires_grad=True)
    bm = BrownianPath(0.0, 1.0, (4, 1), seed=1, dtype=F64)
    sde = SDE(lambda t, y: -w * y, lambda t, y: 0.2 * y, brownian=bm, sde_type="stratonovich")
    sol = solvers.solve(
        sde,
        torch.ones(4, 1, dtype=F64),
        torch.tensor([0.0, 1.0], dtype=F64),
        method="heun",
        rtol=1e-4,
        atol=1e-4,
    )
    (g,) = torch.autograd.grad(sol.ys[:, -1].sum(), [w])
    # d/dw of exp(-w + 0.2 W(1)) is -y(1)
    torch.testing.assert_close(g, -sol.ys[:, -1].sum().detach(), rtol=2e-2, atol=0)


def test_euler_maruyama_with_multiplicative_noise_is_refused():
    """Measured: adaptive Euler–Maruyama on geometric Brownian motion stays about 0.1 from
    the exact path whatever the tolerance (fixed steps converge), so it is refused."""
    sde, y0, t, _ = gbm_case("ito", batch=2)
    with pytest.raises(ValueError, match=r"strong order 0.5 for diagonal noise.*Pass dt"):
        solvers.solve(sde, y0, t, method="euler_maruyama", rtol=1e-3, atol=1e-3)
    assert solvers.solve(sde, y0, t, method="euler_maruyama", dt=0.01).success
