"""What a solve returns: the solution, a status per sample, and counters."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

__all__ = ["Solution", "SolverError", "Stats", "Status"]


class Status(enum.IntEnum):
    """Outcome of a solve for one sample."""

    SUCCESS = 0
    MAX_STEPS = 1
    DT_UNDERFLOW = 2
    NONFINITE = 3
    EVENT = 4

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.SUCCESS: "the solve reached the final time",
    Status.MAX_STEPS: "the solve took max_steps steps before reaching the final time; "
    "raise max_steps, loosen rtol/atol or enlarge dt",
    Status.DT_UNDERFLOW: "the step size fell below the resolution of the time variable; "
    "the problem may be stiff or singular there",
    Status.NONFINITE: "the state or the vector field became NaN or infinite",
    Status.EVENT: "the event function crossed zero and the sample stopped there "
    "(Solution.event_t); not a failure",
}


class SolverError(RuntimeError):
    """Raised by :func:`solvers.solve` with ``throw=True`` when any sample failed."""

    def __init__(self, status: Status, samples: list[int], detail: str = ""):
        self.status = status
        self.samples = samples
        shown = samples[:10]
        more = f" (and {len(samples) - 10} more)" if len(samples) > 10 else ""
        super().__init__(
            f"{status.name} in samples {shown}{more}: {status.message}{detail}. "
            "Pass throw=False to keep the other samples' results."
        )


@dataclass
class Stats:
    """Counters of one solve.

    Attributes:
        num_function_evals: batched evaluations of the vector field (forward pass only).
        num_accepted_steps: ``(batch,)`` accepted steps per sample (-1 where the backend
            does not report them: torchdiffeq).
        num_rejected_steps: ``(batch,)`` rejected steps per sample (likewise).
    """

    num_function_evals: int
    num_accepted_steps: torch.Tensor
    num_rejected_steps: torch.Tensor


@dataclass
class Solution:
    """The result of :func:`solvers.solve`.

    Attributes:
        ts: the requested times, ``(T,)`` or ``(batch, T)`` as given.
        ys: the solution at ``ts``, ``(batch, T, *state)``. Outputs that a failed sample
            never reached are NaN.
        status_codes: ``(batch,)`` integer codes of :class:`Status`, on the solve's device.
        stats: counters (:class:`Stats`).
        detail: what the backend said about a failure, if anything.
        dense: the steps' dense output (``solve(..., dense=True)``), for :meth:`evaluate`.
        event_t: with ``solve(..., event=fn)``, ``(batch,)``: the time at which each sample's
            event function crossed zero (NaN where it did not); differentiable.
    """

    ts: torch.Tensor
    ys: torch.Tensor
    status_codes: torch.Tensor
    stats: Stats
    detail: str = ""
    dense: object = None  # a DenseOutput when solved with dense=True
    event_t: torch.Tensor | None = None  # (batch,) event times (NaN: none), with event=...

    def evaluate(self, t) -> torch.Tensor:
        """The solution at any times ``t`` inside the solved span, from the steps' own
        interpolants, without solving again: ``t`` of shape ``(Q,)`` (shared) or
        ``(batch, Q)`` (per sample); returns ``(batch, Q, *state)``. Needs
        ``solve(..., dense=True)``. Differentiable under ``adjoint="direct"``."""
        if self.dense is None:
            raise ValueError(
                "Solution.evaluate needs the steps' dense output: solve with dense=True"
            )
        return self.dense.evaluate(t)

    @property
    def status(self) -> tuple[Status, ...]:
        """One :class:`Status` per sample (reads the codes back to the host)."""
        return tuple(Status(c) for c in self.status_codes.tolist())

    @property
    def success(self) -> bool:
        """Whether no sample failed: each reached the final time or stopped at its event."""
        ok = (self.status_codes == Status.SUCCESS) | (self.status_codes == Status.EVENT)
        return bool(ok.all())

    def raise_on_failure(self) -> None:
        """Raise :class:`SolverError` for the first failing status, naming its samples."""
        codes = self.status_codes.tolist()
        for status in (Status.NONFINITE, Status.DT_UNDERFLOW, Status.MAX_STEPS):
            samples = [i for i, c in enumerate(codes) if c == status]
            if samples:
                raise SolverError(status, samples, self.detail)
