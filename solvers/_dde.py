"""Delay differential equations, solved by the method of steps on the Runge–Kutta methods.

``dy/dt = f(t, y(t), [y(t - τ_1), ..., y(t - τ_K)])`` for ``t ≥ t0``, with ``y(t) = φ(t)`` for
``t < t0`` (the history) and ``y(t0) = y0``.

The solution's past is kept as a piecewise polynomial: one entry per accepted step holding the
coefficients of the step's interpolant in ``θ = (t - t_n) / h_n`` (the method's own dense
output when its tableau has one, otherwise the cubic Hermite interpolant through both ends'
values and slopes). A delayed value ``y(t - τ)`` is evaluated from the entry whose step
contains ``t - τ``: the entry is picked on the host (step indices are piecewise constant in
``τ``), the polynomial is evaluated on the device, so ``θ`` keeps its graph and gradients reach
the delays. Steps are never longer than the smallest delay, so every delayed value lies in a
step already accepted; and the step grid contains the points ``t0 + Σ n_i τ_i`` (up to the
method's order) where the solution's derivatives jump.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._controller import fixed_schedule
from ._integrate import (
    Outcome,
    _gather_outputs,
    checkpoint,
    initial_step,
    rms_norm,
)
from ._problems import AbstractProblem
from ._rk import lane_view, rk_step
from ._solution import Status
from ._term import DelayTerm, FunctionTerm, broadcast_time

__all__ = ["DDE"]

# Samples whose error norm is NaN or infinite this many times in a row are marked NONFINITE.
_MAX_NONFINITE_REJECTIONS = 10


class DDE(AbstractProblem):
    """A delay differential equation ``dy/dt = f(t, y(t), y(t - τ))``.

    Args:
        f: the vector field, called as ``f(t, y, y_delayed)`` with ``t`` of shape ``(batch,)``,
            ``y`` of shape ``(batch, *state)`` and ``y_delayed`` of shape
            ``(batch, K, *state)`` holding ``y(t - τ_k)`` for each of the ``K`` delays. It
            returns ``dy/dt`` with the shape of ``y``. When ``f`` is an ``nn.Module`` its
            parameters receive gradients.
        delays: the ``K`` delays, a 1-D tensor (a number or a 0-d tensor is one delay), all
            positive. It may be an ``nn.Parameter``: gradients reach the delays under the
            ``"direct"`` and ``"checkpoint"`` adjoints.
        history: the solution before the initial time: a number or a tensor broadcastable to
            the shape of ``y0`` (a constant history), or a callable
            ``history(t) -> (batch, *state)`` for ``t`` a ``(batch,)`` tensor of times before
            ``t0``.

    The continuous adjoint (``adjoint="backsolve"``) is not available for delay equations.
    """

    #: the method of steps keeps its own loops until the history is filled from the one
    #: loop's dense output (see docs/architecture.md)
    integrates_itself = True

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
            "it is integrated by DDE.integrate (through solvers.solve)"
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

    # -----------------------------------------------------------------------------------------

    def past(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The history at times ``t`` (``(batch,)`` or ``(1,)``), shaped like ``like``."""
        if isinstance(self.history, torch.Tensor):
            return self.history.to(like.dtype).expand(like.shape)
        return self.history(t.expand(like.shape[0]))

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

    def integrate(self, cfg, y0, t, f0, *, checkpoint_every=None):
        """The method of steps with ``cfg.method``'s tableau over a ``(lanes, T)`` grid."""
        tab = getattr(cfg.method, "tableau", None)
        if tab is None:
            raise ValueError(
                f"DDE: method {cfg.method.name!r} has no Runge–Kutta tableau; DDEs are solved "
                "by the Runge–Kutta methods"
            )
        if not cfg.controller.planned:
            return _integrate_adaptive(self, cfg, y0, t, f0, checkpoint_every)
        return _integrate_fixed(self, cfg, y0, t, f0, checkpoint_every)

    def __repr__(self):
        return f"DDE({self.f!r}, delays={self.delays.tolist()})"


# ---------------------------------------------------------------------------------------------
# The solution's past


class _History:
    """Accepted steps as polynomials in θ, and delayed values looked up from them.

    Entry ``e`` holds ``start`` and ``h`` (``(lanes,)``) and coefficients ``C`` of shape
    ``(batch, P, *state)`` with ``y(start + θ h) = Σ_m C[:, m] θ^m``. Entry 0 is the initial
    point itself (``h = 0``). Entries are written once, by index, so that a checkpointed
    segment recomputed in the backward pass leaves the store as it was.
    """

    def __init__(self, problem: DDE, tab, y0, t0, lanes: int, delays):
        self.problem = problem
        self.batch = y0.shape[0]
        self.lanes = lanes
        self.taus = delays.unbind(0)
        self.K = len(self.taus)
        if tab.interpolant is not None:
            self.coef = torch.tensor(tab.interpolant, dtype=y0.dtype, device=y0.device).T
        else:
            self.coef = None  # cubic Hermite
        P = 1 + (self.coef.shape[0] if self.coef is not None else 3)
        self.P = P
        zeros = torch.zeros((y0.shape[0], P - 1, *y0.shape[1:]), dtype=y0.dtype, device=y0.device)
        self.C = [torch.cat([y0[:, None], zeros], dim=1).unbind(1)]
        self.start = [t0]
        self.h = [torch.zeros_like(t0)]
        self.arange = torch.arange(self.batch, device=y0.device)

    def put(self, e: int, C, start, h) -> None:
        if e == len(self.C):
            self.C.append(C.unbind(1))
            self.start.append(start)
            self.h.append(h)

    def coefficients(self, y, y1, h, ks, f1=None):
        """The step's interpolant from its stages (or its end slopes, for Hermite)."""
        hv = lane_view(h, y)
        if self.coef is None:
            f0 = ks[0][0]
            d = y1 - y
            return torch.stack(
                [y, hv * f0, 3 * d - hv * (2 * f0 + f1), -2 * d + hv * (f0 + f1)], dim=1
            )
        K = torch.stack([k[0] for k in ks], dim=1).flatten(2)  # (batch, s, n)
        rest = (self.coef @ K).reshape((y.shape[0], self.P - 1, *y.shape[1:]))
        return torch.cat([y[:, None], lane_view(h, rest) * rest], dim=1)

    def value(self, s, idx_h: np.ndarray, idx_d, like):
        """``y(s)`` for ``s`` of shape ``(lanes,)``, ``idx_h`` the entry of each lane (-1: the
        history); ``idx_d`` is the same on the device (only needed when lanes differ)."""
        hist = idx_h < 0
        if hist.all():
            return self.problem.past(s, like)
        lo, hi = max(int(idx_h.min()), 0), int(idx_h.max())
        if lo == hi:
            C, start, h = self.C[lo], self.start[lo], self.h[lo]
        else:
            sel = idx_d.clamp(lo, hi) - lo
            C = tuple(
                torch.stack([self.C[e][m] for e in range(lo, hi + 1)])[sel, self.arange]
                for m in range(self.P)
            )
            start = torch.stack(self.start[lo : hi + 1]).gather(0, sel[None])[0]
            h = torch.stack(self.h[lo : hi + 1]).gather(0, sel[None])[0]
        positive = h > 0
        theta = torch.where(positive, (s - start) / torch.where(positive, h, 1.0), 0.0)
        th = lane_view(theta, C[0])
        v = C[-1]
        for m in range(self.P - 2, -1, -1):
            v = v * th + C[m]
        if hist.any():
            v = torch.where(lane_view(idx_d < 0, v), self.problem.past(s, like), v)
        return v

    def field(self, plans):
        """The vector field for ``rk_step``: each call takes the next lookup plan."""
        f, _batch = self.problem.f, self.batch
        it = iter(plans)

        def field(tt, y):
            idx_h, idx_d = next(it)
            yd = torch.stack(
                [
                    self.value(tt - tau, idx_h[k], None if idx_d is None else idx_d[k], y[0])
                    for k, tau in enumerate(self.taus)
                ],
                dim=1,
            )
            return (f(broadcast_time(tt, y[0]), y[0], yd),)

        return field


def _locate(ends, t0, q, limit, right, tol) -> np.ndarray:
    """Entry index of each query: the first entry whose end is at or after it, or -1 for the
    history.

    ``ends`` ``(lanes, E)`` non-decreasing per lane, ``q`` ``(lanes, Q)``; indices are clamped
    to ``limit`` (the last entry already written) against round-off. The solution may jump at
    ``t0`` (a history that does not end at ``y0``), so a query within ``tol`` of ``t0`` takes
    the side of the step that asks: ``right`` marks the first stage of a step (whose delayed
    interval starts at ``t0``: the solution), the other stages look from the left (their
    delayed interval ends at ``t0``: the history). Away from ``t0`` the solution is continuous
    and either neighbouring entry gives the same value.
    """
    ends = torch.from_numpy(np.ascontiguousarray(ends))
    idx = torch.searchsorted(ends, torch.from_numpy(np.ascontiguousarray(q))).numpy()
    idx = np.minimum(idx, limit)
    edge = t0[:, None] + np.where(right, -tol, tol)
    return np.where(q < edge, -1, idx)


def _breakpoint_offsets(delays: torch.Tensor, order: int, span: float):
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
        return off[:0], host[:0]
    _, first = np.unique(host[keep], return_index=True)  # sorted by value
    chosen = torch.from_numpy(keep[first]).to(delays.device)
    return off[chosen], host[keep[first]]


def _cast_host(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _tolerance(t: torch.Tensor) -> float:
    """How close to ``t0`` a delayed time counts as ``t0`` itself (round-off of the times)."""
    scale = max(1.0, float(t.detach().abs().max()))
    return 64 * torch.finfo(t.dtype).eps * scale


# ---------------------------------------------------------------------------------------------
# Fixed step


def _integrate_fixed(problem: DDE, cfg, y0, t, f0, checkpoint_every) -> Outcome:
    """Fixed steps of at most ``min(dt, τ_min)`` on the output grid joined with the
    breakpoints. Every lookup is planned before the loop; the loop does not synchronise."""
    tab = cfg.method.tableau
    lanes, T = t.shape
    batch = y0.shape[0]
    delays = problem.delays.to(y0.dtype)
    tau_min = float(delays.detach().min())
    dt = min(cfg.dt, tau_min)
    span = float((t[:, -1] - t[:, 0]).detach().max())
    off, _ = _breakpoint_offsets(delays, tab.order, span)
    if off.shape[0]:
        bp = torch.minimum(t[:, :1] + off[None], t[:, -1:])
        grid, perm = torch.sort(torch.cat([t, bp], dim=1), dim=1, stable=True)
        pos = torch.argsort(perm, dim=1)[:, :T]
    else:
        grid, pos = t, None
    sched = fixed_schedule(grid, dt, cfg.max_steps)
    N = len(sched.ts)
    store = _History(problem, tab, y0, grid[:, 0], lanes, delays)

    # Plan every lookup before the loop. Per step: the stages 2..s (from the left), the next
    # step's first stage (from the right) and, for the cubic Hermite interpolant, the slope at
    # the step's end from the left (one more evaluation, only where the two sides differ).
    c = np.array(tab.c, dtype=np.float64)
    K = delays.shape[0]
    tol = _tolerance(t)
    if N:
        ts = _cast_host(torch.stack(sched.ts))  # (N, lanes)
        hs = _cast_host(torch.stack(sched.hs))
        taus = _cast_host(delays)
        t0h = ts[0]
        ends = np.concatenate([t0h[None], ts + hs], axis=0).T  # (lanes, N + 1)
        stage_t = ts[:, None, :] + c.astype(ts.dtype)[None, :, None] * hs[:, None, :]
        nxt = np.concatenate([ts[1:], ts[-1:]], axis=0)[:, None, :]
        qt = np.concatenate([stage_t, nxt, nxt], axis=1)  # (N, S + 1, lanes)
        q = qt[:, :, None, :] - taus[None, None, :, None]  # (N, S + 1, K, lanes)
        Q = q.shape[1]
        right = np.zeros(q.shape, dtype=bool)
        right[:, -2] = True
        flat = np.moveaxis(q, -1, 0).reshape(lanes, -1)
        limit = np.repeat(np.arange(N), Q * K)[None]
        right = np.moveaxis(right, -1, 0).reshape(lanes, -1)
        idx = _locate(ends, t0h, flat, limit, right, tol)
        idx = np.moveaxis(idx.reshape(lanes, N, Q, K), 0, -1)  # (N, Q, K, lanes)
        both_sides = (idx[:, -1] != idx[:, -2]).any(axis=(1, 2))  # (N,)
        idx_d = None
        if lanes > 1:
            idx_d = torch.from_numpy(idx).to(y0.device).unbind(0)
    record_at = set(sched.record)
    records: dict[int, torch.Tensor] = {0: y0}
    nfe = 0

    def run(start: int, stop: int, y, k1):
        nonlocal nfe
        for n in range(start, stop):
            plans = [(idx[n, i], None if idx_d is None else idx_d[n][i]) for i in range(Q)]
            field = store.field(plans[:-2])
            y1, _, ks = rk_step(field, tab, sched.ts[n], (y,), sched.hs[n], (k1,))
            y1 = y1[0]
            nfe += tab.stages - 1
            if n + 1 < N:
                if tab.fsal and not both_sides[n]:
                    k1_next = ks[-1][0]
                else:
                    k1_next = store.field(plans[-2:-1])(sched.ts[n + 1], (y1,))[0]
                    nfe += 1
                f1 = k1_next
                if store.coef is None and both_sides[n]:
                    f1 = store.field(plans[-1:])(sched.ts[n + 1], (y1,))[0]
                    nfe += 1
                C = store.coefficients(y, y1, sched.hs[n], ks, f1)
                store.put(n + 1, C, sched.ts[n], sched.hs[n])
            else:
                k1_next = k1
            if n + 1 in record_at and n + 1 not in records:
                records[n + 1] = y1
            y, k1 = y1, k1_next
        return y, k1

    y, k1 = y0, f0
    if checkpoint_every is None or N == 0:
        y, k1 = run(0, N, y, k1)
    else:
        if checkpoint_every == "auto":
            checkpoint_every = max(1, math.isqrt(N))
        for start in range(0, N, checkpoint_every):
            stop = min(start + checkpoint_every, N)
            y, k1 = checkpoint(lambda y_, k_, a=start, b=stop: run(a, b, y_, k_), y, k1)
    kept = [(records[r],) for r in sched.record]
    (ys,) = _gather_outputs(kept, sched.gather, sched.unreached, batch)
    if pos is not None:
        if lanes == 1:
            ys = ys[:, pos[0]]
        else:
            ix = pos.reshape(pos.shape + (1,) * (ys.ndim - 2)).expand(-1, -1, *ys.shape[2:])
            ys = ys.gather(1, ix)
    counts = sched.n_steps.clone()
    return Outcome((ys,), (y,), sched.status.clone(), counts, torch.zeros_like(counts), nfe)


# ---------------------------------------------------------------------------------------------
# Adaptive


def _integrate_adaptive(problem: DDE, cfg, y0, t, f0, checkpoint_every) -> Outcome:
    """Adaptive steps per sample, clamped to the smallest delay and stopping on every
    breakpoint ``t0 + Σ n_i τ_i``. Synchronises once per step: the host picks the entries
    that the next step's delayed values fall into."""
    tab, ctrl = cfg.method.tableau, cfg.controller
    lanes, T = t.shape
    dev, dtype = y0.device, y0.dtype
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    delays = problem.delays.to(dtype)
    taus = _cast_host(delays).astype(np_dtype)
    tau_min = float(taus.min())
    t0, tend = t[:, 0], t[:, -1]
    t_host = np.ascontiguousarray(_cast_host(t).astype(np_dtype))
    t0h, tendh = t_host[:, 0], t_host[:, -1]
    span = float((tendh - t0h).max())
    off, off_h = _breakpoint_offsets(delays, tab.order, span)
    J = off.shape[0]
    bp_dev = t0[:, None] + off[None] if J else None  # (lanes, J)
    bp_h = (t0h[:, None] + off_h.astype(np_dtype)[None]) if J else None
    store = _History(problem, tab, y0, t0, lanes, delays)
    norm = lambda e, a, b: rms_norm(e, a, b, cfg.rtol, cfg.atol)  # noqa: E731
    k_order = tab.error_order + 1
    eps = float(torch.finfo(dtype).eps)
    c = np.array(tab.c, dtype=np_dtype)
    K = len(taus)
    tol = _tolerance(t)
    # The first step: Hairer's heuristic with the delayed values from the history and y0 (the
    # trial step is at most the smallest delay, so it reaches back to t0 at the latest).
    if ctrl.first_step is None:
        with torch.no_grad():

            def field0(tt, y):
                yd = []
                for tau in store.taus:
                    s = tt - tau
                    v = torch.where(lane_view(s < t0, y0), problem.past(s, y0), y0)
                    yd.append(v)
                return (problem.f(broadcast_time(tt, y[0]), y[0], torch.stack(yd, dim=1)),)

            limit = torch.clamp((tend - t0).detach(), max=tau_min)
            term0 = FunctionTerm(field0)
            h = initial_step(term0, (y0,), (f0,), t0.detach(), norm, tab.order, limit)
    else:
        h = torch.full_like(t0.detach(), float(ctrl.first_step))
    h = h.clamp(max=tau_min)

    # Host state, advanced only the first time a step runs (a checkpointed segment recomputed
    # in the backward pass replays the recorded plans).
    host = dict(
        tcur=t0h.copy(),
        h=_cast_host(h).astype(np_dtype),
        done=np.full(lanes, T == 1),
        idx=np.ones(lanes, dtype=np.int64),
        bp=np.zeros(lanes, dtype=np.int64),
        ends=[t0h.copy()],
        n_acc=np.zeros(lanes, dtype=np.int64),
        n_rej=np.zeros(lanes, dtype=np.int64),
        n_bad=np.zeros(lanes, dtype=np.int64),
        status=np.zeros(lanes, dtype=np.int64),
        lo=0,
        nfe=0,
    )
    plans: list[dict] = []
    events: dict[int, list] = {}
    S = len(c) + 1
    stage_evals = S - 1 if tab.fsal else S

    def make_plan():
        """Host decisions of the next step: its size and where its delayed values lie."""
        s = host
        while J:
            nxt = bp_h[np.arange(lanes), np.minimum(s["bp"], J - 1)]
            past = (s["bp"] < J) & (nxt <= s["tcur"])
            if not past.any():
                break
            s["bp"] = s["bp"] + past
        active = ~s["done"]
        remaining = tendh - s["tcur"]
        has_bp = s["bp"] < J
        to_bp = (
            bp_h[np.arange(lanes), np.minimum(s["bp"], J - 1)] - s["tcur"]
            if J
            else np.full(lanes, np.inf, dtype=np_dtype)
        )
        use_bp = has_bp & (to_bp < remaining)
        target = np.where(use_bp, to_bp, remaining)
        hc = np.minimum(s["h"], np_dtype(tau_min))
        hit = hc >= target
        hstep = np.where(active, np.where(hit, target, hc), 0).astype(np_dtype)
        t1 = np.where(
            hit & active,
            np.where(use_bp, s["tcur"] + to_bp, tendh),
            s["tcur"] + hstep,
        )
        if J:
            t1 = np.where(
                hit & active & use_bp, bp_h[np.arange(lanes), np.minimum(s["bp"], J - 1)], t1
            )
        # Queries: the stages 2..s (from the left), then the first stage at tcur and at t1,
        # each from the right and from the left (see _locate).
        stage_t = s["tcur"][:, None] + c[None] * hstep[:, None]  # (lanes, S - 1)
        tc, te = s["tcur"][:, None], t1[:, None]
        qt = np.concatenate([stage_t, tc, tc, te, te], axis=1)
        Q = qt.shape[1]
        right = np.zeros((lanes, Q, K), dtype=bool)
        right[:, [Q - 4, Q - 2]] = True
        q = (qt[:, :, None] - taus[None, None]).reshape(lanes, -1)
        ends = np.stack(s["ends"][s["lo"] :], axis=1)  # (lanes, E - lo)
        idx = _locate(ends, t0h, q, ends.shape[1] - 1, right.reshape(lanes, -1), tol)
        idx = np.where(idx < 0, -1, idx + s["lo"])
        idx = idx.reshape(lanes, Q, K).transpose(1, 2, 0)  # (Q, K, lanes)
        idx_d = None
        if lanes > 1 and (idx.min(-1) != idx.max(-1)).any():
            idx_d = torch.from_numpy(idx).to(dev)
        looks = [(idx[i], None if idx_d is None else idx_d[i]) for i in range(Q)]
        differ = [bool((idx[i] != idx[i + 1]).any()) for i in (Q - 4, Q - 2)]
        # Entries that no later step can reach are dropped from the host search.
        bound = s["tcur"] + hstep - 2 * taus.max()
        ends_lane = np.stack(s["ends"][s["lo"] :], axis=0)  # (E - lo, lanes)
        s["lo"] += int((ends_lane < bound[None]).all(1).cumprod().sum())
        plan = dict(
            hit=torch.from_numpy(hit & active).to(dev),
            use_bp=torch.from_numpy(use_bp).to(dev),
            bp_idx=torch.from_numpy(np.minimum(s["bp"], max(J - 1, 0))).to(dev),
            active=torch.from_numpy(active).to(dev),
            hstep_h=hstep,
            t1_h=t1,
            stages=looks[: Q - 4],
            # the carried first stage came from the left (FSAL): re-evaluate it from the right
            k1=looks[Q - 4] if tab.fsal and differ[0] else None,
            k1_next=looks[Q - 2],
            f1_left=looks[Q - 1] if store.coef is None and differ[1] else None,
        )
        plans.append(plan)

    def step(m: int, y, k1, tcur, h, prev1, prev2):
        if m == len(plans):
            make_plan()
        p = plans[m]
        active = p["active"]
        hc = h.clamp(max=tau_min)
        if J:
            bpt = bp_dev.gather(1, p["bp_idx"][:, None])[:, 0]
            target_t = torch.where(p["use_bp"], bpt, tend)
        else:
            target_t = tend
        hstep = torch.where(p["hit"], target_t - tcur, hc)
        hstep = torch.where(active, hstep, torch.zeros_like(hstep))
        t1 = torch.where(p["hit"], target_t, tcur + hstep)
        if p["k1"] is not None:
            k1 = store.field([p["k1"]])(tcur, (y,))[0]
        y1, err, ks = rk_step(store.field(p["stages"]), tab, tcur, (y,), hstep, (k1,))
        y1 = y1[0]
        k1_next = ks[-1][0] if tab.fsal else store.field([p["k1_next"]])(t1, (y1,))[0]
        f1 = k1_next
        if p["f1_left"] is not None:
            f1 = store.field([p["f1_left"]])(t1, (y1,))[0]
        with torch.no_grad():
            en = norm((err[0].detach(),), (y.detach(),), (y1.detach(),))
            finite = torch.isfinite(en)
            accept = active & finite & (en <= 1)
            factor = ctrl.factor(en, prev1, prev2, k_order)
            factor = torch.where(finite, factor, torch.full_like(factor, ctrl.factor_min))
            factor = torch.where(accept, factor, factor.clamp(max=1.0))
            h_new = torch.where(active, hstep.detach() * factor, h)
        if "accept" not in p:
            # The one read back to the host per step.
            p["accept"] = accept.cpu().numpy()
            p["h_new"] = h_new.cpu().numpy().astype(np_dtype)
            p["finite"] = finite.cpu().numpy()
            _advance(p)
        acc = p["accept"]
        accept_d = torch.from_numpy(acc).to(dev) if "accept_d" not in p else p["accept_d"]
        p["accept_d"] = accept_d
        av = lane_view(accept_d, y)
        if acc.any():
            C = store.coefficients(y, y1, hstep, ks, f1)
            keep = torch.cat([y[:, None], torch.zeros_like(C[:, 1:])], dim=1)
            C = torch.where(lane_view(accept_d, C), C, keep)
            hk = torch.where(accept_d, hstep, torch.zeros_like(hstep))
            store.put(p["entry"], C, tcur, hk)
            # Outputs inside the step, from its interpolant (recomputed identically when a
            # checkpointed segment is replayed; kept the first time).
            out = []
            for r in range(p["n_events"]):
                j = torch.from_numpy(p["event_j"][r]).to(dev)
                tq = t.gather(1, j[:, None])[:, 0]
                pos = hstep > 0
                theta = torch.where(pos, (tq - tcur) / torch.where(pos, hstep, 1.0), 1.0)
                v = _poly(C, theta)
                at_end = torch.from_numpy(p["event_end"][r]).to(dev)
                out.append(torch.where(lane_view(at_end, v), y1, v))
            events.setdefault(m, out)
        return (
            torch.where(av, y1, y),
            torch.where(av, k1_next, k1),
            torch.where(accept_d, t1, tcur),
            h_new,
            torch.where(accept_d, en, prev1),
            torch.where(accept_d, prev1, prev2),
        )

    def _advance(p):
        """Update the host state after a step, from what the device decided."""
        s = host
        acc, active = p["accept"], ~s["done"]
        t1_h = p["t1_h"]
        s["h"] = p["h_new"]
        s["nfe"] += stage_evals + (p["k1"] is not None) + (p["f1_left"] is not None)
        # Outputs passed by the accepted step, from the dense output.
        passed = torch.searchsorted(
            torch.from_numpy(t_host), torch.from_numpy(t1_h[:, None]), right=True
        )[:, 0].numpy()
        n_out = np.where(acc, passed - s["idx"], 0)
        p["n_events"] = int(n_out.max()) if acc.any() else 0
        p["event_j"] = [np.minimum(s["idx"] + r, T - 1) for r in range(p["n_events"])]
        p["event_valid"] = [r < n_out for r in range(p["n_events"])]
        p["event_end"] = [
            t_host[np.arange(lanes), p["event_j"][r]] >= t1_h for r in range(p["n_events"])
        ]
        p["event_idx"] = s["idx"].copy()
        s["idx"] = s["idx"] + n_out
        if acc.any():
            p["entry"] = len(s["ends"])
            s["ends"].append(np.where(acc, t1_h, s["tcur"]).astype(np_dtype))
        s["n_acc"] += acc
        s["n_rej"] += active & ~acc
        s["n_bad"] = np.where(active & ~p["finite"], s["n_bad"] + 1, 0)
        reached = acc & (t1_h >= tendh)
        s["tcur"] = np.where(acc, t1_h, s["tcur"]).astype(np_dtype)
        failing = active & ~reached
        tiny = 4 * eps * np.maximum(np.abs(s["tcur"]), np.abs(tendh)).clip(min=1.0)
        st = s["status"]
        st = np.where(failing & (s["n_bad"] >= _MAX_NONFINITE_REJECTIONS), Status.NONFINITE, st)
        st = np.where(failing & (st == 0) & (s["h"] < tiny), Status.DT_UNDERFLOW, st)
        st = np.where(
            failing & (st == 0) & (s["n_acc"] + s["n_rej"] >= cfg.max_steps), Status.MAX_STEPS, st
        )
        s["status"] = st
        s["done"] = s["done"] | reached | (st != 0)

    carry = (y0, f0, t0, h, torch.ones_like(h), torch.ones_like(h))
    m = 0
    every = 32 if checkpoint_every == "auto" else checkpoint_every
    while not host["done"].all():
        if checkpoint_every is None:
            carry = step(m, *carry)
            m += 1
            continue
        info = {}

        def segment(*c_, m0=m, info=info):
            # The first run stops when every lane is done; a replay takes as many steps.
            k = m0
            while k - m0 < every:
                if k >= info.get("stop", math.inf):
                    break
                if "stop" not in info and host["done"].all():
                    break
                c_ = step(k, *c_)
                k += 1
            info.setdefault("stop", k)
            return c_

        carry = checkpoint(segment, *carry)
        m = info["stop"]

    ys = _assemble(y0, plans, events, lanes, T)
    st = torch.from_numpy(host["status"]).to(dev)
    n_acc = torch.from_numpy(host["n_acc"]).to(dev)
    n_rej = torch.from_numpy(host["n_rej"]).to(dev)
    return Outcome((ys,), (carry[0],), st, n_acc, n_rej, host["nfe"])


def _poly(C: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``Σ_m C[:, m] θ^m`` for ``C`` ``(batch, P, *state)``, ``θ`` ``(lanes,)``."""
    parts = C.unbind(1)
    th = lane_view(theta, parts[0])
    v = parts[-1]
    for part in reversed(parts[:-1]):
        v = v * th + part
    return v


def _assemble(y0, plans, events, lanes: int, T: int) -> torch.Tensor:
    """Place every dense-output value at its (sample, output index), in one gather."""
    src = np.full((lanes, T), -1, dtype=np.int64)
    src[:, 0] = 0
    values = [y0]
    for m, p in enumerate(plans):
        for r, v in enumerate(events.get(m, [])):
            values.append(v)
            valid = p["event_valid"][r]
            src[np.nonzero(valid)[0], p["event_j"][r][valid]] = len(values) - 1
    stacked = torch.stack(values, dim=1)  # (batch, E, *state)
    src_t = torch.from_numpy(src).to(y0.device)
    unreached = src_t < 0
    idx = src_t.clamp_min(0).reshape(src.shape + (1,) * (stacked.ndim - 2))
    val = stacked.gather(1, idx.expand(-1, -1, *stacked.shape[2:]))
    mask = unreached.reshape(unreached.shape + (1,) * (val.ndim - 2)).expand_as(val)
    return val.masked_fill(mask, float("nan"))
