"""Yoshida's fourth-order symplectic method: a triple jump of leapfrog steps.

Leapfrog steps of sizes ``w₁h, w₀h, w₁h`` with ``w₁ = 1/(2 - 2^{1/3})`` and
``w₀ = -2^{1/3} w₁`` (the middle one goes backwards); adjacent half-kicks merge, leaving four
kicks and three drifts, three force and three velocity evaluations per step.
"""

from .._hamiltonian import SplittingScheme

_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W0 = -(2.0 ** (1.0 / 3.0)) * _W1

YOSHIDA4 = SplittingScheme(
    name="yoshida4",
    kicks=(_W1 / 2, (_W0 + _W1) / 2, (_W0 + _W1) / 2, _W1 / 2),
    drifts=(_W1, _W0, _W1),
    order=4,
    reference="H. Yoshida, Construction of higher order symplectic integrators, "
    "Phys. Lett. A 150 (1990).",
)
