"""Milstein's method for Itô SDEs with diagonal noise, in derivative-free form."""

from __future__ import annotations

from types import MappingProxyType

import torch

from .._sde import AbstractSDEMethod


class Milstein(AbstractSDEMethod):
    """Strong order 1.0 for diagonal (and additive) noise.

    The correction ``½ g ∂g/∂y (ΔW² − h)`` uses the derivative-free difference
    ``(g(t, ŷ) − g(t, y)) / √h`` with ``ŷ = y + f h + g √h`` (Kloeden & Platen, Numerical
    Solution of SDEs (1992), §11.1), so the diffusion is never differentiated and the step
    has no autograd inside it. Diagonal noise means ``g_i`` depends on ``y_i`` only. Two
    diffusion evaluations and one drift evaluation per step (one of each with additive noise,
    where the correction vanishes). G. N. Milstein, Approximate integration of stochastic
    differential equations, Theory Probab. Appl. 19 (1975).
    """

    name = "milstein"
    sde_type = "ito"
    orders = MappingProxyType({"diagonal": 1.0, "additive": 1.0})
    evals_per_step = 2
    reference = "Kloeden & Platen, Numerical Solution of Stochastic Differential Equations, §11.1"

    def sde_step(self, terms, t, h, y, extra, dw):
        f = terms.f(t, y)
        g = terms.g(t, y)
        y1 = y + f * h + terms.diffusion.prod(g, dw)
        if terms.noise == "additive":
            return y1, extra
        # Lanes that have finished take h = 0 steps with dw = 0: the correction is 0 · finite.
        sqrt_h = torch.sqrt(torch.where(h > 0, h, torch.ones_like(h)))
        g_hat = terms.g(t, y + f * h + g * sqrt_h)
        return y1 + (g_hat - g) * (dw * dw - h) / (2 * sqrt_h), extra
