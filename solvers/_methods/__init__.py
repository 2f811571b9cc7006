"""The built-in methods, one small file each, registered in the one registry
(:func:`solvers.methods`)."""

from __future__ import annotations

from .._rk import ExplicitRungeKutta
from .._term import AbstractDerivativeTerm, DelayTerm, MultiTerm
from .bosh3 import BOSH3
from .dopri5 import DOPRI5
from .euler import EULER
from .heun import HEUN
from .midpoint import MIDPOINT
from .rk4 import RK4
from .tsit5 import TSIT5

__all__ = ["Heun", "register_builtin"]


class Heun(ExplicitRungeKutta):
    """Heun's method, one name for two term structures (as in diffrax): the explicit
    trapezoidal rule for ODE-like terms (this Runge–Kutta tableau, order 2) and the
    stochastic trapezoidal rule for Stratonovich SDEs (strong order 1 for commutative
    noise). :meth:`for_terms` resolves it to the stepper for a problem's terms."""

    term_types = (AbstractDerivativeTerm, DelayTerm, MultiTerm)

    def __init__(self):
        from .sde_heun import StratonovichHeun

        super().__init__(HEUN)
        self.sde = StratonovichHeun()

    def for_terms(self, terms):
        return self.sde if isinstance(terms, MultiTerm) else self

    def reason_to_refuse(self, terms):
        return self.sde.reason_to_refuse(terms) if isinstance(terms, MultiTerm) else None

    def __repr__(self):
        return "Heun('heun', order=2 (ODE) / strong order 1.0 (Stratonovich SDE), fixed-step)"


def register_builtin() -> None:
    from .._hamiltonian import register_splittings
    from .._stepper import register_method
    from .euler_maruyama import EulerMaruyama
    from .milstein import Milstein
    from .reversible_heun import ReversibleHeun

    for tab in (EULER, MIDPOINT):
        register_method(ExplicitRungeKutta(tab))
    register_method(Heun())
    for tab in (RK4, BOSH3, DOPRI5, TSIT5):
        register_method(ExplicitRungeKutta(tab))
    register_splittings(register_method)
    for cls in (EulerMaruyama, Milstein, ReversibleHeun):
        register_method(cls())
    # implicit methods for stiff problems (``_implicit``)
    from .._implicit import ESDIRK
    from .implicit_euler import IMPLICIT_EULER
    from .kvaerno5 import KVAERNO5

    for tab in (IMPLICIT_EULER, KVAERNO5):
        register_method(ESDIRK(tab))
