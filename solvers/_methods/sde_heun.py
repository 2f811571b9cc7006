"""Heun's method for Stratonovich SDEs (registered for SDEs as ``"heun"``)."""

from __future__ import annotations

from types import MappingProxyType

from .._sde import AbstractSDEMethod


class StratonovichHeun(AbstractSDEMethod):
    """The stochastic trapezoidal rule: predict ``ỹ = y + f h + g ΔW``, then average drift
    and diffusion at both ends. Strong order 1.0 for commutative noise (diagonal, additive),
    0.5 for general noise. Two drift and diffusion evaluations per step. Kloeden & Platen,
    Numerical Solution of SDEs (1992), §11.1; Rümelin, Numerical treatment of stochastic
    differential equations, SIAM J. Numer. Anal. 19 (1982)."""

    name = "heun"
    sde_type = "stratonovich"
    orders = MappingProxyType({"diagonal": 1.0, "additive": 1.0, "general": 0.5})
    evals_per_step = 2
    reference = "W. Rümelin, SIAM J. Numer. Anal. 19 (1982)"

    def sde_step(self, terms, t, h, y, extra, dw):
        f = terms.f(t, y)
        gdw = terms.diffusion.prod(terms.g(t, y), dw)
        y_pred = y + f * h + gdw
        t1 = t + h[:, 0]
        f1 = terms.f(t1, y_pred)
        gdw1 = terms.diffusion.prod(terms.g(t1, y_pred), dw)
        return y + 0.5 * (f + f1) * h + 0.5 * (gdw + gdw1), extra
