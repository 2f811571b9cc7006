"""The torchcde backend against the native one: paths, solutions, gradients and refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import solvers
from solvers import CDE, ODE

torchcde = pytest.importorskip("torchcde")

F64 = torch.float64
B, T, C, H = 3, 6, 2, 4


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.lin = nn.Linear(H, H * C, dtype=F64)

    def forward(self, t, z):
        return torch.tanh(self.lin(z)).reshape(z.shape[0], H, C)


def data(seed=0, missing=True, regular=False):
    """``regular``: times on a 0.2 grid, so that torchdiffeq's fixed steps of 0.01 land on
    them (its fixed-grid methods interpolate linearly to output times between steps)."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(B, T, C, generator=g, dtype=F64)
    times = (0.1 + 0.2 * torch.rand(T, generator=g, dtype=F64)).cumsum(0)
    if regular:
        times = 0.2 * torch.arange(T, dtype=F64)
    if missing:
        values[0, 2, 1] = values[1, 0, 0] = values[2, 4:, 1] = float("nan")
    z0 = torch.randn(B, H, generator=g, dtype=F64)
    return values, times, z0


def test_torchcde_is_listed():
    assert "torchcde" in solvers.backends()


@pytest.mark.parametrize(
    "kind, make",
    [
        (
            "natural_cubic",
            lambda x, t: torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t),
        ),
        (
            "hermite",
            lambda x, t: torchcde.CubicSpline(
                torchcde.hermite_cubic_coefficients_with_backward_differences(x, t), t
            ),
        ),
    ],
)
def test_paths_equal_torchcdes_on_complete_data(kind, make):
    values, times, _ = data(missing=False)
    ours = solvers.interpolate(values, times, kind=kind)
    theirs = make(values, times)
    for tq in torch.linspace(times[0].item(), times[-1].item(), 37, dtype=F64):
        torch.testing.assert_close(ours.evaluate(tq), theirs.evaluate(tq))
        torch.testing.assert_close(ours.derivative(tq), theirs.derivative(tq))


FIXED = dict(method="rk4", dt=0.01)
ADAPTIVE = dict(method="dopri5", rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["natural_cubic", "hermite"])
@pytest.mark.parametrize("kw", [FIXED, ADAPTIVE], ids=["rk4", "dopri5"])
def test_solutions_agree_with_native(kind, kw):
    """Agreement to the methods' accuracy: torchdiffeq's rk4 is the 3/8 rule, and adaptive
    solves take different steps. Against a dopri5 reference at 1e-12, both backends' errors
    are 1e-6 to 4e-6 here (rk4 with dt=0.01 and dopri5 at 1e-9 alike)."""
    values, times, z0 = data(regular=kw is FIXED)
    problem = CDE(Field(), solvers.interpolate(values, times, kind=kind))
    native = solvers.solve(problem, z0, times, **kw)
    peer = solvers.solve(problem, z0, times, backend="torchcde", **kw)
    torch.testing.assert_close(peer.ys, native.ys, rtol=1e-5, atol=1e-5)
    assert peer.success and peer.stats.num_function_evals > 1


@pytest.mark.parametrize(
    "kind, kw",
    [("natural_cubic", FIXED), ("hermite", FIXED), ("natural_cubic", ADAPTIVE)],
    ids=["natural_cubic-rk4", "hermite-rk4", "natural_cubic-dopri5"],
)
@pytest.mark.parametrize("adjoint", ["direct", "backsolve"])
def test_gradients_agree_with_native_direct(kind, kw, adjoint):
    values, times, z0 = data(regular=kw is FIXED)
    values.requires_grad_(True)
    z0.requires_grad_(True)
    f = Field()
    out = {}
    for backend, adj in (("native", "direct"), ("torchcde", adjoint)):
        problem = CDE(f, solvers.interpolate(values, times, kind=kind))
        sol = solvers.solve(problem, z0, times, backend=backend, adjoint=adj, **kw)
        loss = (sol.ys**2).sum()
        out[backend] = torch.autograd.grad(loss, [values, z0, *f.parameters()])
    for a, b in zip(out["torchcde"], out["native"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_states_with_several_dimensions_are_flattened_for_torchcde():
    values, times, _ = data()
    z0 = torch.randn(B, 2, 2, dtype=F64)
    w = 0.3 * torch.randn(4, 4 * C, dtype=F64)

    def f(t, z):
        return torch.tanh(z.flatten(1) @ w).reshape(B, 2, 2, C)

    values, times, _ = data(regular=True)
    problem = CDE(f, solvers.interpolate(values, times))
    native = solvers.solve(problem, z0, times, **FIXED)
    peer = solvers.solve(problem, z0, times, backend="torchcde", **FIXED)
    torch.testing.assert_close(peer.ys, native.ys, rtol=1e-5, atol=1e-5)


def test_max_steps_is_reported_per_sample():
    values, times, z0 = data()
    problem = CDE(Field(), solvers.interpolate(values, times))
    sol = solvers.solve(
        problem, z0, times, method="dopri5", backend="torchcde", max_steps=2, throw=False
    )
    assert sol.status == (solvers.Status.MAX_STEPS,) * B
    with pytest.raises(solvers.SolverError, match="MAX_STEPS"):
        solvers.solve(problem, z0, times, method="dopri5", backend="torchcde", max_steps=2)


# ---------------------------------------------------------------------------------------------
# Refusals


def test_per_sample_times_are_refused():
    values, times, z0 = data()
    per_sample = times.expand(B, T).clone()
    problem = CDE(Field(), solvers.interpolate(values, per_sample))
    with pytest.raises(ValueError, match="per-sample times are handled by backend='native'"):
        solvers.solve(problem, z0, times, method="rk4", dt=0.1, backend="torchcde")
    problem = CDE(Field(), solvers.interpolate(values, times))
    with pytest.raises(ValueError, match="one time grid shared by the batch"):
        solvers.solve(problem, z0, per_sample, method="rk4", dt=0.1, backend="torchcde")


def test_checkpoint_adjoint_is_refused():
    values, times, z0 = data()
    problem = CDE(Field(), solvers.interpolate(values, times))
    with pytest.raises(ValueError, match=r"has no checkpoint adjoint; .*backend='native' does"):
        solvers.solve(
            problem, z0, times, method="rk4", dt=0.1, adjoint="checkpoint", backend="torchcde"
        )


def test_ode_problems_are_refused():
    _, times, z0 = data()
    with pytest.raises(ValueError, match="solves CDE problems only, got ODE"):
        solvers.solve(ODE(lambda t, y: -y), z0, times, method="rk4", dt=0.1, backend="torchcde")


def test_methods_it_lacks_are_refused():
    values, times, z0 = data()
    problem = CDE(Field(), solvers.interpolate(values, times))
    with pytest.raises(ValueError, match="backend 'torchcde' has no method 'tsit5'"):
        solvers.solve(problem, z0, times, method="tsit5", backend="torchcde")


def test_paths_it_cannot_convert_are_refused():
    _, times, z0 = data()

    class Constant(solvers.AbstractPath):
        interval = torch.stack([times[0], times[-1]])

        def evaluate(self, t):
            return torch.zeros(B, C, dtype=F64)

        def derivative(self, t):
            return torch.ones(B, C, dtype=F64)

        def tensors(self):
            return ()

    problem = CDE(Field(), Constant())
    with pytest.raises(ValueError, match="cannot convert a Constant"):
        solvers.solve(problem, z0, times, method="rk4", dt=0.1, backend="torchcde")
    # the native backend takes any path
    assert solvers.solve(problem, z0, times, method="rk4", dt=0.1).success
