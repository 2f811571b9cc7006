"""Delay differential equations on the one loop: the problem, its history and its plan.

``dy/dt = f(t, y(t), [y(t - τ_1), ..., y(t - τ_K)])`` for ``t ≥ t0``, with ``y(t) = φ(t)`` for
``t < t0`` (the history) and ``y(t0) = y0``.

A DDE is integrated by the one loop (``_integrate``) like every other problem. Its term,
:class:`~solvers.DelayTerm`, reads delayed values from a :class:`History`: the initial
function before ``t0`` and, after it, a piecewise polynomial with one entry per step, filled
from each accepted step's dense information (the tableau's own interpolant when it has one;
the natural continuous extension of ``euler``, ``midpoint``, ``heun`` and ``rk4``; otherwise
the cubic Hermite interpolant through both ends' values and slopes, which costs one more
evaluation per step). The loop tells the term which step it takes (``step_begins``) and hands
it every step (``accepted``); see ``AbstractTerm.keeps_history``.

What keeps the method of steps exact:

* steps are never longer than the smallest delay, so a delayed value lies in a step already
  taken;
* the steps land on the breakpoints ``t0 + Σ n_i τ_i`` (``1 ≤ Σ n_i ≤`` the method's order),
  where the solution's derivatives jump: fixed steps split their intervals there, adaptive
  steps take them as jump times;
* at ``t0`` the solution may jump (a history that does not end at ``y0``): a stage at
  ``t < t0 + τ_k`` reads the history, one at ``t ≥ t0 + τ_k`` the solution, with ``t0 + τ_k``
  computed as the breakpoint is, so that the step that ends there sees the left limit and
  the next one the right.

Look-ups: the entries that a step's delayed values can fall into are found on the host, per
step and delay (a range of entry indices); the entry of each lane inside that range is found
on the device (``searchsorted`` over the range's step ends) and the polynomial evaluated
there, so ``θ`` keeps its graph and gradients reach the delays, the times and ``y0``. A
fixed-step solve plans every range before the loop: its loop reads nothing back to the host.
An adaptive solve reads the step's two ends back once per step (besides the loop's own read).
Entries are written once, by step number, so a checkpointed segment recomputed in the
backward pass reads and leaves the history as it was.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._controller import fixed_schedule
from ._problems import AbstractProblem
from ._rk import ExplicitRungeKutta, lane_view
from ._term import DelayTerm, broadcast_time

__all__ = ["DDE"]


class DDE(AbstractProblem):
    """A delay differential equation ``dy/dt = f(t, y(t), y(t - τ))``.

    Args:
        f: the vector field, called as ``f(t, y, y_delayed)`` with ``t`` a
            ``(batch, 1, ..., 1)`` tensor (broadcasting against ``y``), ``y`` of shape
            ``(batch, *state)`` and ``y_delayed`` of shape ``(batch, K, *state)`` holding
            ``y(t - τ_k)`` for each of the ``K`` delays. It returns ``dy/dt`` with the shape
            of ``y``. When ``f`` is an ``nn.Module`` its parameters receive gradients.
        delays: the ``K`` delays, a 1-D tensor (a number or a 0-d tensor is one delay), all
            positive. It may be an ``nn.Parameter``: gradients reach the delays under the
            ``"direct"`` and ``"checkpoint"`` adjoints.
        history: the solution before the initial time: a number or a tensor broadcastable to
            the shape of ``y0`` (a constant history), or a callable
            ``history(t) -> (batch, *state)`` for ``t`` a ``(batch,)`` tensor of times before
            ``t0``.

    The continuous adjoint (``adjoint="backsolve"``) is not available for delay equations.
    """

    def __init__(
        self,
        f: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        delays: torch.Tensor | float,
        history: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    ):
        if not callable(f):
            raise TypeError(
                f"DDE: f must be callable as f(t, y, y_delayed), got {type(f).__name__}"
            )
        if not isinstance(delays, torch.Tensor):
            delays = torch.as_tensor(delays, dtype=torch.get_default_dtype())
        if delays.ndim > 1:
            raise ValueError(
                f"DDE: delays must be a 1-D tensor of K delays, got shape {tuple(delays.shape)}"
            )
        if not delays.is_floating_point():
            raise ValueError(f"DDE: delays must be floating point, got dtype {delays.dtype}")
        if delays.numel() == 0:
            raise ValueError("DDE: delays must hold at least one delay, got an empty tensor")
        values = delays.detach().reshape(-1).tolist()
        for i, v in enumerate(values):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"DDE: every delay must be positive and finite; delays[{i}] = {v}")
        if isinstance(history, (int, float)) and not isinstance(history, bool):
            history = torch.tensor(float(history), dtype=delays.dtype)
        if not (isinstance(history, torch.Tensor) or callable(history)):
            raise TypeError(
                "DDE: history must be a tensor (a constant history) or a callable history(t), "
                f"got {type(history).__name__}"
            )
        self.f = f
        self._delays = delays
        self.history = history
        self._terms = DelayTerm(f, delays, history, self._parameters())

    def terms(self) -> DelayTerm:
        return self._terms

    @property
    def delays(self) -> torch.Tensor:
        """The delays as a 1-D tensor ``(K,)`` (keeps the graph of a learnable delay)."""
        return self._delays.reshape(-1)

    def vector_field(self, t, y):
        raise TypeError(
            "DDE: the vector field needs the solution's past, so a DDE has no vector_field(t, y); "
            "solve it with solvers.solve"
        )

    def parameters(self):
        return self._parameters()

    def _parameters(self):
        params = []
        for obj in (self.f, self.history):
            if isinstance(obj, nn.Module):
                params += [p for p in obj.parameters() if p.requires_grad]
        if self._delays.requires_grad:
            params.append(self._delays)
        return tuple(params)

    def past(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The history at times ``t`` (``(batch,)`` or ``(1,)``), shaped like ``like``."""
        return _past(self.history, t, like)

    def check(self, t0, y0):
        """Evaluate the history before ``t0`` and ``f`` once at ``t0``; check their shapes."""
        if isinstance(self.history, torch.Tensor):
            try:
                shape = torch.broadcast_shapes(self.history.shape, y0.shape)
            except RuntimeError:
                shape = None
            if shape != y0.shape:
                raise ValueError(
                    f"DDE: a constant history must broadcast to the shape of y0; expected a "
                    f"shape broadcastable to {tuple(y0.shape)}, got {tuple(self.history.shape)}"
                )
        delays = self.delays.to(y0.dtype)
        past = []
        for tau in delays.unbind(0):
            value = self.past(t0 - tau, y0)
            if not isinstance(value, torch.Tensor) or value.shape != y0.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise ValueError(
                    f"DDE: history(t) must return the shape of y0; expected {tuple(y0.shape)}, "
                    f"got {got}"
                )
            past.append(value)
        y_delayed = torch.stack(past, dim=1)
        out = self.f(broadcast_time(t0, y0), y0, y_delayed)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"DDE: f must return a tensor, got {type(out).__name__}")
        if out.shape != y0.shape:
            raise ValueError(
                f"DDE: f(t, y, y_delayed) at t0 returned shape {tuple(out.shape)}; expected "
                f"{tuple(y0.shape)}, the shape of y0 (y_delayed has shape "
                f"{tuple(y_delayed.shape)}: batch, K delays, state)"
            )
        if out.dtype != y0.dtype:
            raise ValueError(
                f"DDE: f returned dtype {out.dtype}; expected {y0.dtype}, the dtype of y0"
            )
        return out

    def __repr__(self):
        return f"DDE({self.f!r}, delays={self.delays.tolist()})"


def _past(history, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if isinstance(history, torch.Tensor):
        return history.to(like.dtype).expand(like.shape)
    return history(t.expand(like.shape[0]))


# ---------------------------------------------------------------------------------------------
# Planning: breakpoints, the step bound and the fixed steps


def _breakpoint_offsets(delays: torch.Tensor, order: int, span: float) -> torch.Tensor:
    """``Σ_i n_i τ_i`` for ``1 ≤ Σ n_i ≤ order``, below ``span``: where the derivatives of the
    solution may jump (Bellen & Zennaro, Numerical methods for delay differential equations,
    OUP 2003, ch. 4). Returns the offsets with their graph on the delays, sorted, unique."""
    K = delays.shape[0]
    combos = [
        np.bincount(np.array(c), minlength=K)
        for total in range(1, order + 1)
        for c in itertools.combinations_with_replacement(range(K), total)
    ]
    n = torch.tensor(np.stack(combos), dtype=delays.dtype, device=delays.device)
    off = (n * delays[None]).sum(1)
    host = off.detach().cpu().numpy()
    keep = np.nonzero(host < span)[0]
    if keep.size == 0:
        return off[:0]
    _, first = np.unique(host[keep], return_index=True)  # sorted by value
    return off[torch.from_numpy(keep[first]).to(delays.device)]


def _tolerance(t: torch.Tensor) -> float:
    """Round-off of the times: how far a host-side range of entries is widened."""
    scale = max(1.0, float(t.detach().abs().max()))
    return 64 * torch.finfo(t.dtype).eps * scale


# Natural continuous extensions u(θ) = y0 + h Σ_j b_j(θ) k_j of the built-in tableaus without
# an interpolant, as rows of θ^1, θ^2, ... coefficients per stage (the format of
# ButcherTableau.interpolant). Their uniform order (1, 2, 2, 3) keeps the method's order on a
# DDE (Bellen & Zennaro, th. 5.2.1: order min(p, q + 1)) without evaluating f at the end.
_EXTENSIONS = {
    "euler": ((1.0,),),
    "midpoint": ((1.0, -1.0), (0.0, 1.0)),
    "heun": ((1.0, -0.5), (0.0, 0.5)),
    "rk4": ((1.0, -1.5, 2 / 3), (0.0, 1.0, -2 / 3), (0.0, 1.0, -2 / 3), (0.0, -0.5, 2 / 3)),
}


def _interpolant(tab):
    """The tableau's interpolant rows, a natural continuous extension, or ``None`` (cubic
    Hermite)."""
    if tab.interpolant is not None:
        return tab.interpolant
    rows = _EXTENSIONS.get(tab.name)
    if rows is not None and len(rows) == len(tab.b):
        if all(abs(sum(r) - b) < 1e-12 for r, b in zip(rows, tab.b)):
            return rows
    return None


def begin(term: DelayTerm, cfg, y0: torch.Tensor, t: torch.Tensor):
    """Bind ``term`` to a fresh :class:`History` for one solve over the ``(lanes, T)`` grid
    ``t``; returns ``(bound term, planned steps or None, jump times or None)``."""
    stepper = cfg.method
    if not isinstance(stepper, ExplicitRungeKutta):  # pragma: no cover - refused in solve
        raise ValueError(f"DDE: method {stepper.name!r} is not a Runge–Kutta method")
    tab = stepper.tableau
    delays = term.delays.reshape(-1).to(y0.dtype)
    tau_min = float(delays.detach().min())
    t0, tend = t[:, 0], t[:, -1]
    span = float((tend - t0).detach().max())
    off = _breakpoint_offsets(delays, tab.order, span)
    history = History(term, tab, y0, t, delays, tau_min)
    if not cfg.controller.planned:
        jumps = (t0[:, None] + off[None]) if off.shape[0] else None
        return history.term, None, jumps
    # Fixed steps of at most min(dt, τ_min) on the output grid joined with the breakpoints;
    # the outputs are gathered back from among them.
    T = t.shape[1]
    if off.shape[0]:
        bp = torch.minimum(t0[:, None] + off[None], tend[:, None])
        grid, perm = torch.sort(torch.cat([t, bp], dim=1), dim=1, stable=True)
        pos = torch.argsort(perm, dim=1)[:, :T]
    else:
        grid, pos = t, None
    sched = fixed_schedule(grid, min(cfg.controller.dt, tau_min), cfg.max_steps)
    if pos is not None:
        lanes, Tg = grid.shape
        gather = sched.gather
        if gather is None:
            gather = torch.arange(Tg, device=t.device).expand(lanes, -1)
        unreached = sched.unreached
        sched = dataclasses.replace(
            sched,
            gather=gather.gather(1, pos),
            unreached=None if unreached is None else unreached.gather(1, pos),
        )
    history.plan(sched, off)
    return history.term, sched, None


# ---------------------------------------------------------------------------------------------
# The solution's past


class History:
    """The solution's past for one solve: the initial function before ``t0``, then one
    polynomial in ``θ = (s - start) / h`` per step.

    Entry ``e`` holds ``start``, ``1/h`` (0 for ``h = 0``) and ``end`` (``(lanes,)``) and
    ``P`` coefficients ``C_m`` (``(batch, *state)``) with ``y(start + θ h) = Σ_m C_m θ^m``.
    Entry 0 is the initial point itself (``h = 0``); entry ``n + 1`` is step ``n`` (a lane
    that rejected the step, or took none, holds the point where it stands, ``h = 0``).
    Entries are written once.
    """

    def __init__(self, term: DelayTerm, tab, y0, t, delays, tau_min: float):
        self.history = term.history
        self.f = term.f
        self.tab = tab
        self.lanes = t.shape[0]
        self.batch = y0.shape[0]
        self.taus = delays  # (K,), with its graph
        self.K = delays.shape[0]
        self.taus_h = delays.detach().cpu().numpy().astype(np.float64)
        self.tau_min = tau_min
        self.t0 = t[:, 0]
        # t < t0 + τ_k reads the history (computed as the breakpoints are)
        self.first = (self.t0.detach()[:, None] + delays.detach()[None]).unbind(1)
        self.t0_h = t[:, 0].detach().cpu().numpy().astype(np.float64)
        self.tend_h = t[:, -1].detach().cpu().numpy().astype(np.float64)
        self.tol = _tolerance(t)
        rows = _interpolant(tab)
        self.coef = None
        if rows is not None:
            self.coef = torch.tensor(rows, dtype=y0.dtype, device=y0.device).T  # (deg, s)
        self.P = 1 + (self.coef.shape[0] if self.coef is not None else 3)
        self.C = [(y0,) + (torch.zeros_like(y0),) * (self.P - 1)]
        self.start = [self.t0]
        self.inv_h = [torch.zeros_like(self.t0)]
        self.end = [self.t0.detach()]
        # host copy of the entries' ends, (lanes, capacity), +inf beyond the last
        self.ends_h = np.full((self.lanes, 64), np.inf)
        self.ends_h[:, 0] = self.t0_h
        self.n_host = 1
        self.planned = None  # fixed steps: the ranges of every step, planned before the loop
        self.call_plan = None  # fixed steps: the ranges of every evaluation
        self.calls, self.call = None, 0  # the current step's evaluations, and how many so far
        self.step_end = None  # adaptive: the current step's end (``(lanes,)``) while it runs
        self.ranges = None  # the current step's ranges: K tuples (lo, hi, needs history)
        self.left_end = None  # fixed steps: steps whose last (FSAL) stage must be re-taken
        self.arange = torch.arange(self.batch, device=y0.device)
        self.term = term.bound(self)

    # -- the loop's hooks ---------------------------------------------------------------------

    def step_begins(self, n: int, t0: torch.Tensor, t1: torch.Tensor) -> None:
        """Step ``n`` goes from ``t0`` to ``t1`` (``(lanes,)``): find the entries that its
        delayed values fall into (planned: looked up; adaptive: one read back to the host)."""
        if self.planned is not None:
            self.ranges = self.planned[n]
            self.calls, self.call = self.call_plan[n], 0
            return
        pending = self.end[self.n_host :]
        host = torch.stack([t0.detach(), t1.detach(), *pending]).cpu().numpy()
        self._sync_ends(host[2:])
        self.ranges = self._ranges(host[0], host[1], n)
        # a stage at the end of the step sees the left limit there (below)
        self.step_end = torch.where(t1 > t0, t1.detach(), torch.full_like(t1.detach(), math.inf))

    def accepted(self, n: int, t0, t1, y1, dense, accept) -> None:
        """Step ``n`` from ``t0`` to ``t1`` ended at ``y1`` with the stepper's ``dense``
        information; ``accept`` (``(lanes,)`` bool, or ``None``: every lane) says which lanes
        keep it. Adds entry ``n + 1`` (the first time only: a recomputed checkpoint segment
        computes the same coefficients again and leaves the history as it was)."""
        if self.calls is not None:
            if self.call != len(self.calls):  # pragma: no cover - a stepper changed its order
                raise RuntimeError(
                    f"DDE history: step {n} evaluated the field {self.call} times, planned for "
                    f"{len(self.calls)}"
                )
            self.calls = None  # evaluations made here use the step's ranges
        self.step_end = None
        y, h, ks = dense
        y, y1, ks = y[0], y1[0], [k[0] for k in ks]
        if self.left_end is not None and self.left_end[n]:
            # an FSAL stage at a breakpoint t0 + τ_k saw the right limit: the interpolant of
            # this step needs the left one
            ks[-1] = self.derivative(torch.nextafter(t1, t0), (y1,))[0]
        hv = lane_view(h, y)
        if self.coef is None:  # cubic Hermite: the slope at the end, from the left
            f0 = ks[0]
            f1 = self.derivative(torch.nextafter(t1, t0), (y1,))[0]
            d = y1 - y
            C = (y, hv * f0, 3 * d - hv * (2 * f0 + f1), -2 * d + hv * (f0 + f1))
        else:
            K = torch.stack(ks, dim=1).flatten(2)  # (batch, s, n)
            rest = (self.coef @ K).reshape((y.shape[0], self.P - 1, *y.shape[1:]))
            C = (y, *(hv * r for r in rest.unbind(1)))
        end = t1.detach()
        if accept is not None:
            keep = lane_view(accept, y)
            C = (y, *(torch.where(keep, c, torch.zeros_like(c)) for c in C[1:]))
            h = torch.where(accept, h, torch.zeros_like(h))
            end = torch.where(accept, end, t0.detach())
        positive = h > 0
        inv_h = torch.where(positive, 1 / torch.where(positive, h, 1.0), 0.0)
        if n + 1 == len(self.C):
            self.C.append(C)
            self.start.append(t0)
            self.inv_h.append(inv_h)
            self.end.append(end)

    # -- delayed values -----------------------------------------------------------------------

    def derivative(self, t: torch.Tensor, y):
        """``dy/dt`` at the ``(lanes,)`` time ``t``: ``f(t, y, y(t - τ))``."""
        like = y[0]
        ranges, at_end = self.ranges, None
        if self.calls is not None and self.call < len(self.calls):
            ranges, at_end = self.calls[self.call]  # this evaluation's entries, planned
            self.call += 1
        elif self.step_end is not None:
            at_end = t.detach() == self.step_end
        elif ranges is None:  # outside a step (the first-step heuristic): look on the host
            pending = self.end[self.n_host :]
            host = torch.stack([t.detach(), *pending]).cpu().numpy()
            self._sync_ends(host[1:])
            ranges = self._ranges(host[0], host[0], len(self.C) - 1)
        values = []
        for k in range(self.K):
            s = t - self.taus[k]
            lo, hi, old, sel = ranges[k]
            if hi < 0:
                v = _past(self.history, s, like)
            else:
                v = self._value(s, lo, hi, like, sel)
                if old:
                    # before t0 + τ_k, or at it from the left (a stage at the end of a step
                    # that ends there): the history; from t0 + τ_k on: the solution
                    past = t.detach() < self.first[k]
                    if at_end is True:
                        past = t.detach() <= self.first[k]
                    elif at_end is not None and at_end is not False:
                        past = past | (at_end & (t.detach() == self.first[k]))
                    v = torch.where(lane_view(past, v), _past(self.history, s, like), v)
            values.append(v)
        return (self.f(broadcast_time(t, like), like, torch.stack(values, dim=1)),)

    def _value(self, s, lo: int, hi: int, like, sel=None):
        """``y(s)`` from the entries ``lo..hi``: the entry of each lane is ``lo + sel``
        (``(lanes,)``, planned) or found on the device."""
        if lo == hi:
            C, start, inv_h = self.C[lo], self.start[lo], self.inv_h[lo]
        else:
            if sel is None:
                ends = torch.stack(self.end[lo : hi + 1], dim=1)  # (lanes, R)
                sel = torch.searchsorted(ends, s.detach()[:, None].contiguous())[:, 0]
                sel = sel.clamp(max=hi - lo)
            entries = self.C[lo : hi + 1]
            if self.lanes > 1:
                C = tuple(torch.stack(m)[sel, self.arange] for m in zip(*entries))
            else:
                C = tuple(torch.stack(m).index_select(0, sel)[0] for m in zip(*entries))
            start = torch.stack(self.start[lo : hi + 1], 1).gather(1, sel[:, None])[:, 0]
            inv_h = torch.stack(self.inv_h[lo : hi + 1], 1).gather(1, sel[:, None])[:, 0]
        theta = (s - start) * inv_h
        if self.lanes > 1:
            # a lane that takes no step may look far outside its entry: keep it finite
            theta = theta.clamp(-1.0, 2.0)
        th = lane_view(theta, like)
        v = C[-1]
        for part in reversed(C[:-1]):
            v = torch.addcmul(part, v, th)
        return v

    # -- ranges of entries, on the host -------------------------------------------------------

    def _sync_ends(self, new: np.ndarray) -> None:
        """Append entries' ends (``(E, lanes)``) to the host copy."""
        if not len(new):
            return
        need = self.n_host + len(new)
        if need > self.ends_h.shape[1]:
            grown = np.full((self.lanes, max(need, 2 * self.ends_h.shape[1])), np.inf)
            grown[:, : self.n_host] = self.ends_h[:, : self.n_host]
            self.ends_h = grown
        self.ends_h[:, self.n_host : need] = np.asarray(new, dtype=np.float64).T
        self.n_host = need

    def _ranges(self, a: np.ndarray, b: np.ndarray, last: int):
        """For a step from ``a`` to ``b`` (``(lanes,)``, host) that may read entries up to
        ``last``: per delay, the range ``(lo, hi, reads the history)``; ``hi = -1``: the
        history only."""
        return self._ranges_many(a[None], b[None], np.array([last]))[0]

    def _ranges_many(self, a: np.ndarray, b: np.ndarray, last: np.ndarray):
        """:meth:`_ranges` for ``S`` steps at once: ``a``, ``b`` ``(S, lanes)``."""
        S = a.shape[0]
        # a lane that has finished takes steps of length zero at its end and reads what it
        # likes (its values are not used)
        moving = (b > a) | (b < self.tend_h[None])
        ends = torch.from_numpy(np.ascontiguousarray(self.ends_h[:, : self.n_host]))
        out = [[None] * self.K for _ in range(S)]
        for k in range(self.K):
            qa = a - self.taus_h[k]  # (S, lanes)
            qb = b - self.taus_h[k]
            # Within round-off of the end of an entry, either neighbour answers (the solution
            # is continuous after t0): the range is taken narrow, so that a step whose delayed
            # interval is a whole earlier step (a delay that is a multiple of the step) reads
            # one entry.
            ia = np.minimum(self._find(ends, qa + self.tol), last[:, None])
            ib = np.minimum(
                self._find(ends, np.maximum(qb - self.tol, qa + self.tol)), last[:, None]
            )
            ib = np.maximum(ia, ib)
            old = (qa - self.tol < self.t0_h[None]) & moving  # may read the history
            new = (qb + self.tol >= self.t0_h[None]) & moving  # may read the solution
            lo = np.where(new, ia, np.iinfo(np.int64).max).min(1)
            hi = np.where(new, ib, -1).max(1)
            reads_old = old.any(1)
            for i in range(S):
                if hi[i] < 0:
                    out[i][k] = (-1, -1, True, None)
                else:
                    out[i][k] = (int(lo[i]), int(hi[i]), bool(reads_old[i]), None)
        return out

    def _call_ranges(self, times: np.ndarray, a: np.ndarray, b: np.ndarray):
        """Fixed steps: the entries of every evaluation, planned. ``times`` ``(N, E, lanes)``
        are the times of the ``E`` evaluations of each step from ``a`` to ``b`` (``(N,
        lanes)``). Per step, evaluation and delay: ``(lo, hi, reads the history, sel)``, with
        ``sel`` the ``(lanes,)`` device offsets into ``lo..hi`` where lanes differ."""
        N, E, L = times.shape
        moving = ((b > a) | (b < self.tend_h[None]))[:, None, :, None]  # (N, 1, lanes, 1)
        q = times[..., None] - self.taus_h  # (N, E, lanes, K)
        ends = torch.from_numpy(np.ascontiguousarray(self.ends_h[:, : self.n_host]))
        flat = np.moveaxis(q, 2, 0).reshape(L, -1)
        idx = torch.searchsorted(ends, torch.from_numpy(np.ascontiguousarray(flat))).numpy()
        idx = np.moveaxis(idx.reshape(L, N, E, self.K), 0, 2)  # (N, E, lanes, K)
        idx = np.minimum(idx, np.arange(N)[:, None, None, None])
        old = ((q - self.tol < self.t0_h[None, None, :, None]) & moving).any(2)  # (N, E, K)
        new = (q + self.tol >= self.t0_h[None, None, :, None]) & moving
        lo = np.where(new, idx, np.iinfo(np.int64).max).min(2)
        hi = np.where(new, idx, -1).max(2)
        differ = (hi >= 0) & (lo < hi)
        sels = {}
        if differ.any():
            where = np.nonzero(differ)
            rel = idx[where[0], where[1], :, where[2]] - lo[where][:, None]
            rel = np.clip(rel, 0, (hi[where] - lo[where])[:, None])
            dev = torch.from_numpy(rel).to(self.arange.device).unbind(0)
            sels = dict(zip(zip(*(w.tolist() for w in where)), dev))
        lo, hi, old = lo.tolist(), hi.tolist(), old.tolist()
        out = []
        for n in range(N):
            step = []
            for e in range(E):
                entry = []
                for k in range(self.K):
                    if hi[n][e][k] < 0:
                        entry.append((-1, -1, True, None))
                    else:
                        sel = sels.get((n, e, k))
                        entry.append((lo[n][e][k], hi[n][e][k], old[n][e][k], sel))
                step.append(entry)
            out.append(step)
        return out

    @staticmethod
    def _find(ends: torch.Tensor, q: np.ndarray) -> np.ndarray:
        """Per lane, the first entry whose end is at or after each query (``q``: ``(S,
        lanes)``)."""
        found = torch.searchsorted(ends, torch.from_numpy(np.ascontiguousarray(q.T)))
        return found.numpy().T

    def plan(self, sched, off) -> None:
        """Fixed steps: every step's ranges (and the steps whose FSAL stage at a breakpoint
        ``t0 + τ_k`` must be taken again from the left), before the loop."""
        N = len(sched.ts)
        if N == 0:
            self.planned, self.call_plan = [], []
            return
        ts = torch.stack(sched.ts).detach().cpu().numpy().astype(np.float64)  # (N, lanes)
        te = torch.stack(sched.t_ends).detach().cpu().numpy().astype(np.float64)
        self._sync_ends(te)
        self.planned = self._ranges_many(ts, te, np.arange(N))
        # The evaluations of each step, in the stepper's order: the first stage (unless
        # carried: FSAL, or the first step, which starts from f0), then stages 2..s
        hs = torch.stack(sched.hs).detach().cpu().numpy().astype(np.float64)
        c = np.asarray(self.tab.c, dtype=np.float64)
        stages = ts[:, None] + c[None, :, None] * hs[:, None]
        times = np.concatenate([ts[:, None], stages], axis=1)  # (N, s, lanes)
        plans = self._call_ranges(times, ts, te)
        # Stages at the end of the step (c = 1) see the left limit there, but for the
        # last stage of a first-same-as-last tableau, which is the next step's first (the
        # history's interpolant takes that one again from the left: left_end)
        s_ = len(c) + 1
        at_end = [False] + [
            bool(ci == 1.0) and not (self.tab.fsal and i == s_ - 2) for i, ci in enumerate(c)
        ]
        plans = [list(zip(p, at_end)) for p in plans]
        if self.tab.fsal:
            self.call_plan = [p[1:] for p in plans]
        else:
            self.call_plan = [plans[0][1:], *plans[1:]]
        if self.tab.fsal and self.coef is not None:
            first = self.t0_h[None, :, None] + self.taus_h[None, None, :]  # (1, lanes, K)
            hit = (np.abs(te[:, :, None] - first) <= self.tol).any((1, 2)) & (te > ts).any(1)
            self.left_end = hit.tolist() if hit.any() else None
