"""Numerical integration of differential equations in PyTorch, batch first.

One entry point, :func:`solve`; :func:`prepare` plans a fixed-step solve once, so that its
calls can be compiled or captured in CUDA graphs. Problems: :class:`ODE`, :class:`CDE`
(driven by a path from :func:`interpolate`), :class:`SDE` (with a :class:`BrownianPath`),
:class:`DDE` and :class:`HamiltonianODE`. Methods: explicit Runge–Kutta tableaus and
symplectic splittings and SDE schemes, one registry (:func:`methods`). Inside: terms,
steppers, step-size controllers and one loop (see ``docs/architecture.md``). Adjoints:
``"direct"``, ``"backsolve"``, ``"checkpoint"``, and the SDE adjoints. Backends:
:func:`backends`. This package knows nothing about RNNs.
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
from ._controller import (
    AbstractStepSizeController,
    ConstantStepSize,
    PIDController,
    StepTo,
)
from ._dde import DDE
from ._hamiltonian import HamiltonianODE, SymplecticSplitting
from ._implicit import ESDIRK, ESDIRKTableau, Newton
from ._interpolation import (
    AbstractPath,
    AbstractPiecewiseCubicPath,
    HermiteCubicPath,
    LinearPath,
    NaturalCubicPath,
    RectilinearPath,
    interpolate,
)
from ._prepared import PreparedSolve, prepare
from ._problems import ODE, AbstractProblem
from ._rk import ExplicitRungeKutta
from ._sde import SDE, AbstractSDEMethod, sde_methods
from ._sde_adjoint import ReversibleAdjoint, StochasticAdjoint
from ._solution import Solution, SolverError, Stats, Status
from ._solve import solve
from ._stepper import AbstractStepper, methods
from ._tableau import ButcherTableau, hermite_interpolant
from ._term import (
    AbstractDerivativeTerm,
    AbstractTerm,
    BrownianTerm,
    ControlTerm,
    DelayTerm,
    MultiTerm,
    ODETerm,
    PartitionedTerm,
)

__all__ = [
    "CDE",
    "DDE",
    "ESDIRK",
    "ODE",
    "SDE",
    "AbstractAdjoint",
    "AbstractDerivativeTerm",
    "AbstractPath",
    "AbstractPiecewiseCubicPath",
    "AbstractProblem",
    "AbstractSDEMethod",
    "AbstractStepSizeController",
    "AbstractStepper",
    "AbstractTerm",
    "BacksolveAdjoint",
    "BrownianPath",
    "BrownianTerm",
    "ButcherTableau",
    "CheckpointAdjoint",
    "ConstantStepSize",
    "ControlTerm",
    "DelayTerm",
    "DirectAdjoint",
    "ESDIRKTableau",
    "ExplicitRungeKutta",
    "HamiltonianODE",
    "HermiteCubicPath",
    "LinearPath",
    "MultiTerm",
    "NaturalCubicPath",
    "Newton",
    "ODETerm",
    "PIDController",
    "PartitionedTerm",
    "PreparedSolve",
    "RectilinearPath",
    "ReversibleAdjoint",
    "Solution",
    "SolverError",
    "Stats",
    "Status",
    "StepTo",
    "StochasticAdjoint",
    "SymplecticSplitting",
    "backends",
    "hermite_interpolant",
    "interpolate",
    "methods",
    "prepare",
    "sde_methods",
    "solve",
]
