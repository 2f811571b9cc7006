"""Terms: what an equation is, and how to evaluate it.

A problem (``ODE``, ``CDE``, ``SDE``, ``DDE``, ``HamiltonianODE``) is the user-facing
constructor; :meth:`~solvers.AbstractProblem.terms` turns it into terms, which are all that a
stepper sees. Inside the loop a state is a tuple of tensors ``(batch, ...)`` and a time is a
``(lanes,)`` tensor (one lane per sample, or one lane shared by the batch); terms hand the user's
functions ``t`` shaped to broadcast against the state, ``(batch, 1, ..., 1)``, so that a
torchdiffeq-style ``-torch.sin(t) * y`` is right as written.

The structures, after diffrax's ``_term.py``:

* :class:`ODETerm` ``f(t, y)``: ``dy = f(t, y) dt``;
* :class:`ControlTerm` ``f(t, z)`` against a path ``X``: ``dz = f(t, z) dX`` (a CDE), solved
  through ``dz/dt = f(t, z) dX/dt``;
* :class:`BrownianTerm` ``g(t, y)`` against a Brownian motion: an SDE's diffusion;
* :class:`MultiTerm` ``(drift, diffusion)``: an SDE;
* :class:`DelayTerm` ``f(t, y, y(t - τ))`` reading a history;
* :class:`PartitionedTerm` ``(dp, dq)``: a separable Hamiltonian system, state ``(p, q)``
  side by side.

Terms whose :meth:`AbstractDerivativeTerm.derivative` gives ``dy/dt`` are what Runge–Kutta
steppers accept; the others declare their own structure.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "AbstractDerivativeTerm",
    "AbstractTerm",
    "BrownianTerm",
    "ControlTerm",
    "DelayTerm",
    "FunctionTerm",
    "MultiTerm",
    "ODETerm",
    "PartitionedTerm",
    "broadcast_time",
]

State = tuple[torch.Tensor, ...]


def broadcast_time(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A ``(lanes,)`` time (one lane, or one per sample) as ``(batch, 1, ..., 1)``; a time
    already so shaped (a planned loop's stage times) as it is."""
    if t.ndim == y.ndim:
        return t
    batch = y.shape[0]
    return t.expand(batch).reshape((batch,) + (1,) * (y.ndim - 1))


def sample_time(t: torch.Tensor, batch: int) -> torch.Tensor:
    """A ``(lanes,)`` time as ``(batch,)``: what a path is queried with."""
    return t.expand(batch)


def module_parameters(*fns) -> tuple[torch.Tensor, ...]:
    """The parameters that require grad of those of ``fns`` that are ``nn.Module`` s, each once."""
    seen, out = set(), []
    for fn in fns:
        if isinstance(fn, nn.Module):
            for p in fn.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return tuple(out)


class AbstractTerm(abc.ABC):
    """A piece of an equation. Final subclasses say what they compute."""

    @abc.abstractmethod
    def parameters(self) -> tuple[torch.Tensor, ...]:
        """The tensors the term depends on that may receive gradients (continuous adjoints)."""

    def jump_times(self) -> torch.Tensor | None:
        """Times where the term is not smooth in ``t`` (``(J,)`` or ``(batch, J)``); ``None``."""
        return None

    #: whether :meth:`with_tensors` rebuilds the term from other tensors (a CDE's path)
    rebuilds_from_tensors = False

    #: whether the term keeps a record of the solution's past (a DDE's :class:`DelayTerm`):
    #: the loop then tells it which step comes next (``step_begins``), gives it every step
    #: taken (``accepted``) and keeps steps no longer than its ``max_step``
    keeps_history = False

    def with_tensors(self, replace: dict) -> AbstractTerm:
        """The same term computed from other tensors (``{id(old): new}``) where it holds
        computed tensors of its own (a CDE's path); the term itself otherwise."""
        return self


class AbstractDerivativeTerm(AbstractTerm):
    """A term that gives ``dy/dt`` as a function of ``(t, y)``: what Runge–Kutta methods
    integrate."""

    @abc.abstractmethod
    def derivative(self, t: torch.Tensor, y: State) -> State:
        """``dy/dt`` at the ``(lanes,)`` time ``t`` and the tuple state ``y``."""


class ODETerm(AbstractDerivativeTerm):
    """``dy = f(t, y) dt`` with a single-tensor state; ``f`` gets ``t`` as ``(batch, 1, ...)``."""

    def __init__(self, f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], jumps=None):
        self.f, self._jumps = f, jumps

    def derivative(self, t, y):
        return (self.f(broadcast_time(t, y[0]), y[0]),)

    def parameters(self):
        return module_parameters(self.f)

    def jump_times(self):
        return self._jumps


class FunctionTerm(AbstractDerivativeTerm):
    """``dy/dt = fn(t, y)`` on tuple states and ``(lanes,)`` times: the solvers' own systems
    (the continuous adjoint's augmented state, a problem with jump times).

    ``reads``: how many leading components of the state ``fn`` reads (``None``: all); the
    others are quadratures (integrals of what ``fn`` returns for them), which Runge–Kutta
    steppers then combine only at the end of a step."""

    def __init__(self, fn, params: tuple[torch.Tensor, ...] = (), jumps=None, reads=None):
        self.fn, self._params, self._jumps, self.reads = fn, params, jumps, reads

    def derivative(self, t, y):
        return self.fn(t, y)

    def parameters(self):
        return self._params

    def jump_times(self):
        return self._jumps


class ControlTerm(AbstractDerivativeTerm):
    """``dz = f(t, z) dX(t)``: ``f`` returns ``(batch, *state, channels)`` and ``X`` is a path
    with ``channels`` channels. Solved as ``dz/dt = f(t, z) · dX/dt(t)`` (so every Runge–Kutta
    method applies); the path's knots are jump times."""

    def __init__(self, f, path):
        self.f, self.path = f, path

    def vf(self, t, z: torch.Tensor) -> torch.Tensor:
        return self.f(broadcast_time(t, z), z)

    def derivative(self, t, y):
        z = y[0]
        dx = self.path.derivative(sample_time(t, z.shape[0]))  # (batch, channels)
        fz = self.vf(t, z)
        B, C = dx.shape
        return (torch.bmm(fz.reshape(B, -1, C), dx[:, :, None]).reshape(z.shape),)

    def parameters(self):
        own = module_parameters(self.f)
        return tuple(p for p in (*own, *self.path.tensors()) if p.requires_grad)

    def jump_times(self):
        return self.path.jump_times

    rebuilds_from_tensors = True

    def with_tensors(self, replace):
        return ControlTerm(self.f, self.path.with_tensors(replace))


class BrownianTerm(AbstractTerm):
    """An SDE's diffusion ``g(t, y)`` against a Brownian motion ``W`` (``(batch, m)``):
    ``g ΔW`` is elementwise for a ``(batch, d)`` diffusion (diagonal noise) and a matrix
    product for a ``(batch, d, m)`` one."""

    def __init__(self, g, noise: str):
        self.g, self.noise = g, noise

    def vf(self, t, y: torch.Tensor) -> torch.Tensor:
        return self.g(broadcast_time(t, y), y)

    @staticmethod
    def prod(g: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        return g * dw if g.ndim == 2 else (g @ dw.unsqueeze(-1)).squeeze(-1)

    def parameters(self):
        return module_parameters(self.g)


class MultiTerm(AbstractTerm):
    """A sum of terms, ``dy = Σ term_i``: an SDE is ``MultiTerm(ODETerm(drift),
    BrownianTerm(diffusion))``, with its type (``ito`` or ``stratonovich``)."""

    def __init__(self, drift: ODETerm, diffusion: BrownianTerm, sde_type: str):
        self.drift, self.diffusion, self.sde_type = drift, diffusion, sde_type
        self.terms = (drift, diffusion)

    @property
    def noise(self) -> str:
        return self.diffusion.noise

    def f(self, t, y: torch.Tensor) -> torch.Tensor:
        """The drift at the ``(lanes,)`` time ``t``."""
        return self.drift.f(broadcast_time(t, y), y)

    def g(self, t, y: torch.Tensor) -> torch.Tensor:
        """The diffusion at the ``(lanes,)`` time ``t``."""
        return self.diffusion.vf(t, y)

    def derivative(self, t, y):
        """The drift alone, as a tuple state: what the first-step heuristic of an adaptive
        solve probes (the noise has no time derivative)."""
        return (self.f(t, y[0]),)

    def parameters(self):
        seen, out = set(), []
        for term in self.terms:
            for p in term.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return tuple(out)


class DelayTerm(AbstractDerivativeTerm):
    """``dy/dt = f(t, y(t), [y(t - τ_1), ..., y(t - τ_K)])`` with ``y = history`` before the
    start: a delay differential equation, integrated by the one loop on Runge–Kutta tableaus.

    The problem's term holds the equation; :meth:`begin` binds a copy of it to a fresh
    history for one solve (``_dde.History``: the initial function, then one polynomial per
    step, filled from each step's dense information), which :meth:`derivative` reads the
    delayed values from. The loop calls the hooks of ``keeps_history`` on the bound copy.
    """

    keeps_history = True

    def __init__(self, f, delays, history, params=(), _past=None):
        self.f, self.delays, self.history, self._params = f, delays, history, params
        self._past = _past  # the solve's History (bound copies only)

    def parameters(self):
        return self._params

    def begin(self, cfg, y0: torch.Tensor, t: torch.Tensor):
        """A copy bound to a fresh history for one solve of ``cfg.method`` over the
        ``(lanes, T)`` grid ``t`` from ``y0``; returns ``(term, schedule, jumps)``: the
        planned steps of a fixed-step solve (on the breakpoints, none longer than the
        smallest delay) or the breakpoints as jump times of an adaptive one."""
        from ._dde import begin

        return begin(self, cfg, y0, t)

    def bound(self, past) -> DelayTerm:
        return DelayTerm(self.f, self.delays, self.history, self._params, past)

    def _solve_history(self):
        if self._past is None:
            raise TypeError(
                "DelayTerm: the delayed values come from a solve's history; this term is not "
                "bound to one (DelayTerm.begin)"
            )
        return self._past

    def derivative(self, t, y):
        return self._solve_history().derivative(t, y)

    @property
    def max_step(self) -> float:
        """The longest step: the smallest delay."""
        return self._solve_history().tau_min

    def step_begins(self, n: int, t0: torch.Tensor, t1: torch.Tensor) -> None:
        """The loop takes step ``n`` from ``t0`` to ``t1`` (``(lanes,)``) next."""
        self._solve_history().step_begins(n, t0, t1)

    def accepted(self, n: int, t0, t1, y1, dense, accept) -> None:
        """Step ``n`` from ``t0`` to ``t1`` ended at ``y1``; ``dense`` is the stepper's dense
        information and ``accept`` (``(lanes,)`` bool, ``None``: all) the lanes that keep it."""
        self._solve_history().accepted(n, t0, t1, y1, dense, accept)


class PartitionedTerm(AbstractDerivativeTerm):
    """A separable Hamiltonian system ``dp/dt = dp(t, q)``, ``dq/dt = dq(t, p)`` on a
    ``(batch, 2n)`` state, ``p`` then ``q``; or, when only ``full`` is given, any
    ``dy/dt = full(t, y)`` (the general ``J ∇H`` form), which splittings refuse."""

    def __init__(self, dp=None, dq=None, full=None, params=(), form="a non-separable system"):
        self._dp, self._dq, self._full, self._params = dp, dq, full, params
        self.form = form
        self.jumps = None  # jump times of a forcing, set by HamiltonianODE.with_jump_times

    def jump_times(self):
        return self.jumps

    @property
    def separable(self) -> bool:
        return self._dp is not None

    def dp(self, t, q: torch.Tensor) -> torch.Tensor:
        return self._dp(broadcast_time(t, q), q)

    def dq(self, t, p: torch.Tensor) -> torch.Tensor:
        return self._dq(broadcast_time(t, p), p)

    def derivative(self, t, y):
        y = y[0]
        if not self.separable:
            return (self._full(broadcast_time(t, y), y),)
        n = y.shape[1] // 2
        return (torch.cat([self.dp(t, y[:, n:]), self.dq(t, y[:, :n])], dim=1),)

    def parameters(self):
        return self._params
