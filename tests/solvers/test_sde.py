"""SDE solves: strong order against exact solutions on the same Brownian path, the
method/problem compatibility errors, and gradients under every adjoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import solvers
from solvers import SDE, BrownianPath

F64 = torch.float64
MU, SIGMA = 0.5, 0.8  # geometric Brownian motion dX = μX dt + σX dW
THETA, S_OU = 1.5, 0.7  # Ornstein–Uhlenbeck dX = −θX dt + s dW
BATCH = 600
DEPTH = 10  # the path is exactly Brownian on the 2⁻¹⁰ grid, which holds every step below
DTS = [2.0**-k for k in range(3, 8)]


def path(batch=BATCH, m=1, seed=0):
    return BrownianPath(0.0, 1.0, (batch, m), seed=seed, dtype=F64, depth=DEPTH)


def gbm(sde_type, bm):
    return SDE(lambda t, y: MU * y, lambda t, y: SIGMA * y, sde_type=sde_type, brownian=bm)


def gbm_exact(sde_type, bm):
    drift = MU - (0.5 * SIGMA**2 if sde_type == "ito" else 0.0)
    return torch.exp(drift + SIGMA * bm.evaluate(1.0))


def ou(sde_type, bm):
    return SDE(
        lambda t, y: -THETA * y,
        lambda t, y: torch.full_like(y, S_OU),
        noise="additive",
        sde_type=sde_type,
        brownian=bm,
    )


def ou_exact(bm):
    """X(1) = e^{−θ} + s (W(1) − θ ∫₀¹ e^{−θ(1−u)} W(u) du) (integration by parts); the
    integral is exact for the path, which is linear between points of the 2⁻¹⁰ grid."""
    n = 2**DEPTH
    u = torch.linspace(0.0, 1.0, n + 1, dtype=F64)
    w = bm.values(u[:, None])  # (n+1, batch, 1)
    # ∫ e^{θu} (w_k + (w_{k+1} − w_k)(u − u_k)/h) du over each piece, in closed form
    h = 1.0 / n
    a, b = u[:-1], u[1:]
    ea, eb = torch.exp(THETA * a), torch.exp(THETA * b)
    i0 = (eb - ea) / THETA  # ∫ e^{θu}
    i1 = (eb * (b - a) - i0) / THETA  # ∫ e^{θu} (u − a)
    w0, w1 = w[:-1], w[1:]
    integral = (i0[:, None, None] * w0 + i1[:, None, None] * (w1 - w0) / h).sum(0)
    return math.exp(-THETA) + S_OU * (w[-1] - THETA * math.exp(-THETA) * integral)


def slope(method, problem, exact):
    y0 = torch.ones(BATCH, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    errors = []
    for dt in DTS:
        y1 = solvers.solve(problem, y0, t, method=method, dt=dt).ys[:, -1]
        errors.append(float((y1 - exact).abs().mean()))
    return np.polyfit(np.log(DTS), np.log(errors), 1)[0]


@pytest.mark.parametrize(
    ("method", "sde_type", "sharp"),
    [
        ("euler_maruyama", "ito", True),
        ("milstein", "ito", True),
        ("heun", "stratonovich", True),
        ("reversible_heun", "stratonovich", False),  # declared 0.5 in general; 1 observed
    ],
)
def test_strong_order_on_geometric_brownian_motion(method, sde_type, sharp):
    bm = path()
    order = solvers.sde_methods()[method].orders["diagonal"]
    measured = slope(method, gbm(sde_type, bm), gbm_exact(sde_type, bm))
    assert measured > order - 0.2
    if sharp:
        assert measured < order + 0.2


@pytest.fixture(scope="module")
def ou_path():
    bm = path(seed=4)
    return bm, ou_exact(bm)


@pytest.mark.parametrize(
    ("method", "sde_type"),
    [
        ("euler_maruyama", "ito"),
        ("milstein", "ito"),
        ("heun", "stratonovich"),
        ("reversible_heun", "stratonovich"),
    ],
)
def test_strong_order_on_ornstein_uhlenbeck(method, sde_type, ou_path):
    bm, exact = ou_path
    order = solvers.sde_methods()[method].orders["additive"]
    assert order == 1.0
    measured = slope(method, ou(sde_type, bm), exact)
    assert abs(measured - order) < 0.2


def test_general_noise_matches_diagonal_when_the_matrix_is_diagonal():
    bm = BrownianPath(0.0, 1.0, (4, 2), seed=5, dtype=F64)
    scale = torch.tensor([0.3, 0.6], dtype=F64)
    diag = SDE(lambda t, y: -y, lambda t, y: scale * y, brownian=bm)
    general = SDE(
        lambda t, y: -y, lambda t, y: torch.diag_embed(scale * y), noise="general", brownian=bm
    )
    y0 = torch.ones(4, 2, dtype=F64)
    t = torch.linspace(0, 1, 5, dtype=F64)
    for method in ("euler_maruyama",):
        a = solvers.solve(diag, y0, t, method=method, dt=0.05).ys
        b = solvers.solve(general, y0, t, method=method, dt=0.05).ys
        torch.testing.assert_close(a, b)


def test_seed_determinism_and_per_sample_grids():
    sde = SDE(lambda t, y: -y, lambda t, y: 0.5 * torch.ones_like(y), seed=3)
    y0 = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    a = solvers.solve(sde, y0, t, method="euler_maruyama", dt=0.1)
    b = solvers.solve(sde, y0, t, method="euler_maruyama", dt=0.1)
    assert torch.equal(a.ys, b.ys)
    assert a.ys.shape == (3, 3, 2)
    assert a.success
    other = SDE(sde.drift, sde.diffusion, seed=4)
    c = solvers.solve(other, y0, t, method="euler_maruyama", dt=0.1)
    assert not torch.allclose(a.ys[:, -1], c.ys[:, -1])
    # the same grid given per sample takes the same steps on the same path
    d = solvers.solve(sde, y0, t.expand(3, -1), method="euler_maruyama", dt=0.1)
    torch.testing.assert_close(d.ys, a.ys, rtol=0, atol=1e-14)


def test_per_sample_times_of_different_lengths():
    bm = BrownianPath(0.0, 2.0, (2, 1), seed=0, dtype=F64)
    sde = SDE(lambda t, y: -y, lambda t, y: 0.2 * y, brownian=bm, sde_type="stratonovich")
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([[0.0, 0.5, 1.0], [0.0, 1.0, 2.0]], dtype=F64)
    sol = solvers.solve(sde, y0, t, method="heun", dt=0.1)
    assert sol.ys.shape == (2, 3, 1)
    assert sol.stats.num_accepted_steps.tolist() == [10, 20]


# ---------------------------------------------------------------------------------------------
# Errors


def test_method_problem_mismatch_names_both():
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    strat_general = SDE(
        lambda t, y: y,
        lambda t, y: y[:, :, None],
        noise="general",
        sde_type="stratonovich",
    )
    with pytest.raises(
        ValueError,
        match="method 'milstein' handles ito SDEs with diagonal or additive noise; got a "
        "stratonovich SDE with general noise",
    ):
        solvers.solve(strat_general, y0, t, method="milstein", dt=0.1)
    ito = SDE(lambda t, y: y, lambda t, y: y)
    with pytest.raises(ValueError, match=r"'heun' handles stratonovich SDEs .* got an ito SDE"):
        solvers.solve(ito, y0, t, method="heun", dt=0.1)
    with pytest.raises(ValueError, match="'reversible_heun' handles stratonovich"):
        solvers.solve(ito, y0, t, method="reversible_heun", dt=0.1)
    strat = SDE(lambda t, y: y, lambda t, y: y, sde_type="stratonovich")
    with pytest.raises(ValueError, match="'euler_maruyama' handles ito SDEs"):
        solvers.solve(strat, y0, t, method="euler_maruyama", dt=0.1)


def test_unknown_method_lists_the_sde_methods():
    sde = SDE(lambda t, y: y, lambda t, y: y)
    y0 = torch.ones(2, 1, dtype=F64)
    with pytest.raises(ValueError, match="valid SDE methods are: euler_maruyama, milstein"):
        solvers.solve(sde, y0, torch.tensor([0.0, 1.0], dtype=F64), method="dopri5")


def test_ode_method_object_rejects_an_sde():
    sde = SDE(lambda t, y: y, lambda t, y: y)
    y0 = torch.ones(2, 1, dtype=F64)
    with pytest.raises(ValueError, match="does not accept a SDE problem"):
        solvers.solve(sde, y0, torch.tensor([0.0, 1.0]), method=solvers.methods()["rk4"], dt=0.1)


@pytest.mark.parametrize(
    ("noise", "diffusion", "match"),
    [
        ("diagonal", lambda t, y: y[:, :1], r"expected \(2, 3\)"),
        ("general", lambda t, y: y, r"expected \(batch, d, m\)"),
        ("additive", lambda t, y: y[:, None], r"got \(2, 1, 3\)|returned shape \(2, 1, 3\)"),
    ],
)
def test_diffusion_shape_errors(noise, diffusion, match):
    sde = SDE(lambda t, y: y, diffusion, noise=noise)
    with pytest.raises(ValueError, match=match):
        solvers.solve(
            sde, torch.ones(2, 3), torch.tensor([0.0, 1.0]), method="euler_maruyama", dt=0.1
        )


def test_drift_and_state_shape_errors():
    sde = SDE(lambda t, y: y[:, :1], lambda t, y: y)
    with pytest.raises(ValueError, match=r"drift at t0 returned shape \(2, 1\); expected \(2, 3\)"):
        solvers.solve(
            sde, torch.ones(2, 3), torch.tensor([0.0, 1.0]), method="euler_maruyama", dt=0.1
        )
    ok = SDE(lambda t, y: y, lambda t, y: y)
    with pytest.raises(ValueError, match=r"y0 must have shape \(batch, d\)"):
        solvers.solve(
            ok, torch.ones(2, 3, 1), torch.tensor([0.0, 1.0]), method="euler_maruyama", dt=0.1
        )


def test_constructor_errors():
    f = lambda t, y: y  # noqa: E731
    with pytest.raises(ValueError, match="unknown noise 'scalar'; valid: diagonal"):
        SDE(f, f, noise="scalar")
    with pytest.raises(ValueError, match="unknown sde_type 'itô'; valid: ito, stratonovich"):
        SDE(f, f, sde_type="itô")
    with pytest.raises(TypeError, match="drift must be callable"):
        SDE(None, f)
    with pytest.raises(TypeError, match="brownian must be a BrownianPath"):
        SDE(f, f, brownian=object())
    with pytest.raises(TypeError, match="seed must be an integer"):
        SDE(f, f, seed="0")


def test_brownian_path_must_fit_the_solve():
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    f = lambda t, y: y  # noqa: E731
    short = SDE(f, f, brownian=BrownianPath(0.0, 0.5, (2, 1), dtype=F64))
    with pytest.raises(ValueError, match=r"covers \[0.0, 0.5\] but the output times span"):
        solvers.solve(short, y0, t, method="euler_maruyama", dt=0.1)
    wrong = SDE(f, f, brownian=BrownianPath(0.0, 1.0, (3, 1), dtype=F64))
    with pytest.raises(ValueError, match=r"shape \(3, 1\); expected \(batch, m\) = \(2, 1\)"):
        solvers.solve(wrong, y0, t, method="euler_maruyama", dt=0.1)


def test_backsolve_errors():
    y0 = torch.ones(2, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    f = lambda t, y: y  # noqa: E731
    with pytest.raises(ValueError, match="handles stratonovich SDEs; got an ito SDE"):
        solvers.solve(SDE(f, f), y0, t, method="euler_maruyama", dt=0.1, adjoint="backsolve")
    strat = SDE(f, f, sde_type="stratonovich")
    with pytest.raises(ValueError, match="no gradients with respect to t"):
        solvers.solve(strat, y0, t.requires_grad_(), method="heun", dt=0.1, adjoint="backsolve")
    with pytest.raises(ValueError, match="dt do not apply to an SDE"):
        solvers.solve(
            strat,
            y0,
            t.detach(),
            method="heun",
            dt=0.1,
            adjoint=solvers.BacksolveAdjoint(dt=0.01),
        )


# ---------------------------------------------------------------------------------------------
# Gradients


class Drift(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2, dtype=F64)

    def forward(self, t, y):
        return torch.tanh(self.lin(y)) * torch.cos(t)[:, None]


class Diffusion(nn.Module):
    """Diagonal: channel i depends on y_i only."""

    def __init__(self, general=False):
        super().__init__()
        self.general = general
        self.a = nn.Parameter(torch.tensor([0.3, 0.2], dtype=F64))
        self.b = nn.Parameter(torch.tensor([0.1, -0.2], dtype=F64))
        self.mix = nn.Parameter(torch.tensor([[0.2, 0.1, 0.0], [0.0, 0.1, 0.3]], dtype=F64))

    def forward(self, t, y):
        g = self.a * torch.sin(y) + self.b
        if self.general:
            return g[:, :, None] * self.mix
        return g


def gradients(method, sde_type, adjoint, dt=0.05, noise="diagonal", seed=0):
    torch.manual_seed(seed)
    drift, diffusion = Drift(), Diffusion(general=noise == "general")
    m = 3 if noise == "general" else 2
    bm = BrownianPath(0.0, 1.0, (4, m), seed=9, dtype=F64)
    sde = SDE(drift, diffusion, noise=noise, sde_type=sde_type, brownian=bm)
    y0 = torch.tensor([[0.5, -0.3], [0.1, 0.2], [1.0, 0.0], [-0.4, 0.8]], dtype=F64)
    y0.requires_grad_(True)
    t = torch.tensor([0.0, 0.35, 1.0], dtype=F64)
    ys = solvers.solve(sde, y0, t, method=method, dt=dt, adjoint=adjoint).ys
    loss = (ys**2).sum() + ys[:, 1].sum()
    params = [y0, *drift.parameters(), *diffusion.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return ys.detach(), [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


@pytest.mark.parametrize(
    ("method", "sde_type"),
    [
        ("euler_maruyama", "ito"),
        ("milstein", "ito"),
        ("heun", "stratonovich"),
        ("reversible_heun", "stratonovich"),
    ],
)
def test_checkpoint_equals_direct(method, sde_type):
    ys_d, g_d = gradients(method, sde_type, "direct")
    for adjoint in ("checkpoint", solvers.CheckpointAdjoint(every=3)):
        ys_c, g_c = gradients(method, sde_type, adjoint)
        torch.testing.assert_close(ys_c, ys_d, rtol=0, atol=0)
        for a, b in zip(g_c, g_d):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("noise", ["diagonal", "general"])
def test_reversible_heun_adjoint_is_exact(noise):
    ys_d, g_d = gradients("reversible_heun", "stratonovich", "direct", noise=noise)
    ys_b, g_b = gradients("reversible_heun", "stratonovich", "backsolve", noise=noise)
    torch.testing.assert_close(ys_b, ys_d, rtol=0, atol=0)
    for a, b in zip(g_b, g_d):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_stochastic_adjoint_approaches_direct():
    """The continuous adjoint on the same path: its gap to the discrete gradient shrinks
    with the step (first order for this diagonal-noise problem)."""
    gaps = []
    for dt in (0.02, 0.005):
        _, g_d = gradients("heun", "stratonovich", "direct", dt=dt)
        _, g_b = gradients("heun", "stratonovich", "backsolve", dt=dt)
        gaps.append(
            max(
                float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                for a, b in zip(g_b, g_d)
            )
        )
    assert gaps[1] < 1e-3
    assert gaps[1] < gaps[0] / 2


def test_gradients_match_finite_differences():
    drift, diffusion = Drift(), Diffusion()
    bm = BrownianPath(0.0, 1.0, (2, 2), seed=1, dtype=F64)
    sde = SDE(drift, diffusion, sde_type="stratonovich", brownian=bm)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)

    def run(y0):
        return solvers.solve(sde, y0, t, method="heun", dt=0.1).ys

    y0 = torch.tensor([[0.5, -0.3], [0.1, 0.2]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0,))


@pytest.mark.parametrize("method", ["euler_maruyama", "milstein", "heun", "reversible_heun"])
@pytest.mark.parametrize("checkpoint_every", [None, 4])
def test_step_loop_reads_nothing_back(method, checkpoint_every, monkeypatch):
    """After the schedule is built, neither the steps nor the Brownian queries nor the
    backward pass read a tensor back to the host (DESIGN.md, GPU)."""
    from solvers import _sde
    from solvers._adjoint import Config

    def refuse(*args, **kwargs):
        raise RuntimeError("host read of a tensor inside the solver loop")

    built = _sde.SDESchedule.__init__

    def init_then_forbid(self, *args, **kwargs):
        built(self, *args, **kwargs)
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
            monkeypatch.setattr(torch.Tensor, name, refuse)

    monkeypatch.setattr(_sde.SDESchedule, "__init__", init_then_forbid)
    sde_type = "ito" if method in ("euler_maruyama", "milstein") else "stratonovich"
    drift, diffusion = Drift(), Diffusion()
    sde = SDE(drift, diffusion, sde_type=sde_type, seed=1)
    y0 = torch.ones(3, 2, dtype=F64, requires_grad=True)
    t = torch.linspace(0, 1, 4, dtype=F64) + 0.1 * torch.arange(3, dtype=F64)[:, None]
    cfg = Config(solvers.sde_methods()[method], 0.05, 0.0, 1e-6, 10_000)
    out = _sde.integrate_sde(cfg.method, sde, cfg, y0, t, checkpoint_every=checkpoint_every)
    out.outcome.ys[0].pow(2).sum().backward()
    assert y0.grad.shape == y0.shape
