"""How gradients flow through a solve: direct, checkpoint and backsolve adjoints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ._integrate import (
    FixedSchedule,
    Outcome,
    fixed_schedule,
    integrate_adaptive,
    integrate_fixed,
    rms_norm,
    steps_per_interval,
    vjp,
)
from ._solution import SolverError, Status

__all__ = [
    "AbstractAdjoint",
    "BacksolveAdjoint",
    "CheckpointAdjoint",
    "DirectAdjoint",
    "get_adjoint",
]


@dataclass
class Config:
    """Everything a native integration needs besides the problem and the data."""

    method: Any  # a method object, e.g. ExplicitRungeKutta
    dt: float | None
    rtol: float
    atol: float
    max_steps: int
    # Planned before the solve (solvers.prepare): the fixed steps over the (lanes, T) grid,
    # and for BacksolveAdjoint the backward steps of each output interval (index j - 1 for
    # the interval that ends at output j). None: planned when needed, by reading the grid.
    schedule: FixedSchedule | None = None
    backward: tuple[FixedSchedule, ...] | None = None
    # An SDE's planned steps and Brownian increments (an SDESchedule), for one call
    noise: Any = None

    def fixed_schedule(self, t: torch.Tensor) -> FixedSchedule:
        """The fixed steps over the ``(lanes, T)`` grid ``t``: the planned ones, if any."""
        if self.schedule is not None:
            return self.schedule
        return fixed_schedule(t, self.dt, self.max_steps)


class AbstractAdjoint:
    """How a native solve computes gradients. Subclasses are final."""

    name: str

    def run(self, problem, cfg: Config, y0, t, f0) -> Outcome:
        raise NotImplementedError


class DirectAdjoint(AbstractAdjoint):
    """Backpropagate through every operation of the solver (discretise-then-optimise).

    Exact gradients of the computed solution; memory grows with the number of steps.
    Step sizes are treated as constants (they are chosen from detached values).
    """

    name = "direct"

    def run(self, problem, cfg, y0, t, f0):
        return problem.integrate(cfg, y0, t, f0)

    def __repr__(self):
        return "DirectAdjoint()"


class CheckpointAdjoint(AbstractAdjoint):
    """Store the state every ``every`` steps and recompute each segment in the backward pass.

    Gradients equal :class:`DirectAdjoint`'s; memory grows with the number of checkpoints
    (steps / ``every``) and the length of one segment, not with the number of steps.

    Args:
        every: steps per segment. Default: ``⌈√N⌉`` for fixed-step solves of ``N`` steps
            (memory ``O(√N)``), 32 for adaptive solves.
    """

    name = "checkpoint"

    def __init__(self, every: int | None = None):
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"CheckpointAdjoint: every must be a positive integer, got {every!r}")
        self.every = every

    def run(self, problem, cfg, y0, t, f0):
        every = self.every or (32 if cfg.method.adaptive else "auto")
        return problem.integrate(cfg, y0, t, f0, checkpoint_every=every)

    def __repr__(self):
        return f"CheckpointAdjoint(every={self.every})"


class BacksolveAdjoint(AbstractAdjoint):
    """The continuous adjoint: solve the adjoint equation backwards in time.

    The forward solve keeps only its outputs; the backward pass integrates the state, the
    adjoint ``a = ∂L/∂y`` and the parameter gradients from each output time to the one before
    (Chen et al., Neural ordinary differential equations, NeurIPS 2018), so memory does not
    depend on the number of steps. Each interval is mapped onto ``[0, 1]``, which lets one
    batched backward solve serve per-sample time grids and yields the gradients with respect
    to the times from the same vector-Jacobian products. The state is reset to the stored
    output at every output time. The backward solve's step-size control measures the state
    and adjoint only (a seminorm: Kidger et al., "Hey, that's not an ODE", ICML 2021).

    Gradients reach ``y0``, ``t`` and the parameters of the vector field when it is an
    ``nn.Module`` (or the tensors given as ``params``). Tensors a plain function captures
    from outside get no gradient: pass them as ``params``. Double backward is not supported.

    Args:
        method: method for the backward solve (default: the forward method).
        rtol: relative tolerance of the backward solve (default: the forward one).
        atol: absolute tolerance of the backward solve (default: the forward one).
        dt: step of the backward solve for fixed-step methods (default: the forward one).
        params: tensors to differentiate besides ``y0`` and ``t``.
    """

    name = "backsolve"

    def __init__(
        self,
        method: str | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        dt: float | None = None,
        params: Iterable[torch.Tensor] | None = None,
    ):
        self.method, self.rtol, self.atol, self.dt = method, rtol, atol, dt
        self.params = None if params is None else tuple(params)

    def run(self, problem, cfg, y0, t, f0):
        from ._methods import get_method

        if hasattr(problem, "backsolve"):
            return problem.backsolve(self, cfg, y0, t, f0)
        if not problem.supports_backsolve:
            raise ValueError(
                f"adjoint 'backsolve' does not handle a {type(problem).__name__} problem; "
                "use adjoint='direct' or 'checkpoint'"
            )
        params = self.params if self.params is not None else tuple(problem.parameters())
        back = get_method(self.method) if self.method is not None else cfg.method
        if not hasattr(back, "tableau"):
            raise ValueError(
                f"BacksolveAdjoint: the backward solve needs a Runge–Kutta method, got "
                f"{back.name!r}; pass BacksolveAdjoint(method='dopri5') or another"
            )
        bcfg = Config(
            method=back,
            dt=self.dt if self.dt is not None else cfg.dt,
            rtol=self.rtol if self.rtol is not None else cfg.rtol,
            atol=self.atol if self.atol is not None else cfg.atol,
            max_steps=cfg.max_steps,
            schedule=None,
            backward=cfg.backward,
        )
        if not back.adaptive and bcfg.dt is None:
            raise ValueError(
                f"BacksolveAdjoint: the backward method {back.name!r} is fixed-step; "
                "pass dt to BacksolveAdjoint"
            )
        box = {}
        # f0 was evaluated with the graph on; the forward pass needs only its value
        ys = _Backsolve.apply(problem, cfg, bcfg, box, y0, t, f0.detach(), *params)
        out = box["outcome"]
        out.ys = (ys,)
        return out

    def __repr__(self):
        return f"BacksolveAdjoint(method={self.method!r}, rtol={self.rtol}, atol={self.atol})"


class _Backsolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem, cfg, bcfg, box, y0, t, f0, *params):
        with torch.no_grad():
            out = problem.integrate(cfg, y0, t, f0)
        box["outcome"] = out
        ys = out.ys[0]
        ctx.problem, ctx.bcfg, ctx.n_params = problem, bcfg, len(params)
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        t, ys, *params = ctx.saved_tensors
        problem, bcfg = ctx.problem, ctx.bcfg
        want_t = ctx.needs_input_grad[5]
        B, T = ys.shape[0], ys.shape[1]
        grad_ys = grad_ys.nan_to_num(0.0) if grad_ys is not None else torch.zeros_like(ys)
        a = grad_ys[:, T - 1]
        g_params = [torch.zeros_like(p) for p in params]
        g_t = torch.zeros_like(t)
        for j in range(T - 1, 0, -1):
            tp, tn = t[:, j - 1], t[:, j]
            field = _augmented_field(problem, tp, tn, params, B, want_t)
            state = (
                ys[:, j],
                a,
                torch.zeros_like(tp),
                torch.zeros_like(tn),
                *[torch.zeros_like(p) for p in params],
            )
            planned = bcfg.backward[j - 1] if bcfg.backward is not None else None
            end = _solve_unit_interval(field, bcfg, state, tp, tn, planned)
            a = end[1] + grad_ys[:, j - 1]
            g_t[:, j - 1] += end[2]
            g_t[:, j] += end[3]
            for g, e in zip(g_params, end[4:]):
                g += e
        return (None, None, None, None, a, g_t if want_t else None, None, *g_params)


def _augmented_field(problem, tp, tn, params, batch: int, want_t: bool):
    """The adjoint system in reversed unit time ``r``, with ``t = tp + (1 - r)(tn - tp)``."""

    def field(r, state):
        y, a = state[0], state[1]
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            tp_ = tp.detach().requires_grad_(want_t)
            tn_ = tn.detach().requires_grad_(want_t)
            delta = tn_ - tp_
            tt = tp_ + (1 - r) * delta
            # r = 0 is the end of the forward interval: the left limit there (see rk_step)
            tt = torch.where(r == 0, torch.nextafter(tt, tp_), tt)
            g = delta.reshape(delta.shape + (1,) * (y.ndim - 1)) * problem.vector_field(
                tt.expand(batch), y_
            )
            inputs = (y_, *((tp_, tn_) if want_t else ()), *params)
            got = vjp(g, inputs, a)
        if want_t:
            d_tp, d_tn, d_params = got[1], got[2], got[3:]
        else:
            d_tp, d_tn, d_params = torch.zeros_like(tp), torch.zeros_like(tn), got[1:]
        return (-g.detach(), got[0], d_tp, d_tn, *d_params)

    return field


def _solve_unit_interval(field, bcfg: Config, state, tp, tn, planned: FixedSchedule | None):
    """Integrate the augmented state over ``r ∈ [0, 1]`` with one step size for the batch.

    A fixed-step backward solve takes the planned schedule when there is one; then nothing
    is read back to the host (the step count was checked against ``max_steps`` when it was
    planned).
    """
    tab = bcfg.method.tableau
    r0 = torch.zeros(1, device=state[0].device, dtype=state[0].dtype)
    f0 = field(r0, state)
    if not tab.adaptive:
        sched = planned if planned is not None else unit_schedule(tp, tn, bcfg)
        return integrate_fixed(field, tab, state, f0, sched).final

    def seminorm(e, a, b):
        per_sample = rms_norm(e[:2], a[:2], b[:2], bcfg.rtol, bcfg.atol)
        return per_sample.max().reshape(1)

    grid = torch.stack([r0, torch.ones_like(r0)], dim=1)
    out = integrate_adaptive(
        field,
        tab,
        bcfg.method.controller,
        state,
        f0,
        grid,
        seminorm,
        max_steps=bcfg.max_steps,
        record=False,
    )
    code = int(out.status[0])
    if code != Status.SUCCESS:
        raise SolverError(
            Status(code),
            list(range(state[0].shape[0])),
            " (in the backward solve of BacksolveAdjoint)",
        )
    return out.final


def unit_schedule(tp: torch.Tensor, tn: torch.Tensor, bcfg: Config) -> FixedSchedule:
    """The fixed backward steps of one output interval, mapped onto ``[0, 1]``.

    The interval ``[tp, tn]`` (``(lanes,)`` each) takes as many steps of at most ``bcfg.dt``
    as its longest lane needs; more than ``max_steps`` raises :class:`SolverError`.
    """
    span = torch.stack([tp.detach(), tn.detach()], dim=1)
    n = int(steps_per_interval(span, bcfg.dt).max())
    if n > bcfg.max_steps:
        raise SolverError(
            Status.MAX_STEPS,
            list(range(tp.shape[0])),
            f" (the backward solve of BacksolveAdjoint needs {n} steps of dt={bcfg.dt!r} on "
            f"one output interval, more than max_steps={bcfg.max_steps})",
        )
    grid = torch.tensor([[0.0, 1.0]], device=tp.device, dtype=tp.dtype)
    return fixed_schedule(grid, 1.0 / n, bcfg.max_steps)


_ADJOINTS = {
    "direct": DirectAdjoint,
    "backsolve": BacksolveAdjoint,
    "checkpoint": CheckpointAdjoint,
}


def get_adjoint(adjoint) -> AbstractAdjoint:
    if isinstance(adjoint, AbstractAdjoint):
        return adjoint
    if isinstance(adjoint, str) and adjoint in _ADJOINTS:
        return _ADJOINTS[adjoint]()
    raise ValueError(f"unknown adjoint {adjoint!r}; valid adjoints are: {', '.join(_ADJOINTS)}")
