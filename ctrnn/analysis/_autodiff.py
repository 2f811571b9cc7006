"""Jacobians of row-wise maps, by reverse mode (whole Jacobian) or forward mode (a frame).

Every map here takes a batch of states ``(batch, d)`` and treats its rows independently, as a
cell or a vector field does. That lets a Jacobian be had cheaply in two ways:

- reverse mode: repeat each row ``d`` times, run the map once on the ``batch · d`` rows and
  pull back the identity in one backward pass: row ``i`` of each sample's Jacobian comes back
  in its ``i``-th copy. Cost: one forward and one backward pass on ``d`` times the batch.
- forward mode: push a frame of ``k`` tangent columns through the map with
  ``torch.func.jvp`` under ``torch.func.vmap``: cost proportional to ``k``, the better choice
  when ``k ≪ d``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = ["expand_rows", "jacobian", "push_frame"]


def expand_rows(t: torch.Tensor, rows: int, owner: str) -> torch.Tensor:
    """``t (batch, ...)`` repeated row by row to ``rows`` rows (``rows`` a multiple of batch).

    The maps of this package see ``batch · r`` rows when a Jacobian is taken in reverse
    mode; per-sample data (an input sequence, noise) follows its sample's copies.
    """
    b = t.shape[0]
    if b == rows:
        return t
    if b == 1:
        return t.expand(rows, *t.shape[1:])
    if rows % b:
        raise ValueError(
            f"{owner}: the state has {rows} rows but the driving data has batch {b}; the "
            f"batch of the initial states must equal the batch of the inputs (or one of them "
            f"be 1)"
        )
    return t.repeat_interleave(rows // b, dim=0)


def _check_output(y, x: torch.Tensor, owner: str) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"{owner}: the map must send states of shape (batch, d) = {tuple(x.shape)} to the "
            f"same shape, got {got}"
        )
    return y


def jacobian(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, owner: str = "jacobian"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(x), J)`` with ``J[b] = ∂fn(x)[b] / ∂x[b]``, ``(batch, d, d)``, by reverse mode.

    ``fn`` maps ``(rows, d)`` to ``(rows, d)`` row by row. Nothing is kept for a later
    backward pass: both results are detached.
    """
    B, d = x.shape
    with torch.enable_grad():
        xr = x.detach().repeat_interleave(d, dim=0).requires_grad_(True)
        y = _check_output(fn(xr), xr, owner)
        eye = torch.eye(d, dtype=y.dtype, device=y.device).repeat(B, 1)
        if not y.requires_grad:  # the map ignores its state: a zero Jacobian
            return y.detach().reshape(B, d, d)[:, 0], torch.zeros(
                B, d, d, dtype=x.dtype, device=x.device
            )
        (rows,) = torch.autograd.grad(y, xr, eye, allow_unused=True)
    if rows is None:
        rows = torch.zeros_like(xr)
    return y.detach().reshape(B, d, d)[:, 0], rows.reshape(B, d, d)


def push_frame(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    frame: torch.Tensor,
    owner: str = "push_frame",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(x), J frame)`` for ``frame (batch, d, k)``, by forward mode (``torch.func.jvp``).

    Randomness inside ``fn`` is the same for every column (``vmap(randomness="same")``), so
    a noisy map is differentiated along one noise realisation.
    """

    def column(v):
        return torch.func.jvp(fn, (x,), (v,))

    with torch.no_grad(), warnings.catch_warnings():
        # torch's first forward-mode call scripts its jvp decompositions with the deprecated
        # torch.jit.script; that warning concerns torch, not the caller
        warnings.filterwarnings("ignore", ".*torch.jit.script", DeprecationWarning)
        y, pushed = torch.func.vmap(column, in_dims=2, out_dims=(0, 2), randomness="same")(frame)
    return _check_output(y[0], x, owner), pushed
