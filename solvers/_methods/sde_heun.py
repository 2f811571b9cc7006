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
    evals = 2
    reference = "W. Rümelin, SIAM J. Numer. Anal. 19 (1982)"

    def step(self, problem, t, h, y, extra, dw):
        f = problem.drift(t, y)
        gdw = problem.noise_term(problem.diffusion(t, y), dw)
        y_pred = y + f * h + gdw
        t1 = t + h[:, 0]
        f1 = problem.drift(t1, y_pred)
        gdw1 = problem.noise_term(problem.diffusion(t1, y_pred), dw)
        return y + 0.5 * (f + f1) * h + 0.5 * (gdw + gdw1), extra
