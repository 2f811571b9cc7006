"""Implicit (backward) Euler: first order, L-stable, one implicit stage at the end of the
step, ``y1 = y0 + h f(t1, y1)``.

As an ESDIRK tableau: an explicit first stage ``k1 = f(t0, y0)`` (used by the error
estimate and the dense output only) and ``γ = 1``. The error estimate is the difference
with the trapezoidal rule on the same two stages, ``h (k2 - k1) / 2``: the local error of
the first-order solution, so it runs under a :class:`~solvers.PIDController`. Newton starts
from ``y0`` (an explicit predictor lands far off on stiff components).
"""

from .._implicit import ESDIRKTableau

IMPLICIT_EULER = ESDIRKTableau(
    name="implicit_euler",
    a=((0.0, 1.0),),
    b=(0.0, 1.0),
    c=(1.0,),
    order=1,
    b_error=(-0.5, 0.5),
    error_order=1,
    predictor=((0.0,),),
    reference="E. Hairer and G. Wanner, Solving Ordinary Differential Equations II, "
    "2nd ed., Springer (1996), IV.3.",
)
