"""Delay differential equations: exact solutions, convergence order, batching, gradients
with respect to the delays, and every error a user can trigger."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial import polynomial as P
from torch import nn
from torch.autograd import gradcheck

import solvers
from solvers import DDE

F64 = torch.float64


def neg_delayed(t, y, yd):
    return -yd[:, 0]


def unit_delay_pieces(n: int, coeffs=(1.0,), history: float = 1.0, y0: float = 1.0):
    """Exact solution of ``y' = -Σ_k coeffs[k] y(t - (k + 1))``, constant history, as one
    polynomial per unit interval ``[k, k + 1]`` (the method of steps in closed form)."""
    pieces = []
    for k in range(n):

        def delayed(lag, k=k):
            j = k - lag
            return np.array([history]) if j < 0 else pieces[j]

        rhs = np.zeros(1)
        for lag, a in enumerate(coeffs, start=1):
            shifted = np.zeros(1)
            for i, c in enumerate(delayed(lag)):  # p(t - lag)
                shifted = P.polyadd(shifted, c * P.polypow([-float(lag), 1.0], i))
            rhs = P.polysub(rhs, a * shifted)
        antider = P.polyint(rhs)
        start = y0 if k == 0 else P.polyval(k, pieces[-1])
        pieces.append(P.polyadd([start - P.polyval(k, antider)], antider))
    return pieces


def evaluate(pieces, t: torch.Tensor) -> torch.Tensor:
    tn = t.numpy()
    k = np.clip(np.ceil(tn) - 1, 0, len(pieces) - 1).astype(int)
    return torch.tensor([P.polyval(a, pieces[j]) for a, j in zip(tn, k)], dtype=F64)


def unit_problem():
    return DDE(neg_delayed, torch.tensor([1.0], dtype=F64), torch.ones(1, dtype=F64))


# ---------------------------------------------------------------------------------------------
# Known solutions


def test_piecewise_polynomials_of_the_method_of_steps():
    """The closed form used below reproduces the brief's polynomials on [0, 3]."""
    t = torch.tensor([0.5, 1.5, 2.5], dtype=F64)
    expected = [1 - 0.5, 1 - 1.5 + 0.5**2 / 2, 1 - 2.5 + 1.5**2 / 2 - 0.5**3 / 6]
    torch.testing.assert_close(evaluate(unit_delay_pieces(3), t), torch.tensor(expected, dtype=F64))


@pytest.mark.parametrize(
    "options", [dict(method="rk4", dt=0.01), dict(method="dopri5", rtol=1e-8, atol=1e-10)]
)
def test_unit_delay_on_three_intervals(options):
    t = torch.linspace(0.0, 3.0, 13, dtype=F64)
    y0 = torch.ones(2, 1, dtype=F64)
    sol = solvers.solve(unit_problem(), y0, t, **options)
    # The solution is a cubic on [2, 3]: with the breakpoints on the grid, both methods are
    # exact up to round-off.
    expected = evaluate(unit_delay_pieces(3), t)
    torch.testing.assert_close(sol.ys[:, :, 0], expected.expand(2, -1), atol=1e-12, rtol=0)


def measured_order(method: str, dts, T_end: float = 6.0) -> tuple[float, list[float]]:
    t = torch.linspace(0.0, T_end, 13, dtype=F64)
    exact = evaluate(unit_delay_pieces(int(T_end)), t)
    errors = []
    for dt in dts:
        ys = solvers.solve(unit_problem(), torch.ones(1, 1, dtype=F64), t, method=method, dt=dt).ys
        errors.append((ys[0, :, 0] - exact).abs().max().item())
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    return slope, errors


# The 3/8 rule: a fourth-order tableau without an interpolant or a continuous extension of
# its own, so its history is the cubic Hermite interpolant.
RK38 = solvers.ButcherTableau(
    name="rk38",
    a=((1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
    b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
    c=(1 / 3, 2 / 3, 1.0),
    order=4,
)


@pytest.mark.parametrize(
    "method, order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4), (RK38, 4)]
)
def test_fixed_step_convergence_order(method, order):
    """y' = -y(t - 1) on [0, 6] (degree-6 polynomial pieces): the fixed-step order is the
    method's (the history of euler, midpoint, heun and rk4 is their natural continuous
    extension, of order 1, 2, 2, 3; that of the 3/8 rule the cubic Hermite interpolant)."""
    slope, errors = measured_order(method, [0.1, 0.05, 0.025])
    assert slope == pytest.approx(order, abs=0.25), errors


def test_adaptive_error_follows_the_tolerance():
    t = torch.linspace(0.0, 6.0, 13, dtype=F64)
    exact = evaluate(unit_delay_pieces(6), t)
    for rtol in (1e-6, 1e-9):
        sol = solvers.solve(
            unit_problem(), torch.ones(1, 1, dtype=F64), t, method="dopri5", rtol=rtol, atol=rtol
        )
        assert (sol.ys[0, :, 0] - exact).abs().max().item() < 20 * rtol


def linear_dde_exact(t, a, b, tau):
    """``y' = a y + b y(t - τ)``, history 1, y0 = 1, on ``[0, 2τ]`` by the method of steps."""
    r = b / a
    first = (1 + r) * np.exp(a * t) - r
    y_tau = (1 + r) * np.exp(a * tau) - r
    s = t - tau
    second = (y_tau - r * r) * np.exp(a * s) + b * (1 + r) * s * np.exp(a * s) + r * r
    return np.where(t <= tau, first, second)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_linear_dde_closed_form(method):
    """A delay that no step size divides: the breakpoint t0 + τ joins the step grid."""
    a, b, tau = -0.5, -1.3, 0.77
    t = torch.linspace(0.0, 2 * tau, 9, dtype=F64)
    prob = DDE(lambda t, y, yd: a * y + b * yd[:, 0], torch.tensor([tau], dtype=F64), 1.0)
    options = dict(dt=0.05) if method == "rk4" else dict(rtol=1e-9, atol=1e-11)
    sol = solvers.solve(prob, torch.ones(1, 1, dtype=F64), t, method=method, **options)
    expected = torch.tensor(linear_dde_exact(t.numpy(), a, b, tau), dtype=F64)
    torch.testing.assert_close(sol.ys[0, :, 0], expected, atol=2e-8, rtol=0)


@pytest.mark.parametrize(
    "options",
    [
        dict(method="rk4", dt=0.05),
        dict(method="rk4", dt=0.3),
        dict(method="dopri5", rtol=1e-9, atol=1e-11),
    ],
)
def test_two_delays(options):
    """y' = -y(t - 1) - y(t - 2)/2 on [0, 5], exact piecewise polynomials; dt=0.3 divides
    neither delay."""
    prob = DDE(
        lambda t, y, yd: -yd[:, 0] - 0.5 * yd[:, 1],
        torch.tensor([1.0, 2.0], dtype=F64),
        torch.ones(1, dtype=F64),
    )
    t = torch.linspace(0.0, 5.0, 11, dtype=F64)
    sol = solvers.solve(prob, torch.ones(1, 1, dtype=F64), t, **options)
    expected = evaluate(unit_delay_pieces(5, coeffs=(1.0, 0.5)), t)
    tol = {0.05: 1e-7, 0.3: 1e-4}.get(options.get("dt"), 1e-8)
    torch.testing.assert_close(sol.ys[0, :, 0], expected, atol=tol, rtol=0)


@pytest.mark.parametrize("options", [dict(method="rk4", dt=0.02), dict(method="dopri5")])
def test_callable_history(options):
    """History cos(t): y = 1 - sin(t - 1) - sin 1 on [0, 1], then the next piece."""
    prob = DDE(neg_delayed, torch.tensor([1.0], dtype=F64), lambda t: torch.cos(t)[:, None])
    t = torch.linspace(0.0, 2.0, 9, dtype=F64)
    sol = solvers.solve(prob, torch.ones(3, 1, dtype=F64), t, rtol=1e-9, atol=1e-11, **options)
    tn = t.numpy()
    s1 = math.sin(1.0)
    expected = np.where(
        tn <= 1,
        1 - np.sin(tn - 1) - s1,
        1 - s1 + (tn - 1) * (s1 - 1) - np.cos(tn - 2) + math.cos(1.0),
    )
    torch.testing.assert_close(
        sol.ys[:, :, 0], torch.tensor(expected, dtype=F64).expand(3, -1), atol=1e-8, rtol=0
    )


@pytest.mark.parametrize(
    "options",
    [
        dict(method="rk4", dt=0.1),
        dict(method="dopri5"),
        # first-same-as-last tableaus with fixed steps: the last stage of the step that ends
        # on t0 + τ is taken again from the left for the history's interpolant
        dict(method="dopri5", dt=0.1),
        dict(method="tsit5", dt=0.1),
        dict(method="bosh3", dt=0.1),
    ],
)
def test_history_that_does_not_end_at_y0(options):
    """History 0 and y0 = 1: the solution jumps at t0, its slope at t0 + τ. Exact pieces:
    1, 2 - t, 4 - 3t + t²/2."""
    prob = DDE(neg_delayed, torch.tensor([1.0], dtype=F64), torch.zeros(1, dtype=F64))
    t = torch.linspace(0.0, 3.0, 13, dtype=F64)
    sol = solvers.solve(prob, torch.ones(1, 1, dtype=F64), t, rtol=1e-9, atol=1e-11, **options)
    tn = t.numpy()
    expected = np.where(tn <= 1, 1.0, np.where(tn <= 2, 2 - tn, 4 - 3 * tn + tn**2 / 2))
    torch.testing.assert_close(
        sol.ys[0, :, 0], torch.tensor(expected, dtype=F64), atol=1e-10, rtol=0
    )


@pytest.mark.parametrize("options", [dict(method="dopri5"), dict(method="dopri5", dt=0.25)])
def test_a_solve_that_ends_on_t0_plus_tau(options):
    """The last step ends on t0 + τ, where the delayed value jumps (history 0, y0 = 1): its
    stages there read the history (the left limit), so y stays 1."""
    prob = DDE(neg_delayed, torch.tensor([1.0], dtype=F64), torch.zeros(1, dtype=F64))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    sol = solvers.solve(prob, torch.ones(1, 1, dtype=F64), t, **options)
    torch.testing.assert_close(sol.ys[0, :, 0], torch.ones(3, dtype=F64), atol=1e-12, rtol=0)


def test_steps_longer_than_the_delay_are_clamped():
    """dt = 0.5 with τ = 0.3: steps are cut to the delay, and the solution stays accurate."""
    a, b, tau = -0.5, -1.3, 0.3
    prob = DDE(lambda t, y, yd: a * y + b * yd[:, 0], torch.tensor([tau], dtype=F64), 1.0)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    sol = solvers.solve(prob, torch.ones(1, 1, dtype=F64), t, method="rk4", dt=0.5)
    assert int(sol.stats.num_accepted_steps[0]) >= 2
    expected = linear_dde_exact(np.array([0.5]), a, b, tau)[0]
    assert abs(sol.ys[0, -1, 0].item() - expected) < 1e-5


# ---------------------------------------------------------------------------------------------
# Batching


def batch_problem():
    w = torch.tensor([[0.3, -0.8], [0.6, 0.2]], dtype=F64)

    def f(t, y, yd):
        return -0.4 * y + torch.tanh(yd[:, 0] @ w.T) - 0.3 * yd[:, 1] * torch.cos(t)

    def history(t):
        return torch.stack([torch.cos(t), torch.sin(2 * t)], dim=-1)

    return DDE(f, torch.tensor([0.73, 0.41], dtype=F64), history)


@pytest.mark.parametrize(
    "options", [dict(method="rk4", dt=0.05), dict(method="dopri5", rtol=1e-8, atol=1e-10)]
)
def test_per_sample_grids_equal_per_sample_solves(options):
    prob = batch_problem()
    y0 = torch.tensor([[1.0, 0.0], [0.5, -0.2], [-0.3, 0.8]], dtype=F64)
    t = torch.tensor([[0.0, 0.4, 1.3, 2.5], [0.1, 0.7, 1.1, 2.2], [-0.5, 0.2, 0.9, 1.7]], dtype=F64)
    batched = solvers.solve(prob, y0, t, **options).ys
    for i in range(3):
        alone = solvers.solve(prob, y0[i : i + 1], t[i], **options).ys
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-12, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Gradients


class DelayField(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[0.3, -0.8], [0.6, 0.2]], dtype=F64))

    def forward(self, t, y, yd):
        return -0.4 * y + torch.tanh(yd[:, 0] @ self.w.T) - 0.3 * yd[:, 1]


SETTINGS = {
    "rk4": dict(method="rk4", dt=0.05),
    "dopri5": dict(method="dopri5", rtol=1e-10, atol=1e-12),
}


def delay_loss(tau, method, adjoint="direct", grid="shared", field=None):
    field = field or DelayField()
    history = lambda t: torch.stack([torch.cos(t), torch.sin(2 * t)], dim=-1)  # noqa: E731
    y0 = torch.tensor([[1.0, 0.0], [0.5, -0.2]], dtype=F64)  # the second jumps at t0
    if grid == "shared":
        t = torch.tensor([0.0, 0.4, 1.3, 2.5], dtype=F64)
    else:
        t = torch.tensor([[0.0, 0.4, 1.3, 2.5], [0.1, 0.7, 1.1, 2.2]], dtype=F64)
    ys = solvers.solve(DDE(field, tau, history), y0, t, adjoint=adjoint, **SETTINGS[method]).ys
    return (ys**2).sum() + ys.sum()


@pytest.mark.parametrize("grid", ["shared", "per_sample"])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_delay_gradient_against_central_differences(method, grid):
    tau = nn.Parameter(torch.tensor([0.73, 0.41], dtype=F64))
    (grad,) = torch.autograd.grad(delay_loss(tau, method, grid=grid), tau)
    eps = 1e-6
    fd = []
    with torch.no_grad():
        for i in range(2):
            e = torch.zeros(2, dtype=F64)
            e[i] = eps
            fd.append(
                (delay_loss(tau + e, method, grid=grid) - delay_loss(tau - e, method, grid=grid))
                / (2 * eps)
            )
    torch.testing.assert_close(grad, torch.stack(fd), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("grid", ["shared", "per_sample"])
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_checkpoint_gradients_equal_direct(method, grid):
    grads = {}
    for adjoint in ("direct", solvers.CheckpointAdjoint(every=3)):
        field = DelayField()
        tau = nn.Parameter(torch.tensor([0.73, 0.41], dtype=F64))
        loss = delay_loss(tau, method, adjoint, grid, field)
        grads[str(adjoint)] = torch.autograd.grad(loss, (tau, field.w))
    direct, ckpt = grads.values()
    for a, b in zip(ckpt, direct):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_gradcheck_y0_times_delays_and_history():
    """Fixed steps: the solution is a smooth function of y0, the output times, the delays and
    a constant history (away from changes of the step count)."""

    def fn(y0, t, tau, hist):
        prob = DDE(lambda t, y, yd: -0.5 * y + torch.sin(yd[:, 0]) - 0.2 * yd[:, 1], tau, hist)
        return solvers.solve(prob, y0, t, method="rk4", dt=0.1).ys

    y0 = torch.tensor([[0.7], [-0.2]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.37, 0.95, 1.62], dtype=F64, requires_grad=True)
    tau = torch.tensor([0.53, 0.29], dtype=F64, requires_grad=True)
    hist = torch.tensor([0.4], dtype=F64, requires_grad=True)
    assert gradcheck(fn, (y0, t, tau, hist), eps=1e-6, atol=1e-7, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The one loop


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_fixed_step_loop_reads_nothing_back(method, per_sample, request, monkeypatch):
    """The steps and every look-up of a fixed-step DDE solve are planned before the loop
    (DelayTerm.begin): the loop and its backward pass read nothing back to the host."""
    from solvers._adjoint import Config
    from solvers._controller import ConstantStepSize
    from solvers._integrate import integrate

    field = DelayField()
    tau = nn.Parameter(torch.tensor([0.73, 0.41], dtype=F64))
    history = lambda t: torch.stack([torch.cos(t), torch.sin(2 * t)], dim=-1)  # noqa: E731
    problem = DDE(field, tau, history)
    y0 = torch.tensor([[1.0, 0.0], [0.5, -0.2]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.3, 2.5], dtype=F64)
    lanes_t = t + torch.tensor([[0.0], [0.1]], dtype=F64) if per_sample else t[None]
    stepper = solvers.methods()[method]
    cfg = Config(stepper, ConstantStepSize(0.05), 1e-5, 1e-6, 10_000)
    f0 = problem.check(lanes_t[:, 0].expand(2), y0)
    terms, sched, jumps = problem.terms().begin(cfg, y0, lanes_t)  # host reads happen here
    assert jumps is None and sched is not None
    request.getfixturevalue("forbid_host_reads")

    def refuse(*args, **kwargs):
        raise RuntimeError("host read of a tensor's value inside the solver loop")

    monkeypatch.setattr(torch.Tensor, "numpy", refuse)
    out = integrate(stepper, terms, (y0,), lanes_t, cfg.controller, f0=(f0,), schedule=sched)
    ys = out.ys[0]
    assert ys.shape == (2, 4, 2)
    ys.pow(2).sum().backward()
    assert tau.grad is not None and y0.grad is not None
    monkeypatch.undo()
    expected = solvers.solve(
        problem, y0.detach(), lanes_t if per_sample else t, method=method, dt=0.05
    )
    torch.testing.assert_close(ys.detach(), expected.ys, atol=1e-14, rtol=0)


def test_adaptive_steps_are_clamped_to_the_smallest_delay():
    """With a loose tolerance the controller would take long steps; none is longer than τ."""
    prob = DDE(lambda t, y, yd: -0.1 * yd[:, 0], torch.tensor([0.2], dtype=F64), 1.0)
    t = torch.tensor([0.0, 4.0], dtype=F64)
    sol = solvers.solve(prob, torch.ones(1, 1, dtype=F64), t, method="dopri5", rtol=1e-2, atol=1e-2)
    assert int(sol.stats.num_accepted_steps[0]) >= 20


def test_the_problem_term_needs_a_solve():
    with pytest.raises(TypeError, match="not bound to one"):
        unit_problem().terms().derivative(torch.zeros(1), (torch.ones(1, 1),))


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_non_positive_delay(bad):
    with pytest.raises(ValueError, match=rf"delays\[1\] = {bad}"):
        DDE(neg_delayed, torch.tensor([1.0, bad]), 1.0)


def test_delays_must_be_one_dimensional():
    with pytest.raises(ValueError, match=r"1-D tensor of K delays, got shape \(1, 2\)"):
        DDE(neg_delayed, torch.ones(1, 2), 1.0)


def test_wrong_output_shape():
    prob = DDE(lambda t, y, yd: yd, torch.tensor([1.0], dtype=F64), 1.0)
    with pytest.raises(ValueError, match=r"expected \(2, 3\), the shape of y0.*\(2, 1, 3\)"):
        solvers.solve(prob, torch.ones(2, 3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))


def test_history_of_the_wrong_shape():
    prob = DDE(neg_delayed, torch.tensor([1.0], dtype=F64), lambda t: torch.ones(len(t), 5))
    with pytest.raises(ValueError, match=r"history\(t\).*expected \(2, 3\), got \(2, 5\)"):
        solvers.solve(prob, torch.ones(2, 3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
    prob = DDE(neg_delayed, torch.tensor([1.0], dtype=F64), torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match=r"broadcastable to \(2, 3\), got \(4,\)"):
        solvers.solve(prob, torch.ones(2, 3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))


def test_backsolve_adjoint_is_rejected():
    with pytest.raises(ValueError, match="'direct' or 'checkpoint'"):
        solvers.solve(
            unit_problem(),
            torch.ones(1, 1, dtype=F64),
            torch.tensor([0.0, 1.0], dtype=F64),
            adjoint="backsolve",
        )


def test_f_must_be_callable():
    with pytest.raises(TypeError, match="f must be callable"):
        DDE(3, torch.tensor([1.0]), 1.0)
