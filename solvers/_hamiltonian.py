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

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ._problems import AbstractProblem
from ._rk import lane_view
from ._stepper import AbstractStepper
from ._term import PartitionedTerm, broadcast_time, module_parameters

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
            ``(batch, 1)`` tensor of each sample's current time, ``q`` is ``(batch, n)``.
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
        self._terms = None
        self._jumps = None

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def from_hamiltonian(cls, kinetic: Scalar, potential: Scalar) -> HamiltonianODE:
        """A separable system ``H(t, p, q) = kinetic(t, p) + potential(t, q)``.

        Both functions are called with ``t`` of shape ``(batch,)`` (each sample's time) and
        return one value per sample, shape ``(batch,)``; their gradients are
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

        # T and V return one value per sample: they take each sample's time as (batch,)
        def dp(t, q):
            return -_gradient(potential, t.reshape(-1), q, "potential")

        def dq(t, p):
            return _gradient(kinetic, t.reshape(-1), p, "kinetic")

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
        self._terms = None
        self._jumps = None
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

    def _full(self, t, y):
        g = self.grad_H(t, y)
        if self.J is None:
            n = y.shape[1] // 2
            return torch.cat([-g[:, n:], g[:, :n]], dim=1)
        return g @ self.J.to(g).T

    def terms(self) -> PartitionedTerm:
        if self._terms is None:
            params = module_parameters(*self._modules)
            if self.separable:
                self._terms = PartitionedTerm(dp=self._dp, dq=self._dq, params=params)
            else:
                self._terms = PartitionedTerm(full=self._full, params=params, form=self._form)
            self._terms.jumps = self._jumps
        return self._terms

    def with_jump_times(self, jump_times: torch.Tensor) -> HamiltonianODE:
        """A copy whose vector field is declared non-smooth at ``jump_times`` (``(J,)`` or
        ``(batch, J)``, non-decreasing; a forcing held between observations): adaptive steps
        land on them, as for :class:`~solvers.ODE`'s ``jump_times``."""
        from ._problems import check_jump_times

        out = copy.copy(self)
        out._jumps = check_jump_times(jump_times)
        out._terms = None
        return out

    def check(self, t0, y0):
        if y0.ndim != 2 or y0.shape[1] % 2 != 0:
            raise ValueError(
                "HamiltonianODE: the state must have shape (batch, 2n), momenta p = y[:, :n] "
                f"then positions q = y[:, n:]; got y0 of shape {tuple(y0.shape)}"
            )
        n = y0.shape[1] // 2
        if self.separable:
            halves = []
            tb = broadcast_time(t0, y0)
            for name, fn, x in (("dp", self._dp, y0[:, n:]), ("dq", self._dq, y0[:, :n])):
                out = fn(tb, x)
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


class SymplecticSplitting(AbstractStepper):
    """A fixed-step symplectic method for separable :class:`HamiltonianODE` problems.

    Each step is the kick/drift sequence of its :class:`SplittingScheme`; the step map's
    Jacobian ``M`` satisfies ``Mᵀ J M = J``, which bounds the energy error over long times
    and preserves phase-space volume. It runs with constant steps (per-sample grids, every
    output on a step) in the one loop. ``Stats.num_function_evals`` counts one per
    evaluation of ``dp`` and ``dq`` together. With a final kick, the last force of a step is
    carried into the next.

    Args:
        scheme: the coefficients.
    """

    term_types = (PartitionedTerm,)

    def __init__(self, scheme: SplittingScheme):
        if not isinstance(scheme, SplittingScheme):
            raise TypeError(
                "SymplecticSplitting: scheme must be a SplittingScheme, got "
                f"{type(scheme).__name__}"
            )
        self.scheme = scheme
        self.name = scheme.name
        self.order = scheme.order
        self.evals_per_step = scheme.evaluations

    def reason_to_refuse(self, terms):
        if not terms.separable:
            return (
                f"method {self.name!r} needs the separable form of HamiltonianODE, "
                "HamiltonianODE(dp, dq) or HamiltonianODE.from_hamiltonian(kinetic, potential); "
                f"got {terms.form}. Use a Runge–Kutta method such as 'rk4' or 'dopri5' for it"
            )
        return None

    def init(self, terms, t0, y0, f0):
        if f0 is None or self.scheme.kicks[0] == 0.0:
            return None
        n = y0[0].shape[1] // 2
        return f0[0][:, :n]

    def step(self, terms, t0, t1, h, y, state, *, control=None, left=None):
        scheme = self.scheme
        y = y[0]
        n = y.shape[1] // 2
        p, q, force = y[:, :n], y[:, n:], state
        tau = 0.0
        for i, b in enumerate(scheme.kicks):
            if b != 0.0:
                if force is None:
                    force = terms.dp(t0 + tau * h, q)
                p = p + lane_view(h * b, p) * force
            if i < len(scheme.drifts):
                a = scheme.drifts[i]
                if a != 0.0:
                    q = q + lane_view(h * a, q) * terms.dq(t0 + (tau + a / 2) * h, p)
                    force = None
                tau += a
        # with a final kick, `force` is dp at the end of the step: the next step's first
        return (torch.cat([p, q], dim=1),), None, None, (force if scheme.fsal else None)

    def evals(self, n_steps, state_given):
        if n_steps == 0:
            return 0
        return n_steps * self.scheme.evaluations + (self.scheme.fsal and not state_given)

    def __repr__(self):
        return f"SymplecticSplitting({self.name!r}, order={self.order}, fixed-step, symplectic)"


def register_splittings(register_method) -> None:
    # The schemes import SplittingScheme from this module, so they are imported after it exists.
    from ._methods.leapfrog import LEAPFROG
    from ._methods.semi_implicit_euler import (
        SEMI_IMPLICIT_EULER,
        SEMI_IMPLICIT_EULER_DRIFT_FIRST,
    )
    from ._methods.yoshida4 import YOSHIDA4

    for scheme in (SEMI_IMPLICIT_EULER, SEMI_IMPLICIT_EULER_DRIFT_FIRST, LEAPFROG, YOSHIDA4):
        register_method(SymplecticSplitting(scheme))
