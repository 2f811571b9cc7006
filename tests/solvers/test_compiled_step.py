"""prepare(..., compile=True): one compiled Runge–Kutta step, called by the Python loop."""

import pytest
import torch
from torch import nn

import solvers


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))

    def forward(self, t, y):
        return self.net(y) * torch.cos(t)


def _grads(f, run):
    for p in f.parameters():
        p.grad = None
    ys = run()
    ys.pow(2).mean().backward()
    return ys.detach(), [p.grad.clone() for p in f.parameters()]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_compiled_step_equals_the_eager_solve_and_compiles_once(method):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    f = Field()
    y0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.3, 1.0])
    eager = solvers.prepare(solvers.ODE(f), t, method=method, dt=0.1)
    compiled = solvers.prepare(
        solvers.ODE(f), t, method=method, dt=0.1, compile=dict(backend="aot_eager")
    )
    ys_e, g_e = _grads(f, lambda: eager(y0).ys)
    for _ in range(2):  # the second call reuses the graph
        ys_c, g_c = _grads(f, lambda: compiled(y0).ys)
        torch.testing.assert_close(ys_c, ys_e, rtol=1e-6, atol=1e-6)
        for a, b in zip(g_c, g_e):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1  # one step, from y0 and after it
    # ten times the steps: one more compilation (a new prepared solve), of the same step
    longer = solvers.prepare(
        solvers.ODE(f), t, method=method, dt=0.01, compile=dict(backend="aot_eager")
    )
    longer(y0)
    assert counters["stats"]["unique_graphs"] == 2


def test_compile_refuses_what_it_cannot_compile():
    f = Field()
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(TypeError, match="compile must be True, False or a dict"):
        solvers.prepare(solvers.ODE(f), t, dt=0.1, compile="yes")
    sde = solvers.SDE(lambda t, y: -y, lambda t, y: torch.ones_like(y), noise="diagonal")
    with pytest.raises(ValueError, match="compiles the steps of Runge–Kutta methods"):
        solvers.prepare(sde, t, dt=0.1, compile=True)
