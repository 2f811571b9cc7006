"""solvers.prepare: a planned fixed-step solve equals solve(), reads nothing back to the host
(forward and backward, every adjoint), compiles into one graph, and rejects what it cannot
plan with a message that names it. The CUDA-graph tests need a device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import solvers
from solvers import CDE, DDE, ODE, SDE, HamiltonianODE

F64 = torch.float64
ADJOINTS = ["direct", "checkpoint", "backsolve"]


class Field(nn.Module):
    """A small time-dependent MLP vector field ``f(t, y)``."""

    def __init__(self, n=4, hidden=8, seed=0, dtype=F64, device=None):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.l1 = nn.Linear(n, hidden, dtype=dtype, device=device)
            self.l2 = nn.Linear(hidden, n, dtype=dtype, device=device)

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(y))) * torch.cos(t)


class CDEField(nn.Module):
    def __init__(self, hidden=4, channels=2, seed=1):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lin = nn.Linear(hidden, hidden * channels, dtype=F64)
        self.hidden, self.channels = hidden, channels

    def forward(self, t, z):
        return torch.tanh(self.lin(z)).reshape(z.shape[0], self.hidden, self.channels)


class Force(nn.Module):
    """A learned force ``dp = -tanh(W q)`` for a separable Hamiltonian system."""

    def __init__(self, n=2, seed=2):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lin = nn.Linear(n, n, dtype=F64)

    def forward(self, t, q):
        return -torch.tanh(self.lin(q))


def grid(per_sample: bool, batch=3, T=5):
    t = torch.linspace(0, 1, T, dtype=F64)
    return t + 0.1 * torch.arange(batch, dtype=F64)[:, None] if per_sample else t


def y0_like(batch=3, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, generator=g, dtype=F64, requires_grad=True)


def ode_case():
    f = Field()
    return ODE(f), y0_like(), tuple(f.parameters()), "rk4", 0.05


def cde_case():
    g = torch.Generator().manual_seed(3)
    times = (0.1 + 0.2 * torch.rand(6, generator=g, dtype=F64)).cumsum(0)
    values = torch.randn(3, 6, 2, generator=g, dtype=F64)
    path = solvers.interpolate(values, times, kind="hermite")
    f = CDEField()
    return CDE(f, path), y0_like(), tuple(f.parameters()), "rk4", 0.1, times


def hamiltonian_case():
    force = Force()
    problem = HamiltonianODE(dp=force, dq=lambda t, p: p)
    return problem, y0_like(n=4, seed=5), tuple(force.parameters()), "leapfrog", 0.05


def both(prepared, problem, y0, t, params, method, dt, adjoint, **kw):
    """Solutions and gradients (y0 and params) of the prepared and the plain solve."""
    out = []
    for sol in (
        prepared(y0),
        solvers.solve(problem, y0, t, method=method, dt=dt, adjoint=adjoint, **kw),
    ):
        loss = sol.ys.nan_to_num().pow(2).sum()
        out.append((sol, torch.autograd.grad(loss, (y0, *params))))
    return out


def assert_same_as_solve(problem, y0, t, params, method, dt, adjoint):
    """The prepared solve's solution and gradients equal solve()'s to the bit."""
    prepared = solvers.prepare(problem, t, method=method, dt=dt, adjoint=adjoint)
    (mine, g_mine), (ref, g_ref) = both(prepared, problem, y0, t, params, method, dt, adjoint)
    torch.testing.assert_close(mine.ys, ref.ys, rtol=0, atol=0)
    for a, b in zip(g_mine, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    return prepared, mine, ref


# ---------------------------------------------------------------------------------------------
# Same numbers as solve


@pytest.mark.parametrize("adjoint", ADJOINTS)
@pytest.mark.parametrize("per_sample", [False, True])
def test_equals_solve_on_an_ode(adjoint, per_sample):
    problem, y0, params, method, dt = ode_case()
    prepared, mine, ref = assert_same_as_solve(
        problem, y0, grid(per_sample), params, method, dt, adjoint
    )
    assert mine.status == ref.status
    assert mine.stats.num_function_evals == ref.stats.num_function_evals
    assert torch.equal(mine.stats.num_accepted_steps, ref.stats.num_accepted_steps)
    assert prepared.num_steps == 20


@pytest.mark.parametrize("adjoint", ADJOINTS)
def test_equals_solve_on_a_cde(adjoint):
    problem, y0, params, method, dt, times = cde_case()
    assert_same_as_solve(problem, y0, times, params, method, dt, adjoint)


@pytest.mark.parametrize("adjoint", ["direct", "checkpoint"])
def test_equals_solve_on_a_hamiltonian_system_with_a_symplectic_method(adjoint):
    problem, y0, params, method, dt = hamiltonian_case()
    assert_same_as_solve(problem, y0, grid(False), params, method, dt, adjoint)


def test_backsolve_with_its_own_fixed_step_backward_method():
    problem, y0, params, _, _ = ode_case()
    t = grid(True)
    adjoint = solvers.BacksolveAdjoint(method="midpoint", dt=0.01)
    prepared = solvers.prepare(problem, t, method="rk4", dt=0.1, adjoint=adjoint)
    (_, g_mine), (_, g_ref) = both(prepared, problem, y0, t, params, "rk4", 0.1, adjoint)
    for a, b in zip(g_mine, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and it is the gradient: direct backpropagation agrees to the two methods' error
    direct = solvers.solve(problem, y0, t, method="rk4", dt=0.1)
    g_direct = torch.autograd.grad(direct.ys.pow(2).sum(), (y0, *params))
    for a, b in zip(g_mine, g_direct):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_new_initial_states_and_parameters_are_read_at_every_call():
    problem, y0, params, method, dt = ode_case()
    t = grid(False)
    prepared = solvers.prepare(problem, t, method=method, dt=dt)
    first = prepared(y0).ys.detach().clone()
    other = y0_like(seed=9)
    torch.testing.assert_close(
        prepared(other).ys, solvers.solve(problem, other, t, method=method, dt=dt).ys
    )
    with torch.no_grad():
        params[0].mul_(1.5)  # an optimiser step, in place
    moved = prepared(y0).ys
    torch.testing.assert_close(moved, solvers.solve(problem, y0, t, method=method, dt=dt).ys)
    assert not torch.allclose(moved, first)
    # another batch size is checked once and solved
    assert prepared(y0_like(batch=7)).ys.shape == (7, 5, 4)


def test_failures_are_marked_not_raised():
    t = torch.linspace(0, 1, 3, dtype=F64)
    blow_up = ODE(lambda t, y: y * y * 1e3)
    y0 = torch.tensor([[0.0], [5.0]], dtype=F64)
    sol = solvers.prepare(blow_up, t, dt=0.1)(y0)
    assert sol.status == (solvers.Status.SUCCESS, solvers.Status.NONFINITE)
    short = solvers.prepare(ODE(lambda t, y: -y), t, dt=0.1, max_steps=6)(y0)
    assert short.status == (solvers.Status.MAX_STEPS,) * 2
    assert torch.isnan(short.ys[:, -1]).all() and not torch.isnan(short.ys[:, 1]).any()
    with pytest.raises(solvers.SolverError, match="MAX_STEPS in samples"):
        short.raise_on_failure()


# ---------------------------------------------------------------------------------------------
# Nothing read back to the host


# symplectic methods have no backsolve (tested among the errors)
@pytest.mark.parametrize(
    "case, adjoint",
    [(c, a) for c in ("ode", "ode per sample", "cde") for a in ADJOINTS]
    + [("hamiltonian", "direct"), ("hamiltonian", "checkpoint")],
)
def test_a_call_reads_nothing_back_forward_or_backward(case, adjoint, request):
    if case.startswith("ode"):
        problem, y0, params, method, dt = ode_case()
        t = grid(case.endswith("sample"))
    elif case == "cde":
        problem, y0, params, method, dt, t = cde_case()
    else:
        problem, y0, params, method, dt = hamiltonian_case()
        t = grid(False)
    prepared = solvers.prepare(problem, t, method=method, dt=dt, adjoint=adjoint)
    prepared(y0)  # the first call checks the vector field's output shape
    request.getfixturevalue("forbid_host_reads")
    sol = prepared(y0)
    sol.ys.pow(2).sum().backward()
    assert y0.grad is not None and all(p.grad is not None for p in params)


def _compiled_equals_solve(**compile_options):
    problem, y0, params, method, _ = ode_case()
    t = torch.linspace(0, 1, 3, dtype=F64)
    prepared = solvers.prepare(problem, t, method=method, dt=0.25)
    torch._dynamo.reset()
    try:
        sol = torch.compile(prepared, fullgraph=True, **compile_options)(y0)
        g = torch.autograd.grad(sol.ys.pow(2).sum(), (y0, *params))
    finally:
        torch._dynamo.reset()
    ref = solvers.solve(problem, y0, t, method=method, dt=0.25)
    g_ref = torch.autograd.grad(ref.ys.pow(2).sum(), (y0, *params))
    torch.testing.assert_close(sol.ys, ref.ys)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def test_compiles_into_one_graph():
    """fullgraph=True fails on any graph break, and a host read is one."""
    _compiled_equals_solve(backend="aot_eager")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside inductor (torch 2.13)
def test_compiles_with_inductor():
    _compiled_equals_solve()


# ---------------------------------------------------------------------------------------------
# Errors


def test_errors_name_what_cannot_be_planned():
    t = torch.linspace(0, 1, 3, dtype=F64)
    f = ODE(lambda t, y: -y)
    sde = SDE(lambda t, y: -y, lambda t, y: torch.ones_like(y))
    dde = DDE(lambda t, y, yd: -yd[:, 0], delays=0.5, history=torch.zeros(1, 1, dtype=F64))
    cases = [
        (
            lambda: solvers.prepare(sde, t, method="rk4", dt=0.1),
            ValueError,
            "'rk4' does not accept a SDE problem",
        ),
        (
            lambda: solvers.prepare(sde, t, method="euler_maruyama", dt=0.1, adjoint="backsolve"),
            ValueError,
            "plans SDE solves under adjoint 'direct' and 'checkpoint'",
        ),
        (lambda: solvers.prepare(dde, t, dt=0.1), ValueError, "a DDE problem looks up"),
        (lambda: solvers.prepare(f, t, method="leapfrog", dt=0.1), ValueError, "does not accept"),
        (lambda: solvers.prepare(f, t, method="nope", dt=0.1), ValueError, "unknown method 'nope'"),
        (lambda: solvers.prepare(f, t, dt=None), ValueError, "pass dt"),
        (lambda: solvers.prepare(f, t, dt=-1.0), ValueError, "got -1.0"),
        (lambda: solvers.prepare(f, t, dt=0.1, max_steps=0), ValueError, "got 0"),
        (lambda: solvers.prepare(f, t, dt=0.1, adjoint="nope"), ValueError, "unknown adjoint"),
        (lambda: solvers.prepare("f", t, dt=0.1), TypeError, "got str"),
        (lambda: solvers.prepare(f, [0.0, 1.0], dt=0.1), TypeError, "got list"),
        (lambda: solvers.prepare(f, torch.arange(3), dt=0.1), TypeError, "got torch.int64"),
        (
            lambda: solvers.prepare(f, torch.tensor([0.0, 1.0, 1.0]), dt=0.1),
            ValueError,
            r"t\[2\] = 1.0 is not greater than t\[1\] = 1.0",
        ),
        (
            lambda: solvers.prepare(
                HamiltonianODE(dp=lambda t, q: -q, dq=lambda t, p: p),
                t,
                method="leapfrog",
                dt=0.1,
                adjoint="backsolve",
            ),
            ValueError,
            "backward method 'leapfrog' is not a Runge–Kutta method",
        ),
        (
            lambda: solvers.prepare(
                f, t, dt=0.1, max_steps=10, adjoint=solvers.BacksolveAdjoint(dt=0.01)
            ),
            solvers.SolverError,
            "needs 50 steps of dt=0.01 on one output interval, more than max_steps=10",
        ),
    ]
    for make, kind, message in cases:
        with pytest.raises(kind, match=message):
            make()


def test_an_adaptive_tableau_is_planned_with_constant_steps():
    """Any tableau runs with constant steps (its error estimate unused), so prepare plans
    dopri5 too, forward and in the backward solve of backsolve, and equals solve."""
    t = torch.linspace(0, 1, 4, dtype=F64)
    f = ODE(lambda t, y: -y * torch.cos(t))
    y0 = torch.ones(2, 1, dtype=F64)
    for adjoint in ("direct", solvers.BacksolveAdjoint(method="dopri5")):
        prepared = solvers.prepare(f, t, method="dopri5", dt=0.1, adjoint=adjoint)
        want = solvers.solve(f, y0, t, method="dopri5", dt=0.1)
        torch.testing.assert_close(prepared(y0).ys, want.ys, rtol=0, atol=0)
    exact = torch.exp(-torch.sin(t))
    torch.testing.assert_close(want.ys[0, :, 0], exact, rtol=1e-7, atol=0)


def test_call_errors_name_the_state():
    t = torch.linspace(0, 1, 3, dtype=F64)
    prepared = solvers.prepare(ODE(lambda t, y: -y), t, dt=0.1)
    with pytest.raises(ValueError, match=r"prepared for states of dtype torch\.float64 on cpu"):
        prepared(torch.ones(2, 1, dtype=torch.float32))
    with pytest.raises(TypeError, match="y0 must be a tensor"):
        prepared([1.0])
    per_sample = solvers.prepare(ODE(lambda t, y: -y), grid(True), dt=0.1)
    with pytest.raises(ValueError, match=r"shape \(3, 5\), batch 3; got y0 of batch 2"):
        per_sample(torch.ones(2, 1, dtype=F64))
    wrong = solvers.prepare(ODE(lambda t, y: y[:, :1]), t, dt=0.1)
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        wrong(torch.ones(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="cuda_graph needs a sample y0 on a CUDA device, got cpu"):
        prepared.cuda_graph(torch.ones(2, 1, dtype=F64))


# ---------------------------------------------------------------------------------------------
# GPU: no synchronisation, and the CUDA graphs


def _cuda_case(adjoint, dtype=torch.float32):
    dev = torch.device("cuda")
    f = Field(n=16, hidden=32, dtype=dtype, device=dev)
    t = torch.linspace(0, 1, 4, dtype=dtype, device=dev)
    prepared = solvers.prepare(ODE(f), t, method="rk4", dt=0.02, adjoint=adjoint)
    g = torch.Generator(device=dev).manual_seed(0)
    y0 = torch.randn(8, 16, generator=g, device=dev, dtype=dtype).requires_grad_(True)
    return f, t, prepared, y0


@pytest.mark.gpu
@pytest.mark.parametrize("adjoint", ADJOINTS)
def test_a_call_has_no_cuda_sync(adjoint):
    _, _, prepared, y0 = _cuda_case(adjoint)
    prepared(y0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        prepared(y0).ys.pow(2).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert y0.grad is not None


@pytest.mark.gpu
@pytest.mark.parametrize("adjoint", ADJOINTS)
def test_cuda_graph_equals_the_eager_solve(adjoint):
    f, _, prepared, y0 = _cuda_case(adjoint, dtype=F64)
    params = tuple(f.parameters())
    graphed = prepared.cuda_graph(y0)
    for seed in (1, 2):  # new values copied into the captured input
        g = torch.Generator(device="cuda").manual_seed(seed)
        y = torch.randn(y0.shape, generator=g, device="cuda", dtype=F64).requires_grad_(True)
        sol = graphed(y)
        gg = torch.autograd.grad(sol.ys.pow(2).sum(), (y, *params))
        ref = prepared(y)
        gr = torch.autograd.grad(ref.ys.pow(2).sum(), (y, *params))
        torch.testing.assert_close(sol.ys, ref.ys, rtol=1e-12, atol=1e-12)
        for a, b in zip(gg, gr):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert sol.status == (solvers.Status.SUCCESS,) * y.shape[0]
    # parameters updated in place are seen by the next replay
    with torch.no_grad():
        params[0].mul_(0.5)
    torch.testing.assert_close(graphed(y).ys, prepared(y).ys, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="initial states like its sample"):
        graphed(y.detach()[:4])


@pytest.mark.gpu
def test_cuda_graph_trains():
    f, _, prepared, y0 = _cuda_case("direct")
    target = torch.zeros(8, 4, 16, device="cuda")
    graphed = prepared.cuda_graph(y0.detach())
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (graphed(y0.detach()).ys - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------------------------
# SDEs: the steps and the Brownian tree planned once, the path drawn from a seed per call


class _Diffusion(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            self.lin = nn.Linear(3, 3, dtype=F64)

    def forward(self, t, y):
        return 0.3 * torch.tanh(self.lin(y))


def sde_case(seed=7, **kw):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        drift = nn.Linear(3, 3, dtype=F64)
    sde = SDE(lambda t, y: drift(y), _Diffusion(), seed=seed, **kw)
    y0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    return sde, y0.requires_grad_(True), torch.linspace(0, 1, 5, dtype=F64)


@pytest.mark.parametrize(
    "method, kw",
    [
        ("euler_maruyama", {}),
        ("milstein", {}),
        ("heun", dict(sde_type="stratonovich")),
    ],
)
@pytest.mark.parametrize("adjoint", ["direct", "checkpoint"])
def test_a_prepared_sde_solve_equals_solve(method, kw, adjoint):
    sde, y0, t = sde_case(**kw)
    options = dict(method=method, dt=0.05, adjoint=adjoint)
    ref = solvers.solve(sde, y0, t, **options)
    (ref_g,) = torch.autograd.grad(ref.ys.pow(2).sum(), [y0])
    prepared = solvers.prepare(sde, t, **options)
    for _ in range(2):  # the first call plans, the second reuses the plan
        sol = prepared(y0)
        (g,) = torch.autograd.grad(sol.ys.pow(2).sum(), [y0])
        assert torch.equal(sol.ys, ref.ys) and torch.equal(g, ref_g)


def test_the_seed_of_each_call(request):
    """An int or a 0-dim int64 tensor: the path of that seed, as solve draws it; later
    calls read nothing back, forward or backward."""
    sde, y0, t = sde_case()
    options = dict(method="euler_maruyama", dt=0.05)
    prepared = solvers.prepare(sde, t, **options)
    other = solvers.solve(sde_case(seed=11)[0], y0, t, **options)
    assert torch.equal(prepared(y0, seed=11).ys, other.ys)
    seed = torch.tensor(11)
    request.getfixturevalue("forbid_host_reads")
    sol = prepared(y0, seed=seed)
    sol.ys.sum().backward()
    assert torch.equal(sol.ys, other.ys)
    assert not torch.equal(prepared(y0, seed=seed + 1).ys, other.ys)


def test_a_user_brownian_path_is_kept():
    _, y0, t = sde_case()
    bm = solvers.BrownianPath(0.0, 1.0, (4, 3), seed=5, dtype=F64)
    sde, _, _ = sde_case(brownian=bm)
    options = dict(method="euler_maruyama", dt=0.05)
    prepared = solvers.prepare(sde, t, **options)
    assert torch.equal(prepared(y0).ys, solvers.solve(sde, y0, t, **options).ys)
    with pytest.raises(ValueError, match="has its own BrownianPath"):
        prepared(y0, seed=3)


def test_a_compiled_sde_call_takes_the_seed_as_a_tensor():
    sde, y0, t = sde_case()
    prepared = solvers.prepare(sde, t, method="euler_maruyama", dt=0.05)
    prepared(y0)  # plans the steps and the tree (host reads), outside the compiled graph
    torch._dynamo.reset()
    try:
        run = torch.compile(
            lambda y, s: prepared(y, seed=s).ys, fullgraph=True, backend="aot_eager"
        )
        for seed in (7, 8):
            ref = solvers.solve(sde_case(seed=seed)[0], y0, t, method="euler_maruyama", dt=0.05)
            assert torch.equal(run(y0, torch.tensor(seed)), ref.ys)
    finally:
        torch._dynamo.reset()


def test_sde_call_errors():
    sde, y0, t = sde_case()
    prepared = solvers.prepare(sde, t, method="euler_maruyama", dt=0.05)
    with pytest.raises(ValueError, match=r"0-dim int64 tensor, got a tensor of dtype torch\.float"):
        prepared(y0, seed=torch.tensor(1.0))
    with pytest.raises(TypeError, match="seed must be an integer, got str"):
        prepared(y0, seed="1")
    with pytest.raises(ValueError, match="cuda_graph does not capture SDE solves"):
        prepared.cuda_graph(y0)
    ode = solvers.prepare(ODE(lambda t, y: -y), t, dt=0.1)
    with pytest.raises(ValueError, match=r"seed applies to SDE problems .*, not to ODE"):
        ode(y0, seed=1)


@pytest.mark.gpu
@pytest.mark.parametrize("adjoint", ["direct", "checkpoint"])
def test_an_sde_call_with_a_seed_tensor_has_no_cuda_sync(adjoint):
    dev = torch.device("cuda")
    sde, y0, t = sde_case()
    sde.diffusion.to(dev)
    drift = nn.Linear(3, 3, dtype=F64, device=dev)
    sde = SDE(lambda t, y: drift(y), sde.diffusion, seed=7)
    t, y0 = t.to(dev), y0.detach().to(dev).requires_grad_(True)
    prepared = solvers.prepare(sde, t, method="euler_maruyama", dt=0.05, adjoint=adjoint)
    ref = prepared(y0)
    seed = torch.tensor(7, device=dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sol = prepared(y0, seed=seed)
        sol.ys.pow(2).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(sol.ys, ref.ys) and y0.grad is not None
