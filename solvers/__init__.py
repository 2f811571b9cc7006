"""Numerical integration of differential equations in PyTorch, batch first.

One entry point, :func:`solve`; problems (:class:`ODE`); methods as validated Butcher
tableaus (:func:`methods`); adjoints (``"direct"``, ``"backsolve"``, ``"checkpoint"``);
backends (``"native"``, ``"torchdiffeq"``). This package knows nothing about RNNs.
"""

from ._adjoint import AbstractAdjoint, BacksolveAdjoint, CheckpointAdjoint, DirectAdjoint
from ._backends import backends
from ._controller import PIDController
from ._methods import ExplicitRungeKutta, methods
from ._problems import ODE, AbstractProblem
from ._solution import Solution, SolverError, Stats, Status
from ._solve import solve
from ._tableau import ButcherTableau, hermite_interpolant

__all__ = [
    "ODE",
    "AbstractAdjoint",
    "AbstractProblem",
    "BacksolveAdjoint",
    "ButcherTableau",
    "CheckpointAdjoint",
    "DirectAdjoint",
    "ExplicitRungeKutta",
    "PIDController",
    "Solution",
    "SolverError",
    "Stats",
    "Status",
    "backends",
    "hermite_interpolant",
    "methods",
    "solve",
]
