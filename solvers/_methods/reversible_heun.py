"""The reversible Heun method for Stratonovich SDEs."""

from __future__ import annotations

from types import MappingProxyType

from .._sde import AbstractSDEMethod


class ReversibleHeun(AbstractSDEMethod):
    """Algebraically reversible: from ``(y₁, z₁)`` the step recovers ``(y₀, z₀)`` exactly up
    to floating-point round-off, so ``adjoint="backsolve"`` with this method backpropagates
    through the discrete solve without storing it (the exact reversible adjoint).

    With an auxiliary state ``z`` (``z₀ = y₀``) and ``f, g`` evaluated at ``z``::

        z₁ = 2y₀ − z₀ + f(t₀, z₀) h + g(t₀, z₀) ΔW
        y₁ = y₀ + ½(f(t₀, z₀) + f(t₁, z₁)) h + ½(g(t₀, z₀) + g(t₁, z₁)) ΔW

    One drift and diffusion evaluation per step. Strong order 0.5 in general, 1.0 with
    additive noise (Kidger, Foster, Li & Lyons, "Efficient and accurate gradients for neural
    SDEs", NeurIPS 2021, Theorem 3.2).
    """

    name = "reversible_heun"
    sde_type = "stratonovich"
    orders = MappingProxyType({"diagonal": 0.5, "additive": 1.0, "general": 0.5})
    evals_per_step = 1
    reference = "Kidger, Foster, Li & Lyons, NeurIPS 2021"

    def init(self, terms, t0, y0, f0):
        y0 = y0[0]
        return (y0, terms.f(t0, y0), terms.g(t0, y0))

    def sde_step(self, terms, t, h, y, extra, dw):
        z, f, g = extra
        z1 = 2 * y - z + f * h + terms.diffusion.prod(g, dw)
        t1 = t + h[:, 0]
        f1, g1 = terms.f(t1, z1), terms.g(t1, z1)
        y1 = y + 0.5 * (f + f1) * h + 0.5 * terms.diffusion.prod(g + g1, dw)
        return y1, (z1, f1, g1)

    def unstep(self, terms, t, h, y1, extra1, dw):
        """The exact inverse of :meth:`step`: ``(y₁, (z₁, f₁, g₁)) -> (y₀, (z₀, f₀, g₀))``."""
        z1, f1, g1 = extra1
        z0 = 2 * y1 - z1 - f1 * h - terms.diffusion.prod(g1, dw)
        f0, g0 = terms.f(t, z0), terms.g(t, z0)
        y0 = y1 - 0.5 * (f0 + f1) * h - 0.5 * terms.diffusion.prod(g0 + g1, dw)
        return y0, (z0, f0, g0)
