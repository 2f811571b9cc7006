"""The one entry point: ``solve``."""

from __future__ import annotations

import torch

from ._adjoint import AbstractAdjoint, get_adjoint
from ._backends import get_backend
from ._methods import ExplicitRungeKutta, get_method
from ._problems import AbstractProblem
from ._solution import Solution
from ._tableau import ButcherTableau

__all__ = ["solve"]


def solve(
    problem: AbstractProblem,
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str | ExplicitRungeKutta | ButcherTableau = "dopri5",
    dt: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    adjoint: str | AbstractAdjoint = "direct",
    backend: str = "native",
    max_steps: int = 10_000,
    throw: bool = True,
) -> Solution:
    """Solve ``problem`` from ``y0`` at ``t[..., 0]`` and return the solution at every ``t``.

    Args:
        problem: the equation, e.g. ``ODE(f)``.
        y0: initial state, ``(batch, *state)``, floating point.
        t: output times, ``(T,)`` shared by the batch or ``(batch, T)`` per sample, strictly
            increasing along ``T``; the first is the initial time.
        method: a name from :func:`solvers.methods` or a method object. Fixed-step methods
            need ``dt``; for adaptive ones ``dt`` is the first step (default: chosen).
        dt: step size. A fixed-step solve splits each interval between consecutive output
            times into ``⌈Δt/dt⌉`` equal steps, so every output lies on a step.
        rtol: relative tolerance of adaptive step-size control.
        atol: absolute tolerance of adaptive step-size control.
        adjoint: ``"direct"``, ``"backsolve"``, ``"checkpoint"`` or an adjoint object.
        backend: ``"native"``, or a peer: ``"torchdiffeq"``, ``"torchcde"``, ``"torchsde"``,
            ``"diffrax"`` (see :func:`solvers.backends`).
        max_steps: most steps per sample (attempted steps for adaptive methods).
        throw: raise :class:`SolverError` when any sample fails; with ``False`` failing
            samples are marked in ``Solution.status`` and the others finish.

    Returns:
        A :class:`Solution` with ``ys`` of shape ``(batch, T, *state)``.
    """
    if isinstance(method, str):
        from ._sde import SDE, sde_method

        if isinstance(problem, SDE):
            method = sde_method(method)
    method = get_method(method)
    adjoint = get_adjoint(adjoint)
    backend = get_backend(backend)
    check_accepts(method, problem)
    check_state(y0)
    t = _check_times(t, y0)
    check_numbers(method, dt, rtol, atol, max_steps)
    t0 = t[0] if t.ndim == 1 else t[:, 0]
    f0 = problem.check(t0.expand(y0.shape[0]), y0)
    sol = backend.solve(problem, y0, t, f0, method, dt, rtol, atol, adjoint, max_steps)
    if throw:
        sol.raise_on_failure()
    return sol


def check_accepts(method, problem) -> None:
    if not method.accepts(problem):
        raise ValueError(
            f"method {method.name!r} does not accept a {type(problem).__name__} problem; it "
            f"accepts {', '.join(p.__name__ for p in method.problems)}"
        )


def check_state(y0) -> None:
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a tensor of shape (batch, *state), got {type(y0).__name__}")
    if y0.ndim < 1:
        raise ValueError(
            f"y0 must have a batch dimension, shape (batch, *state); got shape {tuple(y0.shape)}"
        )
    if not y0.is_floating_point():
        raise ValueError(f"y0 must be floating point, got dtype {y0.dtype}")


def _check_times(t, y0) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=y0.dtype, device=y0.device)
    if t.ndim == 2 and t.shape[0] != y0.shape[0]:
        raise ValueError(
            f"per-sample times t of shape {tuple(t.shape)} have batch {t.shape[0]}, "
            f"but y0 has batch {y0.shape[0]}"
        )
    if t.device != y0.device:
        raise ValueError(f"t is on {t.device} but y0 is on {y0.device}")
    return check_grid(t.to(y0.dtype))


def check_grid(t: torch.Tensor) -> torch.Tensor:
    """Check that ``t`` is a ``(T,)`` or ``(batch, T)`` grid of finite, strictly increasing
    times (host reads: before any loop)."""
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
            raise ValueError(
                "t must be strictly increasing along its last dimension; "
                f"t{cur} = {td[tuple(cur)].item()} is not greater than "
                f"t{prev} = {td[tuple(prev)].item()}"
            )
    return t


def check_numbers(method, dt, rtol, atol, max_steps) -> None:
    if dt is None and not method.adaptive:
        raise ValueError(f"method {method.name!r} is fixed-step: pass dt, the step size")
    if dt is not None and (isinstance(dt, bool) or not (isinstance(dt, (int, float)) and dt > 0)):
        raise ValueError(f"dt must be a positive number, got {dt!r}")
    if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
        raise ValueError(
            f"rtol and atol must be non-negative and not both zero, got "
            f"rtol={rtol!r}, atol={atol!r}"
        )
    if isinstance(max_steps, bool) or not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
