"""A fixed-step solve reads nothing back to the host inside its loop (DESIGN.md, GPU).

On the CPU the loop is run with every host read of a tensor (``item``, ``tolist``,
``bool``, ``int``, ``float``) made to raise; on a GPU, CUDA's sync debug mode does it.
"""

import pytest
import torch

import solvers
from solvers._controller import ConstantStepSize, fixed_schedule
from solvers._integrate import integrate


def _mlp():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    return solvers.ODE(lambda t, y: net(y) * torch.cos(t))


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_fixed_step_loop_reads_nothing_back(method, per_sample, request):
    problem = _mlp()
    y0 = torch.randn(3, 4, requires_grad=True)
    t = torch.linspace(0, 1, 5)
    lanes_t = (t + 0.1 * torch.arange(3)[:, None]) if per_sample else t[None]
    sched = fixed_schedule(lanes_t, 0.05, 10_000)  # host reads happen here, before the loop
    stepper = solvers.methods()[method].for_terms(problem.terms())
    request.getfixturevalue("forbid_host_reads")
    out = integrate(
        stepper, problem.terms(), (y0,), lanes_t, ConstantStepSize(0.05), schedule=sched
    )
    ys = out.ys[0]
    assert ys.shape == (3, 5, 4)
    # the backward pass of the direct adjoint has no host reads either
    ys.pow(2).sum().backward()
    assert y0.grad is not None and y0.grad.shape == y0.shape


def test_the_guard_catches_a_host_read(forbid_host_reads):
    with pytest.raises(RuntimeError, match="host read"):
        torch.ones(2).sum().item()


@pytest.mark.gpu
@pytest.mark.parametrize("checkpoint_every", [None, 3])
def test_fixed_step_loop_has_no_cuda_sync(checkpoint_every):
    dev = torch.device("cuda")
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).to(dev)
    problem = solvers.ODE(lambda t, y: net(y))
    y0 = torch.randn(3, 4, device=dev)
    lanes_t = torch.linspace(0, 1, 5, device=dev)[None]
    sched = fixed_schedule(lanes_t, 0.05, 10_000)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = integrate(
            solvers.methods()["rk4"],
            problem.terms(),
            (y0,),
            lanes_t,
            ConstantStepSize(0.05),
            schedule=sched,
            checkpoint_every=checkpoint_every,
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.ys[0].shape == (3, 5, 4)
