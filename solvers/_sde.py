"""Stochastic differential equations: the problem, the SDE method registry and the
fixed-step loop that every SDE method shares.

An SDE method is a small object (one file each under ``_methods/``) that says which SDEs it
solves (``sde_type``, and its strong order per noise type) and how to take one step given the
Brownian increment; :func:`integrate_sde` builds the schedule, draws the increments from the
problem's :class:`~solvers.BrownianPath` a chunk of steps at a time (outside the step
arithmetic, with no host synchronisation), records the outputs and checkpoints segments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._brownian import BrownianPath
from ._integrate import Outcome, _gather_outputs, fixed_schedule
from ._problems import AbstractProblem
from ._solution import Status

__all__ = ["SDE", "AbstractSDEMethod", "register_sde_method", "sde_method", "sde_methods"]

NOISE_TYPES = ("diagonal", "additive", "general")
SDE_TYPES = ("ito", "stratonovich")

# Steps whose Brownian increments are drawn in one vectorised query.
_CHUNK = 64


class SDE(AbstractProblem):
    """A stochastic differential equation ``dy = f(t, y) dt + g(t, y) dW``.

    The state is ``(batch, d)``. ``W`` is a Brownian motion with ``m`` channels per sample.

    Args:
        drift: ``f(t, y) -> (batch, d)``; ``t`` is a ``(batch,)`` tensor of each sample's time.
        diffusion: ``g(t, y)``: ``(batch, d)`` for ``noise="diagonal"`` (``m = d``, channel
            ``i`` drives state ``i``: ``g(t, y) * dW``), ``(batch, d, m)`` for
            ``noise="general"`` (``g(t, y) @ dW``), either for ``noise="additive"`` (``g``
            independent of ``y``; methods use this to reach a higher order).
        noise: ``"diagonal"`` (default), ``"additive"`` or ``"general"``.
        sde_type: ``"ito"`` (default) or ``"stratonovich"`` (``g ∘ dW``).
        brownian: a :class:`~solvers.BrownianPath` of shape ``(batch, m)`` covering the
            output times. Default: one is made at each solve from ``seed`` and the span of
            the output times, so solves with the same seed and span see the same path.
        seed: seed of that default path. Sample ``i``'s path depends on the seed, the span and
            ``i`` only, not on the batch size.

    When ``drift`` or ``diffusion`` is an ``nn.Module`` its parameters receive gradients under
    every adjoint.
    """

    #: the generic ODE backsolve does not apply; :meth:`backsolve` is the stochastic adjoint
    supports_backsolve = False

    def __init__(
        self,
        drift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        diffusion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        noise: str = "diagonal",
        sde_type: str = "ito",
        brownian: BrownianPath | None = None,
        seed: int = 0,
    ):
        for name, fn in (("drift", drift), ("diffusion", diffusion)):
            if not callable(fn):
                raise TypeError(f"SDE: {name} must be callable as {name}(t, y), got {type(fn)}")
        if noise not in NOISE_TYPES:
            raise ValueError(f"SDE: unknown noise {noise!r}; valid: {', '.join(NOISE_TYPES)}")
        if sde_type not in SDE_TYPES:
            raise ValueError(f"SDE: unknown sde_type {sde_type!r}; valid: {', '.join(SDE_TYPES)}")
        if brownian is not None and not isinstance(brownian, BrownianPath):
            raise TypeError(f"SDE: brownian must be a BrownianPath, got {type(brownian).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"SDE: seed must be an integer, got {type(seed).__name__}")
        self.drift, self.diffusion = drift, diffusion
        self.noise, self.sde_type = noise, sde_type
        self.brownian, self.seed = brownian, seed

    def vector_field(self, t, y):
        return self.drift(t, y)

    def parameters(self):
        seen, out = set(), []
        for fn in (self.drift, self.diffusion):
            if isinstance(fn, nn.Module):
                for p in fn.parameters():
                    if p.requires_grad and id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
        return tuple(out)

    def check(self, t0, y0):
        """Call drift and diffusion once; report a wrong shape as "expected …, got …"."""
        if y0.ndim != 2:
            raise ValueError(f"SDE: y0 must have shape (batch, d), got shape {tuple(y0.shape)}")
        f = self.drift(t0, y0)
        g = self.diffusion(t0, y0)
        for name, out in (("drift", f), ("diffusion", g)):
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"SDE: the {name} must return a tensor, got {type(out).__name__}")
            if out.dtype != y0.dtype:
                raise ValueError(
                    f"SDE: the {name} returned dtype {out.dtype}; expected {y0.dtype}, "
                    "the dtype of y0"
                )
        if f.shape != y0.shape:
            raise ValueError(
                f"SDE: the drift at t0 returned shape {tuple(f.shape)}; expected "
                f"{tuple(y0.shape)}, the shape of y0"
            )
        B, d = y0.shape
        if self.noise == "diagonal":
            ok, expected = g.shape == y0.shape, f"{(B, d)}"
        elif self.noise == "general":
            ok, expected = (
                g.ndim == 3 and g.shape[:2] == y0.shape,
                f"(batch, d, m) = {(B, d)} + (m,)",
            )
        else:
            ok = g.shape == y0.shape or (g.ndim == 3 and g.shape[:2] == y0.shape)
            expected = f"{(B, d)} or (batch, d, m) = {(B, d)} + (m,)"
        if not ok:
            raise ValueError(
                f"SDE: the diffusion of {self.noise} noise at t0 returned shape "
                f"{tuple(g.shape)}; expected {expected}"
            )
        return f

    def noise_term(self, g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        """``g dW``: elementwise for ``(batch, d)`` diffusions, a matrix product otherwise."""
        return g * dw if g.ndim == 2 else (g @ dw.unsqueeze(-1)).squeeze(-1)

    def brownian_path(self, t: torch.Tensor, y0: torch.Tensor, g0: torch.Tensor) -> BrownianPath:
        """The path a solve over the ``(lanes, T)`` grid ``t`` uses (the same every time)."""
        m = g0.shape[1] if g0.ndim == 2 else g0.shape[2]
        shape = (y0.shape[0], m)
        td = t.detach()
        lo, hi = float(td[:, 0].min()), float(td[:, -1].max())
        if self.brownian is None:
            if hi == lo:
                hi = lo + 1.0
            return BrownianPath(lo, hi, shape, self.seed, y0.dtype, y0.device)
        bm = self.brownian
        if bm.shape != shape:
            raise ValueError(
                f"SDE: the brownian path has shape {bm.shape}; expected (batch, m) = {shape}"
            )
        if lo < bm.t0 or hi > bm.t1:
            raise ValueError(
                f"SDE: the brownian path covers [{bm.t0}, {bm.t1}] but the output times span "
                f"[{lo}, {hi}]"
            )
        return bm

    def backsolve(self, adjoint, cfg, y0, t, f0) -> Outcome:
        """The stochastic adjoint (``adjoint="backsolve"``); see :mod:`solvers._sde_adjoint`."""
        from ._sde_adjoint import sde_backsolve

        return sde_backsolve(adjoint, self, cfg, y0, t)

    def __repr__(self):
        return (
            f"SDE({self.drift!r}, {self.diffusion!r}, noise={self.noise!r}, "
            f"sde_type={self.sde_type!r}, seed={self.seed})"
        )


class AbstractSDEMethod:
    """A fixed-step SDE method. Subclasses are final and set the class attributes.

    Attributes:
        name: registry name.
        sde_type: ``"ito"`` or ``"stratonovich"``.
        orders: strong order per accepted noise type.
        evals: drift-and-diffusion evaluations per step.
        reference: where the method comes from.
    """

    name: str
    sde_type: str
    orders: Mapping[str, float]
    evals: int = 1
    reference: str = ""
    adaptive = False
    problems = (SDE,)

    @property
    def noise_types(self) -> tuple[str, ...]:
        return tuple(self.orders)

    @property
    def strong_order(self) -> float:
        """The strong order guaranteed for every accepted noise type (see ``orders``)."""
        return min(self.orders.values())

    def accepts(self, problem) -> bool:
        return isinstance(problem, self.problems)

    def check_problem(self, problem: SDE) -> None:
        """Raise ValueError naming both sides when the SDE is not one this method solves."""
        if problem.sde_type != self.sde_type or problem.noise not in self.orders:
            raise ValueError(
                f"method {self.name!r} handles {self.sde_type} SDEs with "
                f"{' or '.join(self.orders)} noise; got {_article(problem.sde_type)} "
                f"{problem.sde_type} SDE with {problem.noise} noise"
            )

    def init(self, problem: SDE, t0, y0, g0) -> tuple:
        """Extra solver state carried between steps (default: none)."""
        return ()

    def step(self, problem: SDE, t, h, y, extra, dw) -> tuple[torch.Tensor, tuple]:
        """One step from ``(t, y)`` of size ``h`` (``(lanes, 1)``) with increment ``dw``."""
        raise NotImplementedError

    def integrate(self, problem, cfg, y0, t, f0, *, checkpoint_every=None) -> Outcome:
        self.check_problem(problem)
        return integrate_sde(self, problem, cfg, y0, t, checkpoint_every=checkpoint_every).outcome

    def __repr__(self):
        orders = ", ".join(f"{k}: {v}" for k, v in self.orders.items())
        return f"{type(self).__name__}({self.name!r}, {self.sde_type}, strong order {{{orders}}})"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class SDESchedule:
    """The steps of a fixed-step SDE solve and their Brownian increments.

    ``points[k]`` is where step ``k`` starts and ``points[k + 1]`` where it ends, so that the
    increments telescope exactly; the path is queried a chunk of steps at a time.
    """

    def __init__(self, problem: SDE, cfg, y0, t, g0):
        self.sched = fixed_schedule(t, cfg.dt, cfg.max_steps)
        self.bm = problem.brownian_path(t, y0, g0)
        N = len(self.sched.ts)
        self.N = N
        if N:
            s = self.sched
            last = torch.where(s.status == Status.MAX_STEPS, s.ts[-1] + s.hs[-1], t[:, -1])
            self.points = torch.stack([*(x.detach() for x in s.ts), last.detach()])  # (N+1, lanes)

    def increments(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        """``dW`` of steps ``start … stop-1``, each ``(batch, m)``, without gradient."""
        with torch.no_grad():
            w = self.bm.values(self.points[start : stop + 1])
            return tuple((w[1:] - w[:-1]).unbind(0))

    def h(self, k: int) -> torch.Tensor:
        return self.sched.hs[k][:, None]


class Integration:
    """What :func:`integrate_sde` returns: the outcome, the final extra state, the records."""

    def __init__(self, outcome: Outcome, extra: tuple, records: list, plan: SDESchedule):
        self.outcome, self.extra, self.records, self.plan = outcome, extra, records, plan


def integrate_sde(method, problem, cfg, y0, t, *, checkpoint_every=None) -> Integration:
    """Run ``method`` over the ``(lanes, T)`` grid ``t``. No host synchronisation happens
    inside the loop; with ``checkpoint_every`` each segment of steps is recomputed in the
    backward pass (its increments are recomputed too, identically)."""
    B = y0.shape[0]
    t0 = t[:, 0].expand(B)
    g0 = problem.diffusion(t0, y0)
    plan = SDESchedule(problem, cfg, y0, t, g0)
    sched, N = plan.sched, plan.N
    record_at = set(sched.record)
    extra0 = method.init(problem, t0, y0, g0)
    n_extra = len(extra0)

    def run(start, stop, y, extra):
        kept = []
        for c0 in range(start, stop, _CHUNK):
            c1 = min(c0 + _CHUNK, stop)
            for k, dw in zip(range(c0, c1), plan.increments(c0, c1)):
                y, extra = method.step(problem, sched.ts[k].expand(B), plan.h(k), y, extra, dw)
                if k + 1 in record_at:
                    kept.append(y)
        return y, extra, kept

    records = [y0] if 0 in record_at else []
    y, extra = y0, extra0
    if checkpoint_every == "auto":
        checkpoint_every = max(1, math.isqrt(N))
    if checkpoint_every is None or N == 0:
        y, extra, kept = run(0, N, y, extra)
        records += kept
    else:
        for start in range(0, N, checkpoint_every):
            stop = min(start + checkpoint_every, N)

            def segment(y_, *extra_, start=start, stop=stop):
                y_end, extra_end, kept = run(start, stop, y_, tuple(extra_))
                return (y_end, *extra_end, *kept)

            flat = checkpoint(segment, y, *extra, use_reentrant=False)
            y, extra = flat[0], tuple(flat[1 : 1 + n_extra])
            records += list(flat[1 + n_extra :])
    ys = _gather_outputs([(r,) for r in records], sched.gather, sched.unreached, B)
    counts = sched.n_steps.clone()
    nfe = N * method.evals + 1
    outcome = Outcome(ys, (y,), sched.status.clone(), counts, torch.zeros_like(counts), nfe)
    return Integration(outcome, extra, records, plan)


# ---------------------------------------------------------------------------------------------
# Registry: SDE methods are looked up by name when the problem is an SDE.

_SDE_REGISTRY: dict[str, AbstractSDEMethod] = {}


def register_sde_method(method: AbstractSDEMethod) -> None:
    """Add an SDE method object under its ``name``."""
    if method.name in _SDE_REGISTRY:
        raise ValueError(f"an SDE method named {method.name!r} is already registered")
    _SDE_REGISTRY[method.name] = method


def sde_methods() -> dict[str, AbstractSDEMethod]:
    """Every SDE method by name; each says its SDE type and strong order per noise type."""
    return dict(_SDE_REGISTRY)


def sde_method(name: str) -> AbstractSDEMethod:
    """Resolve an SDE method name (``solve`` does this when the problem is an SDE)."""
    if name in _SDE_REGISTRY:
        return _SDE_REGISTRY[name]
    raise ValueError(
        f"unknown SDE method {name!r}; valid SDE methods are: {', '.join(_SDE_REGISTRY)}"
    )


def _register_builtin() -> None:
    from ._methods.euler_maruyama import EulerMaruyama
    from ._methods.milstein import Milstein
    from ._methods.reversible_heun import ReversibleHeun
    from ._methods.sde_heun import StratonovichHeun

    for cls in (EulerMaruyama, Milstein, StratonovichHeun, ReversibleHeun):
        register_sde_method(cls())


_register_builtin()
