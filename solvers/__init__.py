"""Numerical integration of differential equations in PyTorch, batch first.

One entry point, :func:`solve`; :func:`prepare` plans a fixed-step solve once, so that its
calls can be compiled or captured in CUDA graphs. Problems: :class:`ODE`, :class:`CDE`
(driven by a path from :func:`interpolate`), :class:`SDE` (with a :class:`BrownianPath`),
:class:`DDE` and :class:`HamiltonianODE`. Methods: explicit Runge–Kutta tableaus and
symplectic splittings (:func:`methods`), SDE schemes (:func:`sde_methods`). Adjoints:
``"direct"``, ``"backsolve"``, ``"checkpoint"``. Backends: :func:`backends`. This package
knows nothing about RNNs.
"""

from . import (
    _backend_diffrax,  # noqa: F401  (registers the "diffrax" backend)
    _backend_torchcde,  # noqa: F401  (registers the "torchcde" backend)
    _backend_torchsde,  # noqa: F401  (registers the "torchsde" backend)
)
from ._adjoint import AbstractAdjoint, BacksolveAdjoint, CheckpointAdjoint, DirectAdjoint
from ._backends import backends
from ._brownian import BrownianPath
from ._cde import CDE
from ._controller import PIDController
from ._dde import DDE
from ._hamiltonian import HamiltonianODE
from ._interpolation import (
    AbstractPath,
    AbstractPiecewiseCubicPath,
    HermiteCubicPath,
    LinearPath,
    NaturalCubicPath,
    RectilinearPath,
    interpolate,
)
from ._methods import ExplicitRungeKutta, methods
from ._prepared import PreparedSolve, prepare
from ._problems import ODE, AbstractProblem
from ._sde import SDE, sde_methods
from ._solution import Solution, SolverError, Stats, Status
from ._solve import solve
from ._tableau import ButcherTableau, hermite_interpolant

__all__ = [
    "CDE",
    "DDE",
    "ODE",
    "SDE",
    "AbstractAdjoint",
    "AbstractPath",
    "AbstractPiecewiseCubicPath",
    "AbstractProblem",
    "BacksolveAdjoint",
    "BrownianPath",
    "ButcherTableau",
    "CheckpointAdjoint",
    "DirectAdjoint",
    "ExplicitRungeKutta",
    "HamiltonianODE",
    "HermiteCubicPath",
    "LinearPath",
    "NaturalCubicPath",
    "PIDController",
    "PreparedSolve",
    "RectilinearPath",
    "Solution",
    "SolverError",
    "Stats",
    "Status",
    "backends",
    "hermite_interpolant",
    "interpolate",
    "methods",
    "prepare",
    "sde_methods",
    "solve",
]
