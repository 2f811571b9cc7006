"""The one entry point: ``solve``."""

from __future__ import annotations

import torch

from ._adjoint import AbstractAdjoint, Config, get_adjoint
from ._backends import get_backend
from ._controller import AbstractStepSizeController, ConstantStepSize, PIDController
from ._problems import AbstractProblem
from ._solution import Solution
from ._stepper import AbstractStepper, get_method, methods
from ._tableau import ButcherTableau
from ._term import DelayTerm

__all__ = ["solve"]


def solve(
    problem: AbstractProblem,
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str | AbstractStepper | ButcherTableau | None = None,
    dt: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    controller: AbstractStepSizeController | None = None,
    adjoint: str | AbstractAdjoint = "direct",
    backend: str = "native",
    max_steps: int = 10_000,
    throw: bool = True,
    dense: bool = False,
    event=None,
) -> Solution:
    """Solve ``problem`` from ``y0`` at ``t[..., 0]`` and return the solution at every ``t``.

    Args:
        problem: the equation, e.g. ``ODE(f)``.
        y0: initial state, ``(batch, *state)`` with at least one state dimension, floating
            point.
        t: output times, ``(T,)`` shared by the batch or ``(batch, T)`` per sample, strictly
            increasing along ``T``; the first is the initial time.
        method: a name from :func:`solvers.methods`, a stepper or a
            :class:`~solvers.ButcherTableau`. ``None`` picks the problem's default:
            ``dopri5`` for ODE, CDE, DDE and Hamiltonian problems, ``euler_maruyama`` for an
            Itô SDE, ``heun`` for a Stratonovich SDE.
        dt: constant steps of at most ``dt`` (short for
            ``controller=ConstantStepSize(dt)``): each interval between consecutive output
            times is split into ``⌈Δt/dt⌉`` equal steps, so every output lies on a step. Any
            method runs with constant steps, adaptive tableaus included.
        rtol: relative tolerance of adaptive step-size control (without ``dt``).
        atol: absolute tolerance of adaptive step-size control (without ``dt``).
        controller: a step-size controller: :class:`~solvers.ConstantStepSize`,
            :class:`~solvers.StepTo` or :class:`~solvers.PIDController` (whose
            ``first_step`` sets the first adaptive step). Default: from ``dt``, or a
            ``PIDController()`` for a method with an error estimate.
        adjoint: ``"direct"``, ``"backsolve"``, ``"checkpoint"`` or an adjoint object.
        backend: ``"native"``, or a peer: ``"torchdiffeq"``, ``"torchcde"``, ``"torchsde"``,
            ``"diffrax"`` (see :func:`solvers.backends`).
        max_steps: most steps per sample (attempted steps for adaptive methods).
        throw: raise :class:`SolverError` when any sample failed; with ``False`` failing
            samples are marked in ``Solution.status`` and the others finish.
        dense: keep every step's dense information, so that ``Solution.evaluate(t)`` gives
            the solution at any time inside the span (methods with an interpolant:
            ``bosh3``, ``dopri5``, ``tsit5``; adjoints ``direct`` and ``backsolve``).
        event: a terminal event ``event(t, y) -> (batch,)`` (``t``: ``(batch,)``, each
            sample's time): each sample stops at the first zero crossing, located on the
            step's interpolant to the resolution of the times; ``Solution.event_t`` holds the
            time (NaN where none), differentiable (implicit function theorem), and those
            samples get ``Status.EVENT``. Adaptive methods with an interpolant, adjoint
            ``"direct"``.

    Returns:
        A :class:`Solution` with ``ys`` of shape ``(batch, T, *state)``.
    """
    if not isinstance(problem, AbstractProblem):
        raise TypeError(
            f"problem must be a solvers problem such as ODE(f), got {type(problem).__name__}"
        )
    check_state(y0)
    t_given = t = _as_times(t, y0)
    backwards = runs_backwards(t)
    if backwards:
        # a decreasing t solves backwards in time: the problem in s = -t, forwards
        from ._reverse import TimeReversed

        problem, t = TimeReversed(problem), -t
    method = resolve_method(problem, method)
    adjoint = get_adjoint(adjoint)
    backend = get_backend(backend)
    t = _check_times(t, y0, backwards)
    controller = resolve_controller(method, dt, controller)
    check_adaptive_sde(problem, method, controller)
    check_numbers(rtol, atol, max_steps)
    cfg = Config(method, controller, rtol, atol, max_steps)
    if dense:
        check_dense(problem, method, adjoint)
        cfg.steps = []
    if event is not None:
        cfg.event = check_event(event, method, controller, adjoint, backwards)
    backend.check_supports(problem, cfg, adjoint, t)
    refusal = adjoint.refuses(problem, method)
    if refusal:
        raise ValueError(refusal)
    t0 = t[0] if t.ndim == 1 else t[:, 0]
    f0 = problem.check(t0.expand(y0.shape[0]), y0)
    sol = backend.solve(problem, y0, t, f0, cfg, adjoint)
    if backwards:
        sol.ts = t_given
        if sol.dense is not None:
            sol.dense.sign = -1.0
        if sol.event_t is not None:
            sol.event_t = -sol.event_t
    if throw:
        sol.raise_on_failure()
    return sol


def check_adaptive_sde(problem, method, controller) -> None:
    """Adaptive steps on an SDE need a method of strong order 1 for its noise, or a
    Stratonovich one: an Itô method of order 1/2 whose steps are chosen from the same
    increments converges to the wrong solution (measured: Euler–Maruyama on geometric Brownian
    motion stays 0.1 from the exact path at every tolerance)."""
    from ._term import MultiTerm

    terms = problem.terms()
    if controller.planned or not isinstance(terms, MultiTerm):
        return
    order = method.orders.get(terms.noise, 0.0)
    if terms.sde_type == "ito" and order < 1.0:
        raise ValueError(
            f"method {method.name!r} has strong order {order} for {terms.noise} noise: with "
            "adaptive steps (no dt) an Itô method of order 1/2 converges to the wrong "
            "solution. Pass dt (constant steps), or use method='milstein' (Itô, diagonal or "
            "additive noise) or a Stratonovich method"
        )


def check_event(event, method, controller, adjoint, backwards: bool):
    """The event function, checked (and in reversed time for a backwards solve)."""
    if not callable(event):
        raise TypeError(f"event must be callable as event(t, y), got {type(event).__name__}")
    if controller.planned:
        raise ValueError(
            "event: terminal events are located on adaptive steps; pass rtol/atol (no dt)"
        )
    if not method.has_dense_output:
        fit = [n for n, m in methods().items() if m.has_dense_output and m.adaptive]
        raise ValueError(
            f"event: method {method.name!r} has no interpolant to locate the event on; use "
            f"{', '.join(fit)}"
        )
    if adjoint.name != "direct":
        raise ValueError(
            f"event: gradients through the event time need adjoint 'direct', got {adjoint.name!r}"
        )
    if backwards:
        return lambda s, y: event(-s, y)
    return event


def check_dense(problem, method, adjoint) -> None:
    """Refuse, naming what does, a dense output that cannot be had."""
    if not method.has_dense_output:
        fit = [n for n, m in methods().items() if m.has_dense_output and m.accepts(problem)]
        raise ValueError(
            f"dense=True: method {method.name!r} has no dense output (no interpolant); "
            f"methods that have one: {', '.join(fit)}"
        )
    if adjoint.name == "checkpoint":
        raise ValueError(
            "dense=True is not available with adjoint 'checkpoint' (the recomputed segments "
            "would record their steps again); use 'direct' or 'backsolve'"
        )
    if isinstance(problem.terms(), DelayTerm):
        raise ValueError(
            "dense=True is not available for a DDE problem (its history is the dense output "
            "it keeps for itself)"
        )


def default_method(problem: AbstractProblem) -> str:
    """The method ``solve`` uses when none is given."""
    from ._term import MultiTerm

    terms = problem.terms()
    if isinstance(terms, MultiTerm):
        return "heun" if terms.sde_type == "stratonovich" else "euler_maruyama"
    return "dopri5"


def resolve_method(problem: AbstractProblem, method) -> AbstractStepper:
    """The stepper for ``problem``; a mismatch is a ValueError naming both."""
    method = get_method(default_method(problem) if method is None else method)
    terms = problem.terms()
    if not isinstance(terms, method.term_types):
        kind = type(problem).__name__
        fit = [name for name, m in methods().items() if m.accepts(problem)]
        raise ValueError(
            f"method {method.name!r} does not accept a {kind} problem; it accepts "
            f"{', '.join(method.problems)}. Methods for {kind} problems: {', '.join(fit)}"
        )
    method = method.for_terms(terms)
    reason = method.reason_to_refuse(terms)
    if reason:
        raise ValueError(reason)
    return method


def resolve_controller(method, dt, controller) -> AbstractStepSizeController:
    """The step-size controller from ``dt`` and ``controller`` (one of them at most)."""
    if controller is not None:
        if dt is not None:
            raise ValueError(
                f"pass dt or controller, not both; got dt={dt!r} and controller={controller!r}"
            )
        if not isinstance(controller, AbstractStepSizeController):
            raise TypeError(
                "controller must be a ConstantStepSize, StepTo or PIDController, got "
                f"{type(controller).__name__}"
            )
    elif dt is not None:
        if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and dt > 0):
            raise ValueError(f"dt must be a positive number, got {dt!r}")
        controller = ConstantStepSize(dt)
    elif method.adaptive:
        controller = PIDController()
    else:
        raise ValueError(f"method {method.name!r} is fixed-step: pass dt, the step size")
    if not controller.planned and not method.adaptive:
        raise ValueError(
            f"method {method.name!r} has no error estimate, so it cannot adapt its steps: "
            "pass dt (constant steps)"
        )
    return controller


def check_state(y0) -> None:
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a tensor of shape (batch, *state), got {type(y0).__name__}")
    if y0.ndim < 2:
        raise ValueError(
            "y0 must have shape (batch, *state) with at least one state dimension; got shape "
            f"{tuple(y0.shape)}. For one scalar state per sample pass y0[:, None]; for one "
            "unbatched state pass y0[None]"
        )
    if y0.shape[0] == 0:
        raise ValueError(f"y0 has an empty batch (shape {tuple(y0.shape)}); nothing to solve")
    if not y0.is_floating_point():
        raise ValueError(f"y0 must be floating point, got dtype {y0.dtype}")


def _as_times(t, y0) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=y0.dtype, device=y0.device)
    if t.device != y0.device:
        raise ValueError(f"t is on {t.device} but y0 is on {y0.device}")
    return t


def runs_backwards(t: torch.Tensor) -> bool:
    """Whether ``t`` goes backwards in time: its first step (of the first sample) is
    negative. One host read, before any loop."""
    if t.ndim not in (1, 2) or t.shape[-1] < 2:
        return False
    first = t.detach()[..., :2].reshape(-1, 2)[0]
    return bool(first[1] < first[0])


def _check_times(t, y0, backwards: bool = False) -> torch.Tensor:
    """``t`` (``-t`` of the user's times when ``backwards``) checked and cast to ``y0``'s
    dtype."""
    if t.ndim == 2 and t.shape[0] != y0.shape[0]:
        raise ValueError(
            f"per-sample times t of shape {tuple(t.shape)} have batch {t.shape[0]}, "
            f"but y0 has batch {y0.shape[0]}"
        )
    if t.device != y0.device:
        raise ValueError(f"t is on {t.device} but y0 is on {y0.device}")
    if not t.is_floating_point():
        t = t.to(y0.dtype)
    if t.dtype == y0.dtype:
        return check_grid(t, backwards)
    check_grid(t, backwards)  # in its own precision first: a finer t may not survive the cast
    cast = t.to(y0.dtype)
    if cast.shape[-1] > 1 and not bool((cast.detach().diff(dim=-1) > 0).all()):
        where = torch.nonzero(cast.detach().diff(dim=-1) <= 0)[0].tolist()
        nxt = list(where)
        nxt[-1] += 1
        raise ValueError(
            f"t is {t.dtype} and y0 is {y0.dtype}: t{nxt} = {t[tuple(nxt)].item()!r} and "
            f"t{where} = {t[tuple(where)].item()!r} are distinct in {t.dtype} but equal in "
            f"{y0.dtype}, in which the solve runs. Solve in {t.dtype} (y0.to({t.dtype})) or "
            "use times that the state's dtype resolves"
        )
    return check_grid(cast, backwards)


def check_grid(t: torch.Tensor, backwards: bool = False) -> torch.Tensor:
    """Check that ``t`` is a ``(T,)`` or ``(batch, T)`` grid of finite, strictly increasing
    times (host reads: before any loop). ``backwards``: ``t`` is the negated grid of a
    backwards solve, and messages speak of the user's (decreasing) times."""
    if t.ndim not in (1, 2):
        raise ValueError(f"t must have shape (T,) or (batch, T), got shape {tuple(t.shape)}")
    if t.shape[-1] < 1:
        raise ValueError("t must hold at least one time, the initial time")
    td = t.detach()
    if not bool(torch.isfinite(td).all()):
        bad = torch.nonzero(~torch.isfinite(td))[0].tolist()
        raise ValueError(f"t must be finite; t{bad} = {td[tuple(bad)].item()}")
    if t.shape[-1] > 1:
        steps = td.diff(dim=-1)
        if not bool((steps > 0).all()):
            where = torch.nonzero(steps <= 0)[0].tolist()
            prev, cur = list(where), list(where)
            cur[-1] += 1
            if backwards:
                raise ValueError(
                    "t must be strictly increasing or strictly decreasing along its last "
                    "dimension; it starts decreasing, but "
                    f"t{cur} = {-td[tuple(cur)].item()} is not less than "
                    f"t{prev} = {-td[tuple(prev)].item()}"
                )
            raise ValueError(
                "t must be strictly increasing (or strictly decreasing, to solve backwards "
                f"in time) along its last dimension; t{cur} = {td[tuple(cur)].item()} is not "
                f"greater than t{prev} = {td[tuple(prev)].item()}"
            )
    return t


def check_numbers(rtol, atol, max_steps) -> None:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
        raise ValueError(
            f"rtol and atol must be non-negative and not both zero, got "
            f"rtol={rtol!r}, atol={atol!r}"
        )
    if isinstance(max_steps, bool) or not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
