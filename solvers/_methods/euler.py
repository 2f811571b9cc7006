"""Explicit (forward) Euler: first order, one stage."""

from .._tableau import ButcherTableau

EULER = ButcherTableau(
    name="euler",
    a=(),
    b=(1.0,),
    c=(),
    order=1,
    reference="L. Euler, Institutionum calculi integralis (1768).",
)
