"""Bogacki–Shampine 3(2): third order with an embedded second-order estimate, FSAL."""

from .._tableau import ButcherTableau, hermite_interpolant

_B = (2 / 9, 1 / 3, 4 / 9, 0.0)

BOSH3 = ButcherTableau(
    name="bosh3",
    a=((1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    b=_B,
    c=(1 / 2, 3 / 4, 1.0),
    order=3,
    b_error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    error_order=2,
    interpolant=hermite_interpolant(_B),
    reference="P. Bogacki and L. F. Shampine, A 3(2) pair of Runge–Kutta formulas, "
    "Appl. Math. Lett. 2 (1989).",
)
