"""The loop: one integration loop for every problem, method and adjoint.

:func:`integrate` drives a stepper (``_stepper``) over terms (``_term``) with a step-size
controller (``_controller``), records the outputs, lands on jump times and keeps a status per
sample. Two ways through it, chosen by the controller:

* planned (``ConstantStepSize``, ``StepTo``): every step is known before the loop, which reads
  nothing back to the host (it can be compiled or captured in a CUDA graph); outputs lie on
  steps;
* adaptive (``PIDController``): each lane (sample) has its own step size and accept/reject
  decision; outputs inside a step come from the stepper's dense output; the loop reads one
  small tensor back per step.

Checkpointing (``CheckpointAdjoint``) is written once, here: a segment of steps of either
kind is recomputed in the backward pass. The adjoints (``_adjoint``) wrap this loop; the
continuous adjoint solves its own term backwards with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from ._controller import FixedSchedule
from ._rk import ExplicitRungeKutta, State, lane_view, plan_steps
from ._solution import Status
from ._term import AbstractDerivativeTerm, ODETerm

# Samples whose error norm is NaN or infinite this many times in a row are marked NONFINITE.
_MAX_NONFINITE_REJECTIONS = 10
# Steps whose controls (Brownian increments) are drawn in one vectorised query.
_CHUNK = 64


@dataclass
class Outcome:
    """What the loop returns (before shaping into a Solution)."""

    ys: State  # each component (batch, T, *state)
    final: State
    status: torch.Tensor  # (lanes,) int64 codes
    n_accepted: torch.Tensor
    n_rejected: torch.Tensor
    nfe: int
    records: list | None = None  # planned loop: the kept states, in step order
    final_state: object = None  # the stepper's state after the last step


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
        got = _grad(tuple(o for o, _ in pairs), tuple(inputs), tuple(g for _, g in pairs))
    return [torch.zeros_like(x) if g is None else g for g, x in zip(got, inputs)]


_ENGINE = getattr(torch.autograd.Variable, "_execution_engine", None)


def _grad(outputs: tuple, inputs: tuple, grads: tuple):
    """``torch.autograd.grad(outputs, inputs, grads, allow_unused=True)`` for plain tensors
    whose ``grads`` match ``outputs`` in shape and dtype. Calls the autograd engine as that
    function does, without its checks of the arguments: they cost about 40 µs a call on a
    CPU, as much as a small vector field's backward pass, and the backward solve of the
    continuous adjoint makes one call per stage."""
    if _ENGINE is None or any(x.grad_fn is not None for x in inputs):
        # computed inputs (parameters derived from others) need torch.autograd.grad's
        # handling, which stops at them instead of freeing the graph behind them
        return torch.autograd.grad(outputs, inputs, grads, allow_unused=True)
    return _ENGINE.run_backward(outputs, grads, False, False, inputs, True, False)


def integrate(
    stepper,
    terms,
    y0: State,
    t: torch.Tensor,
    controller,
    *,
    f0: State | None = None,
    schedule: FixedSchedule | None = None,
    controls=None,
    norm=None,
    max_steps: int = 10_000,
    record: bool = True,
    checkpoint_every: int | str | None = None,
    jumps: torch.Tensor | None = None,
    steps: list | None = None,
    event=None,
) -> Outcome:
    """Integrate ``terms`` from ``y0`` over the ``(lanes, T)`` grid ``t`` with ``stepper``.

    Args:
        stepper: an :class:`~solvers._stepper.AbstractStepper`.
        terms: what the stepper accepts.
        y0: the initial state, a tuple of ``(batch, ...)`` tensors.
        t: output times per lane, ``(lanes, T)``; one lane, or one per sample.
        controller: a step-size controller; a planned one takes its steps from ``schedule``.
        f0: ``dy/dt`` at ``(t0, y0)`` when known (saves an evaluation).
        schedule: the planned steps (``FixedSchedule``) for a planned controller.
        controls: for SDE steppers, an object whose ``increments(start, stop)`` gives the
            Brownian increments of steps ``start … stop-1``.
        norm: ``norm(error, y0, y1) -> (lanes,)`` for an adaptive controller.
        max_steps: most (attempted) steps per lane.
        record: keep the outputs (the continuous adjoint's backward solve needs the end only).
        checkpoint_every: steps per checkpointed segment; ``"auto"``: ``⌈√N⌉``.
        jumps: jump times, ``(J,)`` or ``(lanes, J)``, that adaptive steps land on.
        steps: a list that receives ``(t0, h, taken, dense)`` for every step (``(lanes,)``
            tensors, ``taken`` false for rejected steps and steps of size zero): what
            ``Solution.evaluate`` interpolates from (dense output).
        event: a terminal event ``event(t, y) -> (batch,)`` (``t``: ``(batch,)``): each lane
            stops at the first zero crossing, located on the step's interpolant (adaptive
            controller only).
    """
    if controller.planned:
        return _planned(
            stepper, terms, y0, f0, schedule, controls, checkpoint_every, t, record, steps
        )
    return _adaptive(
        stepper,
        terms,
        controller,
        y0,
        f0,
        t,
        norm,
        max_steps,
        record,
        checkpoint_every,
        jumps,
        steps,
        event,
        controls,
    )


# ---------------------------------------------------------------------------------------------
# Carry: what passes from step to step, flattened for torch.utils.checkpoint


def _flatten(tree) -> tuple[tuple, object]:
    """Flatten nested tuples/dicts of tensors (and ``None``) into a tuple of tensors and a
    spec to rebuild them."""
    if tree is None:
        return (), None
    if isinstance(tree, torch.Tensor):
        return (tree,), "T"
    if isinstance(tree, dict):
        leaves, specs = (), []
        for k, v in tree.items():
            lv, sp = _flatten(v)
            leaves += lv
            specs.append((k, sp, len(lv)))
        return leaves, ("D", specs)
    leaves, specs = (), []
    for v in tree:
        lv, sp = _flatten(v)
        leaves += lv
        specs.append((sp, len(lv)))
    return leaves, ("L", specs)


def _unflatten(spec, leaves):
    if spec is None:
        return None
    if spec == "T":
        return leaves[0]
    kind, specs = spec
    out, i = [], 0
    for entry in specs:
        sp, n = entry[-2], entry[-1]
        out.append(_unflatten(sp, leaves[i : i + n]))
        i += n
    if kind == "D":
        return {entry[0]: v for entry, v in zip(specs, out)}
    return tuple(out)


def _segmented(run, carry, n_steps: int | None, every: int):
    """Run ``run(carry, start, stop) -> (carry, records, info)`` in checkpointed segments of
    ``every`` steps: each segment is recomputed in the backward pass. ``n_steps`` is the
    planned number of steps, or ``None`` when the loop ends when ``info["done"]``."""
    records, start = [], 0
    while True:
        stop = start + every if n_steps is None else min(start + every, n_steps)
        if n_steps is not None and start >= n_steps:
            break
        leaves, spec = _flatten(carry)
        info: dict = {}

        def segment(*leaves_, start=start, stop=stop, spec=spec, info=info):
            c, recs, inf = run(_unflatten(spec, leaves_), start, stop)
            out_leaves, out_spec = _flatten(c)
            rec_leaves, rec_spec = _flatten(recs)
            info.update(inf, n_carry=len(out_leaves), spec=out_spec, rec_spec=rec_spec)
            return (*out_leaves, *rec_leaves)

        flat = checkpoint(segment, *leaves)
        n = info["n_carry"]
        carry = _unflatten(info["spec"], flat[:n])
        records += list(_unflatten(info["rec_spec"], flat[n:]) or ())
        start = stop
        if n_steps is None and info.get("done"):
            break
    return carry, records


def _select(mask: torch.Tensor, new, old):
    """``new`` where ``mask`` (``(lanes,)``), else ``old``, through tuples; a ``None`` new
    state (nothing carried) stays ``None``."""
    if new is None:
        return None
    if isinstance(new, torch.Tensor):
        return torch.where(lane_view(mask, new), new, old)
    return tuple(_select(mask, n, o) for n, o in zip(new, old))


# ---------------------------------------------------------------------------------------------
# Planned steps


def _planned(
    stepper, terms, y0, f0, sched: FixedSchedule, controls, checkpoint_every, t, record, steps
):
    """Every step from the schedule; no host synchronisation inside the loop."""
    record_at = set(sched.record) if record else set()
    N = len(sched.ts)
    t0 = t[:, 0]
    state0 = stepper.init(terms, t0, y0, f0)
    # Terms that keep a history (a DDE's delay term; AbstractTerm.keeps_history) are told
    # which step comes next and given every step taken.
    history = terms if terms.keeps_history else None
    # A Runge–Kutta method on a derivative term takes its planned steps with their sizes and
    # stage times computed before the loop (``_rk.plan_steps``).
    fast = None
    if (
        steps is None
        and isinstance(stepper, ExplicitRungeKutta)
        and isinstance(terms, AbstractDerivativeTerm)
        and history is None
    ):
        y00 = y0[0]
        fast = plan_steps(
            stepper.tableau, sched, y00.shape[0], y00.ndim, isinstance(terms, ODETerm)
        )

    def run(carry, start, stop):
        y, state = carry
        kept = []
        if fast is not None:
            for k in range(start, stop):
                y, state = stepper.planned_step(terms, fast[k], y, state)
                if k + 1 in record_at:
                    kept.append(y)
            return (y, state), tuple(kept), {}
        for c0 in range(start, stop, _CHUNK):
            c1 = min(c0 + _CHUNK, stop)
            dws = controls.increments(c0, c1) if controls is not None else (None,) * (c1 - c0)
            for k, dw in zip(range(c0, c1), dws):
                if history is not None:
                    history.step_begins(k, sched.ts[k], sched.t_ends[k])
                y_start = y
                y, _, dense_info, state = stepper.step(
                    terms, sched.ts[k], sched.t_ends[k], sched.hs[k], y, state, control=dw
                )
                if history is not None:
                    history.accepted(k, sched.ts[k], sched.t_ends[k], y, dense_info, None)
                if steps is not None:
                    steps.append((sched.ts[k], sched.hs[k], sched.hs[k] > 0, dense_info, y_start))
                if k + 1 in record_at:
                    kept.append(y)
        return (y, state), tuple(kept), {}

    records = [y0] if 0 in record_at else []
    if checkpoint_every == "auto":
        checkpoint_every = max(1, math.isqrt(N))
    if checkpoint_every is None or N == 0:
        (y, state), kept, _ = run((y0, state0), 0, N)
        records += list(kept)
    else:
        (y, state), kept = _segmented(run, (y0, state0), N, checkpoint_every)
        records += list(kept)
    ys = _gather_outputs(records, sched.gather, sched.unreached, y0[0].shape[0]) if record else ()
    nfe = stepper.evals(N, state0 is not None)
    counts = sched.n_steps.clone()
    return Outcome(
        ys, y, sched.status.clone(), counts, torch.zeros_like(counts), nfe, records, state
    )


# ---------------------------------------------------------------------------------------------
# Adaptive steps


def initial_step(terms, y0: State, f0: State, t0, norm, order: int, span):
    """Hairer, Nørsett & Wanner's starting step (Solving ODEs I, II.4), per lane."""
    zeros = tuple(torch.zeros_like(y) for y in y0)
    d0 = norm(y0, y0, zeros)
    d1 = norm(f0, y0, zeros)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, span)
    y1 = tuple(y + lane_view(h0, y) * f for y, f in zip(y0, f0))
    f1 = terms.derivative(t0 + h0, y1)
    d2 = norm(tuple(b - a for a, b in zip(f0, f1)), y0, zeros) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(
        dmax <= 1e-15,
        torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
        (0.01 / dmax) ** (1.0 / (order + 1)),
    )
    return torch.minimum(torch.minimum(100 * h0, h1), span).nan_to_num(1e-6)


def _adaptive(
    stepper,
    terms,
    controller,
    y0,
    f0,
    t,
    norm,
    max_steps,
    record,
    every,
    jumps,
    steps=None,
    event=None,
    controls=None,
):
    """Each lane with its own step size, accept/reject decision and status.

    Outputs inside a step come from the stepper's interpolant. The loop reads one small tensor
    back to the host per step (how many outputs the step passed, whether all lanes are done,
    and whether a lane stepped onto a jump).

    ``jumps`` (``(J,)`` or ``(lanes, J)``, sorted per lane) are times where the terms are not
    smooth in ``t`` (the knots of a CDE's control path). No step crosses one: a step that
    would is shortened to end on it, its stages at the end see the left limit, the next step
    starts from the value at the jump itself, and its size is the one the controller proposed
    before the shortening (as OrdinaryDiffEq.jl does at its ``tstops``). An error estimate
    over a step that straddles a kink is meaningless, so without this a solve can miss its
    tolerance by orders of magnitude.
    """
    lanes, T = t.shape
    dev = t.device
    jumps_graph = None
    if jumps is not None:
        if jumps.requires_grad:
            # jump times computed from parameters (a DDE's breakpoints t0 + Σ n_i τ_i) keep
            # their graph in the steps that land on them: gradients reach the delays
            jumps_graph = jumps.to(dtype=t.dtype)
        jumps = jumps.detach().to(device=dev, dtype=t.dtype)
        jumps = jumps.expand(lanes, -1).contiguous() if jumps.ndim == 1 else jumps.contiguous()
        if jumps.shape[0] != lanes:
            raise ValueError(
                f"jump times of shape {tuple(jumps.shape)} do not match the {lanes} lanes of "
                "the solve"
            )
        if jumps.shape[1] == 0:
            jumps = None
    k_order = stepper.error_order + 1
    # Times keep their graph (gradients with respect to t); step sizes are constants.
    t0, tend = t[:, 0], t[:, -1]
    tgrid = t.detach().contiguous()
    nfe = 0
    if f0 is None:
        f0 = terms.derivative(t0, y0)
        nfe += 1
    if controller.first_step is None:
        with torch.no_grad():
            h = initial_step(terms, y0, f0, t0.detach(), norm, stepper.order, (tend - t0).detach())
        nfe += 1  # the starting-step heuristic evaluates the terms once
    else:
        h = torch.full_like(t0.detach(), float(controller.first_step))
    # Terms that keep a history (a DDE) see every step and bound its size (see _planned).
    history = terms if terms.keeps_history else None
    if history is not None:
        h = h.clamp(max=history.max_step)
    long = dict(dtype=torch.long, device=dev)
    with torch.no_grad():
        start_bad = ~_finite(y0, lanes)
    carry = dict(
        y=y0,
        state=stepper.init(terms, t0, y0, f0),
        tcur=t0,
        h=h,
        idx=torch.ones(lanes, **long),
        n_acc=torch.zeros(lanes, **long),
        n_rej=torch.zeros(lanes, **long),
        n_bad=torch.zeros(lanes, **long),
        status=torch.where(start_bad, int(Status.NONFINITE), torch.zeros(lanes, **long)),
        prev1=torch.ones_like(h),
        prev2=torch.ones_like(h),
        done=(torch.full((lanes,), T == 1, dtype=torch.bool, device=dev) | start_bad),
    )
    if event is not None:
        with torch.no_grad():
            carry["g"] = _event_value(event, t0.detach(), y0)
        carry["event_t"] = torch.full_like(t0, float("nan"))
    eps = torch.finfo(t0.dtype).eps

    def step(c, m):
        """One attempted step for every lane; returns the new carry, the outputs it passed,
        whether every lane is done, and the evaluations it made."""
        active = ~c["done"]
        remaining = tend - c["tcur"]
        hit = c["h"] >= remaining.detach()
        y, tcur = c["y"], c["tcur"]
        if jumps is None:
            jump = None
            hstep = torch.where(hit, remaining, c["h"])
            t1 = torch.where(hit, tend, tcur + hstep)
        else:
            nxt, to_jump = _next_jump(jumps, tcur.detach())
            # a jump before the end is stepped onto; one at the end is the end
            jump = (to_jump < remaining.detach()) & (c["h"] >= to_jump)
            hit = hit & ~jump
            if jumps_graph is not None:  # the same jumps, with their graph
                nxt = _next_jump(jumps_graph, tcur.detach())[0]
                to_jump = nxt - tcur
            hstep = torch.where(hit, remaining, torch.where(jump, to_jump, c["h"]))
            t1 = torch.where(hit, tend, torch.where(jump, nxt, tcur + hstep))
        hstep = torch.where(active, hstep, torch.zeros_like(c["h"]))
        t1 = torch.where(active, t1, tcur)
        if history is not None:
            history.step_begins(m, tcur, t1)
        # an SDE's adaptive steps query their Brownian increments on the path, at any times
        control = None if controls is None else controls.query
        y1, err, dense_info, state1 = stepper.step(
            terms, tcur, t1, hstep, y, c["state"], left=jump, control=control
        )
        evals = stepper.evals(1, c["state"] is not None)
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
            if history is not None:
                h_new = h_new.clamp(max=history.max_step)
        crossed, t_end = None, t1
        if event is not None:
            crossed, theta_ev, g1 = _event_crossing(
                event, stepper, dense_info, accept, c["g"], tcur, hstep, t1, y1
            )
            if crossed is not None:
                # the lane stops at the event: outputs up to it, its state there
                t_end = torch.where(crossed, tcur.detach() + theta_ev * hstep.detach(), t1)
        with torch.no_grad():
            reached = accept & hit
            n_out = torch.zeros_like(c["idx"])
            if record:
                ends = t_end[:, None].detach().contiguous()
                passed = torch.searchsorted(tgrid, ends, right=True)
                n_out = torch.where(accept, passed[:, 0] - c["idx"], n_out)
            n_acc = c["n_acc"] + accept
            n_rej = c["n_rej"] + (active & ~accept)
            n_bad = torch.where(active & ~finite, c["n_bad"] + 1, torch.zeros_like(c["n_bad"]))
            status = c["status"]
            tiny = 4 * eps * torch.maximum(tcur.detach().abs(), tend.detach().abs()).clamp_min(1.0)
            failing = active & ~reached
            # a step size driven down by non-finite values is a non-finite failure, not a
            # stiff problem
            nonfinite = (
                failing & (n_bad > 0) & ((n_bad >= _MAX_NONFINITE_REJECTIONS) | (h_new < tiny))
            )
            status = torch.where(nonfinite, int(Status.NONFINITE), status)
            status = torch.where(
                failing & (status == 0) & (h_new < tiny), int(Status.DT_UNDERFLOW), status
            )
            status = torch.where(
                failing & (status == 0) & (n_acc + n_rej >= max_steps),
                int(Status.MAX_STEPS),
                status,
            )
            if crossed is not None:
                status = torch.where(crossed, int(Status.EVENT), status)
            done = c["done"] | reached | (status != 0)
        if history is not None:
            history.accepted(m, tcur, t1, y1, dense_info, accept)
        if steps is not None:
            steps.append((tcur, hstep, accept & (hstep > 0), dense_info, y))
        outputs = []
        # the step's one read back to the host
        info = torch.stack([n_out.max(), done.all().long(), jumped.any().long()]).tolist()
        all_done, any_jump = bool(info[1]), bool(info[2])
        if crossed is not None:
            y_ev, t_ev = _event_state(
                event, stepper, terms, dense_info, crossed, theta_ev, tcur, hstep, t_end
            )
            y1 = tuple(torch.where(lane_view(crossed, a), b, a) for a, b in zip(y1, y_ev))
            t1 = torch.where(crossed, t_end, t1)
        if record and info[0] > 0:
            passed = _dense_outputs(
                stepper, dense_info, t, c["idx"], n_out, info[0], tcur, hstep, t1, y1
            )
            outputs.append(passed)
        if any_jump:
            # the last stage saw the left limit at the jump; the next step starts from the
            # value at the jump (paths are right-continuous)
            state1 = stepper.restart(terms, t1, y1, state1, jumped)
            evals += state1 is not None
        new = dict(
            y=_select(accept, y1, y),
            state=_select(accept, state1, c["state"]),
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
        if event is not None:
            new["g"] = torch.where(accept & (g1 == g1), g1, c["g"])
            new["event_t"] = (
                c["event_t"] if crossed is None else torch.where(crossed, t_ev, c["event_t"])
            )
        return new, outputs, all_done, int(evals)

    all_done = bool(carry["done"].all())
    outputs: list = []
    if every is None:
        m = 0
        while not all_done:
            carry, out, all_done, evals = step(carry, m)
            m += 1
            outputs += out
            nfe += evals
    else:
        # A segment of steps is recomputed in the backward pass; step sizes are computed
        # from detached values, so the recomputation takes exactly the same steps.
        counted = {"nfe": 0}

        def run(c, start, stop, counted=counted):
            recs, done_, evals = [], all_done, 0
            for m in range(start, stop):
                if done_:
                    break
                c, out, done_, e = step(c, m)
                recs += [(*yq, j, v) for yq, j, v in out]
                evals += e
            counted["nfe"] += evals  # read after the forward pass, before any recomputation
            return c, tuple(recs), {"done": done_}

        if not all_done:
            carry, recs = _segmented(run, carry, None, every)
            m = len(y0)
            outputs = [(tuple(r[:m]), r[m], r[m + 1]) for r in recs]
        nfe += counted["nfe"]

    ys = _assemble_events(y0, outputs, lanes, T) if record else ()
    n_acc, n_rej = carry["n_acc"], carry["n_rej"]
    out = Outcome(ys, carry["y"], carry["status"], n_acc, n_rej, nfe, final_state=carry["state"])
    out.event_t = carry.get("event_t")
    return out


# ---------------------------------------------------------------------------------------------
# Terminal events


def _event_value(event, t: torch.Tensor, y: State) -> torch.Tensor:
    """``event(t, y)`` checked: ``(batch,)`` floating point."""
    g = event(t.expand(y[0].shape[0]), y[0])
    if not isinstance(g, torch.Tensor) or g.shape != y[0].shape[:1]:
        got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
        raise ValueError(
            f"event(t, y) must return one value per sample, shape ({y[0].shape[0]},); got {got}"
        )
    return g.to(t.dtype)


def _event_crossing(event, stepper, dense_info, accept, g0, tcur, h, t1, y1):
    """Lanes whose accepted step crosses zero (``g0 ≠ 0`` and the sign changes, or the end
    value is zero), and where: ``θ`` in ``[0, 1]`` located by bisection on the step's
    interpolant to the resolution of the times. Returns ``(crossed or None, θ, g(t1))``."""
    with torch.no_grad():
        y1d = tuple(a.detach() for a in y1)
        g1 = _event_value(event, t1.detach(), y1d)
        crossed = accept & (g0 != 0) & ((g1 == 0) | (torch.sign(g1) != torch.sign(g0)))
        if not bool(crossed.any()):  # one more read back per step, only with an event
            return None, None, g1
        lo = torch.zeros_like(h)
        hi = torch.ones_like(h)
        sign0 = torch.sign(g0)
        td, hd = tcur.detach(), h.detach()
        for _ in range(54 if h.dtype == torch.float64 else 26):
            mid = 0.5 * (lo + hi)
            ym = tuple(a.detach() for a in stepper.interpolate(dense_info, mid))
            gm = _event_value(event, td + mid * hd, ym)
            before = torch.sign(gm) == sign0  # the crossing lies after mid
            lo = torch.where(before, mid, lo)
            hi = torch.where(before, hi, mid)
        return crossed, hi, g1


def _event_state(event, stepper, terms, dense_info, crossed, theta, tcur, h, t_event):
    """The state at the event (on the interpolant, with its graph) and the event time,
    differentiable by the implicit function theorem: ``dt*/dθ = -(∂g/∂y ∂y/∂θ) / (dg/dt)``
    along the solution, as torchdiffeq's ``odeint_event`` does."""
    y_ev = stepper.interpolate(dense_info, theta)
    td = t_event.detach()
    with torch.enable_grad():
        t_ = td.clone().requires_grad_(True)
        y_ = y_ev[0].detach().requires_grad_(True)
        g = _event_value(event, t_, (y_,))
        dg_dt, dg_dy = torch.autograd.grad(g.sum(), [t_, y_], allow_unused=True)
    dg_dt = torch.zeros_like(td) if dg_dt is None else dg_dt
    dg_dy = torch.zeros_like(y_) if dg_dy is None else dg_dy
    with torch.no_grad():
        f = terms.derivative(td, (y_ev[0].detach(),))[0]
        rate = dg_dt + (dg_dy * f).flatten(1).sum(1)
        rate = torch.where(crossed & (rate != 0), rate, torch.ones_like(rate))
    if torch.is_grad_enabled() and (y_ev[0].requires_grad or td.requires_grad):
        g_graph = _event_value(event, td, y_ev)
        t_ev = td - (g_graph - g_graph.detach()) / rate
    else:
        t_ev = td
    return y_ev, t_ev


def _finite(y: State, lanes: int) -> torch.Tensor:
    """``(lanes,)``: whether each lane's state is finite (one lane: the whole state)."""
    if lanes == 1:
        return torch.stack([torch.isfinite(a.detach()).all() for a in y]).all().reshape(1)
    ok = None
    for a in y:
        f = torch.isfinite(a.detach()).flatten(1).all(1)
        ok = f if ok is None else ok & f
    return ok


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


def rms_norm(err: State, y0: State, y1: State, rtol: float, atol: float) -> torch.Tensor:
    """Per-sample root-mean-square of ``err / (atol + rtol max(|y0|, |y1|))``: ``(batch,)``."""
    total, count = 0, 0
    for e, a, b in zip(err, y0, y1):
        scale = atol + rtol * torch.maximum(a.abs(), b.abs())
        r = (e / scale).flatten(1)
        total = total + (r * r).sum(1)
        count += r.shape[1]
    return (total / count).sqrt()


def _next_jump(jumps: torch.Tensor, tcur: torch.Tensor):
    """Each lane's first jump more than one ulp after ``tcur`` (``inf`` when none is left)
    and the distance to it."""
    after = torch.nextafter(tcur, torch.full_like(tcur, float("inf")))
    pos = torch.searchsorted(jumps, after[:, None].contiguous(), right=True)[:, 0]
    J = jumps.shape[1]
    nxt = jumps.gather(1, pos.clamp(max=J - 1)[:, None])[:, 0]
    nxt = torch.where(pos < J, nxt, torch.full_like(nxt, float("inf")))
    return nxt, nxt - tcur


def _dense_outputs(stepper, dense_info, t, idx, n_out, R: int, tcur, hstep, t1, y1):
    """The outputs that one step passed (at most ``R`` per lane), interpolated together:
    ``(values, j, valid)``, the values ``(batch, R, *state)`` per component, the output
    indices ``j`` and whether each is one ``(lanes, R)``. One batched interpolation per step
    instead of one per output time (PERFORMANCE.md: "dense output in batches")."""
    T = t.shape[1]
    eps = torch.finfo(t.dtype).eps
    r = torch.arange(R, device=t.device)
    j = idx[:, None] + r
    valid = r < n_out[:, None]
    tq = t.gather(1, j.clamp(max=T - 1))
    hs = hstep[:, None]
    theta = torch.where(hs > 0, (tq - tcur[:, None]) / hs.clamp_min(eps), torch.ones_like(tq))
    if isinstance(stepper, ExplicitRungeKutta):
        yq = stepper.interpolate_many(dense_info, theta)
    else:
        each = [stepper.interpolate(dense_info, theta[:, i]) for i in range(R)]
        yq = tuple(torch.stack([e[c] for e in each], dim=1) for c in range(len(y1)))
    at_end = tq >= t1[:, None]  # the output is the end of the step: its value exactly
    out = []
    for a, b in zip(yq, y1):
        mask = at_end.reshape(at_end.shape + (1,) * (a.ndim - 2))
        out.append(torch.where(mask, b[:, None], a))
    return tuple(out), j, valid


def _assemble_events(y0: State, events, lanes: int, T: int) -> State:
    """Place every dense output (``_dense_outputs``: ``(lanes, R)`` indices per step) at its
    (sample, output index), in one gather."""
    dev = y0[0].device
    src = torch.full((lanes, T), -1, dtype=torch.long, device=dev)
    src[:, 0] = 0
    if events:
        J = torch.cat([j for _, j, _ in events], dim=1)  # (lanes, E)
        V = torch.cat([v for _, _, v in events], dim=1)
        E = torch.arange(1, J.shape[1] + 1, device=dev)[None].expand_as(J)
        lane = torch.arange(lanes, device=dev)[:, None].expand_as(J)
        src[lane[V], J[V]] = E[V]
    unreached = src < 0
    out = []
    for c in range(len(y0)):
        stacked = torch.cat([y0[c][:, None]] + [ev[0][c] for ev in events], dim=1)
        idx = src.clamp_min(0).reshape(src.shape + (1,) * (stacked.ndim - 2))
        val = stacked.gather(1, idx.expand(-1, -1, *stacked.shape[2:]))
        mask = unreached.reshape(unreached.shape + (1,) * (val.ndim - 2)).expand_as(val)
        out.append(val.masked_fill(mask, float("nan")))
    return tuple(out)
