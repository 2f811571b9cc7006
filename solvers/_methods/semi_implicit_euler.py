"""Semi-implicit (symplectic) Euler: one kick and one drift per step, order 1.

``semi_implicit_euler`` kicks first, ``p₁ = p₀ + h dp(t₀, q₀)``, then drifts with the new
momenta, ``q₁ = q₀ + h dq(t₀ + h/2, p₁)``: the symplectic Euler method of Hairer, Lubich &
Wanner (Geometric Numerical Integration, Theorem VI.3.3) for separable ``H``, and the
discretization of the H2 Hamiltonian network (Galimberti et al.). Its adjoint,
``semi_implicit_euler_drift_first``, drifts first with the old momenta and then kicks with
the new positions.
"""

from .._hamiltonian import SplittingScheme

_REFERENCE = (
    "E. Hairer, C. Lubich, G. Wanner, Geometric Numerical Integration, 2nd ed., Springer (2006), "
    "Theorem VI.3.3; C. L. Galimberti, L. Furieri, L. Xu, G. Ferrari-Trecate, Hamiltonian deep "
    "neural networks guaranteeing non-vanishing gradients by design, IEEE TAC 68 (2023)."
)

SEMI_IMPLICIT_EULER = SplittingScheme(
    name="semi_implicit_euler",
    kicks=(1.0, 0.0),
    drifts=(1.0,),
    order=1,
    reference=_REFERENCE,
)

SEMI_IMPLICIT_EULER_DRIFT_FIRST = SplittingScheme(
    name="semi_implicit_euler_drift_first",
    kicks=(0.0, 1.0),
    drifts=(1.0,),
    order=1,
    reference=_REFERENCE,
)
