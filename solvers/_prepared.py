"""A fixed-step solve planned once, whose calls read nothing back to the host.

:func:`solve` validates its times and plans its steps on the host at every call: a few reads
of device tensors, which stop a CUDA graph capture and break a ``torch.compile`` graph.
:func:`prepare` does that work once, for a time grid that stays the same from call to call
(the usual case when training on fixed-length sequences or a fixed horizon). Each call of
the returned :class:`PreparedSolve` then runs only tensor operations, so it can be

* called eagerly: the same results as ``solve(..., throw=False)``;
* compiled: ``torch.compile(prepared, fullgraph=True)``;
* captured, forward and backward, in CUDA graphs: :meth:`PreparedSolve.cuda_graph`. This is
  what removes the launch overhead of a loop of small kernels (PERFORMANCE.md: 6-10x on
  the GPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch

from ._adjoint import AbstractAdjoint, BacksolveAdjoint, Config, get_adjoint, unit_schedule
from ._backends import NativeBackend
from ._brownian import _check_seed
from ._controller import ConstantStepSize, fixed_schedule
from ._problems import AbstractProblem
from ._rk import CompiledRungeKutta, ExplicitRungeKutta
from ._sde import SDE, SDESchedule
from ._solution import Solution
from ._solve import check_grid, check_numbers, check_state, resolve_method
from ._stepper import AbstractStepper, get_method
from ._term import MultiTerm

__all__ = ["PreparedSolve", "prepare"]

# rtol/atol play no part in a fixed-step solve; the Config still carries numbers.
_UNUSED_RTOL, _UNUSED_ATOL = 1e-5, 1e-6
_NATIVE = NativeBackend()


def prepare(
    problem: AbstractProblem,
    t: torch.Tensor,
    *,
    method: str | AbstractStepper | None = None,
    dt: float,
    adjoint: str | AbstractAdjoint = "direct",
    max_steps: int = 10_000,
    compile: bool | dict = False,
) -> PreparedSolve:
    """Plan a fixed-step solve of ``problem`` over the times ``t`` once, for many calls.

    Every check and every host read that :func:`solve` makes (the times are finite and
    increasing, the step schedule, the backward steps of ``adjoint="backsolve"``) happens
    here. Calling the result with an initial state runs the solver loop and nothing else.

    Args:
        problem: an :class:`ODE`, :class:`CDE`, :class:`SDE` or :class:`HamiltonianODE`. An
            SDE's steps and Brownian tree are planned at the first call for a shape of
            ``y0``; later calls draw the path from a seed on the device (see
            :meth:`PreparedSolve.__call__`). DDEs are not planned: their steps are placed
            from the delays at every call (host reads before the loop); use :func:`solve`.
        t: output times, ``(T,)`` shared by the batch or ``(batch, T)`` per sample, strictly
            increasing; a floating-point tensor on the device and of the dtype of the
            states the solve will be called with.
        method: any method that accepts the problem (:func:`methods`), run with constant
            steps: a Runge–Kutta tableau (adaptive ones too), for a separable
            ``HamiltonianODE`` a symplectic method, for an SDE an SDE method. Default:
            ``rk4``, or the SDE's default method.
        dt: the step size; each output interval is split into ``⌈Δt/dt⌉`` equal steps.
        adjoint: ``"direct"``, ``"checkpoint"``, ``"backsolve"`` or an adjoint object. A
            ``BacksolveAdjoint`` must integrate backwards with a fixed-step method too (the
            default: the forward method and ``dt``).
        max_steps: most steps per sample; samples that would need more stop there and are
            marked ``MAX_STEPS`` (their unreached outputs are NaN).
        compile: ``True`` (or a dict of ``torch.compile`` options) compiles one step of a
            Runge–Kutta method, forward and backward, at the first call, and runs the loop
            in Python around it: one compilation per configuration whatever the number of
            steps (``torch.compile(prepared)`` instead traces every step of the loop).
            Measured figures: docs/benchmarks.md. Default options: ``dynamic=False``.

    Returns:
        A :class:`PreparedSolve`; ``prepared(y0)`` returns the :class:`Solution`.
    """
    return PreparedSolve(
        problem, t, method=method, dt=dt, adjoint=adjoint, max_steps=max_steps, compile=compile
    )


class PreparedSolve:
    """A fixed-step solve over a planned time grid (made by :func:`prepare`).

    ``prepared(y0)`` equals ``solvers.solve(problem, y0, t, ..., throw=False)`` (the same
    operations in the same order, so the same numbers), but reads nothing back to the host:
    failures are not raised, they are in ``Solution.status_codes`` (``NONFINITE`` where a
    sample's outputs are not finite, ``MAX_STEPS`` where the plan cut a sample short).

    The first call with a given shape, dtype and device of ``y0`` checks the vector field's
    output at ``t0`` (a shape check, no host read of values); later calls only evaluate it.

    Attributes:
        problem: the problem.
        t: the output times, as checked.
        method: the method object.
        adjoint: the adjoint object.
        num_steps: the steps of the longest sample.
    """

    def __init__(self, problem, t, *, method, dt, adjoint, max_steps, compile=False):
        if not isinstance(problem, AbstractProblem):
            raise TypeError(
                f"prepare: problem must be a solvers problem such as ODE(f), got "
                f"{type(problem).__name__}"
            )
        name = type(problem).__name__
        sde = isinstance(problem, SDE)
        if problem.terms().keeps_history:
            raise ValueError(
                f"prepare plans ODE, CDE, SDE and HamiltonianODE solves; a {name} problem "
                "looks up its delayed values on steps placed from its delays at every call "
                "(breakpoints, none longer than a delay: host reads). Use solvers.solve for it"
            )
        if method is None and not sde:
            method = "rk4"
        method = resolve_method(problem, method)
        if dt is None:
            raise ValueError("prepare plans constant steps: pass dt, the step size")
        if sde and isinstance(get_adjoint(adjoint), BacksolveAdjoint):
            raise ValueError(
                "prepare plans SDE solves under adjoint 'direct' and 'checkpoint'; the "
                "stochastic adjoint ('backsolve') is planned by solvers.solve at each call"
            )
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(
                "prepare: t must be a floating-point tensor on the device and of the dtype of "
                f"the states to solve, got {got}"
            )
        t = check_grid(t)
        controller = ConstantStepSize(dt)
        check_numbers(_UNUSED_RTOL, _UNUSED_ATOL, max_steps)
        adjoint = get_adjoint(adjoint)
        cfg = Config(method, controller, _UNUSED_RTOL, _UNUSED_ATOL, max_steps)
        _NATIVE.check_supports(problem, cfg, adjoint, t)
        refusal = adjoint.refuses(problem, method)
        if refusal:
            raise ValueError(refusal)
        self._grid = NativeBackend.grid(problem, t, cfg, adjoint)
        steps_t = self._grid[0]
        lanes_t = NativeBackend.lanes(steps_t, cfg, steps_t.shape[0] if steps_t.ndim == 2 else 1)
        backward = None
        if isinstance(adjoint, BacksolveAdjoint):
            backward = _plan_backward(problem, method, adjoint, lanes_t, dt, max_steps)
        self.problem, self.t, self.method, self.adjoint = problem, t, method, adjoint
        stepper = _compiled(problem, method, compile) if compile is not False else method
        self._cfg = Config(
            stepper,
            controller,
            _UNUSED_RTOL,
            _UNUSED_ATOL,
            max_steps,
            schedule=fixed_schedule(lanes_t, dt, max_steps),
            backward=backward,
        )
        self.num_steps = len(self._cfg.schedule.ts)
        self._t0 = t[0] if t.ndim == 1 else t[:, 0]
        self._lanes_t = lanes_t
        self._checked: set = set()
        self._sde = sde
        self._noise: dict = {}  # an SDE's planned increments, per shape of y0

    def __call__(self, y0: torch.Tensor, seed: int | torch.Tensor | None = None) -> Solution:
        """Solve from ``y0`` (``(batch, *state)``); returns the :class:`Solution`.

        ``seed`` (SDE problems without their own ``BrownianPath``): the seed of the
        Brownian path, an int or a 0-dim int64 tensor on the device (read there, so a
        compiled call can take a new one each time); default: the problem's ``seed``, so
        that the call equals ``solve``.
        """
        self._check_y0(y0)
        t0 = self._t0.expand(y0.shape[0])
        key = (tuple(y0.shape), y0.dtype, y0.device)
        if key in self._checked:
            f0 = None if self._sde else self.problem.vector_field(t0, y0)
        else:
            f0 = self.problem.check(t0, y0)
            self._checked.add(key)
        cfg = self._cfg
        if isinstance(self.problem, SDE):
            cfg = dataclasses.replace(cfg, noise=self._increments(key, y0, t0, seed))
        elif seed is not None:
            raise ValueError(
                "seed applies to SDE problems (it seeds their Brownian path), not to "
                f"{type(self.problem).__name__}"
            )
        return _NATIVE.solve(self.problem, y0, self.t, f0, cfg, self.adjoint, grid=self._grid)

    def _increments(self, key, y0, t0, seed):
        """The SDE's steps and Brownian increments: planned at the first call for a shape of
        ``y0`` (host reads), then drawn from ``seed`` on the device."""
        plan = self._noise.get(key)
        if plan is None:
            g0 = self.problem.terms().g(t0, y0)
            plan = self._noise[key] = SDESchedule(self.problem, self._cfg, y0, self._lanes_t, g0)
        if seed is None:
            return (
                plan
                if self.problem.brownian is not None
                else plan.redraw(self.problem.seed, y0.dtype)
            )
        if isinstance(seed, torch.Tensor):
            if seed.ndim != 0 or seed.dtype != torch.long:
                raise ValueError(
                    f"seed must be an int or a 0-dim int64 tensor, got a tensor of dtype "
                    f"{seed.dtype} and shape {tuple(seed.shape)}"
                )
        else:
            seed = _check_seed(seed, "PreparedSolve")
        return plan.redraw(seed, y0.dtype)

    def _check_y0(self, y0) -> None:
        check_state(y0)
        t = self.t
        if y0.dtype != t.dtype or y0.device != t.device:
            raise ValueError(
                f"this solve was prepared for states of dtype {t.dtype} on {t.device} (those "
                f"of t); got y0 of dtype {y0.dtype} on {y0.device}"
            )
        if t.ndim == 2 and y0.shape[0] != t.shape[0]:
            raise ValueError(
                f"this solve was prepared for per-sample times t of shape {tuple(t.shape)}, "
                f"batch {t.shape[0]}; got y0 of batch {y0.shape[0]}"
            )

    def cuda_graph(
        self,
        y0: torch.Tensor,
        *,
        params: Iterable[torch.Tensor] | None = None,
        warmup: int = 3,
    ) -> Callable[[torch.Tensor], Solution]:
        """Capture the forward and the backward pass of this solve in CUDA graphs.

        Uses :func:`torch.cuda.make_graphed_callables`: ``y0`` is a sample of the initial
        states (its shape, dtype and ``requires_grad`` are fixed from now on); the solve runs
        ``warmup`` times on a side stream, then is captured. The returned function takes an
        initial state like ``y0`` and returns a :class:`Solution` whose ``ys`` takes part in
        autograd like the eager one: ``loss.backward()`` replays the backward graph and
        accumulates gradients into ``y0`` (when it requires grad) and ``params``.

        Args:
            y0: a sample initial state on a CUDA device.
            params: the tensors that receive gradients besides ``y0``. Default: the
                problem's parameters (those of ``f`` when it is an ``nn.Module``, and a CDE
                path's tensors that require grad). Tensors that the vector field captures
                from outside must be listed here, or they get no gradient.
            warmup: eager runs before the capture.

        Notes:
            The graphs read ``y0`` and the parameters from fixed addresses: update
            parameters in place (every ``torch.optim`` optimiser does), and do not replace
            them. ``Solution.ys`` lives in the graph's memory and is overwritten by the next
            call: clone it to keep it. Calls run in the order they were captured: forward,
            then backward, before the next forward.
        """
        if isinstance(self.problem, SDE):
            raise ValueError(
                "cuda_graph does not capture SDE solves: every replay would reuse the one "
                "Brownian path drawn at capture. Call the prepared solve with a seed tensor, "
                "or torch.compile it (mode='reduce-overhead' captures CUDA graphs with the "
                "seed as an input)"
            )
        if not isinstance(y0, torch.Tensor) or y0.device.type != "cuda":
            where = y0.device if isinstance(y0, torch.Tensor) else type(y0).__name__
            raise ValueError(
                f"cuda_graph needs a sample y0 on a CUDA device, got {where}; on the CPU call "
                "the prepared solve directly, or torch.compile it"
            )
        self._check_y0(y0)
        if params is None:
            params = self.problem.parameters()
        params = tuple(p for p in params if p.requires_grad)
        box: dict = {}

        def run(y, *_):
            sol = self(y)
            box.setdefault("stats", sol.stats)
            return sol.ys, sol.status_codes

        graphed = torch.cuda.make_graphed_callables(
            run, (y0, *params), num_warmup_iters=warmup, allow_unused_input=True
        )
        sample = (tuple(y0.shape), y0.dtype, y0.device, y0.requires_grad)

        def call(y: torch.Tensor) -> Solution:
            got = (tuple(y.shape), y.dtype, y.device, y.requires_grad)
            if got != sample:
                raise ValueError(
                    "a CUDA-graphed solve takes initial states like its sample (shape, dtype, "
                    f"device, requires_grad) {sample}; got {got}"
                )
            ys, codes = graphed(y, *params)
            return Solution(self.t, ys, codes, box["stats"])

        return call

    def __repr__(self):
        return (
            f"PreparedSolve({self.problem!r}, method={self.method.name!r}, dt={self._cfg.dt}, "
            f"steps={self.num_steps}, adjoint={self.adjoint!r})"
        )


def _compiled(problem, method, options) -> CompiledRungeKutta:
    """The stepper of ``prepare(..., compile=options)``: ``method`` with its steps on the
    problem's terms compiled."""
    if options is True:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(
            f"prepare: compile must be True, False or a dict of torch.compile options, got "
            f"{type(options).__name__}"
        )
    terms = problem.terms()
    if not isinstance(method, ExplicitRungeKutta) or isinstance(terms, MultiTerm):
        raise ValueError(
            f"prepare(compile=...) compiles the steps of Runge–Kutta methods; method "
            f"{method.name!r} on a {type(problem).__name__} is not one. Compile the prepared "
            "solve instead: torch.compile(prepared)"
        )
    return CompiledRungeKutta(method.tableau, terms, {"dynamic": False, **options})


def _plan_backward(problem, method, adjoint, lanes_t, dt, max_steps):
    """The fixed backward steps of every output interval for a backsolve adjoint."""
    back = get_method(adjoint.method) if adjoint.method is not None else method
    if not isinstance(back, ExplicitRungeKutta):
        raise ValueError(
            f"prepare: BacksolveAdjoint's backward method {back.name!r} is not a Runge–Kutta "
            "method. Pass BacksolveAdjoint(method='rk4') or another"
        )
    bdt = adjoint.dt if adjoint.dt is not None else dt
    bcfg = Config(back, ConstantStepSize(bdt), _UNUSED_RTOL, _UNUSED_ATOL, max_steps)
    return tuple(
        unit_schedule(lanes_t[:, j - 1], lanes_t[:, j], bcfg) for j in range(1, lanes_t.shape[1])
    )
