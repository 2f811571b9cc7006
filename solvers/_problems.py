"""Differential-equation problems: each knows how to evaluate its own vector field."""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch

from ._term import AbstractDerivativeTerm, ODETerm

__all__ = ["ODE", "AbstractProblem"]


class AbstractProblem(abc.ABC):
    """Base of all problems: the user-facing constructor of an equation's terms.

    :meth:`terms` is all that a stepper sees (see ``solvers._term``); :meth:`check` evaluates
    the equation once at the start and reports a wrong shape or dtype.
    """

    @abc.abstractmethod
    def terms(self):
        """The equation as terms (built once per problem)."""

    def parameters(self) -> tuple[torch.Tensor, ...]:
        """Tensors that receive gradients under the continuous adjoint (``backsolve``)."""
        return tuple(self.terms().parameters())

    def jump_times(self) -> torch.Tensor | None:
        """Times where the vector field is not smooth in ``t`` (``(J,)`` or ``(batch, J)``,
        sorted), which adaptive steps land on instead of crossing; ``None``: smooth."""
        return self.terms().jump_times()

    def vector_field(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``dy/dt`` at ``t`` (a number, ``(1,)`` or ``(batch,)``) for problems whose terms
        give it (every problem but an SDE and a DDE)."""
        terms = self.terms()
        if not isinstance(terms, AbstractDerivativeTerm):
            raise TypeError(
                f"{type(self).__name__} has no vector field dy/dt = f(t, y) to evaluate alone"
            )
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device).reshape(-1)
        return terms.derivative(t, (y,))[0]

    def check(self, t0: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """Evaluate the vector field once at the start (``t0``: ``(batch,)``) and check its
        shape. Returns the value, which the integrators reuse as their first stage."""
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


def check_jump_times(jumps) -> torch.Tensor:
    """``jumps`` as a ``(J,)`` or ``(batch, J)`` tensor, or a ValueError naming what is
    wrong with it."""
    if not isinstance(jumps, torch.Tensor):
        raise ValueError(f"jump_times must be a tensor, got {type(jumps).__name__}")
    if jumps.ndim not in (1, 2) or not jumps.is_floating_point():
        raise ValueError(
            "jump_times must be a floating-point tensor of shape (J,) or (batch, J), got "
            f"dtype {jumps.dtype} and shape {tuple(jumps.shape)}"
        )
    jd = jumps.detach()
    bad = (~torch.isfinite(jd)).nonzero()
    if bad.shape[0]:
        where = tuple(int(i) for i in bad[0])
        raise ValueError(f"jump_times must be finite; at index {where} it is {float(jd[where])}")
    if jd.shape[-1] > 1:
        bad = (jd.diff(dim=-1) < 0).nonzero()
        if bad.shape[0]:
            where = tuple(int(i) for i in bad[0])
            *row, k = where
            first = jd[(*row, k)], jd[(*row, k + 1)]
            raise ValueError(
                f"jump_times must be non-decreasing; at index {(*row, k + 1)} it goes from "
                f"{float(first[0])} to {float(first[1])}"
            )
    return jd


class ODE(AbstractProblem):
    """An ordinary differential equation ``dy/dt = f(t, y)``.

    Args:
        f: the vector field. It is called as ``f(t, y)`` with ``y`` of shape
            ``(batch, *state)`` and ``t`` a ``(batch, 1, ..., 1)`` tensor (one dimension
            per state dimension) holding each sample's current time, so that it broadcasts
            against ``y`` (samples may be at different times: adaptive steps and per-sample
            grids are per sample). It returns ``dy/dt`` with the shape of ``y``. When ``f``
            is an ``nn.Module`` its parameters receive gradients under every adjoint.
        jump_times: times where ``f`` is not smooth in ``t`` (a forcing that switches, an
            input held between observations), ``(J,)`` or ``(batch, J)``, non-decreasing.
            No step crosses them: adaptive steps land on them, fixed steps and the backward
            steps of ``backsolve`` split the output intervals at them. At a jump ``f`` is
            evaluated from the left by the step that ends there and at the jump itself by
            the step that starts there.
    """

    def __init__(
        self,
        f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        jump_times: torch.Tensor | None = None,
    ):
        if not callable(f):
            raise TypeError(f"ODE: f must be callable as f(t, y), got {type(f).__name__}")
        self.f = f
        self._jumps = None if jump_times is None else check_jump_times(jump_times)
        self._terms = ODETerm(f, self._jumps)

    def terms(self):
        return self._terms

    def check(self, t0, y0):
        if self._jumps is not None and self._jumps.ndim == 2:
            if self._jumps.shape[0] != y0.shape[0]:
                raise ValueError(
                    f"ODE: jump_times has batch {self._jumps.shape[0]} but y0 has batch "
                    f"{y0.shape[0]}"
                )
        return super().check(t0, y0)

    def __repr__(self):
        return f"ODE({self.f!r})"
