"""Lyapunov spectra against known answers: Lorenz-63, the Hénon map, linear maps."""

import math

import pytest
import torch

import ctrnn.models as M
from ctrnn.analysis import LyapunovResult, cell_map, flow_map, lyapunov_spectrum

D = torch.float64
SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
LORENZ_SUM = -(SIGMA + 1 + BETA)  # the trace of the Jacobian, constant: -13.667
LORENZ_LARGEST = 0.9056  # Sprott, Chaos and Time-Series Analysis (2003), table A.1


def lorenz(x):
    a, b, c = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.cat([SIGMA * (b - a), a * (RHO - c) - b, a * b - BETA * c], dim=1)


def henon(x):
    return torch.stack([1 - 1.4 * x[:, 0] ** 2 + x[:, 1], 0.3 * x[:, 0]], dim=1)


def lorenz_starts(n):
    g = torch.Generator().manual_seed(0)
    return torch.tensor([[1.0, 1.0, 20.0]], dtype=D) + torch.randn(n, 3, generator=g, dtype=D)


def test_lorenz_sum_largest_and_zero_exponent():
    # 32 starts for 10 time units each: a loose estimate in about a second
    ex = lyapunov_spectrum(lorenz, lorenz_starts(32), 500, dt=0.02, transient=100)
    assert ex.shape == (32, 3)
    assert ex.sum(dim=1).mean().item() == pytest.approx(LORENZ_SUM, abs=0.01)
    mean = ex.mean(dim=0)
    assert mean[0].item() == pytest.approx(LORENZ_LARGEST, abs=0.12)
    assert abs(mean[1].item()) < 0.06
    assert (ex[:, 0] > ex[:, 1]).all() and (ex[:, 1] > ex[:, 2]).all()


@pytest.mark.slow
def test_lorenz_tight():
    res = lyapunov_spectrum(
        lorenz, lorenz_starts(8), 20000, dt=0.01, transient=1000, return_history=True
    )
    mean = res.exponents.mean(dim=0)
    assert res.exponents.sum(dim=1).mean().item() == pytest.approx(LORENZ_SUM, abs=2e-3)
    assert mean[0].item() == pytest.approx(LORENZ_LARGEST, abs=0.03)
    assert abs(mean[1].item()) < 0.01
    assert mean[2].item() == pytest.approx(LORENZ_SUM - LORENZ_LARGEST, abs=0.03)


def test_henon_exponents():
    g = torch.Generator().manual_seed(1)
    x0 = 0.1 + 0.01 * torch.randn(16, 2, generator=g, dtype=D)
    res = lyapunov_spectrum(henon, x0, 1000, transient=50, return_history=True)
    mean = res.exponents.mean(dim=0)
    assert mean[0].item() == pytest.approx(0.419, abs=0.02)
    assert mean[1].item() == pytest.approx(-1.623, abs=0.02)
    # the Jacobian's determinant is -b everywhere: the sum is log 0.3 at every step
    torch.testing.assert_close(res.exponents.sum(dim=1), torch.full((16,), math.log(0.3), dtype=D))


def normal_matrix(d, seed=0):
    """A normal matrix with eigenvalue moduli 1.3, 1.3, 0.6, 0.6, 0.2 (two rotations)."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D))[0]
    B = torch.zeros(d, d, dtype=D)
    for i, (r, th) in enumerate([(1.3, 0.7), (0.6, 2.0)]):
        c, s = r * math.cos(th), r * math.sin(th)
        B[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]], dtype=D)
    B[4, 4] = -0.2
    return Q @ B @ Q.T


@pytest.mark.parametrize("jacobian", ["reverse", "forward"])
def test_linear_normal_map_gives_log_moduli(jacobian):
    A = normal_matrix(5)
    assert torch.allclose(A @ A.T, A.T @ A)
    expected = torch.linalg.eigvals(A).abs().log().sort(descending=True).values
    x0 = torch.randn(3, 5, dtype=D, generator=torch.Generator().manual_seed(2))
    ex = lyapunov_spectrum(lambda x: x @ A.T, x0, 100, transient=50, jacobian=jacobian)
    torch.testing.assert_close(ex, expected.expand(3, 5), atol=1e-9, rtol=0)


def test_a_leading_subset_of_exponents():
    A = normal_matrix(5)
    expected = torch.linalg.eigvals(A).abs().log().sort(descending=True).values
    x0 = torch.randn(2, 5, dtype=D)
    ex = lyapunov_spectrum(lambda x: x @ A.T, x0, 200, transient=100, k=3)
    assert ex.shape == (2, 3)
    torch.testing.assert_close(ex, expected[:3].expand(2, 3), atol=1e-9, rtol=0)


class Periodic:
    """A time-dependent linear system: ``dx/dt = (-1 + cos t) x`` or ``x ↦ (1 + cos n / 2) x``."""

    time_dependent = True

    def __call__(self, t, x):
        if isinstance(t, int):
            return (1 + math.cos(t) / 2) * x
        return (-1 + torch.cos(t))[:, None] * x


def test_time_dependent_flow_and_map():
    x0 = torch.ones(2, 1, dtype=D)
    # the exponent over [0, T] is the mean of -1 + cos t: -1 + sin(T) / T
    ex = lyapunov_spectrum(Periodic(), x0, 500, dt=0.01)
    torch.testing.assert_close(ex, torch.full((2, 1), -1 + math.sin(5.0) / 5.0, dtype=D))
    ex = lyapunov_spectrum(Periodic(), x0, 7)
    mean_log = sum(math.log(1 + math.cos(n) / 2) for n in range(7)) / 7
    torch.testing.assert_close(ex, torch.full((2, 1), mean_log, dtype=D))


def test_result_reports_convergence():
    g = torch.Generator().manual_seed(1)
    x0 = 0.1 + 0.01 * torch.randn(4, 2, generator=g, dtype=D)
    res = lyapunov_spectrum(henon, x0, 1000, transient=50, blocks=5, return_history=True)
    assert isinstance(res, LyapunovResult)
    assert res.per == "step" and res.steps == 1000 and res.transient == 50
    torch.testing.assert_close(res.history[-1], res.exponents)
    assert res.history_steps[-1].item() == 1000
    assert res.block_exponents.shape == (5, 4, 2)
    # the blocks are the run cut in five: their mean is the whole run's estimate
    torch.testing.assert_close(res.block_exponents.mean(0), res.exponents)
    expected_err = res.block_exponents.std(0) / math.sqrt(5)
    torch.testing.assert_close(res.stderr, expected_err)
    assert (res.stderr[:, 0] < 0.05).all()
    # the running estimate settles: its late changes are smaller than its early ones
    early = (res.history[5] - res.history[0]).abs().max()
    late = (res.history[-1] - res.history[-6]).abs().max()
    assert late < early


def test_unbatched_start_and_batch_equals_single_runs():
    A = normal_matrix(5)
    x0 = torch.randn(3, 5, dtype=D)
    batched = lyapunov_spectrum(lambda x: torch.tanh(x @ A.T), x0, 50)
    single = lyapunov_spectrum(lambda x: torch.tanh(x @ A.T), x0[1], 50)
    assert single.shape == (5,)
    torch.testing.assert_close(batched[1], single)


def test_cell_map_on_a_linear_cell_equals_the_matrix():
    torch.manual_seed(0)
    cell = M.create("lipschitz_rnn", input_size=2, hidden_size=4, scheme="euler", dt=0.1)
    cell = cell.double().cell
    # at h = 0 with zero input and zero bias, F(h) = A h + tanh(W h): Jacobian A + W there,
    # and h stays 0; the exponents are the log moduli of eig(I + dt (A + W)).
    A, W = cell.model.dynamics.matrices()
    with torch.no_grad():
        cell.model.dynamics.U.bias.zero_()
    step = torch.eye(4, dtype=D) + 0.1 * (A + W).detach()
    eig = torch.linalg.eigvals(step).abs().log().sort(descending=True).values
    x = torch.zeros(1, 1200, 2, dtype=D)
    ex = lyapunov_spectrum(cell_map(cell, x), torch.zeros(2, 4, dtype=D), 1000, transient=200)
    torch.testing.assert_close(ex, eig.expand(2, 4), atol=2e-3, rtol=0)


def test_flow_map_equals_the_cell_of_the_same_scheme():
    torch.manual_seed(0)
    model = M.create(
        "lipschitz_rnn",
        input_size=2,
        hidden_size=3,
        mode="continuous",
        solver=dict(method="rk4", dt=0.25),
    ).double()
    x = torch.randn(2, 21, 2, dtype=D)
    h0 = torch.zeros(2, 3, dtype=D)
    flow = lyapunov_spectrum(flow_map(model, x), h0, 16, transient=4, return_history=True)
    assert flow.per == "time"
    cell = model.model.discretize("rk4", 0.25)
    fine = cell_map(cell, x.repeat_interleave(4, dim=1))  # four steps per interval
    per_step = lyapunov_spectrum(fine, h0, 64, transient=16)
    torch.testing.assert_close(flow.exponents, per_step / 0.25)


def test_flow_map_per_unit_time_with_uneven_intervals():
    model = M.create("lipschitz_rnn", input_size=1, hidden_size=2, mode="continuous").double()
    x = torch.zeros(1, 5, 1, dtype=D)
    times = torch.tensor([0.0, 0.5, 2.0, 2.5, 4.0], dtype=D)
    f = flow_map(model, x, times, method="rk4", dt=0.05)
    torch.testing.assert_close(f.durations, torch.tensor([[0.5, 1.5, 0.5, 1.5]], dtype=D))
    with torch.no_grad():
        model.model.dynamics.U.bias.zero_()
    # h = 0 is a fixed point with zero input: the exponents are those of exp(t (A + W))
    A, W = model.model.dynamics.matrices()
    rates = torch.linalg.eigvals((A + W).detach()).real.sort(descending=True).values
    ex = lyapunov_spectrum(f, torch.zeros(1, 2, dtype=D), 4)
    # two real rates or one complex pair: the sum is exact, the split needs no rotation
    assert ex.sum().item() == pytest.approx(rates.sum().item(), abs=1e-5)


def test_tau_gru_cell_exponents_cover_the_delay_buffer():
    model = M.create("tau_gru", input_size=1, hidden_size=3, delay=2.0).double()
    cell = model.cell
    assert cell.state_size == 9  # [h_n, h_{n-1}, h_{n-2}]
    x = torch.randn(2, 50, 1, dtype=D, generator=torch.Generator().manual_seed(0))
    res = lyapunov_spectrum(cell_map(model, x), torch.zeros(2, 9, dtype=D), 40, transient=10)
    assert res.shape == (2, 9) and torch.isfinite(res).all()
    # the run also fits a subset taken by forward mode
    top = lyapunov_spectrum(
        cell_map(model, x), torch.zeros(2, 9, dtype=D), 40, transient=10, k=2, jacobian="forward"
    )
    torch.testing.assert_close(top, res[:, :2], atol=0.05, rtol=0)


def test_noisy_cell_in_training_mode_sees_one_noise_draw_per_step():
    model = M.create("noisy_rnn", input_size=1, hidden_size=3, dt=0.1, sigma_mult=0.5).double()
    model.train()
    x = torch.randn(2, 40, 1, dtype=D)
    f = cell_map(model, x, noise_seed=3)
    assert set(f.noise) == {"dw"} and f.noise["dw"].shape == (2, 40, 3)
    a = lyapunov_spectrum(f, torch.zeros(2, 3, dtype=D), 40, jacobian="reverse")
    b = lyapunov_spectrum(f, torch.zeros(2, 3, dtype=D), 40, jacobian="forward")
    torch.testing.assert_close(a, b)


def test_errors():
    x0 = torch.zeros(2, 3, dtype=D)
    with pytest.raises(TypeError, match="f must be callable"):
        lyapunov_spectrum(3, x0, 10)
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        lyapunov_spectrum(lorenz, torch.zeros(2, 3, dtype=torch.long), 10)
    with pytest.raises(ValueError, match=r"x0 must have shape \(batch, d\)"):
        lyapunov_spectrum(lorenz, torch.zeros(2, 3, 1, dtype=D), 10)
    with pytest.raises(ValueError, match="steps must be an integer ≥ 1, got 0"):
        lyapunov_spectrum(lorenz, x0, 0)
    with pytest.raises(ValueError, match="transient must be an integer ≥ 0"):
        lyapunov_spectrum(lorenz, x0, 10, transient=-1)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, d = 3\], got 4"):
        lyapunov_spectrum(lorenz, x0, 10, k=4)
    with pytest.raises(ValueError, match="jacobian must be one of auto, forward, reverse"):
        lyapunov_spectrum(lorenz, x0, 10, jacobian="central")
    with pytest.raises(ValueError, match="dt must be a positive number"):
        lyapunov_spectrum(lorenz, x0, 10, dt=-0.1)
    with pytest.raises(ValueError, match="fixed-step explicit Runge–Kutta method"):
        lyapunov_spectrum(lorenz, x0, 10, dt=0.1, method="dopri5")
    with pytest.raises(ValueError, match=r"the same shape, got \(6, 2\)"):
        lyapunov_spectrum(lambda x: x[:, :2], x0, 10)
    with pytest.raises(ValueError, match="left the finite numbers by step"):
        lyapunov_spectrum(lambda x: x * 1e200, x0 + 1, 10)


def test_model_helper_errors():
    cell = M.create("gru", input_size=2, hidden_size=3).double()
    x = torch.zeros(1, 5, 2, dtype=D)
    with pytest.raises(ValueError, match="gives 5 steps but transient \\+ steps = 6"):
        lyapunov_spectrum(cell_map(cell, x), torch.zeros(1, 3, dtype=D), 5, transient=1)
    with pytest.raises(ValueError, match="reads 2 input features"):
        cell_map(cell, torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, T, channels\)"):
        cell_map(cell, torch.zeros(5))
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        cell_map(cell, [[0.0, 0.0]])
    with pytest.raises(ValueError, match="the driving data has batch 2"):
        f = cell_map(cell, torch.zeros(2, 5, 2, dtype=D))
        lyapunov_spectrum(f, torch.zeros(3, 3, dtype=D), 4)
    with pytest.raises(TypeError, match=r"expected a cell .* got GRUD"):
        cell_map(M.create("gru_d", input_size=2, hidden_size=3), x)
    continuous = M.create("lipschitz_rnn", input_size=2, hidden_size=3, mode="continuous")
    with pytest.raises(ValueError, match="runs in continuous mode; use flow_map"):
        cell_map(continuous, x)
    with pytest.raises(ValueError, match="wraps the discrete cell GRUCell"):
        flow_map(cell, x)
    with pytest.raises(TypeError, match="expected a continuous model"):
        flow_map(torch.nn.Linear(2, 2), x)
    with pytest.raises(ValueError, match="is already the flow over each observation interval"):
        lyapunov_spectrum(flow_map(continuous, x), torch.zeros(1, 3), 2, dt=0.1)
    with pytest.raises(ValueError, match="delay equation"):
        flow_map(M.create("tau_gru", input_size=2, hidden_size=3, delay=2.0), x)
    with pytest.raises(ValueError, match=r"driven by a path.*NeuralCDE, ANCDE"):
        flow_map(M.create("neural_cde", input_size=2, hidden_size=3).cde, x)
    noisy = M.create("noisy_rnn", input_size=2, hidden_size=3).train()
    with pytest.raises(ValueError, match="in training mode, where every solve draws its own"):
        flow_map(noisy, x)
    with pytest.raises(ValueError, match="LipschitzRNN reads 2 input features"):
        flow_map(continuous, torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match=r"times must have shape \(5,\) or \(batch, 5\)"):
        flow_map(continuous, x, torch.arange(4.0))


def test_flow_map_of_a_neural_cde_follows_its_path():
    """On a linear path dX/dt is the constant ΔX over each unit interval, so the flow of RK4
    steps of dt = 1/4 is the RK4 cell driven by ΔX, four steps per interval: the same
    exponents (the flow's per unit time)."""
    torch.manual_seed(0)
    solver = dict(method="rk4", dt=0.25)
    model = M.create(
        "neural_cde", input_size=2, hidden_size=3, interpolation="linear", solver=solver
    ).double()
    x = torch.randn(2, 21, 2, dtype=D)
    x[0, 5, 1] = float("nan")  # a missing value: the path fills it, as in forward
    h0 = torch.full((2, 3), 0.1, dtype=D)
    flow = lyapunov_spectrum(flow_map(model, x), h0, 16, transient=4, return_history=True)
    assert flow.per == "time"
    path, t, _ = model.path(x)
    increments = torch.stack([path.evaluate(t[i]) for i in range(21)], dim=1).diff(dim=1)
    cell = model.cde.discretize("rk4", 0.25)
    fine = cell_map(cell, increments.repeat_interleave(4, dim=1))
    per_step = lyapunov_spectrum(fine, h0, 64, transient=16)
    torch.testing.assert_close(flow.exponents, per_step / 0.25)


def test_flow_map_of_an_ancde_on_per_sample_times():
    torch.manual_seed(0)
    model = M.create("ancde", input_size=2, hidden_size=3, attention_size=2).double()
    x = torch.randn(2, 9, 2, dtype=D)
    times = torch.rand(2, 9, dtype=D).add(0.5).cumsum(1)
    f = flow_map(model, x, times, method="rk4", dt=0.25)
    torch.testing.assert_close(f.durations, times.diff(dim=1))
    ex = lyapunov_spectrum(f, torch.zeros(2, 5, dtype=D), 6, transient=2)
    assert ex.shape == (2, 5) and torch.isfinite(ex).all()
    with pytest.raises(ValueError, match="expected 2 input channels, got 3"):
        flow_map(model, torch.zeros(1, 5, 3, dtype=D))
    with pytest.raises(ValueError, match=r"inputs must have T ≥ 2 observations, got T=1"):
        flow_map(model, torch.zeros(1, 1, 2, dtype=D))
