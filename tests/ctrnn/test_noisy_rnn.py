"""The noise-injected RNN (Lim et al., NeurIPS 2021): the Euler–Maruyama cell against the
solvers' step and solve, noise only in training, the authors' code variant, gradients."""

import pytest
import torch

import solvers
from ctrnn.models import create, hold_inputs
from ctrnn.models.lipschitz import LipschitzRNN
from ctrnn.models.noisy import NoisyRNN, NoisyRNNCell, NoisyRNNCodeCell

D = torch.float64


def _model(**kw):
    torch.manual_seed(0)
    kw.setdefault("init_std", 8.0)
    kw.setdefault("sigma_add", 0.3)
    kw.setdefault("sigma_mult", 0.5)
    return NoisyRNN(3, 4, dtype=D, **kw)


def test_zero_noise_step_is_the_lipschitz_euler_step():
    m = _model(sigma_add=0.0, sigma_mult=0.0).train()
    lip = LipschitzRNN(3, 4, dtype=D)
    lip.load_state_dict(m.state_dict(), strict=False)
    lip.dynamics.load_state_dict(m.dynamics.state_dict())
    x, h = torch.randn(5, 3, dtype=D), torch.randn(5, 4, dtype=D)
    em = m.discretize("euler_maruyama", 0.03)
    assert isinstance(em, NoisyRNNCell)
    torch.testing.assert_close(em(x, h), lip.discretize("euler", 0.03)(x, h), rtol=0, atol=0)


def test_eval_mode_is_the_drift_step_and_deterministic():
    m = _model()
    cell = m.discretize("euler_maruyama", 0.1)
    x, h = torch.randn(5, 3, dtype=D), torch.randn(5, 4, dtype=D)
    m.train()
    assert not torch.equal(cell(x, h), cell(x, h))
    m.eval()
    torch.testing.assert_close(cell(x, h), m.discretize("euler", 0.1)(x, h), rtol=0, atol=0)
    assert torch.equal(cell(x, h), cell(x, h))


def test_em_cell_equals_one_solvers_euler_maruyama_step():
    m = _model().train()
    x, h = torch.randn(5, 3, dtype=D), torch.randn(5, 4, dtype=D)
    dw = torch.randn(5, 4, dtype=D) * 0.1**0.5
    problem = m.problem(lambda t: x)
    em = solvers.sde_methods()["euler_maruyama"]
    t = torch.zeros(5, dtype=D)
    h_step = torch.full((5, 1), 0.1, dtype=D)
    expected, _ = em.sde_step(problem.terms(), t, h_step, h, None, dw)
    got = m.discretize("euler_maruyama", 0.1).step_with_increment(x, h, dw)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)


def test_iterated_cell_equals_the_continuous_solve_on_a_shared_path():
    m = _model().train()
    B, T, dt, per = 3, 4, 0.05, 4  # four steps per observation interval
    x = torch.randn(B, T, 3, dtype=D)
    times = dt * per * torch.arange(T, dtype=D)
    bm = solvers.BrownianPath(0.0, float(times[-1]), (B, 4), seed=5, dtype=D)
    h0 = torch.randn(B, 4, dtype=D)
    problem = m.problem(hold_inputs(x, times.expand(B, T)), brownian=bm)
    sol = solvers.solve(problem, h0, times, method="euler_maruyama", dt=dt).ys
    cell = m.discretize("euler_maruyama", dt)
    h, states = h0, [h0]
    for i in range(T - 1):
        for k in range(per):
            t0 = float(times[i]) + k * dt
            h = cell.step_with_increment(x[:, i], h, bm.increment(t0, t0 + dt))
        states.append(h)
    torch.testing.assert_close(torch.stack(states, 1), sol, rtol=1e-10, atol=1e-12)


def test_stratonovich_form_is_the_same_process():
    # Itô Euler–Maruyama and the Stratonovich Heun solve of the converted SDE approach the
    # same path as dt shrinks (strong convergence on a shared Brownian path)
    B = 16
    x = torch.randn(B, 2, 3, dtype=D)[:, :1].expand(B, 2, 3)
    times = torch.tensor([0.0, 1.0], dtype=D)
    bm = solvers.BrownianPath(0.0, 1.0, (B, 4), seed=2, dtype=D)
    h0 = torch.zeros(B, 4, dtype=D)

    def end(sde_type, method, dt):
        m = _model(sde_type=sde_type, sigma_mult=1.0).train()
        p = m.problem(hold_inputs(x, times.expand(B, 2)), brownian=bm)
        return solvers.solve(p, h0, times, method=method, dt=dt).ys[:, -1]

    ref = end("stratonovich", "heun", 2**-8)
    err = [(end("ito", "euler_maruyama", dt) - ref).abs().mean().item() for dt in (2**-2, 2**-6)]
    assert err[1] < err[0] / 2, err


def _grads(seq, x, times=None):
    seq.zero_grad()
    out, _ = seq(x, times)
    (out.square().sum() + seq.classify(x, times).sum()).backward()
    return {n: p.grad for n, p in seq.named_parameters()}


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(variant="code"),
        dict(mode="continuous"),
        dict(mode="continuous", solver=dict(method="milstein", dt=0.05)),
        dict(
            mode="continuous", solver=dict(method="euler_maruyama", dt=0.05, adjoint="checkpoint")
        ),
    ],
)
def test_gradients_reach_every_parameter(options):
    torch.manual_seed(0)
    seq = create("noisy_rnn", input_size=3, hidden_size=4, num_classes=2, dtype=D, **options)
    grads = _grads(seq.train(), torch.randn(2, 5, 3, dtype=D), 0.1 * torch.arange(5, dtype=D))
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()
    if options.get("variant") == "code":
        assert "model.unit_step" in grads


def test_backsolve_needs_stratonovich_and_works_after_conversion():
    x, times = torch.randn(2, 4, 3, dtype=D), 0.2 * torch.arange(4, dtype=D)
    solver = dict(method="euler_maruyama", dt=0.05, adjoint="backsolve")
    seq = create("noisy_rnn", input_size=3, hidden_size=4, mode="continuous", solver=solver)
    with pytest.raises(ValueError, match=r"[Ss]tratonovich"):
        seq.double().train()(x, times)

    def build(adjoint):
        torch.manual_seed(1)
        return create(
            "noisy_rnn",
            input_size=3,
            hidden_size=4,
            num_classes=2,
            mode="continuous",
            sde_type="stratonovich",
            solver=dict(method="reversible_heun", dt=0.05, adjoint=adjoint),
            dtype=D,
        ).train()

    torch.manual_seed(7)
    direct = _grads(build("direct"), x, times)
    torch.manual_seed(7)
    back = _grads(build("backsolve"), x, times)
    for name in direct:
        torch.testing.assert_close(back[name], direct[name], rtol=1e-6, atol=1e-9)


def test_continuous_eval_is_the_drift_and_deterministic():
    torch.manual_seed(0)
    kw = dict(input_size=3, hidden_size=4, dtype=D, mode="continuous", sigma_add=0.5)
    seq = create("noisy_rnn", solver=dict(method="euler_maruyama", dt=0.1), **kw)
    x, times = torch.randn(2, 5, 3, dtype=D), 0.1 * torch.arange(5, dtype=D)
    seq.train()
    assert not torch.equal(seq(x, times)[0], seq(x, times)[0])
    seq.eval()
    out = seq(x, times)[0]
    assert torch.equal(out, seq(x, times)[0])
    torch.manual_seed(0)
    disc = create("noisy_rnn", scheme="euler_maruyama", dt=0.1, **{**kw, "mode": "discrete"})
    torch.testing.assert_close(out, disc.eval()(x)[0], rtol=1e-12, atol=1e-12)


def test_unbatched_equals_batched():
    m = _model().eval()
    for cell in (m.discretize("euler_maruyama", 0.1), _model(variant="code").eval().discretize()):
        x, h = torch.randn(3, 3, dtype=D), torch.randn(3, 4, dtype=D)
        batched = cell(x, h)
        for i in range(3):
            torch.testing.assert_close(cell(x[i], h[i]), batched[i])


def test_code_variant_cell():
    m = _model(variant="code", step_init=0.05, sigma_mult=0.2, sigma_add=0.0)
    cell = m.discretize("euler_maruyama", 0.01)
    assert isinstance(cell, NoisyRNNCodeCell)
    x, h = torch.randn(200, 3, dtype=D), torch.randn(200, 4, dtype=D)
    f = m.dynamics(h, x)
    m.eval()
    torch.testing.assert_close(cell(x, h), h + 0.05 * f)
    m.train()
    ratio = (cell(x, h) - h) / (0.05 * f)  # the multiplicative noise, U[1 - σ_mult, 1)
    assert ratio.min() >= 0.8 - 1e-9 and ratio.max() < 1 + 1e-9


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(sigma_add=-0.1), "sigma_add must be a number >= 0"),
        (dict(sigma_mult=float("nan")), "sigma_mult must be a number >= 0"),
        (dict(noise_scale=-1), "noise_scale must be a number >= 0"),
        (dict(sde_type="foo"), "sde_type must be 'ito' or 'stratonovich'"),
        (dict(variant="foo"), "variant must be one of paper, code"),
        (dict(beta_A=2.0), "beta_A must be a number in"),
        (dict(scheme="milstein"), "'milstein' is an SDE method without a cell here"),
        (dict(scheme="leapfrog"), "unknown scheme 'leapfrog'; this model accepts"),
        (dict(scheme="euler_maruyama", dt=-1.0), "dt must be positive"),
        (dict(variant="code", mode="continuous"), "variant='code'.*discrete only"),
    ],
)
def test_errors(options, match):
    with pytest.raises(ValueError, match=match):
        create("noisy_rnn", input_size=2, hidden_size=3, **options)


def test_code_variant_has_no_sde():
    with pytest.raises(ValueError, match="no SDE form"):
        _model(variant="code").problem(lambda t: None)


@pytest.mark.gpu
def test_trains_on_cuda():
    torch.manual_seed(0)
    seq = create("noisy_rnn", input_size=3, hidden_size=16, num_classes=2, dt=0.1, device="cuda")
    opt = torch.optim.Adam(seq.parameters(), lr=1e-2)
    x = torch.randn(8, 20, 3, device="cuda")
    y = (x[:, :, 0].sum(1) > 0).long()
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(seq.train().classify(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    seq.eval()
    assert torch.equal(seq.classify(x), seq.classify(x))
