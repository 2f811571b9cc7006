"""Dense output: the solution at any time inside the solved span, from the steps' own
interpolants (``solve(..., dense=True)``, then ``Solution.evaluate(t)``).

The loop hands over every step it took, ``(t0, h, taken, dense information, y0)``, per lane.
Evaluating at a time finds, for each sample, the last step taken that starts at or before
it (one ``searchsorted`` for all queries), gathers that step's dense information, and calls
the stepper's interpolant once for every (sample, query) pair, as one batch. Nothing is solved
again, and under ``adjoint="direct"`` the result keeps its graph: gradients flow through the
stored stages to ``y0``, the parameters and ``t``.
"""

from __future__ import annotations

import torch

from ._integrate import _flatten, _unflatten

__all__ = ["DenseOutput"]


class DenseOutput:
    """The steps of one solve, ready to be interpolated (see :meth:`evaluate`).

    Args:
        stepper: the stepper that took the steps (its ``interpolate``).
        steps: the loop's ``(t0, h, taken, dense, y0)`` per step.
        grid: the solve's ``(lanes, T)`` time grid (in the solve's own time).
        batch: the batch size.
        status: ``(batch,)`` status codes; a failed sample's queries past its last step
            are NaN.
    """

    def __init__(self, stepper, steps: list, grid: torch.Tensor, batch: int, status):
        self.stepper, self.batch, self.sign = stepper, batch, 1.0
        lanes = grid.shape[0]
        self.lo = grid[:, 0].detach().expand(batch)
        self.hi = grid[:, -1].detach().expand(batch)
        self.status = status
        if not steps:
            self.n = 0
            return
        self.n = len(steps)
        t0 = torch.stack([s[0].detach().expand(lanes) for s in steps])  # (S, lanes)
        h = torch.stack([s[1].detach().expand(lanes) for s in steps])
        taken = torch.stack([s[2].expand(lanes) for s in steps])
        self.t0 = t0.expand(-1, batch) if lanes == 1 else t0
        self.h = h.expand(-1, batch) if lanes == 1 else h
        self.taken = taken.expand(-1, batch) if lanes == 1 else taken
        self.spec = _flatten(steps[0][3])[1]
        self.leaves = [torch.stack(group) for group in zip(*(_flatten(s[3])[0] for s in steps))]

    def evaluate(self, t) -> torch.Tensor:
        """The solution at the times ``t``: ``(Q,)`` shared by the batch or ``(batch, Q)``
        per sample, inside each sample's solved span. Returns ``(batch, Q, *state)``."""
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=self.lo.dtype, device=self.lo.device)
        if t.ndim not in (1, 2) or (t.ndim == 2 and t.shape[0] != self.batch):
            raise ValueError(
                f"Solution.evaluate: t must have shape (Q,) or (batch, Q) = ({self.batch}, Q), "
                f"got {tuple(t.shape)}"
            )
        B = self.batch
        s = (self.sign * t.to(self.lo.dtype)).expand(B, -1)  # the solve's own time
        Q = s.shape[1]
        sd = s.detach()
        lo = torch.minimum(self.lo, self.hi)[:, None]
        hi = torch.maximum(self.lo, self.hi)[:, None]
        slack = 8 * torch.finfo(sd.dtype).eps * torch.maximum(lo.abs(), hi.abs()).clamp_min(1)
        outside = (sd < lo - slack) | (sd > hi + slack)
        if bool(outside.any()):
            b, q = (int(i) for i in outside.nonzero()[0])
            tb = t if t.ndim == 1 else t[b]
            a, z = sorted((self.sign * float(self.lo[b]), self.sign * float(self.hi[b])))
            raise ValueError(
                f"Solution.evaluate: t = {float(tb[q])} (query {q}) lies outside the solved "
                f"span [{a}, {z}] of sample {b}"
            )
        if self.n == 0:
            raise ValueError("Solution.evaluate: the solve took no step (a single output time)")
        S = self.n
        idx = torch.arange(S, device=sd.device)[:, None].expand(S, B)
        start = torch.where(self.taken, self.t0, torch.full_like(self.t0, -float("inf")))
        start = start.cummax(0).values.T.contiguous()  # (B, S), non-decreasing
        last_taken = torch.where(self.taken, idx, torch.full_like(idx, -1)).cummax(0).values.T
        pos = (torch.searchsorted(start, sd.contiguous(), right=True) - 1).clamp(0, S - 1)
        k = last_taken.gather(1, pos).clamp_min(0)  # (B, Q)
        rows = torch.arange(B, device=sd.device)[:, None].expand(B, Q)
        t0 = self.t0.T.gather(1, k)
        h = self.h.T.gather(1, k)
        end = t0 + h
        theta = torch.where(h > 0, (s - t0) / torch.where(h > 0, h, torch.ones_like(h)), 0.0)
        gathered = []
        for leaf in self.leaves:  # (S, lead, ...): lead is the batch, or 1 lane
            lead = rows if leaf.shape[1] == B else torch.zeros_like(rows)
            gathered.append(leaf[k, lead].reshape(B * Q, *leaf.shape[2:]))
        dense = _unflatten(self.spec, gathered)
        y = self.stepper.interpolate(dense, theta.reshape(B * Q))
        out = y[0].reshape(B, Q, *y[0].shape[1:])
        # a failed sample has no solution past its last step
        failed = (self.status != 0)[:, None] & (sd > end.detach() + slack)
        if bool(failed.any()):
            mask = failed.reshape(B, Q, *(1,) * (out.ndim - 2))
            out = out.masked_fill(mask, float("nan"))
        return out
