"""Dormand–Prince 5(4): fifth order with an embedded fourth-order estimate, FSAL.

Dense output is the quartic through ``y0``, ``y1``, both end slopes and the midpoint value
given by Shampine's weights (L. F. Shampine, Some practical Runge–Kutta formulas,
Math. Comp. 46 (1986)).
"""

from .._tableau import ButcherTableau, hermite_interpolant

_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B_HAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_MID = (
    6025192743 / 30085553152 / 2,
    0.0,
    51252292925 / 65400821598 / 2,
    -2691868925 / 45128329728 / 2,
    187940372067 / 1594534317056 / 2,
    -1776094331 / 19743644256 / 2,
    11237099 / 235043384 / 2,
)

DOPRI5 = ButcherTableau(
    name="dopri5",
    a=(
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _B[:6],
    ),
    b=_B,
    c=(1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    order=5,
    b_error=tuple(x - y for x, y in zip(_B, _B_HAT)),
    error_order=4,
    interpolant=hermite_interpolant(_B, mid=_MID),
    reference="J. R. Dormand and P. J. Prince, A family of embedded Runge–Kutta formulae, "
    "J. Comput. Appl. Math. 6 (1980).",
)
