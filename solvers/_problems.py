"""Differential-equation problems: each knows how to evaluate its own vector field."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ODE", "AbstractProblem"]


class AbstractProblem:
    """Base of all problems. A problem exposes ``vector_field(t, y)`` for the integrators,
    ``parameters()`` for the continuous adjoint, ``check(t0, y0)``, and ``integrate``, which
    runs the native forward solve (by default: the method's own loop)."""

    #: whether BacksolveAdjoint can treat the problem as ``dy/dt = vector_field(t, y)``
    supports_backsolve = True

    def vector_field(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def parameters(self) -> tuple[torch.Tensor, ...]:
        return ()

    def integrate(self, cfg, y0, t, f0, *, checkpoint_every=None):
        """The native forward solve over a ``(lanes, T)`` grid; returns an ``Outcome``."""
        return cfg.method.integrate(self, cfg, y0, t, f0, checkpoint_every=checkpoint_every)

    def check(self, t0: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """Evaluate the vector field once at the start and check its shape.

        Returns the value, which the integrators reuse as their first stage.
        """
        out = self.vector_field(t0, y0)
        name = type(self).__name__
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"{name}: the vector field must return a tensor, got {type(out).__name__}"
            )
        if out.shape != y0.shape:
            raise ValueError(
                f"{name}: the vector field at t0 returned shape {tuple(out.shape)}; "
                f"expected {tuple(y0.shape)}, the shape of y0"
            )
        if out.dtype != y0.dtype:
            raise ValueError(
                f"{name}: the vector field returned dtype {out.dtype}; expected {y0.dtype}, "
                "the dtype of y0"
            )
        return out


class ODE(AbstractProblem):
    """An ordinary differential equation ``dy/dt = f(t, y)``.

    Args:
        f: the vector field. It is called as ``f(t, y)`` with ``y`` of shape
            ``(batch, *state)`` and ``t`` a ``(batch,)`` tensor holding each sample's
            current time (samples may be at different times: adaptive steps and per-sample
            grids are per sample). It returns ``dy/dt`` with the shape of ``y``. When ``f``
            is an ``nn.Module`` its parameters receive gradients under every adjoint.
    """

    def __init__(self, f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        if not callable(f):
            raise TypeError(f"ODE: f must be callable as f(t, y), got {type(f).__name__}")
        self.f = f

    def vector_field(self, t, y):
        return self.f(t, y)

    def parameters(self):
        if isinstance(self.f, nn.Module):
            return tuple(p for p in self.f.parameters() if p.requires_grad)
        return ()

    def __repr__(self):
        return f"ODE({self.f!r})"
