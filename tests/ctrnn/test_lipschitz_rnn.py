"""The Lipschitz RNN (Erichson et al., ICLR 2021): structure, the paper's cell, convergence of
its discretizations to the continuous solve, gradients under every adjoint."""

import math

import numpy as np
import pytest
import torch

import solvers
from ctrnn.models import RungeKuttaCell, create
from ctrnn.models.lipschitz import LipschitzRNN, lipschitz_matrix

D = torch.float64


def _model(n=4, c=3, **kw):
    torch.manual_seed(0)
    kw.setdefault("init_std", 2.0 * n)  # entries of order 1: dynamics with some curvature
    return LipschitzRNN(c, n, dtype=D, **kw)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_lipschitz_matrix_parts(beta):
    M = torch.randn(5, 5, dtype=D)
    A = lipschitz_matrix(M, beta, 0.1)
    sym, skew = (A + A.T) / 2, (A - A.T) / 2
    torch.testing.assert_close(sym, (1 - beta) * (M + M.T) - 0.1 * torch.eye(5, dtype=D))
    torch.testing.assert_close(skew, beta * (M - M.T))


def test_matrices_use_their_own_beta_gamma():
    m = _model(beta_A=0.2, gamma_A=0.5, beta_W=0.9, gamma_W=0.01)
    A, W = m.dynamics.matrices()
    torch.testing.assert_close(A, lipschitz_matrix(m.dynamics.M_A, 0.2, 0.5))
    torch.testing.assert_close(W, lipschitz_matrix(m.dynamics.M_W, 0.9, 0.01))


def test_euler_cell_is_the_papers_formula():
    m = _model()
    eps = 0.03
    cell = m.discretize("euler", eps)
    assert isinstance(cell, RungeKuttaCell)
    x, h = torch.randn(6, 3, dtype=D), torch.randn(6, 4, dtype=D)
    dyn = m.dynamics
    A, W = dyn.matrices()
    U, b = dyn.U.weight, dyn.U.bias
    expected = h + eps * (h @ A.T + torch.tanh(h @ W.T + x @ U.T + b))
    torch.testing.assert_close(cell(x, h), expected, rtol=0, atol=1e-14)


def _order(scheme, steps):
    m = _model()
    x = torch.randn(2, 1, 3, dtype=D).expand(2, 2, 3)  # one input held over [0, T]
    h0 = torch.randn(2, 4, dtype=D)
    T = 1.0
    ref = m.solve(x, torch.tensor([0.0, T], dtype=D), h0, method="dopri5", rtol=1e-12, atol=1e-12)[
        :, -1
    ]
    errors = []
    for n in steps:
        cell = m.discretize(scheme, T / n)
        h = h0
        for _ in range(n):
            h = cell(x[:, 0], h)
        errors.append((h - ref).abs().max().item())
    return np.polyfit(np.log([T / n for n in steps]), np.log(errors), 1)[0]


@pytest.mark.parametrize(
    "scheme, order, steps",
    [("euler", 1, [16, 32, 64, 128]), ("midpoint", 2, [8, 16, 32, 64]), ("rk4", 4, [4, 8, 16, 32])],
)
def test_discretization_converges_at_its_order(scheme, order, steps):
    measured = _order(scheme, steps)
    assert abs(measured - order) < 0.25, measured


def test_continuous_euler_equals_discrete_euler_with_matching_dt():
    torch.manual_seed(1)
    dt = 0.1
    kw = dict(input_size=3, hidden_size=4, dt=dt, dtype=D, init_std=8.0)
    torch.manual_seed(1)
    disc = create("lipschitz_rnn", mode="discrete", scheme="rk4", **kw)
    torch.manual_seed(1)
    cont = create("lipschitz_rnn", mode="continuous", solver=dict(method="rk4", dt=dt), **kw)
    x = torch.randn(2, 9, 3, dtype=D)
    times = dt * torch.arange(9, dtype=D)
    out_d, hn_d = disc(x)
    out_c, hn_c = cont(x, times)
    torch.testing.assert_close(out_c, out_d, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hn_c, hn_d, rtol=1e-10, atol=1e-12)


def test_unbatched_equals_batched():
    cell = _model().discretize("rk4", 0.1)
    x, h = torch.randn(3, 3, dtype=D), torch.randn(3, 4, dtype=D)
    batched = cell(x, h)
    for i in range(3):
        torch.testing.assert_close(cell(x[i], h[i]), batched[i])


def _grads(seq, x, times=None):
    seq.zero_grad()
    out, hn = seq(x, times)
    (out.square().sum() + seq.head(hn).sum()).backward()
    return {n: p.grad.clone() for n, p in seq.named_parameters()}


def test_gradients_reach_every_parameter_discrete():
    seq = create("lipschitz_rnn", input_size=3, hidden_size=4, num_classes=2, dtype=D)
    grads = _grads(seq, torch.randn(2, 5, 3, dtype=D))
    assert {"model.dynamics.M_A", "model.dynamics.M_W", "model.dynamics.U.weight"} <= set(grads)
    assert all(g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("adjoint, tol", [("checkpoint", 1e-12), ("backsolve", 1e-6)])
def test_adjoints_match_direct(adjoint, tol):
    # backsolve is the continuous adjoint: it approaches the direct gradient as dt shrinks
    # (relative 1e-2 at dt = 0.05 with inputs that jump at the observations, 2e-8 at 0.01)
    x = torch.randn(2, 4, 3, dtype=D)
    times = torch.linspace(0, 0.6, 4, dtype=D)

    def build(adj):
        torch.manual_seed(3)
        return create(
            "lipschitz_rnn",
            input_size=3,
            hidden_size=4,
            num_classes=2,
            mode="continuous",
            solver=dict(method="rk4", dt=0.01, adjoint=adj),
            init_std=8.0,
            dtype=D,
        )

    direct = _grads(build("direct"), x, times)
    other = _grads(build(adjoint), x, times)
    assert all(g.abs().sum() > 0 for g in direct.values())
    a = torch.cat([g.flatten() for g in direct.values()])
    b = torch.cat([other[n].flatten() for n in direct])
    assert (a - b).norm() / a.norm() < tol


def test_gradcheck_of_the_cell():
    m = _model(n=3, c=2)
    cell = m.discretize("rk4", 0.2)
    x = torch.randn(2, 2, dtype=D, requires_grad=True)
    h = torch.randn(2, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(cell, (x, h))


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(beta_A=1.5), "beta_A must be a number in \\[0, 1\\]"),
        (dict(beta_W=-0.1), "beta_W must be a number in \\[0, 1\\]"),
        (dict(gamma_A=-1.0), "gamma_A must be a number >= 0"),
        (dict(gamma_W=math.nan), "gamma_W must be a number >= 0"),
        (dict(init_std=-1.0), "init_std must be a number >= 0"),
        (dict(scheme="euler_maruyama"), "unknown scheme 'euler_maruyama'; this model accepts"),
        (dict(sigma_add=0.1), "model 'lipschitz_rnn'.*sigma_add"),
    ],
)
def test_errors(options, match):
    with pytest.raises(ValueError, match=match):
        create("lipschitz_rnn", input_size=2, hidden_size=3, **options)


def test_unknown_solver_method_comes_through():
    seq = create(
        "lipschitz_rnn",
        input_size=2,
        hidden_size=3,
        mode="continuous",
        solver=dict(method="euler_maruyama", dt=0.1),
    )
    with pytest.raises(ValueError, match="euler_maruyama"):
        seq(torch.randn(1, 3, 2))


def test_methods_listed_are_accepted():
    m = _model()
    for scheme in m.schemes():
        assert m.discretize(scheme, 0.1)(torch.randn(3, dtype=D)).shape == (4,)
    assert {"euler", "midpoint", "heun", "rk4"} <= set(m.schemes())
    assert solvers.methods()["rk4"].order == 4


@pytest.mark.gpu
def test_trains_on_cuda():
    torch.manual_seed(0)
    seq = create("lipschitz_rnn", input_size=3, hidden_size=16, num_classes=2, device="cuda")
    opt = torch.optim.Adam(seq.parameters(), lr=1e-2)
    x = torch.randn(8, 20, 3, device="cuda")
    y = (x[:, :, 0].sum(1) > 0).long()
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(seq.classify(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_adaptive_solves_step_onto_the_observation_times():
    """The input is held from one observation to the next, so the field jumps at every
    observation time; ``solve`` gives those times to the solver as jump times, and a tight
    adaptive solve agrees with fixed RK4 steps (which land on them by construction)."""
    m = _model()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 3, generator=g, dtype=D)
    times = (0.2 + 0.5 * torch.rand(6, generator=g, dtype=D)).cumsum(0)
    h0 = torch.randn(2, 4, generator=g, dtype=D)
    tight = m.solve(x, times, h0, method="dopri5", rtol=1e-11, atol=1e-11)
    fine = m.solve(x, times, h0, method="rk4", dt=2e-3)
    torch.testing.assert_close(tight, fine, rtol=0, atol=1e-9)
