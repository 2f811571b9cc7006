"""The method registry: one name per method object."""

from __future__ import annotations

from .._controller import PIDController
from .._problems import ODE, AbstractProblem
from .._tableau import ButcherTableau
from .bosh3 import BOSH3
from .dopri5 import DOPRI5
from .euler import EULER
from .heun import HEUN
from .midpoint import MIDPOINT
from .rk4 import RK4
from .tsit5 import TSIT5

__all__ = ["ExplicitRungeKutta", "get_method", "methods"]


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

    def __repr__(self):
        kind = "adaptive" if self.adaptive else "fixed-step"
        accepted = ", ".join(p.__name__ for p in self.problems)
        return (
            f"ExplicitRungeKutta({self.name!r}, order={self.order}, {kind}, problems=({accepted}))"
        )


_REGISTRY = {
    tab.name: ExplicitRungeKutta(tab) for tab in (EULER, MIDPOINT, HEUN, RK4, BOSH3, DOPRI5, TSIT5)
}


def methods() -> dict[str, ExplicitRungeKutta]:
    """Every registered method by name; each says its order, whether it is adaptive and
    which problems it accepts."""
    return dict(_REGISTRY)


def get_method(method) -> ExplicitRungeKutta:
    """Resolve a name or a method object."""
    if isinstance(method, ExplicitRungeKutta):
        return method
    if isinstance(method, ButcherTableau):
        return ExplicitRungeKutta(method)
    if isinstance(method, str) and method in _REGISTRY:
        return _REGISTRY[method]
    raise ValueError(f"unknown method {method!r}; valid methods are: {', '.join(_REGISTRY)}")
