"""Controlled differential equations: ``dz = f(t, z) dX(t)``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._interpolation import AbstractPath
from ._problems import AbstractProblem
from ._term import ControlTerm, broadcast_time

__all__ = ["CDE"]


class CDE(AbstractProblem):
    """A controlled differential equation ``dz = f(t, z) dX(t)`` (Kidger et al., Neural
    controlled differential equations for irregular time series, NeurIPS 2020).

    It is solved as the ODE ``dz/dt = f(t, z) · dX/dt(t)``, so every Runge–Kutta method and
    every adjoint applies. Because the control's derivative may jump at the knots of a
    ``linear`` or ``rectilinear`` path, fixed-step solves whose steps land on the knots (pass
    the observation times as ``t``) or the smooth ``hermite`` / ``natural_cubic`` paths give
    the most accurate results.

    Args:
        f: the vector field, called as ``f(t, z)`` (torchcde's convention) with ``z`` of
            shape ``(batch, *state)`` and ``t`` of shape ``(batch, 1, ..., 1)`` (it broadcasts
            against ``z``); it returns ``(batch, *state, channels)``. When ``f`` is an
            ``nn.Module`` its parameters receive gradients under every adjoint.
        path: the control ``X`` (e.g. from :func:`solvers.interpolate`), with the same batch
            as ``z``. Its tensors that require grad (e.g. built from ``values`` that require
            grad) also receive gradients under ``adjoint="backsolve"``.
    """

    def __init__(self, f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], path: AbstractPath):
        if not callable(f):
            raise TypeError(f"CDE: f must be callable as f(t, z), got {type(f).__name__}")
        if not isinstance(path, AbstractPath):
            raise TypeError(
                "CDE: path must be a path such as solvers.interpolate(values, times) returns, "
                f"got {type(path).__name__}"
            )
        self.f = f
        self.path = path
        self._terms = ControlTerm(f, path)

    def terms(self):
        return self._terms

    def check(self, t0, y0):
        dx = self.path.derivative(t0[0])  # one time: the path's own batch, checked here
        if dx.shape[0] != y0.shape[0]:
            raise ValueError(
                f"CDE: the path has batch {dx.shape[0]} but y0 has batch {y0.shape[0]}"
            )
        if dx.dtype != y0.dtype:
            raise ValueError(
                f"CDE: the path has dtype {dx.dtype}; expected {y0.dtype}, the dtype of y0"
            )
        fz = self.f(broadcast_time(t0, y0), y0)
        expected = (*y0.shape, dx.shape[1])
        if not isinstance(fz, torch.Tensor) or fz.shape != expected:
            got = tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__
            raise ValueError(
                f"CDE: f(t, z) must have shape (batch, *state, channels); expected {expected}, "
                f"got {got}"
            )
        return super().check(t0, y0)

    def __repr__(self):
        return f"CDE({self.f!r}, {self.path!r})"
