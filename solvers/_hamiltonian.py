"""Hamiltonian systems and the symplectic splitting methods that solve them.

The state is ``(batch, 2n)``: momenta first, positions second, ``p = y[:, :n]`` and
``q = y[:, n:]``. The problem is

    dp/dt = -∂H/∂q,    dq/dt = ∂H/∂p,    i.e.  dy/dt = J ∇H  with  J = [[0, -I], [I, 0]].

A symplectic method is a :class:`SplittingScheme` (a sequence of kick and drift coefficients,
validated when built, like a Butcher tableau) driven by one generic stepper,
:class:`SymplecticSplitting`. The schemes live in ``_methods/`` (one small file each) and are
registered here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ._integrate import Outcome, _gather_outputs, checkpoint
from ._methods import ExplicitRungeKutta, register_method
from ._problems import AbstractProblem
from ._rk import lane_view

__all__ = ["HamiltonianODE", "SplittingScheme", "SymplecticSplitting"]

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Scalar = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class HamiltonianODE(AbstractProblem):
    """A Hamiltonian system on the state ``y = (p, q)`` of shape ``(batch, 2n)``.

    The default constructor takes a *separable* system ``H(t, p, q) = T(t, p) + V(t, q)``
    through its two halves::

        dp/dt = dp(t, q) = -∂H/∂q      (the force: depends on q only)
        dq/dt = dq(t, p) =  ∂H/∂p      (the velocity: depends on p only)

    The symplectic methods (``semi_implicit_euler``, ``leapfrog``, ``yoshida4``) need this
    separable form. Two more constructors: :meth:`from_hamiltonian` (separable, gradients
    by autograd from ``T`` and ``V``) and :meth:`from_gradient` (general ``J ∇H``, for the
    Runge–Kutta methods only). Every explicit Runge–Kutta method solves any of the three
    through :meth:`vector_field`, and the backsolve adjoint works on it.

    Args:
        dp: ``dp(t, q) -> (batch, n)``, minus the gradient of ``H`` in ``q``; ``t`` is a
            ``(batch,)`` tensor of each sample's current time, ``q`` is ``(batch, n)``.
        dq: ``dq(t, p) -> (batch, n)``, the gradient of ``H`` in ``p``.

    When a function is an ``nn.Module`` its parameters receive gradients under every adjoint.
    """

    def __init__(self, dp: Field, dq: Field):
        for name, fn in (("dp", dp), ("dq", dq)):
            if not callable(fn):
                raise TypeError(
                    f"HamiltonianODE: {name} must be callable as {name}(t, "
                    f"{'q' if name == 'dp' else 'p'}), got {type(fn).__name__}"
                )
        self._dp, self._dq = dp, dq
        self.grad_H: Field | None = None
        self.J: torch.Tensor | None = None
        self._modules: tuple = (dp, dq)
        self._form = "HamiltonianODE(dp, dq)"

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def from_hamiltonian(cls, kinetic: Scalar, potential: Scalar) -> HamiltonianODE:
        """A separable system ``H(t, p, q) = kinetic(t, p) + potential(t, q)``.

        Both functions return one value per sample, shape ``(batch,)``; their gradients are
        taken with autograd (``dp = -∂V/∂q``, ``dq = ∂T/∂p``), keeping the graph when
        gradients are being recorded, so the direct and checkpoint adjoints differentiate
        through them and the backsolve adjoint takes second derivatives. Plain functions
        may capture tensors that need gradients, so their graph is always kept while
        gradients are recorded: solve under ``torch.no_grad()`` for inference.
        """
        for name, fn in (("kinetic", kinetic), ("potential", potential)):
            if not callable(fn):
                raise TypeError(
                    f"HamiltonianODE.from_hamiltonian: {name} must be callable as "
                    f"{name}(t, {'p' if name == 'kinetic' else 'q'}), got {type(fn).__name__}"
                )

        def dp(t, q):
            return -_gradient(potential, t, q, "potential")

        def dq(t, p):
            return _gradient(kinetic, t, p, "kinetic")

        self = cls(dp, dq)
        self._modules = (kinetic, potential)
        self._form = "HamiltonianODE.from_hamiltonian(kinetic, potential)"
        return self

    @classmethod
    def from_gradient(cls, grad_H: Field, J: torch.Tensor | None = None) -> HamiltonianODE:
        """The general form ``dy/dt = J ∇H(t, y)``, not necessarily separable.

        Args:
            grad_H: ``grad_H(t, y) -> (batch, 2n)``, the gradient of ``H`` in ``y = (p, q)``.
            J: a skew-symmetric ``(2n, 2n)`` matrix. Default: the canonical
                ``[[0, -I], [I, 0]]``, which gives ``dp/dt = -∂H/∂q``, ``dq/dt = ∂H/∂p``.

        Raises:
            ValueError: when ``J`` is not a square matrix or not skew-symmetric (the message
                gives the largest ``|J + Jᵀ|``).

        Only the Runge–Kutta methods solve this form; the symplectic methods need the
        separable one.
        """
        if not callable(grad_H):
            raise TypeError(
                "HamiltonianODE.from_gradient: grad_H must be callable as grad_H(t, y), got "
                f"{type(grad_H).__name__}"
            )
        if J is not None:
            J = _check_skew(J)

        self = cls.__new__(cls)
        self._dp = self._dq = None
        self.grad_H, self.J = grad_H, J
        self._modules = (grad_H,)
        self._form = "HamiltonianODE.from_gradient(grad_H, J)"
        return self

    # -- evaluation -----------------------------------------------------------------------

    @property
    def separable(self) -> bool:
        """Whether the system is given by its two halves ``dp(t, q)`` and ``dq(t, p)``."""
        return self._dp is not None

    def dp(self, t: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``dp/dt = -∂H/∂q`` at ``(t, q)`` (separable form only)."""
        self._need_separable("dp")
        return self._dp(t, q)

    def dq(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``dq/dt = ∂H/∂p`` at ``(t, p)`` (separable form only)."""
        self._need_separable("dq")
        return self._dq(t, p)

    def _need_separable(self, what: str) -> None:
        if not self.separable:
            raise ValueError(
                f"HamiltonianODE.{what}: this problem was built with from_gradient and has no "
                "separable halves; use vector_field(t, y)"
            )

    def vector_field(self, t, y):
        """The whole ``dy/dt`` of shape ``(batch, 2n)``, momenta first."""
        if self.separable:
            n = y.shape[1] // 2
            return torch.cat([self._dp(t, y[:, n:]), self._dq(t, y[:, :n])], dim=1)
        g = self.grad_H(t, y)
        if self.J is None:
            n = y.shape[1] // 2
            return torch.cat([-g[:, n:], g[:, :n]], dim=1)
        return g @ self.J.to(g).T

    def parameters(self):
        seen, out = set(), []
        for fn in self._modules:
            if isinstance(fn, nn.Module):
                for p in fn.parameters():
                    if p.requires_grad and id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
        return tuple(out)

    def check(self, t0, y0):
        if y0.ndim != 2 or y0.shape[1] % 2 != 0:
            raise ValueError(
                "HamiltonianODE: the state must have shape (batch, 2n), momenta p = y[:, :n] "
                f"then positions q = y[:, n:]; got y0 of shape {tuple(y0.shape)}"
            )
        n = y0.shape[1] // 2
        if self.separable:
            halves = []
            for name, fn, x in (("dp", self._dp, y0[:, n:]), ("dq", self._dq, y0[:, :n])):
                out = fn(t0, x)
                if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise ValueError(
                        f"HamiltonianODE: {name} at t0 returned {got}; expected shape "
                        f"{tuple(x.shape)}, (batch, n) with n = {n}"
                    )
                if out.dtype != y0.dtype:
                    raise ValueError(
                        f"HamiltonianODE: {name} returned dtype {out.dtype}; expected "
                        f"{y0.dtype}, the dtype of y0"
                    )
                halves.append(out)
            return torch.cat(halves, dim=1)
        if self.J is not None and self.J.shape[0] != y0.shape[1]:
            raise ValueError(
                f"HamiltonianODE: J has shape {tuple(self.J.shape)} but the state has "
                f"2n = {y0.shape[1]} entries; expected J of shape ({y0.shape[1]}, {y0.shape[1]})"
            )
        return super().check(t0, y0)

    def __repr__(self):
        return self._form


def _gradient(fn: Scalar, t: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """``∂ fn(t, x) / ∂x`` per sample, keeping the graph when gradients are being recorded.

    The graph is dropped when nothing can need it: no input requires a gradient and ``fn``
    is an ``nn.Module`` without trainable parameters (a plain function may capture tensors
    that require gradients, so its graph is kept).
    """
    keep = torch.is_grad_enabled() and (
        x.requires_grad
        or t.requires_grad
        or not isinstance(fn, nn.Module)
        or any(p.requires_grad for p in fn.parameters())
    )
    with torch.enable_grad():
        x_ = x if x.requires_grad else x.detach().requires_grad_(True)
        value = fn(t, x_)
        if not isinstance(value, torch.Tensor) or value.shape != x.shape[:1]:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"HamiltonianODE.from_hamiltonian: {name} returned {got}; expected one value "
                f"per sample, shape ({x.shape[0]},)"
            )
        (g,) = torch.autograd.grad(value.sum(), x_, create_graph=keep)
    return g if keep else g.detach()


def _check_skew(J) -> torch.Tensor:
    J = torch.as_tensor(J)
    if J.ndim != 2 or J.shape[0] != J.shape[1] or J.shape[0] % 2 != 0:
        raise ValueError(
            f"HamiltonianODE.from_gradient: J must be a square (2n, 2n) matrix, got shape "
            f"{tuple(J.shape)}"
        )
    if not J.is_floating_point():
        J = J.to(torch.get_default_dtype())
    Jd = J.detach()
    asym = float((Jd + Jd.T).abs().max())
    scale = max(1.0, float(Jd.abs().max()))
    if asym > 64 * torch.finfo(Jd.dtype).eps * scale:
        raise ValueError(
            f"HamiltonianODE.from_gradient: J must be skew-symmetric (J = -Jᵀ); "
            f"the largest |J + Jᵀ| is {asym:.3g}"
        )
    return J


ExplicitRungeKutta.accept_problem(HamiltonianODE)


# ---------------------------------------------------------------------------------------------
# Splitting methods

_TOL = 1e-12


@dataclass(frozen=True)
class SplittingScheme:
    """A splitting (composition) method for separable Hamiltonians, validated when built.

    One step of size ``h`` alternates kicks and drifts::

        p += kicks[0] h dp(t + τ h, q)
        q += drifts[0] h dq(t + (τ + drifts[0]/2) h, p);   τ += drifts[0]
        p += kicks[1] h dp(t + τ h, q)
        ...
        p += kicks[m] h dp(t + τ h, q)                      (τ = 1 here)

    ``τ`` is the fraction of the step the drifts have covered so far: kicks see the time the
    positions have reached, drifts the middle of their own sub-interval. Each sub-step is a
    shear in ``p`` or ``q`` alone, hence symplectic. Zero coefficients cost nothing. When the
    first and last kicks are both non-zero the last force of a step is the first of the next
    and is evaluated once.

    Args:
        name: the method's registry name.
        kicks: ``m + 1`` momentum coefficients; they sum to 1.
        drifts: ``m`` position coefficients; they sum to 1.
        order: the method's order.
        reference: where the method comes from.

    Raises:
        ValueError: when the lengths disagree or a set of coefficients does not sum to 1.
    """

    name: str
    kicks: tuple[float, ...]
    drifts: tuple[float, ...]
    order: int
    reference: str = ""

    def __post_init__(self):
        object.__setattr__(self, "kicks", tuple(float(v) for v in self.kicks))
        object.__setattr__(self, "drifts", tuple(float(v) for v in self.drifts))
        if not self.drifts or len(self.kicks) != len(self.drifts) + 1:
            raise ValueError(
                f"splitting scheme {self.name!r}: {len(self.drifts)} drifts need "
                f"{len(self.drifts) + 1} kicks (one before each drift and one after the last), "
                f"got {len(self.kicks)}"
            )
        for kind, coeffs in (("kicks", self.kicks), ("drifts", self.drifts)):
            if not all(math.isfinite(c) for c in coeffs):
                raise ValueError(f"splitting scheme {self.name!r}: {kind} must be finite")
            if abs(sum(coeffs) - 1.0) > _TOL:
                raise ValueError(
                    f"splitting scheme {self.name!r}: {kind} sum to {sum(coeffs)!r}, not 1"
                )
        if isinstance(self.order, bool) or not (isinstance(self.order, int) and self.order > 0):
            raise ValueError(
                f"splitting scheme {self.name!r}: order must be a positive integer, "
                f"got {self.order!r}"
            )

    @property
    def fsal(self) -> bool:
        """Whether the last force of a step is reused as the first of the next."""
        return self.kicks[0] != 0.0 and self.kicks[-1] != 0.0

    @property
    def evaluations(self) -> int:
        """Full vector-field evaluations per step: the larger of the force and velocity counts."""
        forces = sum(k != 0.0 for k in self.kicks) - self.fsal
        velocities = sum(d != 0.0 for d in self.drifts)
        return max(forces, velocities)


class SymplecticSplitting:
    """A fixed-step symplectic method for separable :class:`HamiltonianODE` problems.

    Each step is the kick/drift sequence of its :class:`SplittingScheme`; the step map's
    Jacobian ``M`` satisfies ``Mᵀ J M = J``, which bounds the energy error over long times
    and preserves phase-space volume. Steps follow :func:`~solvers._integrate.fixed_schedule`
    (per-sample grids, every output on a step); the loop reads nothing back to the host.
    ``Stats.num_function_evals`` counts one per evaluation of ``dp`` and ``dq`` together.

    Args:
        scheme: the coefficients.
    """

    problems: tuple[type[AbstractProblem], ...] = (HamiltonianODE,)
    adaptive = False

    def __init__(self, scheme: SplittingScheme):
        if not isinstance(scheme, SplittingScheme):
            raise TypeError(
                "SymplecticSplitting: scheme must be a SplittingScheme, got "
                f"{type(scheme).__name__}"
            )
        self.scheme = scheme

    @property
    def name(self) -> str:
        return self.scheme.name

    @property
    def order(self) -> int:
        return self.scheme.order

    def accepts(self, problem) -> bool:
        return isinstance(problem, self.problems)

    def integrate(self, problem, cfg, y0, t, f0, *, checkpoint_every=None) -> Outcome:
        """Forward solve over a ``(lanes, T)`` grid; ``y0`` is ``(batch, 2n)``."""
        if not problem.separable:
            raise ValueError(
                f"method {self.name!r} needs the separable form of HamiltonianODE, "
                "HamiltonianODE(dp, dq) or HamiltonianODE.from_hamiltonian(kinetic, potential); "
                f"got {problem!r}. Use a Runge–Kutta method such as 'rk4' or 'dopri5' for it"
            )
        sched = cfg.fixed_schedule(t)
        N = len(sched.ts)
        if checkpoint_every == "auto":
            checkpoint_every = max(1, math.isqrt(N))
        batch, n = y0.shape[0], y0.shape[1] // 2
        scheme = self.scheme
        record_at = set(sched.record)

        def step(tk, h, p, q, force):
            """One step; ``force`` is ``dp`` at ``(tk, q)`` when already known."""
            tau = 0.0
            for i, b in enumerate(scheme.kicks):
                if b != 0.0:
                    if force is None:
                        force = problem.dp((tk + tau * h).expand(batch), q)
                    p = p + lane_view(h * b, p) * force
                if i < len(scheme.drifts):
                    a = scheme.drifts[i]
                    if a != 0.0:
                        tm = (tk + (tau + a / 2) * h).expand(batch)
                        q = q + lane_view(h * a, q) * problem.dq(tm, p)
                        force = None
                    tau += a
            # with a final kick, `force` is dp at the end of the step: the next step's first
            return p, q, force if scheme.fsal else None

        def run(start, stop, p, q, force):
            kept = []
            for k in range(start, stop):
                p, q, force = step(sched.ts[k], sched.hs[k], p, q, force)
                if k + 1 in record_at:
                    kept.append(torch.cat([p, q], dim=1))
            return p, q, force, kept

        first = f0[:, :n] if (f0 is not None and scheme.kicks[0] != 0.0) else None
        p, q = y0[:, :n], y0[:, n:]
        records = [(y0,)] if 0 in record_at else []
        if checkpoint_every is None or N == 0:
            p, q, _, kept = run(0, N, p, q, first)
            records += [(y,) for y in kept]
        else:
            for start in range(0, N, checkpoint_every):
                stop = min(start + checkpoint_every, N)
                force = first if start == 0 else None

                def segment(p_, q_, start=start, stop=stop, force=force):
                    p_, q_, _, kept = run(start, stop, p_, q_, force)
                    return (p_, q_, *kept)

                p, q, *kept = checkpoint(segment, p, q)
                records += [(y,) for y in kept]
        ys = _gather_outputs(records, sched.gather, sched.unreached, batch)
        final = (torch.cat([p, q], dim=1),)
        counts = sched.n_steps.clone()
        nfe = N * scheme.evaluations
        if scheme.fsal and N > 0:  # each segment evaluates its first force, unless given f0
            segments = 1 if checkpoint_every is None else -(-N // checkpoint_every)
            nfe += segments - (first is not None)
        return Outcome(ys, final, sched.status.clone(), counts, torch.zeros_like(counts), nfe)

    def __repr__(self):
        return f"SymplecticSplitting({self.name!r}, order={self.order}, fixed-step, symplectic)"


def _register() -> None:
    # The schemes import SplittingScheme from this module, so they are imported after it exists.
    from ._methods.leapfrog import LEAPFROG
    from ._methods.semi_implicit_euler import (
        SEMI_IMPLICIT_EULER,
        SEMI_IMPLICIT_EULER_DRIFT_FIRST,
    )
    from ._methods.yoshida4 import YOSHIDA4

    for scheme in (SEMI_IMPLICIT_EULER, SEMI_IMPLICIT_EULER_DRIFT_FIRST, LEAPFROG, YOSHIDA4):
        register_method(SymplecticSplitting(scheme))


_register()
