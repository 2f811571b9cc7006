"""How gradients flow through a solve: adjoints wrap the one loop (``_integrate``).

* :class:`DirectAdjoint`: backpropagate through the loop's operations;
* :class:`CheckpointAdjoint`: the same, recomputing segments of steps in the backward pass
  (the segmentation is the loop's own, written once);
* :class:`BacksolveAdjoint`: the continuous adjoint, an augmented term solved backwards in
  time by the same loop; on an SDE it is one of the SDE adjoints below;
* :class:`StochasticAdjoint` and :class:`ReversibleAdjoint`: the SDE adjoints, as named
  objects (``_sde_adjoint``).

Every adjoint declares the terms it handles (:meth:`AbstractAdjoint.refuses`), checked once
in ``solve``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ._controller import (
    ConstantStepSize,
    FixedSchedule,
    PIDController,
    fixed_schedule,
    steps_per_interval,
)
from ._integrate import Outcome, integrate, rms_norm, vjp
from ._rk import lane_view
from ._solution import SolverError, Status
from ._term import AbstractDerivativeTerm, FunctionTerm, MultiTerm

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

    method: Any  # a stepper
    controller: Any  # a step-size controller
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
    # dense output: a list that receives every step the forward solve takes, or None
    steps: list | None = None
    # a terminal event function event(t, y) -> (batch,), or None
    event: Any = None

    @property
    def dt(self) -> float | None:
        """The constant step size, or ``None`` for adaptive steps."""
        return self.controller.dt if self.controller.planned else None

    def fixed_schedule(self, t: torch.Tensor) -> FixedSchedule:
        """The planned steps over the ``(lanes, T)`` grid ``t``: the given ones, if any."""
        if self.schedule is not None:
            return self.schedule
        return fixed_schedule(t, self.controller.dt, self.max_steps)

    def norm(self, err, y0, y1):
        return rms_norm(err, y0, y1, self.rtol, self.atol)


def forward_solve(problem, cfg: Config, y0, t, f0, *, checkpoint_every=None) -> Outcome:
    """The native forward solve of ``problem`` over the ``(lanes, T)`` grid ``t``: its
    terms, stepper and controller through the one loop."""
    terms = problem.terms()
    controls, schedule = None, None
    jumps = None if cfg.controller.planned else problem.jump_times()
    if terms.keeps_history:
        # a term that reads the solution's past (a DDE) is bound to a history of its own for
        # this solve, and places the steps (on its breakpoints, none longer than a delay)
        terms, schedule, jumps = terms.begin(cfg, y0, t)
    elif isinstance(terms, MultiTerm):
        from ._sde import AdaptiveNoise, SDESchedule

        g0 = terms.g(t[:, 0], y0) if cfg.noise is None else None
        if not cfg.controller.planned:
            # adaptive steps: increments queried on a BrownianPath, so that a rejected step
            # and its retry see the same noise; the steps land on every output time
            controls = AdaptiveNoise(problem, y0, t, g0)
            jumps = t.detach()
        else:
            controls = cfg.noise if cfg.noise is not None else SDESchedule(problem, cfg, y0, t, g0)
            schedule = controls.sched
    elif cfg.controller.planned:
        schedule = cfg.fixed_schedule(t)
    return integrate(
        cfg.method,
        terms,
        (y0,),
        t,
        cfg.controller,
        f0=None if f0 is None else (f0,),
        schedule=schedule,
        controls=controls,
        norm=cfg.norm,
        max_steps=cfg.max_steps,
        checkpoint_every=checkpoint_every,
        jumps=jumps,
        steps=cfg.steps,
        event=cfg.event,
    )


class AbstractAdjoint:
    """How a native solve computes gradients. Subclasses are final."""

    name: str

    def refuses(self, problem, method) -> str | None:
        """Why this adjoint cannot differentiate ``problem`` solved by ``method``; None."""
        return None

    def run(self, problem, cfg: Config, y0, t, f0) -> Outcome:
        raise NotImplementedError


class DirectAdjoint(AbstractAdjoint):
    """Backpropagate through every operation of the solver (discretise-then-optimise).

    Exact gradients of the computed solution; memory grows with the number of steps.
    Step sizes are treated as constants (they are chosen from detached values).
    """

    name = "direct"

    def run(self, problem, cfg, y0, t, f0):
        return forward_solve(problem, cfg, y0, t, f0)

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
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValueError(f"CheckpointAdjoint: every must be a positive integer, got {every!r}")
        self.every = every

    def run(self, problem, cfg, y0, t, f0):
        every = self.every or ("auto" if cfg.controller.planned else 32)
        return forward_solve(problem, cfg, y0, t, f0, checkpoint_every=every)

    def __repr__(self):
        return f"CheckpointAdjoint(every={self.every})"


def _check_tolerance(owner: str, name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{owner}: {name} must be a non-negative number, got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")


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
    ``nn.Module`` (or the tensors given as ``params``). A tensor that requires grad and that
    the vector field reaches otherwise (captured by a plain function) is found before the
    solve, and the solve refuses it (a ValueError naming its shape): pass it in ``params``.
    Samples that failed in the forward solve (``throw=False``) get no gradient. Double
    backward is not supported.

    On an SDE, ``adjoint="backsolve"`` is :class:`ReversibleAdjoint` for the
    ``reversible_heun`` method and :class:`StochasticAdjoint` otherwise.

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
        _check_tolerance("BacksolveAdjoint", "rtol", rtol)
        _check_tolerance("BacksolveAdjoint", "atol", atol)
        if rtol is not None and atol is not None and rtol + atol == 0:
            raise ValueError("BacksolveAdjoint: rtol and atol must not both be zero")
        if dt is not None:
            ConstantStepSize(dt)  # raises naming dt
        if method is not None:
            from ._stepper import get_method

            get_method(method)  # an unknown name is refused now, not in the backward pass
        self.method, self.rtol, self.atol, self.dt = method, rtol, atol, dt
        if params is not None:
            params = tuple(params)
            for i, p in enumerate(params):
                if not isinstance(p, torch.Tensor):
                    raise TypeError(
                        f"BacksolveAdjoint: params[{i}] must be a tensor, got {type(p).__name__}"
                    )
        self.params = params

    def refuses(self, problem, method):
        terms = problem.terms()
        if isinstance(terms, MultiTerm):
            return self._sde_adjoint(method).refuses(problem, method)
        if not isinstance(terms, AbstractDerivativeTerm) or terms.keeps_history:
            return (
                f"adjoint 'backsolve' does not handle a {type(problem).__name__} problem; "
                "use adjoint='direct' or 'checkpoint'"
            )
        return None

    def _sde_adjoint(self, method):
        from ._sde_adjoint import ReversibleAdjoint, StochasticAdjoint

        unused = [k for k in ("method", "rtol", "atol", "dt") if getattr(self, k) is not None]
        if unused:
            raise ValueError(
                f"BacksolveAdjoint: {', '.join(unused)} do not apply to an SDE: its backward "
                "solve takes the forward steps on the same Brownian path; pass "
                "BacksolveAdjoint() or BacksolveAdjoint(params=...)"
            )
        cls = ReversibleAdjoint if ReversibleAdjoint.handles(method) else StochasticAdjoint
        return cls(params=self.params)

    def backward_config(self, cfg: Config) -> Config:
        """The configuration of the backward solve."""
        from ._rk import ExplicitRungeKutta
        from ._stepper import get_method

        back = get_method(self.method) if self.method is not None else cfg.method
        if not isinstance(back, ExplicitRungeKutta):
            raise ValueError(
                f"BacksolveAdjoint: the backward solve needs a Runge–Kutta method, got "
                f"{back.name!r}; pass BacksolveAdjoint(method='dopri5') or another"
            )
        dt = self.dt if self.dt is not None else cfg.dt
        if dt is not None:
            controller = ConstantStepSize(dt)
        elif back.adaptive:
            controller = cfg.controller if isinstance(cfg.controller, PIDController) else None
            controller = controller or PIDController()
        else:
            raise ValueError(
                f"BacksolveAdjoint: the backward method {back.name!r} is fixed-step; "
                "pass dt to BacksolveAdjoint"
            )
        return Config(
            method=back,
            controller=controller,
            rtol=self.rtol if self.rtol is not None else cfg.rtol,
            atol=self.atol if self.atol is not None else cfg.atol,
            max_steps=cfg.max_steps,
            backward=cfg.backward,
        )

    def run(self, problem, cfg, y0, t, f0):
        terms = problem.terms()
        if isinstance(terms, MultiTerm):
            return self._sde_adjoint(cfg.method).run(problem, cfg, y0, t, f0)
        params = self.params if self.params is not None else tuple(terms.parameters())
        check_captured(terms, y0, t[:, 0], params)
        bcfg = self.backward_config(cfg)
        box = {}
        # f0 was evaluated with the graph on; the forward pass needs only its value
        ys = _Backsolve.apply(problem, cfg, bcfg, box, y0, t, f0.detach(), *params)
        out = box["outcome"]
        out.ys = (ys,)
        return out

    def __repr__(self):
        return f"BacksolveAdjoint(method={self.method!r}, rtol={self.rtol}, atol={self.atol})"


def check_captured(terms, y0, t0, params) -> None:
    """Refuse a vector field that reaches tensors requiring grad other than ``params``: the
    continuous adjoint would silently give them no gradient.

    Evaluates the terms once with a graph and walks it from the output to its leaves,
    stopping at ``params`` (which may be computed tensors, like a path's coefficients).
    """
    if not torch.is_grad_enabled():
        return
    with torch.enable_grad():
        y = y0.detach().requires_grad_(True)
        out = terms.derivative(t0.detach(), (y,))[0]
    if out.grad_fn is None:
        return
    stop = {id(p) for p in params}
    stop_fns = {p.grad_fn for p in params if p.grad_fn is not None}
    seen, stack, found = set(), [out.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen or fn in stop_fns:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None:
            if var is not y and id(var) not in stop:
                found.append(var)
            continue
        stack.extend(f for f, _ in fn.next_functions)
    if found:
        shapes = ", ".join(str(tuple(v.shape)) for v in found[:5])
        raise ValueError(
            f"adjoint 'backsolve': the vector field uses {len(found)} tensor(s) that require "
            f"grad but are not among its parameters (shapes {shapes}), and would get no "
            "gradient. Hold them as parameters of an nn.Module vector field, or pass every "
            "tensor to differentiate as BacksolveAdjoint(params=[...])"
        )


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


class _Backsolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem, cfg, bcfg, box, y0, t, f0, *params):
        with torch.no_grad():
            out = forward_solve(problem, cfg, y0, t, f0)
        box["outcome"] = out
        ys = out.ys[0]
        status = out.status.expand(y0.shape[0]) if out.status.shape[0] == 1 else out.status
        ctx.problem, ctx.bcfg, ctx.n_params = problem, bcfg, len(params)
        ctx.save_for_backward(t, ys, status, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        t, ys, status, *params = ctx.saved_tensors
        problem, bcfg = ctx.problem, ctx.bcfg
        want_t = ctx.needs_input_grad[5]
        B, T = ys.shape[0], ys.shape[1]
        grad_ys = grad_ys.nan_to_num(0.0) if grad_ys is not None else torch.zeros_like(ys)
        # samples that failed forward (throw=False) take no part: their outputs are NaN
        failed = status != Status.SUCCESS
        ok = (~failed).reshape((B,) + (1,) * (ys.ndim - 1)).to(ys.dtype)
        grad_ys = grad_ys * ok
        ys = torch.where(ok.bool(), ys, torch.zeros((), dtype=ys.dtype, device=ys.device))
        terms, leaves = detached_terms(problem.terms(), params)
        a = grad_ys[:, T - 1]
        g_params = [torch.zeros_like(p) for p in params]
        g_t = torch.zeros_like(t)
        for j in range(T - 1, 0, -1):
            tp, tn = t[:, j - 1], t[:, j]
            field = _augmented_field(terms, tp, tn, leaves, B, want_t)
            # (y, a) then the quadratures: the parameters' gradients, the times' if wanted
            state = (
                ys[:, j],
                a,
                *[torch.zeros_like(p) for p in params],
                *((torch.zeros_like(tp), torch.zeros_like(tn)) if want_t else ()),
            )
            planned = bcfg.backward[j - 1] if bcfg.backward is not None else None
            end = _solve_unit_interval(field, bcfg, state, tp, tn, planned)
            a = end[1] + grad_ys[:, j - 1]
            n = len(params)
            if want_t:
                g_t[:, j - 1] += end[2 + n]
                g_t[:, j] += end[3 + n]
            for g, e in zip(g_params, end[2 : 2 + n]):
                g += e
        a = a * ok[:, 0]
        return (None, None, None, None, a, g_t if want_t else None, None, *g_params)


def detached_terms(terms, params):
    """The terms evaluated on leaf copies of those ``params`` that are computed tensors (a
    CDE path's coefficients built from data that requires grad): each backward step then
    differentiates with respect to the copies, and the graph that built them is left alone
    (it belongs to the caller, and is traversed once, by autograd, after this backward)."""
    computed = [p for p in params if p.grad_fn is not None]
    if not computed or not terms.rebuilds_from_tensors:
        return terms, tuple(params)
    leaves = tuple(p.detach().requires_grad_(True) if p.grad_fn is not None else p for p in params)
    return terms.with_tensors({id(p): q for p, q in zip(params, leaves)}), leaves


def _augmented_field(terms, tp, tn, params, batch: int, want_t: bool):
    """The adjoint system in reversed unit time ``r``, with ``t = tp + (1 - r)(tn - tp)``.

    ``field(r, state, left=False)``; ``left=True`` at ``r = 0``, the end of the forward
    interval, evaluates the terms at the left limit there (see ``rk_step``): only the first
    evaluation of a backward solve is at ``r = 0``, every stage after it lies inside.
    """
    fixed = None
    if not want_t:  # the interval's length is a constant: computed once
        tp_, tn_ = tp.detach(), tn.detach()
        delta = tn_ - tp_
        fixed = (tp_, tn_, delta)

    def field(r, state, left=False):
        y, a = state[0], state[1]
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            if fixed is None:
                tp_ = tp.detach().requires_grad_(True)
                tn_ = tn.detach().requires_grad_(True)
                delta = tn_ - tp_
            else:
                tp_, tn_, delta = fixed
            tt = tp_ + (1 - r) * delta
            if left:
                tt = torch.nextafter(tt, tp_)
            g = lane_view(delta, y) * terms.derivative(tt, (y_,))[0]
            inputs = (y_, *((tp_, tn_) if want_t else ()), *params)
            got = vjp(g, inputs, a)
        if want_t:
            return (-g.detach(), got[0], *got[3:], got[1], got[2])
        return (-g.detach(), *got)

    return field


def _solve_unit_interval(field, bcfg: Config, state, tp, tn, planned: FixedSchedule | None):
    """Integrate the augmented state over ``r ∈ [0, 1]`` with one step size for the batch,
    by the one loop.

    A fixed-step backward solve takes the planned schedule when there is one; then nothing
    is read back to the host (the step count was checked against ``max_steps`` when it was
    planned).
    """
    r0 = torch.zeros(1, device=state[0].device, dtype=state[0].dtype)
    grid = torch.stack([r0, torch.ones_like(r0)], dim=1)
    f0 = field(r0, state, left=True)
    term = FunctionTerm(field, reads=2)  # the field reads (y, a); the rest are quadratures
    if bcfg.controller.planned:
        sched = planned if planned is not None else unit_schedule(tp, tn, bcfg)
        return integrate(
            bcfg.method, term, state, grid, bcfg.controller, f0=f0, schedule=sched, record=False
        ).final

    def seminorm(e, a, b):
        per_sample = rms_norm(e[:2], a[:2], b[:2], bcfg.rtol, bcfg.atol)
        return per_sample.max().reshape(1)

    out = integrate(
        bcfg.method,
        term,
        state,
        grid,
        bcfg.controller,
        f0=f0,
        norm=seminorm,
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
