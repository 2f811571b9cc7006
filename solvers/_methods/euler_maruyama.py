"""Euler–Maruyama: the Itô Euler step ``y + f h + g ΔW``."""

from __future__ import annotations

from types import MappingProxyType

from .._sde import AbstractSDEMethod


class EulerMaruyama(AbstractSDEMethod):
    """Strong order 0.5 (1.0 with additive noise); one drift and diffusion evaluation per
    step. G. Maruyama, Continuous Markov processes and stochastic equations, Rend. Circ.
    Mat. Palermo 4 (1955); Kloeden & Platen, Numerical Solution of SDEs (1992), §10.2."""

    name = "euler_maruyama"
    sde_type = "ito"
    orders = MappingProxyType({"diagonal": 0.5, "additive": 1.0, "general": 0.5})
    evals_per_step = 1
    reference = "Kloeden & Platen, Numerical Solution of Stochastic Differential Equations, §10.2"

    def sde_step(self, terms, t, h, y, extra, dw):
        f = terms.f(t, y)
        g = terms.g(t, y)
        return y + f * h + terms.diffusion.prod(g, dw), extra
