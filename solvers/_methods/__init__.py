"""The built-in methods, one small file each, registered in the one registry
(:func:`solvers.methods`)."""

from __future__ import annotations

from .._rk import ExplicitRungeKutta
from .._stepper import AbstractStepper
from .._term import AbstractDerivativeTerm, DelayTerm, MultiTerm
from .bosh3 import BOSH3
from .dopri5 import DOPRI5
from .euler import EULER
from .heun import HEUN
from .midpoint import MIDPOINT
from .rk4 import RK4
from .tsit5 import TSIT5

__all__ = ["Heun", "register_builtin"]


class Heun(AbstractStepper):
    """Heun's method, one name for two term structures (as in diffrax): the explicit
    trapezoidal rule for ODE-like terms (a Runge–Kutta tableau, order 2) and the stochastic
    trapezoidal rule for Stratonovich SDEs (strong order 1 for commutative noise).
    :meth:`for_terms` resolves it to the stepper for a problem's terms."""

    name = "heun"
    term_types = (AbstractDerivativeTerm, DelayTerm, MultiTerm)

    def __init__(self):
        from .sde_heun import StratonovichHeun

        self.ode = ExplicitRungeKutta(HEUN)
        self.sde = StratonovichHeun()
        self.order = self.ode.order
        self.evals_per_step = self.ode.evals_per_step

    def for_terms(self, terms):
        return self.sde if isinstance(terms, MultiTerm) else self.ode

    def reason_to_refuse(self, terms):
        return self.for_terms(terms).reason_to_refuse(terms)

    def step(self, terms, t0, t1, h, y, state, *, control=None, left=None):
        return self.for_terms(terms).step(terms, t0, t1, h, y, state, control=control, left=left)

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
