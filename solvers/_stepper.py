"""Steppers: one step of a method, and the one registry of methods.

A stepper takes one step of its method over terms (see ``_term``)::

    y1, error, dense, state = stepper.step(terms, t0, t1, h, y, state)

``t0``, ``t1`` and ``h = t1 - t0`` are ``(lanes,)`` tensors (``t1`` given exactly, since
``t0 + h`` may round past an output time), ``y`` a tuple of state tensors, ``state`` what the
stepper carries from step to step (a first-same-as-last stage, an SDE method's auxiliary
state) or ``None``. ``error`` is the embedded error estimate (``None`` without one), ``dense``
what :meth:`AbstractStepper.interpolate` needs for output inside the step.

Each stepper declares which term structures it accepts (:attr:`AbstractStepper.term_types`,
refined by :meth:`AbstractStepper.reason_to_refuse`); the loop in ``_integrate`` drives every
one of them the same way.
"""

from __future__ import annotations

import abc

import torch

__all__ = ["AbstractStepper", "get_method", "methods", "register_method"]

# The problem each term structure comes from, for messages.
_PROBLEM_NAMES = {
    "ODETerm": "ODE",
    "FunctionTerm": "ODE",
    "ControlTerm": "CDE",
    "MultiTerm": "SDE",
    "DelayTerm": "DDE",
    "PartitionedTerm": "HamiltonianODE",
}


class AbstractStepper(abc.ABC):
    """One step of a numerical method. Final subclasses set the class attributes.

    Attributes:
        name: the registry name.
        order: the order of the method (for SDE methods: the strong order, see
            ``orders``).
        term_types: the term classes the method accepts.
        error_order: the order of the embedded error estimate; ``None`` when the method has
            none (it then runs with constant steps only).
        evals_per_step: batched evaluations of the terms per step.
    """

    name: str
    order: float
    term_types: tuple[type, ...]
    error_order: int | None = None
    evals_per_step: int = 1
    #: whether :meth:`interpolate` gives the solution inside a step (dense output)
    has_dense_output: bool = False

    @property
    def adaptive(self) -> bool:
        """Whether the method has an error estimate (can run with a ``PIDController``)."""
        return self.error_order is not None

    @property
    def problems(self) -> tuple[str, ...]:
        """Names of the problems whose terms this method accepts."""
        names = []
        for cls in self.term_types:
            for sub in (cls, *_subclasses(cls)):
                name = _PROBLEM_NAMES.get(sub.__name__)
                if name and name not in names:
                    names.append(name)
        return tuple(names)

    def accepts(self, problem) -> bool:
        """Whether the method solves ``problem`` (a problem or its terms)."""
        from ._problems import AbstractProblem

        terms = problem.terms() if isinstance(problem, AbstractProblem) else problem
        return isinstance(terms, self.term_types) and self.reason_to_refuse(terms) is None

    def for_terms(self, terms) -> AbstractStepper:
        """The stepper that solves ``terms`` (a method with one name for several term
        structures, like ``heun``, resolves here); itself by default."""
        return self

    def reason_to_refuse(self, terms) -> str | None:
        """Why terms of an accepted class are still not solvable (e.g. an SDE's type); None."""
        return None

    def init(self, terms, t0: torch.Tensor, y0: tuple, f0: tuple | None):
        """The state carried into the first step; ``f0`` is ``dy/dt`` at ``(t0, y0)`` when
        known."""
        return None

    @abc.abstractmethod
    def step(self, terms, t0, t1, h, y, state, *, control=None, left=None):
        """One step; returns ``(y1, error, dense, state)``. ``control`` is the step's
        Brownian increment for SDE methods; ``left`` (``(lanes,)`` bool) marks lanes whose
        step ends on a jump time (their stages at the end see the left limit)."""

    def restart(self, terms, t, y, state, where: torch.Tensor):
        """The state after a step that ended on a jump (``where``): carried stages must be
        re-evaluated from the right. Default: nothing is carried."""
        return state

    def interpolate(self, dense, theta: torch.Tensor) -> tuple:
        """The solution at ``t0 + θh`` inside the step (``θ``: ``(lanes,)``)."""
        raise NotImplementedError(f"method {self.name!r} has no dense output")

    def evals(self, n_steps: int, state_given: bool) -> int:
        """Evaluations of the terms made by ``n_steps`` steps from a given initial state."""
        return n_steps * self.evals_per_step

    def __repr__(self):
        kind = "adaptive" if self.adaptive else "fixed-step"
        return (
            f"{type(self).__name__}({self.name!r}, order={self.order}, {kind}, "
            f"problems=({', '.join(self.problems)}))"
        )


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


_REGISTRY: dict[str, AbstractStepper] = {}


def register_method(method: AbstractStepper) -> None:
    """Add a stepper under its ``name``."""
    if not isinstance(method, AbstractStepper):
        raise TypeError(
            f"register_method: expected a stepper (AbstractStepper), got {type(method).__name__}"
        )
    if method.name in _REGISTRY:
        raise ValueError(f"a method named {method.name!r} is already registered")
    _REGISTRY[method.name] = method


def methods() -> dict[str, AbstractStepper]:
    """Every method by name: Runge–Kutta tableaus, symplectic splittings and SDE methods.
    Each says its order, whether it is adaptive and which problems it accepts."""
    _load_builtin()
    return dict(_REGISTRY)


def get_method(method) -> AbstractStepper:
    """Resolve a name, a stepper or a :class:`~solvers.ButcherTableau`."""
    from ._tableau import ButcherTableau

    _load_builtin()
    if isinstance(method, AbstractStepper):
        return method
    if isinstance(method, ButcherTableau):
        from ._rk import ExplicitRungeKutta

        return ExplicitRungeKutta(method)
    if isinstance(method, str) and method in _REGISTRY:
        return _REGISTRY[method]
    raise ValueError(f"unknown method {method!r}; valid methods are: {', '.join(_REGISTRY)}")


def _load_builtin() -> None:
    if not _REGISTRY:
        from ._methods import register_builtin

        register_builtin()
