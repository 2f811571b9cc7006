"""Step-size controllers: where the next step goes.

* :class:`ConstantStepSize` ``(dt)``: each interval between consecutive output times (and
  jump times) is split into ``⌈Δ/dt⌉`` equal steps, planned before the loop; any method,
  adaptive tableaus included, can run with it. ``solve(..., dt=...)`` is its short form.
* :class:`StepTo` ``(ts)``: steps at exactly the given times (and at the output times).
* :class:`PIDController`: adaptive steps from an embedded error estimate, per sample.
  ``solve(..., rtol=..., atol=...)`` without ``dt`` is its short form.

The first two are planned: the loop knows every step before it starts and reads nothing back
to the host, so it can be compiled or captured in a CUDA graph.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from ._solution import Status

__all__ = [
    "AbstractStepSizeController",
    "ConstantStepSize",
    "PIDController",
    "StepTo",
    "fixed_schedule",
    "refine_grid",
]


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
    # N step sizes as Python floats when one lane takes them all: steps then cost as few
    # operations as a hand-written loop (``_rk.combine``). Read once, when planned.
    h_floats: tuple[float, ...] | None = None


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
    h_floats = tuple(h[0].detach().tolist()) if lanes == 1 else None
    return FixedSchedule(
        ts.T.unbind(0),
        h.T.unbind(0),
        record,
        gather,
        unreached if bool(unreached.any()) else None,
        status,
        total.clamp(max=max_steps),
        te.T.unbind(0),
        h_floats,
    )


class AbstractStepSizeController(abc.ABC):
    """Where the next step goes. Final subclasses: :class:`ConstantStepSize`,
    :class:`StepTo` (planned) and :class:`PIDController` (adaptive)."""

    #: whether every step is known before the loop starts (no host read inside it)
    planned: bool

    def step_times(self) -> torch.Tensor | None:
        """Times that every solve steps onto besides its outputs (``StepTo``)."""
        return None


@dataclass(frozen=True)
class ConstantStepSize(AbstractStepSizeController):
    """Constant steps of at most ``dt``: every interval between consecutive output times
    (and jump times) is split into ``⌈Δ/dt⌉`` equal steps, so every output lies on a step.
    Runs any method, adaptive tableaus included (their error estimate is not used)."""

    dt: float
    planned = True

    def __post_init__(self):
        dt = self.dt
        if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and dt > 0):
            raise ValueError(f"ConstantStepSize: dt must be a positive number, got {dt!r}")
        if dt == float("inf") or dt != dt:
            raise ValueError(f"ConstantStepSize: dt must be finite, got {dt!r}")


@dataclass(frozen=True, eq=False)
class StepTo(AbstractStepSizeController):
    """Steps at exactly the times ``ts`` (``(N,)``, non-decreasing, finite) and at the
    output times: one step between consecutive points of their union inside the solve's
    span (as diffrax's ``StepTo``, whose grid must also hold the output times)."""

    ts: torch.Tensor
    planned = True

    def __post_init__(self):
        ts = self.ts
        if not isinstance(ts, torch.Tensor) or ts.ndim != 1 or not ts.is_floating_point():
            got = f"shape {tuple(ts.shape)}" if isinstance(ts, torch.Tensor) else type(ts).__name__
            raise ValueError(f"StepTo: ts must be a 1-D floating-point tensor, got {got}")
        if not bool(torch.isfinite(ts).all()):
            raise ValueError("StepTo: ts must be finite")
        if ts.shape[0] > 1 and not bool((ts.diff() >= 0).all()):
            i = int(torch.nonzero(ts.diff() < 0)[0])
            raise ValueError(
                f"StepTo: ts must be non-decreasing; ts[{i + 1}] = {float(ts[i + 1])} follows "
                f"ts[{i}] = {float(ts[i])}"
            )

    @property
    def dt(self) -> float:
        return float("inf")

    def step_times(self):
        return self.ts.detach()


@dataclass(frozen=True)
class PIDController(AbstractStepSizeController):
    """A PID step-size controller (Söderlind), applied per sample.

    The new step is ``h · safety · ε_n^(-β1/k) · ε_{n-1}^(-β2/k) · ε_{n-2}^(-β3/k)`` with
    ``β1 = p + i + d``, ``β2 = -(p + 2d)``, ``β3 = d``, ``ε`` the scaled error norms of the
    last accepted steps and ``k`` one more than the order of the error estimate; the factor
    is clipped to ``[factor_min, factor_max]``. ``first_step`` is the size of the first
    step (default: chosen by Hairer, Nørsett & Wanner's heuristic). The defaults (``i = 1``)
    give the classical integral controller; ``pcoeff=0.4, icoeff=0.3`` is a common PI choice
    for 5(4) pairs.

    Reference: G. Söderlind, Digital filters in adaptive time-stepping, ACM TOMS 29 (2003).
    """

    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    first_step: float | None = None
    planned = False

    def __post_init__(self):
        fs = self.first_step
        if fs is not None and (
            isinstance(fs, bool) or not (isinstance(fs, (int, float)) and 0 < fs < float("inf"))
        ):
            raise ValueError(
                f"PIDController: first_step must be a positive number or None, got {fs!r}"
            )
        if not 0 < self.safety <= 1:
            raise ValueError(f"PIDController: safety must be in (0, 1], got {self.safety}")
        if not 0 < self.factor_min < 1 < self.factor_max:
            raise ValueError(
                "PIDController: need 0 < factor_min < 1 < factor_max, got "
                f"factor_min={self.factor_min}, factor_max={self.factor_max}"
            )
        if self.icoeff <= 0:
            raise ValueError(f"PIDController: icoeff must be positive, got {self.icoeff}")

    def factor(self, norm, prev1, prev2, k: int) -> torch.Tensor:
        """Multiplier of the step size given this step's norm and the two before."""
        b1 = (self.pcoeff + self.icoeff + self.dcoeff) / k
        b2 = -(self.pcoeff + 2 * self.dcoeff) / k
        b3 = self.dcoeff / k
        tiny = torch.finfo(norm.dtype).tiny
        f = self.safety * norm.clamp_min(tiny) ** (-b1)
        if b2:
            f = f * prev1.clamp_min(tiny) ** (-b2)
        if b3:
            f = f * prev2.clamp_min(tiny) ** (-b3)
        return f.nan_to_num(nan=self.factor_min).clamp(self.factor_min, self.factor_max)
