"""Heun's method (explicit trapezoidal rule): second order, two stages."""

from .._tableau import ButcherTableau

HEUN = ButcherTableau(
    name="heun",
    a=((1.0,),),
    b=(0.5, 0.5),
    c=(1.0,),
    order=2,
    reference="K. Heun, Neue Methode zur approximativen Integration der Differentialgleichungen "
    "einer unabhängigen Veränderlichen, Z. Math. Phys. 45 (1900).",
)
