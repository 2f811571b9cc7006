"""The classical fourth-order Runge–Kutta method."""

from .._tableau import ButcherTableau

RK4 = ButcherTableau(
    name="rk4",
    a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    c=(0.5, 0.5, 1.0),
    order=4,
    reference="W. Kutta, Beitrag zur näherungsweisen Integration totaler Differentialgleichungen, "
    "Z. Math. Phys. 46 (1901).",
)
