"""backend="torchsde": the same call, the same Brownian path, the same numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import solvers
from solvers import SDE, BrownianPath

pytest.importorskip("torchsde")

F64 = torch.float64


class Drift(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[-0.5, 0.2], [0.1, -0.3]], dtype=F64))

    def forward(self, t, y):
        return torch.tanh(y @ self.w.T)


class Diffusion(nn.Module):
    def __init__(self, noise):
        super().__init__()
        self.noise = noise
        self.a = nn.Parameter(torch.tensor([0.3, 0.2], dtype=F64))

    def forward(self, t, y):
        if self.noise == "additive":
            return self.a.expand_as(y)
        g = self.a * torch.sin(y) + 0.1
        return torch.diag_embed(g) if self.noise == "general" else g


def problem(noise, sde_type, batch=5):
    m = 2
    bm = BrownianPath(0.0, 1.0, (batch, m), seed=2, dtype=F64)
    return SDE(Drift(), Diffusion(noise), noise=noise, sde_type=sde_type, brownian=bm)


Y0 = torch.tensor([[0.5, -0.3], [0.1, 0.2], [1.0, 0.0], [-0.4, 0.8], [0.0, 0.3]], dtype=F64)
T = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)  # every interval a multiple of dt


@pytest.mark.parametrize(
    ("method", "sde_type", "noise"),
    [
        ("euler_maruyama", "ito", "diagonal"),
        ("euler_maruyama", "ito", "general"),
        ("euler_maruyama", "ito", "additive"),
        ("milstein", "ito", "diagonal"),
        ("heun", "stratonovich", "diagonal"),
        ("heun", "stratonovich", "general"),
        ("reversible_heun", "stratonovich", "diagonal"),
    ],
)
def test_agrees_with_native_path_by_path(method, sde_type, noise):
    sde = problem(noise, sde_type)
    native = solvers.solve(sde, Y0, T, method=method, dt=0.05)
    peer = solvers.solve(sde, Y0, T, method=method, dt=0.05, backend="torchsde")
    torch.testing.assert_close(peer.ys, native.ys, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("adjoint", "t"),
    [
        ("direct", T),
        # torchsde's reversible adjoint departs from the discrete gradient by ~1e-4 when there
        # are output times inside the span; over one interval it is exact, like ours
        ("backsolve", T[[0, -1]]),
    ],
)
def test_gradients_agree_with_native(adjoint, t):
    sde = problem("diagonal", "stratonovich")
    params = list(sde.parameters())
    grads = {}
    for backend in ("native", "torchsde"):
        y0 = Y0.clone().requires_grad_(True)
        ys = solvers.solve(
            sde, y0, t, method="reversible_heun", dt=0.05, adjoint=adjoint, backend=backend
        ).ys
        grads[backend] = torch.autograd.grad((ys**2).sum(), [y0, *params])
    for a, b in zip(grads["torchsde"], grads["native"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_default_paths_agree_with_native(dtype):
    """Without brownian=, torchsde gets SDE.brownian_path, the tree whose last level is the
    step grid; the native solve's own tree over its steps is the same path."""
    sde = SDE(Drift().to(dtype), Diffusion("diagonal").to(dtype), sde_type="stratonovich", seed=4)
    y0, t = Y0.to(dtype), T.to(dtype)
    native = solvers.solve(sde, y0, t, method="heun", dt=0.05)
    peer = solvers.solve(sde, y0, t, method="heun", dt=0.05, backend="torchsde")
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == F64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(peer.ys, native.ys, **tol)


def test_errors_name_what_works():
    sde = problem("diagonal", "ito")
    with pytest.raises(ValueError, match="per-sample times are handled by backend='native'"):
        solvers.solve(
            sde, Y0, T.expand(5, -1), method="euler_maruyama", dt=0.05, backend="torchsde"
        )
    with pytest.raises(ValueError, match=r"has no checkpoint adjoint; .*backend='native' does"):
        solvers.solve(
            sde, Y0, T, method="euler_maruyama", dt=0.05, backend="torchsde", adjoint="checkpoint"
        )
    with pytest.raises(ValueError, match="solves SDE problems only"):
        solvers.solve(
            solvers.ODE(lambda t, y: -y), Y0, T, method="rk4", dt=0.05, backend="torchsde"
        )
    with pytest.raises(ValueError, match="'milstein' handles ito SDEs"):
        solvers.solve(
            problem("general", "ito"), Y0, T, method="milstein", dt=0.05, backend="torchsde"
        )
