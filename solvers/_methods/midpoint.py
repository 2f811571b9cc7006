"""Explicit midpoint rule: second order, two stages."""

from .._tableau import ButcherTableau

MIDPOINT = ButcherTableau(
    name="midpoint",
    a=((0.5,),),
    b=(0.0, 1.0),
    c=(0.5,),
    order=2,
    reference="C. Runge, Über die numerische Auflösung von Differentialgleichungen, "
    "Math. Ann. 46 (1895).",
)
