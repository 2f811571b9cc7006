"""The method registry: one name per method object."""

from __future__ import annotations

import math

import torch

from .._controller import PIDController
from .._integrate import (
    forward_field,
    integrate_adaptive,
    integrate_fixed,
    rms_norm,
)
from .._problems import ODE, AbstractProblem
from .._rk import rk_step
from .._tableau import ButcherTableau
from .bosh3 import BOSH3
from .dopri5 import DOPRI5
from .euler import EULER
from .heun import HEUN
from .midpoint import MIDPOINT
from .rk4 import RK4
from .tsit5 import TSIT5

__all__ = ["ExplicitRungeKutta", "get_method", "methods", "register_method"]


class ExplicitRungeKutta:
    """An explicit Runge–Kutta method: a tableau, and a controller when it is adaptive.

    Args:
        tableau: the method's :class:`~solvers.ButcherTableau`.
        controller: step-size controller for tableaus with an error estimate
            (default :class:`~solvers.PIDController` ``()``).
    """

    problems: tuple[type[AbstractProblem], ...] = (ODE,)

    def __init__(self, tableau: ButcherTableau, controller: PIDController | None = None):
        if not isinstance(tableau, ButcherTableau):
            raise TypeError(
                "ExplicitRungeKutta: tableau must be a ButcherTableau, got "
                f"{type(tableau).__name__}"
            )
        if controller is not None and not tableau.adaptive:
            raise ValueError(
                f"method {tableau.name!r} is fixed-step (no error estimate); it takes no controller"
            )
        self.tableau = tableau
        self.controller = controller or (PIDController() if tableau.adaptive else None)

    @property
    def name(self) -> str:
        return self.tableau.name

    @property
    def order(self) -> int:
        return self.tableau.order

    @property
    def adaptive(self) -> bool:
        return self.tableau.adaptive

    def accepts(self, problem) -> bool:
        return isinstance(problem, self.problems)

    @classmethod
    def accept_problem(cls, problem_type: type[AbstractProblem]) -> None:
        """Declare that every Runge–Kutta method solves ``problem_type`` through its
        ``vector_field`` (for problem types defined outside this module)."""
        if problem_type not in cls.problems:
            cls.problems = (*cls.problems, problem_type)

    def step(self, f, t: torch.Tensor, y: torch.Tensor, h) -> torch.Tensor:
        """One step of size ``h`` of ``dy/dt = f(t, y)`` from ``(t, y)``.

        ``t`` is a ``(batch,)`` tensor, ``h`` a number or a ``(batch,)`` tensor. This is what
        turns a continuous-time model into a discrete cell (``ctrnn``'s ``discretize``).
        """
        batch = y.shape[0]
        h = torch.as_tensor(h, dtype=y.dtype, device=y.device).expand(batch)
        field = forward_field(ODE(f), batch)
        y1, _, _ = rk_step(field, self.tableau, t, (y,), h, field(t, (y,)))
        return y1[0]

    def integrate(self, problem, cfg, y0, t, f0, *, checkpoint_every=None):
        """Forward solve of ``problem.vector_field`` over a ``(lanes, T)`` grid."""
        field = forward_field(problem, y0.shape[0])
        if self.adaptive:

            def norm(e, a, b):
                return rms_norm(e, a, b, cfg.rtol, cfg.atol)

            return integrate_adaptive(
                field,
                self.tableau,
                self.controller,
                (y0,),
                (f0,),
                t,
                norm,
                max_steps=cfg.max_steps,
                h0=cfg.dt,
                checkpoint_every=checkpoint_every,
                jumps=problem.jump_times(),
            )
        sched = cfg.fixed_schedule(t)
        if checkpoint_every == "auto":
            checkpoint_every = max(1, math.isqrt(len(sched.ts)))
        return integrate_fixed(
            field, self.tableau, (y0,), (f0,), sched, checkpoint_every=checkpoint_every
        )

    def __repr__(self):
        kind = "adaptive" if self.adaptive else "fixed-step"
        accepted = ", ".join(p.__name__ for p in self.problems)
        return (
            f"ExplicitRungeKutta({self.name!r}, order={self.order}, {kind}, problems=({accepted}))"
        )


_REGISTRY = {
    tab.name: ExplicitRungeKutta(tab) for tab in (EULER, MIDPOINT, HEUN, RK4, BOSH3, DOPRI5, TSIT5)
}


def register_method(method) -> None:
    """Add a method object under its ``name``; it must have ``name``, ``adaptive``,
    ``problems``, ``accepts(problem)`` and ``integrate(problem, cfg, y0, t, f0, ...)``."""
    if method.name in _REGISTRY:
        raise ValueError(f"a method named {method.name!r} is already registered")
    _REGISTRY[method.name] = method


def methods() -> dict[str, ExplicitRungeKutta]:
    """Every registered method by name; each says its order, whether it is adaptive and
    which problems it accepts."""
    return dict(_REGISTRY)


def get_method(method) -> ExplicitRungeKutta:
    """Resolve a name or a method object."""
    if isinstance(method, ExplicitRungeKutta) or (
        hasattr(method, "integrate") and hasattr(method, "accepts")
    ):
        return method
    if isinstance(method, ButcherTableau):
        return ExplicitRungeKutta(method)
    if isinstance(method, str) and method in _REGISTRY:
        return _REGISTRY[method]
    raise ValueError(f"unknown method {method!r}; valid methods are: {', '.join(_REGISTRY)}")
