"""Solves backwards in time: the problem in ``s = -t``, solved forwards by the one loop.

``dy/dt = f(t, y)`` from ``t0`` down to ``t1 < t0`` is ``dy/ds = -f(-s, y)`` from ``-t0`` up
to ``-t1``. Every term that gives ``dy/dt`` (ODE, CDE, Hamiltonian, the user's own) reverses
this way, so every method, controller and adjoint applies unchanged; a separable Hamiltonian
system stays separable, so the symplectic methods apply too. SDEs and DDEs are refused: the
time reversal of an SDE is not an SDE of the same form, and a delay equation looks into the
past, which a backwards solve has not computed.
"""

from __future__ import annotations

import torch

from ._problems import AbstractProblem
from ._term import AbstractDerivativeTerm, DelayTerm, PartitionedTerm

__all__ = ["TimeReversed"]


def _left(s: torch.Tensor) -> torch.Tensor:
    """``t = -s`` one ulp towards smaller ``t``: right-continuous pieces (paths, held
    inputs) are then read from the side a backwards step lies on (a step that starts on a
    jump reads the piece before it; the stage at its end, nudged left in ``s``, reads the
    piece after it)."""
    t = -s
    return torch.nextafter(t, torch.full_like(t, -float("inf")))


class ReversedTerm(AbstractDerivativeTerm):
    """``dy/ds = -f(-s, y)`` for a term that gives ``dy/dt = f(t, y)``."""

    def __init__(self, term: AbstractDerivativeTerm):
        self.term = term
        self._nudge = term.jump_times() is not None

    def derivative(self, s, y):
        t = _left(s) if self._nudge else -s
        return tuple(-d for d in self.term.derivative(t, y))

    def parameters(self):
        return self.term.parameters()

    def jump_times(self):
        jumps = self.term.jump_times()
        return None if jumps is None else (-jumps.detach()).flip(-1)

    @property
    def rebuilds_from_tensors(self):
        return self.term.rebuilds_from_tensors

    def with_tensors(self, replace):
        return ReversedTerm(self.term.with_tensors(replace))


def _reversed_partitioned(term: PartitionedTerm) -> PartitionedTerm:
    if term.separable:
        dp, dq = term._dp, term._dq
        return PartitionedTerm(
            dp=lambda s, q: -dp(-s, q),
            dq=lambda s, p: -dq(-s, p),
            params=term.parameters(),
            form=term.form,
        )
    full = term._full
    return PartitionedTerm(full=lambda s, y: -full(-s, y), params=term.parameters(), form=term.form)


class TimeReversed(AbstractProblem):
    """``problem`` in reversed time ``s = -t`` (what ``solve`` builds for a decreasing
    ``t``). Its name for the backends' tables is the original problem's."""

    def __init__(self, problem: AbstractProblem):
        terms = problem.terms()
        kind = type(problem).__name__
        if isinstance(terms, PartitionedTerm):
            reversed_terms = _reversed_partitioned(terms)
        elif isinstance(terms, AbstractDerivativeTerm) and not isinstance(terms, DelayTerm):
            reversed_terms = ReversedTerm(terms)
        else:
            raise ValueError(
                f"a {kind} problem is solved forwards in time only; t must be increasing "
                "(solves backwards in time handle problems with dy/dt = f(t, y): ODE, CDE, "
                "HamiltonianODE)"
            )
        self.problem, self._terms, self.kind = problem, reversed_terms, kind

    def terms(self):
        return self._terms

    def check(self, t0, y0):
        # the original problem's checks and messages, at the original time
        return -self.problem.check(-t0, y0)

    def __repr__(self):
        return f"TimeReversed({self.problem!r})"
