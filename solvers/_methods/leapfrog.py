"""Störmer–Verlet (leapfrog), kick–drift–kick: symmetric, symplectic, order 2.

``p½ = p₀ + h/2 dp(t₀, q₀)``, ``q₁ = q₀ + h dq(t₀ + h/2, p½)``, ``p₁ = p½ + h/2 dp(t₁, q₁)``.
The last force of a step is the first of the next: one force and one velocity evaluation
per step.
"""

from .._hamiltonian import SplittingScheme

LEAPFROG = SplittingScheme(
    name="leapfrog",
    kicks=(0.5, 0.5),
    drifts=(1.0,),
    order=2,
    reference="L. Verlet, Computer experiments on classical fluids, Phys. Rev. 159 (1967); "
    "E. Hairer, C. Lubich, G. Wanner, Geometric numerical integration illustrated by the "
    "Störmer–Verlet method, Acta Numerica 12 (2003).",
)
