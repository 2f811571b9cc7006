"""Solve a batch of samples observed at different times, and handle a failing sample.

    python examples/irregular_batch.py

Each sample of a damped oscillator batch has its own observation times; one sample is given
a vector field that blows up, and ``throw=False`` keeps the others' results.
"""

import torch

import solvers


def main():
    torch.manual_seed(0)
    batch, T = 4, 8
    t = torch.sort(torch.rand(batch, T) * 10, dim=1).values
    t[:, 0] = 0.0
    omega = torch.tensor([1.0, 2.0, 3.0, 4.0])

    def oscillator(t, y):  # y = (position, velocity); t is (batch,)
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, -(omega**2) * x - 0.1 * v], dim=1)

    y0 = torch.tensor([[1.0, 0.0]]).repeat(batch, 1)
    sol = solvers.solve(solvers.ODE(oscillator), y0, t, method="tsit5", rtol=1e-7, atol=1e-9)
    print("per-sample times:\n", t)
    print("positions:\n", sol.ys[..., 0])
    print("accepted steps per sample:", sol.stats.num_accepted_steps.tolist())

    def blows_up(t, y):  # y' = y^2 blows up at t = 1/y0; sample 3 starts at 5
        return y**2

    y0 = torch.tensor([[0.1], [0.2], [0.3], [5.0]])
    grid = torch.linspace(0, 1, 5)
    sol = solvers.solve(solvers.ODE(blows_up), y0, grid, method="dopri5", throw=False)
    print("statuses:", [s.name for s in sol.status])
    print("solution (NaN where a sample never got):\n", sol.ys[..., 0])
    return sol


if __name__ == "__main__":
    main()
