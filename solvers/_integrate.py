"""The integration loops: a fixed-step schedule and an adaptive loop with dense output.

Both work over tuples of state tensors and over lanes (see ``_rk``). The forward solve uses
one lane per sample; the backsolve adjoint's augmented system uses a single lane.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from ._controller import PIDController
from ._rk import State, dense, lane_view, rk_step
from ._solution import Status
from ._tableau import ButcherTableau

# Samples whose error norm is NaN or infinite this many times in a row are marked NONFINITE.
_MAX_NONFINITE_REJECTIONS = 10


@dataclass
class Outcome:
    """What an integration loop returns (before shaping into a Solution)."""

    ys: State  # each component (batch, T, *state)
    final: State
    status: torch.Tensor  # (lanes,) int64 codes
    n_accepted: torch.Tensor
    n_rejected: torch.Tensor
    nfe: int


def checkpoint(fn, *args):
    """``torch.utils.checkpoint`` (non-reentrant) for a segment of solver steps.

    It saves and restores the random-number state around the recomputation, so that a
    vector field that draws random numbers (dropout) sees the same draws twice, except while
    a CUDA graph is being captured: saving the CUDA generator's state is not allowed then
    (pytorch/pytorch#162504), and inside a graph a recomputation draws anew.
    """
    capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
    return _torch_checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=not capturing)


def vjp(outputs, inputs, grads) -> list[torch.Tensor]:
    """``Σ grads · ∂outputs/∂input`` for each of ``inputs``; ``outputs`` and ``grads`` are a
    tensor each or sequences of them. Zero for an input that the outputs do not depend on,
    also when none of them depends on any input (a vector field constant in the state)."""
    outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    cots = [grads] if isinstance(grads, torch.Tensor) else list(grads)
    pairs = [(o, g) for o, g in zip(outs, cots) if o.requires_grad]
    got = [None] * len(inputs)
    if pairs:
        got = torch.autograd.grad(
            [o for o, _ in pairs], inputs, grad_outputs=[g for _, g in pairs], allow_unused=True
        )
    return [torch.zeros_like(x) if g is None else g for g, x in zip(got, inputs)]


def forward_field(problem, batch: int):
    """Wrap ``problem.vector_field`` for the integrators: tuple state, per-lane time."""

    def field(t, y):
        return (problem.vector_field(t.expand(batch), y[0]),)

    return field


# ---------------------------------------------------------------------------------------------
# Fixed step


@dataclass
class FixedSchedule:
    """Every step of a fixed-step solve, computed before the loop.

    Each interval between consecutive output times is split into ``ceil(Δ/dt)`` equal
    steps, per lane; lanes that finish early take steps of size zero.
    """

    ts: tuple[torch.Tensor, ...]  # N entries of shape (lanes,)
    hs: tuple[torch.Tensor, ...]
    record: list[int]  # step counts after which a state is kept (0: the initial state)
    gather: torch.Tensor | None  # (lanes, T) positions into `record`; None: identity
    unreached: torch.Tensor | None  # (lanes, T) outputs past max_steps
    status: torch.Tensor  # (lanes,)
    n_steps: torch.Tensor  # (lanes,) steps each lane actually takes
    # N entries (lanes,): where each step ends, exactly the next output time for the last
    # step of an interval (t + h may round past it)
    t_ends: tuple[torch.Tensor, ...] = ()


def refine_grid(t: torch.Tensor, jumps: torch.Tensor | None):
    """Output times and jump times on one grid, for loops that step from grid point to grid
    point (fixed steps, the backward solve of the continuous adjoint).

    Returns ``(grid, positions)``, or ``None`` when no jump lies strictly between two output
    times. ``grid`` is ``(T',)`` when ``t`` and ``jumps`` are shared by the batch and
    ``(lanes, T')`` otherwise; it keeps the graph of ``t``. ``positions`` (``(1, T)`` or
    ``(lanes, T)``) says where each output time lies in it. Lanes with fewer jumps are padded
    at the end with repeats of their last time (intervals of length zero). Reads one number
    back to the host (how many jumps a lane has at most).
    """
    if jumps is None:
        return None
    td = t.detach()
    jd = jumps.detach().to(device=t.device, dtype=t.dtype)
    shared = td.ndim == 1 and jd.ndim == 1
    lanes = td.shape[0] if td.ndim == 2 else (jd.shape[0] if jd.ndim == 2 else 1)
    t2 = t if t.ndim == 2 else t.expand(lanes, -1)
    td2, jd2 = t2.detach().contiguous(), jd.expand(lanes, -1).contiguous()
    T = td2.shape[1]
    at = torch.searchsorted(td2, jd2).clamp(max=T - 1)
    inside = (jd2 > td2[:, :1]) & (jd2 < td2[:, -1:]) & (td2.gather(1, at) != jd2)
    inside[:, 1:] &= jd2[:, 1:] != jd2[:, :-1]  # each jump once
    K = int(inside.sum(1).max())
    if K == 0:
        return None
    extra = torch.where(inside, jd2, torch.full_like(jd2, float("inf"))).sort(dim=1).values
    extra = extra[:, :K]
    extra = torch.where(torch.isinf(extra), td2[:, -1:], extra)
    # a stable sort keeps each output time before the padding that repeats it
    grid, order = torch.cat([t2, extra], dim=1).sort(dim=1, stable=True)
    positions = torch.empty_like(order)
    positions.scatter_(1, order, torch.arange(T + K, device=t.device).expand(lanes, -1))
    return (grid[0] if shared else grid), positions[:, :T]


def steps_per_interval(t: torch.Tensor, dt: float) -> torch.Tensor:
    """``ceil(Δ/dt)`` per interval of the ``(lanes, T)`` grid, tolerant to round-off.

    An interval longer than a multiple of ``dt`` by no more than the round-off of the times
    themselves (a few ulps of ``|t|``) does not get an extra step.
    """
    td = t.detach()
    eps = torch.finfo(td.dtype).eps
    slack = 16 * eps * (td[:, 1:].abs() + td[:, :-1].abs()) / dt + 1e-9
    return torch.ceil(td.diff(dim=1) / dt - slack).clamp_min(1).long()


def fixed_schedule(t: torch.Tensor, dt: float, max_steps: int) -> FixedSchedule:
    """Build the schedule for a ``(lanes, T)`` grid."""
    lanes, T = t.shape
    status = torch.full((lanes,), int(Status.SUCCESS), dtype=torch.long, device=t.device)
    if T == 1:
        return FixedSchedule((), (), [0], None, None, status, torch.zeros_like(status))
    delta = t.diff(dim=1)
    n = steps_per_interval(t, dt)
    cum = n.cumsum(1)
    total = cum[:, -1]
    N = int(total.max())  # the one host read, before the loop
    status = torch.where(total > max_steps, int(Status.MAX_STEPS), status)
    N = min(N, max_steps)
    k = torch.arange(N, device=t.device).expand(lanes, N)
    iv = torch.searchsorted(cum, k.contiguous(), right=True)
    past_end = iv >= T - 1
    ivc = iv.clamp(max=T - 2)
    n_iv = n.gather(1, ivc)
    start = cum.gather(1, ivc) - n_iv
    h = delta.gather(1, ivc) / n_iv
    ts = t.gather(1, ivc) + (k - start) * h
    last_of_interval = (k - start + 1) == n_iv
    te = torch.where(last_of_interval, t.gather(1, ivc + 1), ts + h)
    ts = torch.where(past_end, t[:, -1:], ts)
    te = torch.where(past_end, t[:, -1:], te)
    h = torch.where(past_end, torch.zeros_like(h), h)
    out_step = torch.cat([torch.zeros_like(cum[:, :1]), cum], dim=1)  # (lanes, T)
    unreached = out_step > N
    out_step = out_step.clamp(max=N)
    if lanes == 1 and N == int(total[0]):
        record, gather = out_step[0].tolist(), None
    else:
        steps = torch.unique(out_step)
        record, gather = steps.tolist(), torch.searchsorted(steps, out_step)
    return FixedSchedule(
        ts.T.unbind(0),
        h.T.unbind(0),
        record,
        gather,
        unreached if bool(unreached.any()) else None,
        status,
        total.clamp(max=max_steps),
        te.T.unbind(0),
    )


def _gather_outputs(records: list[State], gather, unreached, batch: int) -> State:
    """Assemble ``(batch, T, *state)`` outputs from kept states and per-lane positions."""
    out = []
    for c in range(len(records[0])):
        stacked = torch.stack([r[c] for r in records], dim=1)  # (batch, R, *state)
        if gather is not None:
            idx = gather.reshape(gather.shape + (1,) * (stacked.ndim - 2))
            stacked = stacked.gather(1, idx.expand(batch, -1, *stacked.shape[2:]))
        if unreached is not None:
            mask = unreached.expand(batch, -1)
            mask = mask.reshape(mask.shape + (1,) * (stacked.ndim - 2))
            stacked = stacked.masked_fill(mask.expand_as(stacked), float("nan"))
        out.append(stacked)
    return tuple(out)


def integrate_fixed(
    field,
    tab: ButcherTableau,
    y0: State,
    f0: State | None,
    sched: FixedSchedule,
    *,
    checkpoint_every: int | None = None,
) -> Outcome:
    """Run a fixed-step schedule. No host synchronisation happens inside the loop."""
    record_at = set(sched.record)
    N = len(sched.ts)

    def run(start: int, stop: int, k1, *y):
        kept = []
        for k in range(start, stop):
            if k1 is None:
                k1 = field(sched.ts[k], y)
            y, _, _ = rk_step(field, tab, sched.ts[k], y, sched.hs[k], k1, t1=sched.t_ends[k])
            k1 = None
            if k + 1 in record_at:
                kept.append(y)
        return y, kept

    records = [y0] if 0 in record_at else []
    y = y0
    if checkpoint_every is None or N == 0:
        y, kept = run(0, N, f0, *y0)
        records += kept
    else:
        for start in range(0, N, checkpoint_every):
            stop = min(start + checkpoint_every, N)
            k1 = f0 if start == 0 else None

            def segment(*y_, start=start, stop=stop, k1=k1):
                y_end, kept = run(start, stop, k1, *y_)
                return (*y_end, *[c for s in kept for c in s])

            flat = checkpoint(segment, *y)
            m = len(y0)
            y = tuple(flat[:m])
            records += [tuple(flat[i : i + m]) for i in range(m, len(flat), m)]
    ys = _gather_outputs(records, sched.gather, sched.unreached, y0[0].shape[0])
    nfe = N * tab.stages + (f0 is None)
    counts = sched.n_steps.clone()
    return Outcome(ys, y, sched.status.clone(), counts, torch.zeros_like(counts), nfe)


# ---------------------------------------------------------------------------------------------
# Adaptive


def rms_norm(err: State, y0: State, y1: State, rtol: float, atol: float) -> torch.Tensor:
    """Per-sample root-mean-square of ``err / (atol + rtol max(|y0|, |y1|))``: ``(batch,)``."""
    total, count = 0, 0
    for e, a, b in zip(err, y0, y1):
        scale = atol + rtol * torch.maximum(a.abs(), b.abs())
        r = (e / scale).flatten(1)
        total = total + (r * r).sum(1)
        count += r.shape[1]
    return (total / count).sqrt()


def initial_step(field, y0: State, f0: State, t0, norm, order: int, span):
    """Hairer, Nørsett & Wanner's starting step (Solving ODEs I, II.4), per lane."""
    zeros = tuple(torch.zeros_like(y) for y in y0)
    d0 = norm(y0, y0, zeros)
    d1 = norm(f0, y0, zeros)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, span)
    y1 = tuple(y + lane_view(h0, y) * f for y, f in zip(y0, f0))
    f1 = field(t0 + h0, y1)
    d2 = norm(tuple(b - a for a, b in zip(f0, f1)), y0, zeros) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(
        dmax <= 1e-15,
        torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
        (0.01 / dmax) ** (1.0 / (order + 1)),
    )
    return torch.minimum(torch.minimum(100 * h0, h1), span).nan_to_num(1e-6)


def integrate_adaptive(
    field,
    tab: ButcherTableau,
    controller: PIDController,
    y0: State,
    f0: State,
    t: torch.Tensor,
    norm,
    *,
    max_steps: int,
    h0: float | None = None,
    record: bool = True,
    checkpoint_every: int | None = None,
    jumps: torch.Tensor | None = None,
) -> Outcome:
    """Adaptive solve over a ``(lanes, T)`` grid, each lane with its own step size.

    Outputs inside a step come from the method's interpolant. The loop reads one small
    tensor back to the host per step (how many outputs the step passed, whether all lanes
    are done, and whether a lane stepped onto a jump).

    ``jumps`` (``(J,)`` or ``(lanes, J)``, sorted per lane) are times where the vector field
    is not smooth in ``t`` (the knots of a CDE's control path). No step crosses one: a step
    that would is shortened to end on it, its stages at the end see the field's left limit,
    the next step starts with the field's value at the jump itself, and its size is the one
    the controller proposed before the shortening (as OrdinaryDiffEq.jl does at its
    ``tstops``). An error estimate over a step that straddles a kink is meaningless, so
    without this a solve can miss its tolerance by orders of magnitude.
    """
    lanes, T = t.shape
    dev = t.device
    if jumps is not None:
        jumps = jumps.detach().to(device=dev, dtype=t.dtype)
        jumps = jumps.expand(lanes, -1).contiguous() if jumps.ndim == 1 else jumps.contiguous()
        if jumps.shape[0] != lanes:
            raise ValueError(
                f"jump times of shape {tuple(jumps.shape)} do not match the {lanes} lanes of "
                "the solve"
            )
        if jumps.shape[1] == 0:
            jumps = None
    k_order = tab.error_order + 1
    # Times keep their graph (gradients with respect to t); step sizes are constants.
    t0, tend = t[:, 0], t[:, -1]
    tgrid = t.detach().contiguous()
    if h0 is None:
        with torch.no_grad():
            h = initial_step(field, y0, f0, t0.detach(), norm, tab.order, (tend - t0).detach())
    else:
        h = torch.full_like(t0.detach(), float(h0))
    long = dict(dtype=torch.long, device=dev)
    carry = dict(
        y=y0,
        k1=f0,
        tcur=t0,
        h=h,
        idx=torch.ones(lanes, **long),
        n_acc=torch.zeros(lanes, **long),
        n_rej=torch.zeros(lanes, **long),
        n_bad=torch.zeros(lanes, **long),
        status=torch.zeros(lanes, **long),
        prev1=torch.ones_like(h),
        prev2=torch.ones_like(h),
        done=torch.full((lanes,), T == 1, dtype=torch.bool, device=dev),
    )
    eps = torch.finfo(t0.dtype).eps
    stage_evals = tab.stages - 1 if tab.fsal else tab.stages
    nfe = 1 if h0 is None else 0  # the starting-step heuristic evaluates the field once

    def step(c):
        """One attempted step for every lane; returns the new carry, events, whether every
        lane is done, and how many evaluations of the field it made beyond the stages."""
        active = ~c["done"]
        remaining = tend - c["tcur"]
        hit = c["h"] >= remaining.detach()
        y, tcur = c["y"], c["tcur"]
        if jumps is None:
            jump = None
            hstep = torch.where(hit, remaining, c["h"])
            hstep = torch.where(active, hstep, torch.zeros_like(c["h"]))
            y1, err, ks = rk_step(field, tab, tcur, y, hstep, c["k1"])
            t1 = torch.where(hit, tend, tcur + hstep)
        else:
            nxt, to_jump = _next_jump(jumps, tcur.detach())
            # a jump before the end is stepped onto; one at the end is the end
            jump = (to_jump < remaining.detach()) & (c["h"] >= to_jump)
            hit = hit & ~jump
            hstep = torch.where(hit, remaining, torch.where(jump, to_jump, c["h"]))
            hstep = torch.where(active, hstep, torch.zeros_like(c["h"]))
            t1 = torch.where(hit, tend, torch.where(jump, nxt, tcur + hstep))
            y1, err, ks = rk_step(field, tab, tcur, y, hstep, c["k1"], t1=t1, left=jump)
        with torch.no_grad():
            en = norm(
                tuple(e.detach() for e in err),
                tuple(a.detach() for a in y),
                tuple(b.detach() for b in y1),
            )
            finite = torch.isfinite(en)
            accept = active & finite & (en <= 1)
            factor = controller.factor(en, c["prev1"], c["prev2"], k_order)
            factor = torch.where(finite, factor, torch.full_like(factor, controller.factor_min))
            factor = torch.where(accept, factor, factor.clamp(max=1.0))
            h_new = torch.where(active, hstep.detach() * factor, c["h"])
            jumped = torch.zeros_like(accept)
            if jump is not None:
                # the shortening was not the error's doing: keep the size proposed before it
                jumped = accept & jump
                h_new = torch.where(jumped, torch.maximum(h_new, c["h"]), h_new)
            reached = accept & hit
            n_out = torch.zeros_like(c["idx"])
            if record:
                passed = torch.searchsorted(tgrid, t1[:, None].contiguous(), right=True)[:, 0]
                n_out = torch.where(accept, passed - c["idx"], n_out)
            n_acc = c["n_acc"] + accept
            n_rej = c["n_rej"] + (active & ~accept)
            n_bad = torch.where(active & ~finite, c["n_bad"] + 1, torch.zeros_like(c["n_bad"]))
            status = c["status"]
            tiny = 4 * eps * torch.maximum(tcur.detach().abs(), tend.detach().abs()).clamp_min(1.0)
            failing = active & ~reached
            status = torch.where(
                failing & (n_bad >= _MAX_NONFINITE_REJECTIONS), int(Status.NONFINITE), status
            )
            status = torch.where(
                failing & (status == 0) & (h_new < tiny), int(Status.DT_UNDERFLOW), status
            )
            status = torch.where(
                failing & (status == 0) & (n_acc + n_rej >= max_steps),
                int(Status.MAX_STEPS),
                status,
            )
            done = c["done"] | reached | (status != 0)
        events = []
        # the step's one read back to the host
        info = torch.stack([n_out.max(), done.all().long(), jumped.any().long()]).tolist()
        all_done, any_jump = bool(info[1]), bool(info[2])
        if record:
            for r in range(info[0]):
                j = c["idx"] + r
                valid = r < n_out
                tq = t.gather(1, j.clamp(max=T - 1)[:, None])[:, 0]
                theta = torch.where(
                    hstep > 0, (tq - tcur) / hstep.clamp_min(eps), torch.ones_like(tq)
                )
                yq = dense(tab, y, hstep, ks, theta)
                at_end = tq >= t1
                yq = tuple(torch.where(lane_view(at_end, a), b, a) for a, b in zip(yq, y1))
                events.append((yq, j, valid))
        acc = lambda new, old: tuple(  # noqa: E731
            torch.where(lane_view(accept, o), n, o) for n, o in zip(new, old)
        )
        extra = 0
        if not tab.fsal:
            k1_next = field(t1, y1)
        elif any_jump:
            # the last stage saw the left limit at the jump; the next step starts from the
            # field's value at the jump (paths are right-continuous)
            at_jump = field(t1, y1)
            k1_next = tuple(
                torch.where(lane_view(jumped, a), b, a) for a, b in zip(ks[-1], at_jump)
            )
            extra = 1
        else:
            k1_next = ks[-1]
        new = dict(
            y=acc(y1, y),
            k1=acc(k1_next, c["k1"]),
            tcur=torch.where(accept, t1, tcur),
            h=h_new,
            idx=c["idx"] + n_out,
            n_acc=n_acc,
            n_rej=n_rej,
            n_bad=n_bad,
            status=status,
            prev1=torch.where(accept, en, c["prev1"]),
            prev2=torch.where(accept, c["prev1"], c["prev2"]),
            done=done,
        )
        return new, events, all_done, extra

    events: list = []
    all_done = T == 1
    m = len(y0)
    keys = list(carry)
    while not all_done:
        if checkpoint_every is None:
            carry, ev, all_done, extra = step(carry)
            events += ev
            nfe += stage_evals + (not tab.fsal) + extra
            continue
        # A segment of steps is recomputed in the backward pass; step sizes are computed
        # from detached values, so the recomputation takes exactly the same steps.
        seg_info = {}

        def segment(*flat, seg_info=seg_info):
            c = _unflatten(keys, flat, m)
            evs, done_, taken, extra = [], False, 0, 0
            while not done_ and taken < checkpoint_every:
                c, ev, done_, x = step(c)
                evs += ev
                taken += 1
                extra += x
            seg_info.update(n_events=len(evs), done=done_, taken=taken, extra=extra)
            out = _flatten(c)
            for yq, j, valid in evs:
                out += (*yq, j, valid)
            return out

        flat = checkpoint(segment, *_flatten(carry))
        n_carry = len(_flatten(carry))
        carry = _unflatten(keys, flat[:n_carry], m)
        rest = flat[n_carry:]
        for e in range(seg_info["n_events"]):
            chunk = rest[e * (m + 2) : (e + 1) * (m + 2)]
            events.append((tuple(chunk[:m]), chunk[m], chunk[m + 1]))
        all_done = seg_info["done"]
        nfe += seg_info["taken"] * (stage_evals + (not tab.fsal)) + seg_info["extra"]

    ys = _assemble_events(y0, events, lanes, T) if record else ()
    return Outcome(ys, carry["y"], carry["status"], carry["n_acc"], carry["n_rej"], nfe)


def _next_jump(jumps: torch.Tensor, tcur: torch.Tensor):
    """Each lane's first jump more than one ulp after ``tcur`` (``inf`` when none is left)
    and the distance to it."""
    after = torch.nextafter(tcur, torch.full_like(tcur, float("inf")))
    pos = torch.searchsorted(jumps, after[:, None].contiguous(), right=True)[:, 0]
    J = jumps.shape[1]
    nxt = jumps.gather(1, pos.clamp(max=J - 1)[:, None])[:, 0]
    nxt = torch.where(pos < J, nxt, torch.full_like(nxt, float("inf")))
    return nxt, nxt - tcur


def _flatten(c: dict) -> tuple:
    out = ()
    for v in c.values():
        out += tuple(v) if isinstance(v, tuple) else (v,)
    return out


def _unflatten(keys, flat, m: int) -> dict:
    c, i = {}, 0
    for k in keys:
        if k in ("y", "k1"):
            c[k] = tuple(flat[i : i + m])
            i += m
        else:
            c[k] = flat[i]
            i += 1
    return c


def _assemble_events(y0: State, events, lanes: int, T: int) -> State:
    """Place every dense-output event at its (sample, output index), in one gather."""
    dev = y0[0].device
    src = torch.full((lanes, T), -1, dtype=torch.long, device=dev)
    src[:, 0] = 0
    if events:
        J = torch.stack([j for _, j, _ in events])  # (E, lanes)
        V = torch.stack([v for _, _, v in events])
        E = torch.arange(1, len(events) + 1, device=dev)[:, None].expand_as(J)
        lane = torch.arange(lanes, device=dev)[None].expand_as(J)
        src[lane[V], J[V]] = E[V]
    unreached = src < 0
    out = []
    for c in range(len(y0)):
        stacked = torch.stack([y0[c]] + [ev[0][c] for ev in events], dim=1)
        idx = src.clamp_min(0).reshape(src.shape + (1,) * (stacked.ndim - 2))
        val = stacked.gather(1, idx.expand(-1, -1, *stacked.shape[2:]))
        mask = unreached.reshape(unreached.shape + (1,) * (val.ndim - 2)).expand_as(val)
        out.append(val.masked_fill(mask, float("nan")))
    return tuple(out)
