"""Check a solve against independent solvers: the same call on every backend installed.

    python examples/cross_check_backends.py

A small neural ODE (a time-dependent MLP field) is solved with RK4 steps and with dopri5,
on the native backend and on torchdiffeq and diffrax where they are installed
(``pip install "ctrnn[backends]"``, ``"ctrnn[jax]"``). For each, the largest difference
from the native solution and from its gradient with respect to the initial state. With
fixed steps diffrax takes the native steps, so the two agree to round-off; torchdiffeq's
``rk4`` is the 3/8 rule, and adaptive solves take their own steps, so those agree to the
method's accuracy.
"""

import importlib.util

import torch
from torch import nn

import solvers


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4))

    def forward(self, t, y):
        return self.net(y) * torch.cos(t) - 0.1 * y


def solve_and_grad(field, y0, t, **options):
    y = y0.clone().requires_grad_(True)
    sol = solvers.solve(solvers.ODE(field), y, t, **options)
    (grad,) = torch.autograd.grad(sol.ys.pow(2).sum(), [y])
    return sol.ys.detach(), grad


def main():
    torch.manual_seed(0)
    field = Field().double()
    y0 = torch.randn(8, 4, dtype=torch.float64)
    t = torch.linspace(0, 2, 9, dtype=torch.float64)
    peers = [
        name
        for name, module in (("torchdiffeq", "torchdiffeq"), ("diffrax", "diffrax"))
        if importlib.util.find_spec(module) is not None
    ]
    report = {}
    for label, options in (
        ("rk4, dt=0.05", dict(method="rk4", dt=0.05)),
        ("dopri5, tol=1e-8", dict(method="dopri5", rtol=1e-8, atol=1e-8)),
    ):
        ys, grad = solve_and_grad(field, y0, t, **options)
        for backend in peers:
            ys_b, grad_b = solve_and_grad(field, y0, t, backend=backend, **options)
            diff = ((ys_b - ys).abs().max().item(), (grad_b - grad).abs().max().item())
            report[label, backend] = diff
            print(f"{label:<18}{backend:<13}solution {diff[0]:.1e}   gradient {diff[1]:.1e}")
    if not peers:
        print('no peer backend installed: pip install "ctrnn[backends]" "ctrnn[jax]"')
    return report


if __name__ == "__main__":
    main()
