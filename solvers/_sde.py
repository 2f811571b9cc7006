"""Stochastic differential equations: the problem, the SDE steppers' base, and the plan of
a solve's Brownian increments.

An SDE is the terms ``MultiTerm(ODETerm(drift), BrownianTerm(diffusion))``. An SDE method is
a stepper (one file each under ``_methods/``) that says which SDEs it solves (``sde_type``,
and its strong order per noise type) and how to take one step given the Brownian increment.
:class:`SDESchedule` plans the steps and where their increments come from; the one loop
(``_integrate``) draws them a chunk of steps at a time (outside the step arithmetic, with no
host synchronisation).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import torch

from ._brownian import BrownianPath, step_tree
from ._controller import steps_per_interval
from ._problems import AbstractProblem
from ._solution import Status
from ._stepper import AbstractStepper
from ._term import BrownianTerm, MultiTerm, ODETerm, broadcast_time

__all__ = ["SDE", "AbstractSDEMethod", "sde_methods"]

NOISE_TYPES = ("diagonal", "additive", "general")
SDE_TYPES = ("ito", "stratonovich")


class SDE(AbstractProblem):
    """A stochastic differential equation ``dy = f(t, y) dt + g(t, y) dW``.

    The state is ``(batch, d)``. ``W`` is a Brownian motion with ``m`` channels per sample.

    Args:
        drift: ``f(t, y) -> (batch, d)``; ``t`` is a ``(batch, 1)`` tensor of each sample's
            time (it broadcasts against ``y``); the diffusion is called the same way.
        diffusion: ``g(t, y)``: ``(batch, d)`` for ``noise="diagonal"`` (``m = d``, channel
            ``i`` drives state ``i``: ``g(t, y) * dW``), ``(batch, d, m)`` for
            ``noise="general"`` (``g(t, y) @ dW``), either for ``noise="additive"`` (``g``
            independent of ``y``; methods use this to reach a higher order).
        noise: ``"diagonal"`` (default), ``"additive"`` or ``"general"``.
        sde_type: ``"ito"`` (default) or ``"stratonovich"`` (``g ∘ dW``).
        brownian: a :class:`~solvers.BrownianPath` of shape ``(batch, m)`` covering the
            output times; the solve reads it as it is. Default: each solve draws a path from
            ``seed`` on its own steps (see below).
        seed: seed of that default path.

    The default path is a Brownian tree over each sample's steps (padded with steps of
    ``dt`` to ``2**m`` steps, ``m`` levels): exactly Brownian at every step point, whatever
    the output times, at the cost of about one normal per step and noise channel. Sample
    ``i``'s path depends on the seed, ``i``, its own step times and ``m`` (set by the
    sample with the most steps), not on the batch size. When a sample's steps are the grid
    ``t0 + k·dt`` (every output interval a multiple of ``dt``) it is the
    :class:`~solvers.BrownianPath` over ``[t0, t0 + dt·2**m]`` read at level ``m`` (what
    :meth:`brownian_path` returns, to round-off), so a solve with ``dt / 2`` over the same
    output times refines the same path.

    When ``drift`` or ``diffusion`` is an ``nn.Module`` its parameters receive gradients under
    every adjoint.
    """

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
        self._terms = MultiTerm(ODETerm(drift), BrownianTerm(diffusion, noise), sde_type)

    def terms(self) -> MultiTerm:
        return self._terms

    def check(self, t0, y0):
        """Call drift and diffusion once; report a wrong shape as "expected …, got …"."""
        if y0.ndim != 2:
            raise ValueError(f"SDE: y0 must have shape (batch, d), got shape {tuple(y0.shape)}")
        tb = broadcast_time(t0, y0)
        f = self.drift(tb, y0)
        g = self.diffusion(tb, y0)
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

    def _noise_shape(self, y0: torch.Tensor, g0: torch.Tensor) -> tuple[int, int]:
        return (y0.shape[0], g0.shape[1] if g0.ndim == 2 else g0.shape[2])

    def _checked_brownian(self, t: torch.Tensor, shape: tuple[int, int]) -> BrownianPath:
        """The user's path, after checking that it fits the ``(lanes, T)`` grid ``t``."""
        bm = self.brownian
        td = t.detach()
        lo, hi = float(td[:, 0].min()), float(td[:, -1].max())
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

    def brownian_path(
        self, t: torch.Tensor, y0: torch.Tensor, g0: torch.Tensor, dt: float
    ) -> BrownianPath:
        """The path of a fixed-step solve over the ``(lanes, T)`` grid ``t`` with step
        ``dt``, as a :class:`~solvers.BrownianPath` (what ``backend="torchsde"`` steps on).

        The problem's ``brownian`` when it has one. Otherwise the default path: from ``seed``,
        over ``[t0, t0 + dt·2**m]`` with ``t0`` the first output time and ``2**m`` the
        number of steps rounded up to a power of two, ``m`` levels deep, so that the step
        grid ``t0 + k·dt`` is its last level. The native solve draws the same path (to
        round-off) whenever its steps are on that grid; see :class:`SDE`.
        """
        shape = self._noise_shape(y0, g0)
        if self.brownian is not None:
            return self._checked_brownian(t, shape)
        td = t.detach()
        lo, hi = float(td[:, 0].min()), float(td[:, -1].max())
        levels = (_uncapped_steps(td, dt) - 1).bit_length()
        t1 = max(lo + dt * 2**levels, hi)
        return BrownianPath(lo, t1, shape, self.seed, y0.dtype, y0.device, depth=max(1, levels))

    def __repr__(self):
        return (
            f"SDE({self.drift!r}, {self.diffusion!r}, noise={self.noise!r}, "
            f"sde_type={self.sde_type!r}, seed={self.seed})"
        )


class AbstractSDEMethod(AbstractStepper):
    """A fixed-step SDE method: a stepper over ``MultiTerm(drift, diffusion)``. Subclasses
    are final and set the class attributes and :meth:`sde_step`.

    Attributes:
        name: registry name.
        sde_type: ``"ito"`` or ``"stratonovich"``.
        orders: strong order per accepted noise type.
        evals_per_step: drift-and-diffusion evaluations per step.
        reference: where the method comes from.
    """

    sde_type: str
    orders: Mapping[str, float]
    reference: str = ""
    term_types = (MultiTerm,)

    @property
    def noise_types(self) -> tuple[str, ...]:
        return tuple(self.orders)

    @property
    def order(self) -> float:
        """The strong order guaranteed for every accepted noise type (see ``orders``)."""
        return min(self.orders.values())

    strong_order = order

    def reason_to_refuse(self, terms):
        if terms.sde_type != self.sde_type or terms.noise not in self.orders:
            return (
                f"method {self.name!r} handles {self.sde_type} SDEs with "
                f"{' or '.join(self.orders)} noise; got {_article(terms.sde_type)} "
                f"{terms.sde_type} SDE with {terms.noise} noise"
            )
        return None

    def init(self, terms, t0, y0, f0):
        """Extra solver state carried between steps (default: none)."""
        return None

    @property
    def error_order(self) -> float:
        """Adaptive steps estimate their error by step doubling (one step of ``h`` against
        two of ``h/2`` on the same Brownian path); the estimate is of the strong order."""
        return self.order

    def step(self, terms, t0, t1, h, y, state, *, control=None, left=None):
        y0 = y[0]
        if not callable(control):  # planned steps: the increment is given
            y1, state = self.sde_step(terms, t0, h[:, None], y0, state, control)
            return (y1,), None, (y0, y1), state
        # adaptive steps: increments queried on the path; step doubling gives the error
        hv = h[:, None]
        tm = t0 + 0.5 * h
        full, _ = self.sde_step(terms, t0, hv, y0, state, control(t0, t1))
        ym, sm = self.sde_step(terms, t0, 0.5 * hv, y0, state, control(t0, tm))
        y1, state = self.sde_step(terms, tm, 0.5 * hv, ym, sm, control(tm, t1))
        return (y1,), (y1 - full,), (y0, y1), state

    def interpolate(self, dense_info, theta):
        """Linear between the step's ends (adaptive SDE steps land on every output time,
        where this is the step's own end)."""
        y0, y1 = dense_info
        w = theta.reshape(theta.shape + (1,) * (y0.ndim - 1))
        return (y0 + w * (y1 - y0),)

    def evals(self, n_steps, state_given):
        return n_steps * self.evals_per_step

    def sde_step(self, terms: MultiTerm, t, h, y, extra, dw) -> tuple[torch.Tensor, tuple]:
        """One step from ``(t, y)`` (``t``: ``(lanes,)``) of size ``h`` (``(lanes, 1)``) with
        increment ``dw``; returns ``(y1, extra)``."""
        raise NotImplementedError

    def __repr__(self):
        orders = ", ".join(f"{k}: {v}" for k, v in self.orders.items())
        return f"{type(self).__name__}({self.name!r}, {self.sde_type}, strong order {{{orders}}})"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class SDESchedule:
    """The steps of a fixed-step SDE solve and their Brownian increments.

    ``points[k]`` is where step ``k`` starts and ``points[k + 1]`` where it ends, so that the
    increments telescope exactly. Where the increments come from is settled here, before the
    loop (the only host reads):

    * without a user path, from the tree that :func:`~solvers._brownian.step_tree` draws on
      each lane's own steps (padded to a power of two with steps of ``dt``): step ``k`` is
      cell ``k``, about one normal per step;
    * from the user's :class:`~solvers.BrownianPath`, by cells of one of its levels when
      every step is one cell of that level (:meth:`~solvers.BrownianPath.cells`), by
      descending the tree to every step point otherwise.

    Steps past a lane's end (``h = 0``) get a zero increment.
    """

    def __init__(self, problem: SDE, cfg, y0, t, g0):
        self.sched = sched = cfg.fixed_schedule(t)
        shape = problem._noise_shape(y0, g0)
        self.bm = None if problem.brownian is None else problem._checked_brownian(t, shape)
        self.N = N = len(sched.ts)
        self._cells, self._offset, self._active = None, 0, None
        if not N:
            return
        last = torch.where(sched.status == Status.MAX_STEPS, sched.ts[-1] + sched.hs[-1], t[:, -1])
        self.points = torch.stack([*(x.detach() for x in sched.ts), last.detach()])  # (N+1, lanes)
        n_steps = sched.n_steps
        if bool((n_steps < N).any()):
            k = torch.arange(N, device=n_steps.device)[:, None]
            self._active = (k < n_steps)[..., None]  # (N, lanes, 1)
        if self.bm is None:
            # as many levels as the uncapped step count needs, so that max_steps does not
            # change the path of the samples that finish
            levels = (_uncapped_steps(t, cfg.dt) - 1).bit_length()
            if levels > 60:
                levels = (N - 1).bit_length()
            self._tree = (self.points, n_steps, cfg.dt, levels, shape)
            self._cells = step_tree(*self._tree, problem.seed, y0.dtype)
        else:
            grid = _dyadic_level(self.bm, self.points, n_steps)
            if grid is not None:
                level, self._offset = grid
                self._cells = self.bm.cells(level)

    def redraw(self, seed, dtype: torch.dtype) -> SDESchedule:
        """The same steps on the default path of another ``seed`` (an int, or a 0-dim int64
        tensor: then no host read), as a new schedule; this one is left as it is."""
        if self.bm is not None:
            raise ValueError(
                "the SDE has its own BrownianPath, which fixes its noise; a seed does not apply"
            )
        out = copy.copy(self)
        if self.N:
            out._cells = step_tree(*self._tree, seed, dtype, check=False)
        return out

    def increments(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        """``dW`` of steps ``start … stop-1``, each ``(batch, m)``, without gradient."""
        with torch.no_grad():
            if self._cells is None:
                w = self.bm.values(self.points[start : stop + 1])
                dw = w[1:] - w[:-1]
            else:
                dw = self._cells(self._offset + start, self._offset + stop)
            if self._active is not None:
                dw = torch.where(self._active[start:stop], dw, torch.zeros((), dtype=dw.dtype))
            return tuple(dw.unbind(0))

    def h(self, k: int) -> torch.Tensor:
        return self.sched.hs[k][:, None]


class AdaptiveNoise:
    """The Brownian increments of an adaptive SDE solve, queried on a
    :class:`~solvers.BrownianPath` at any times (per lane), so that a rejected step and its
    retry see the same noise. The path is the problem's own, or (by default) the path of
    ``seed`` over the span of the output times, at depth 32."""

    def __init__(self, problem: SDE, y0, t: torch.Tensor, g0):
        shape = problem._noise_shape(y0, g0 if g0 is not None else problem.terms().g(t[:, 0], y0))
        if problem.brownian is not None:
            self.bm = problem._checked_brownian(t, shape)
        else:
            td = t.detach()
            lo, hi = float(td[:, 0].min()), float(td[:, -1].max())
            self.bm = BrownianPath(lo, hi, shape, problem.seed, y0.dtype, y0.device)

    def query(self, ta: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        """``W(tb) - W(ta)``, ``(batch, m)``, for ``(lanes,)`` times, without gradient."""
        with torch.no_grad():
            lo, hi = self.bm.t0, self.bm.t1
            w = self.bm.values(torch.stack([ta.clamp(lo, hi), tb.clamp(lo, hi)]))
            return w[1] - w[0]


def _uncapped_steps(t: torch.Tensor, dt: float) -> int:
    """The most steps that a lane of the ``(lanes, T)`` grid ``t`` takes without a cap."""
    return int(steps_per_interval(t.detach(), dt).sum(1).max()) if t.shape[1] > 1 else 1


def _dyadic_level(bm: BrownianPath, points: torch.Tensor, n_steps: torch.Tensor):
    """``(level, first cell)`` when every lane's steps are the consecutive cells of one level
    of ``bm``'s tree from the same first cell; None otherwise. A point counts as a node when
    it is one within the round-off of the times' dtype."""
    p = points.to(torch.float64)
    span = bm.t1 - bm.t0
    h = float(p[1, 0] - p[0, 0])
    if not h > 0:
        return None
    level = round(math.log2(span / h))
    if not 0 <= level <= bm.depth:
        return None
    cell = span / 2**level
    x = (p - bm.t0) / cell
    q = x.round()
    scale = max(abs(bm.t0), abs(bm.t1))
    tol = 16 * torch.finfo(points.dtype).eps * scale / cell + 1e-12
    k = torch.arange(p.shape[0], device=p.device, dtype=torch.float64)[:, None]
    used = k <= n_steps[None]
    first = q[0, 0]
    ok = ((x - q).abs() <= tol) & (q == first + k)
    if not bool((ok | ~used).all()):
        return None
    return level, int(first)


def sde_methods() -> dict[str, AbstractSDEMethod]:
    """The SDE methods among :func:`solvers.methods`, by name; each says its SDE type and
    strong order per noise type."""
    from ._methods import Heun
    from ._stepper import methods

    out = {}
    for name, m in methods().items():
        m = m.sde if isinstance(m, Heun) else m
        if isinstance(m, AbstractSDEMethod):
            out[name] = m
    return out
