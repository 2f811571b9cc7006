"""Gradients of SDE solves without storing the steps: ``adjoint="backsolve"`` for an SDE.

* Any Stratonovich method: the stochastic adjoint (Li, Wong, Chen & Duvenaud, "Scalable
  gradients for stochastic differential equations", AISTATS 2020). The state, the adjoint
  ``a = ∂L/∂y`` and the parameter gradients are integrated backwards in time over the same
  steps and the same Brownian increments as the forward solve, with the Stratonovich Heun
  rule; the state is reset to the stored output at every output time. The gradients
  approximate those of the exact solution, to the accuracy of the backward discretisation.
* ``reversible_heun``: the exact reversible adjoint (Kidger, Foster, Li & Lyons, "Efficient
  and accurate gradients for neural SDEs", NeurIPS 2021). Each step is inverted exactly,
  then differentiated locally, so the gradients are those of the discrete forward solve up
  to floating-point round-off.

Both hold the outputs and one step at a time: memory does not grow with the number of steps.
Itô SDEs are not handled (their adjoint needs the Itô–Stratonovich correction); neither are
gradients with respect to the output times; double backward is not supported.
"""

from __future__ import annotations

import torch

from ._adjoint import AbstractAdjoint, Config
from ._integrate import Outcome, integrate, vjp

__all__ = ["ReversibleAdjoint", "StochasticAdjoint"]


def _forward(problem, cfg: Config, y0, t):
    """The forward SDE solve by the one loop, keeping the recorded states and the plan."""
    from ._sde import SDESchedule

    terms = problem.terms()
    plan = (
        cfg.noise
        if cfg.noise is not None
        else SDESchedule(problem, cfg, y0, t, terms.g(t[:, 0], y0))
    )
    with torch.no_grad():
        out = integrate(
            cfg.method, terms, (y0,), t, cfg.controller, schedule=plan.sched, controls=plan
        )
    return out, plan


class _AbstractSDEAdjoint(AbstractAdjoint):
    """An adjoint for Stratonovich SDEs that holds the outputs and one step at a time."""

    name = "backsolve"

    def __init__(self, params=None):
        self.params = None if params is None else tuple(params)

    def refuses(self, problem, method):
        from ._term import MultiTerm

        terms = problem.terms()
        if not isinstance(terms, MultiTerm):
            return f"{type(self).__name__} differentiates SDEs, got a {type(problem).__name__}"
        if terms.sde_type != "stratonovich":
            return (
                "adjoint 'backsolve' handles stratonovich SDEs; got an ito SDE. Use "
                "adjoint='direct' or 'checkpoint', or write the SDE in Stratonovich form "
                "(drift f − ½ Σⱼ (∂gⱼ/∂y) gⱼ) and solve it with method='heun' or "
                "'reversible_heun'"
            )
        return None

    def run(self, problem, cfg, y0, t, f0) -> Outcome:
        refusal = self.refuses(problem, cfg.method)
        if refusal:
            raise ValueError(refusal)
        if t.requires_grad:
            raise ValueError(
                "adjoint 'backsolve' for an SDE gives no gradients with respect to t; pass "
                "t.detach(), or use adjoint='direct' or 'checkpoint'"
            )
        params = self.params if self.params is not None else tuple(problem.parameters())
        box = {}
        ys = self._function.apply(problem, cfg, box, y0, t, *params)
        out = box["outcome"]
        out.ys = (ys,)
        return out

    def __repr__(self):
        return f"{type(self).__name__}()"


class StochasticAdjoint(_AbstractSDEAdjoint):
    """The stochastic adjoint of a Stratonovich SDE (Li, Wong, Chen & Duvenaud, "Scalable
    gradients for stochastic differential equations", AISTATS 2020): the state, the adjoint
    and the parameter gradients are integrated backwards over the forward steps and Brownian
    increments with the Stratonovich Heun rule. ``adjoint="backsolve"`` on an SDE solved by
    any Stratonovich method but ``reversible_heun``.

    Args:
        params: tensors to differentiate besides ``y0`` (default: the problem's parameters).
    """

    @property
    def _function(self):
        return _StochasticAdjoint


class ReversibleAdjoint(_AbstractSDEAdjoint):
    """The exact reversible adjoint of the ``reversible_heun`` method (Kidger, Foster, Li &
    Lyons, "Efficient and accurate gradients for neural SDEs", NeurIPS 2021): each step is
    inverted exactly and differentiated locally, so the gradients are those of the discrete
    solve to round-off. ``adjoint="backsolve"`` on an SDE solved by ``reversible_heun``.

    Args:
        params: tensors to differentiate besides ``y0`` (default: the problem's parameters).
    """

    @staticmethod
    def handles(method) -> bool:
        from ._methods.reversible_heun import ReversibleHeun

        return isinstance(method, ReversibleHeun)

    def refuses(self, problem, method):
        if not self.handles(method):
            return (
                f"ReversibleAdjoint inverts the reversible_heun method's steps; got method "
                f"{method.name!r}. Use StochasticAdjoint, or method='reversible_heun'"
            )
        return super().refuses(problem, method)

    @property
    def _function(self):
        return _ReversibleAdjoint


def _record_grads(grad_ys, sched, B):
    """Gradients per recorded state ``(batch, R, d)`` from those per output ``(batch, T, d)``."""
    grad_ys = grad_ys.nan_to_num(0.0)
    if sched.gather is None:
        return grad_ys
    idx = sched.gather.expand(B, -1)[..., None].expand_as(grad_ys)
    out = grad_ys.new_zeros(B, len(sched.record), grad_ys.shape[-1])
    return out.scatter_add(1, idx, grad_ys)


class _StochasticAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem, cfg, box, y0, t, *params):
        out, plan = _forward(problem, cfg, y0, t)
        box["outcome"] = out
        ctx.problem, ctx.plan = problem, plan
        ctx.save_for_backward(torch.stack([r[0] for r in out.records], 1), *params)
        return out.ys[0]

    @staticmethod
    def backward(ctx, grad_ys):
        records, *params = ctx.saved_tensors
        problem, plan = ctx.problem, ctx.plan
        sched = plan.sched
        B = records.shape[0]
        g_rec = _record_grads(grad_ys, sched, B)
        pos = {step: r for r, step in enumerate(sched.record)}

        terms = problem.terms()

        def increment(t, y, a, h, dw):
            """``(−(f h + g dW), aᵀ ∂(f h + g dW)/∂(y, θ))``."""
            with torch.enable_grad():
                y_ = y.detach().requires_grad_(True)
                inc = terms.f(t, y_) * h + terms.diffusion.prod(terms.g(t, y_), dw)
                got = vjp(inc, (y_, *params), a)
            return -inc.detach(), got[0], got[1:]

        y = records[:, -1]
        a = torch.zeros_like(y)
        g_params = [torch.zeros_like(p) for p in params]
        for c1 in range(plan.N, 0, -64):
            c0 = max(0, c1 - 64)
            dws = plan.increments(c0, c1)
            for k in range(c1 - 1, c0 - 1, -1):
                if k + 1 in pos:
                    y = records[:, pos[k + 1]]
                    a = a + g_rec[:, pos[k + 1]]
                h, dw = plan.h(k), dws[k - c0]
                t0 = sched.ts[k].detach().expand(B)
                t1 = t0 + h[:, 0]
                dy1, da1, dp1 = increment(t1, y, a, h, dw)
                dy2, da2, dp2 = increment(t0, y + dy1, a + da1, h, dw)
                y = y + 0.5 * (dy1 + dy2)
                a = a + 0.5 * (da1 + da2)
                for g, p1, p2 in zip(g_params, dp1, dp2):
                    g += 0.5 * (p1 + p2)
        if 0 in pos:
            a = a + g_rec[:, pos[0]]
        return (None, None, None, a, None, *g_params)


class _ReversibleAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem, cfg, box, y0, t, *params):
        out, plan = _forward(problem, cfg, y0, t)
        box["outcome"] = out
        ctx.problem, ctx.plan, ctx.method = problem, plan, cfg.method
        ctx.save_for_backward(out.final[0], *out.final_state, *params)
        return out.ys[0]

    @staticmethod
    def backward(ctx, grad_ys):
        y, z, f, g, *params = ctx.saved_tensors
        problem, plan, method = ctx.problem, ctx.plan, ctx.method
        terms = problem.terms()
        sched = plan.sched
        B = y.shape[0]
        g_rec = _record_grads(grad_ys, sched, B)
        pos = {step: r for r, step in enumerate(sched.record)}
        a_y, a_z = torch.zeros_like(y), torch.zeros_like(y)
        g_params = [torch.zeros_like(p) for p in params]
        for c1 in range(plan.N, 0, -64):
            c0 = max(0, c1 - 64)
            dws = plan.increments(c0, c1)
            for k in range(c1 - 1, c0 - 1, -1):
                if k + 1 in pos:
                    a_y = a_y + g_rec[:, pos[k + 1]]
                h, dw = plan.h(k), dws[k - c0]
                t0 = sched.ts[k].detach().expand(B)
                with torch.no_grad():
                    y, (z, f, g) = method.unstep(terms, t0, h, y, (z, f, g), dw)
                with torch.enable_grad():
                    y_ = y.detach().requires_grad_(True)
                    z_ = z.detach().requires_grad_(True)
                    f_, g_ = terms.f(t0, z_), terms.g(t0, z_)
                    y1, (z1, _, _) = method.sde_step(terms, t0, h, y_, (z_, f_, g_), dw)
                    grads = vjp((y1, z1), (y_, z_, *params), (a_y, a_z))
                a_y, a_z = grads[0], grads[1]
                for acc, gp in zip(g_params, grads[2:]):
                    acc += gp
        a = a_y + a_z  # z₀ = y₀
        if 0 in pos:
            a = a + g_rec[:, pos[0]]
        return (None, None, None, a, None, *g_params)
