"""Implicit (backward) Euler: first order, L-stable, one implicit stage at the end of the
step, ``y1 = y0 + h f(t1, y1)``.

As an ESDIRK tableau: an explicit first stage ``k1 = f(t0, y0)`` (for the dense output) and
``γ = 1``. Newton starts from ``y0`` (an explicit predictor lands far off on stiff
components).

The registered ``implicit_euler`` is fixed-step (``dt``). ``IMPLICIT_EULER_ADAPTIVE`` adds an
error estimate, the difference with the trapezoidal rule on the same two stages,
``h (k2 - k1) / 2`` (the local error of the first-order solution), for a
:class:`~solvers.PIDController`: ``ESDIRK(IMPLICIT_EULER_ADAPTIVE)``. A first-order method
needs many steps at tight tolerances; for those, use ``kvaerno5``.
"""

import dataclasses

from .._implicit import ESDIRKTableau

IMPLICIT_EULER = ESDIRKTableau(
    name="implicit_euler",
    a=((0.0, 1.0),),
    b=(0.0, 1.0),
    c=(1.0,),
    order=1,
    b_error=None,
    error_order=None,
    predictor=((0.0,),),
    reference="E. Hairer and G. Wanner, Solving Ordinary Differential Equations II, "
    "2nd ed., Springer (1996), IV.3.",
)

IMPLICIT_EULER_ADAPTIVE = dataclasses.replace(
    IMPLICIT_EULER, name="implicit_euler_adaptive", b_error=(-0.5, 0.5), error_order=1
)
