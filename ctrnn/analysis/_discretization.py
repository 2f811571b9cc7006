"""Discretization analysis: the empirical order of a scheme applied to a model, the
symplecticity error of a step, and the energy drift of Hamiltonian models.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import solvers
from ctrnn.models import AbstractCell, InputDrivenField, SequenceModel, hold_inputs
from ctrnn.models.hamiltonian import HamiltonianRNN, skew_matrix

from ._autodiff import expand_rows, jacobian
from ._targets import as_sequence, resolve_cell, resolve_continuous

__all__ = [
    "EnergyDrift",
    "OrderResult",
    "empirical_order",
    "energy_drift",
    "hamiltonian_energy",
    "symplecticity_error",
]


@dataclass(frozen=True)
class OrderResult:
    """Errors of a scheme against a reference solve as the step shrinks.

    Attributes:
        scheme: the scheme's name.
        dts: ``(n,)`` the steps.
        errors: ``(n,)`` the largest absolute error of the hidden state at the last
            observation time over the batch.
        order: the slope of ``log error`` against ``log dt`` (least squares).
        intercept: its intercept (``error ≈ exp(intercept) dt^order``).
        expected: the scheme's nominal order where the method registry knows it, else
            ``None``.
    """

    scheme: str
    dts: np.ndarray
    errors: np.ndarray
    order: float
    intercept: float
    expected: int | None


def _reference_states(model, x, t, h0, options):
    if model.problem_type == "dde":
        return model.solve(x, t, h0=h0, **options)
    tt = t.expand(x.shape[0], -1)
    problem = solvers.ODE(InputDrivenField(model, hold_inputs(x, tt)), jump_times=tt)
    return solvers.solve(problem, h0, tt, **options).ys


def empirical_order(
    model: nn.Module,
    x: torch.Tensor,
    times: torch.Tensor | None = None,
    *,
    scheme: str,
    dts: Sequence[float],
    h0: torch.Tensor | None = None,
    reference: dict | None = None,
    dtype: torch.dtype = torch.float64,
) -> OrderResult:
    """The empirical order of ``model.discretize(scheme, dt)`` as ``dt`` shrinks.

    The cell is run ``Δ / dt`` times over each observation interval ``Δ`` with the input
    held, as the model's continuous mode holds it, and its hidden state at the last
    observation time is compared with a reference solve of the continuous formulation
    (the vector field as an ODE, or the model's own solve for a delay equation). The order
    is the least-squares slope of ``log error`` against ``log dt``.

    Args:
        model: a continuous model or a :class:`~ctrnn.models.SequenceModel` holding one.
        x: inputs ``(batch, T, input_size)`` or ``(T, input_size)``.
        times: ``(T,)`` observation times (default ``0, 1, …``); every interval must be a
            whole number of each ``dt``.
        scheme: a name accepted by ``model.discretize``.
        dts: the steps, for instance ``[0.2, 0.1, 0.05, 0.025]``. Keep the errors above
            round-off (about ``1e-12`` in float64), or the fit flattens.
        h0: initial state ``(batch, state_size)`` (default zeros; must be given in the
            model's state space and is only allowed when the cell has the same state).
        reference: options for :func:`solvers.solve` (default ``dopri5`` with ``rtol=1e-11``,
            ``atol=1e-13``).
        dtype: the precision the measurement runs in; the model is copied to it (default
            float64). The copy is in evaluation mode: injected noise is off.
    """
    owner = "empirical_order"
    continuous, _ = resolve_continuous(model, owner)
    m = copy.deepcopy(continuous).to(dtype).eval()
    x = as_sequence(x, owner, "x").to(dtype)
    B, T = x.shape[:2]
    if x.shape[2] != m.input_size:
        raise ValueError(
            f"{owner}: {type(m).__name__} reads {m.input_size} input features, got x of shape "
            f"{tuple(x.shape)}"
        )
    t = torch.arange(T, dtype=dtype) if times is None else torch.as_tensor(times).to(dtype)
    if t.dim() != 1 or t.shape[0] != T or T < 2:
        raise ValueError(f"{owner}: times must have shape ({T},) with T ≥ 2, got {tuple(t.shape)}")
    dts = [float(v) for v in dts]
    if len(dts) < 2 or any(not v > 0 for v in dts):
        raise ValueError(f"{owner}: dts must hold at least two positive steps, got {dts}")
    options = dict(method="dopri5", rtol=1e-11, atol=1e-13, max_steps=1_000_000)
    options.update(reference or {})
    gaps = t.diff().tolist()
    steps_per_interval = []
    for dt in dts:
        counts = [round(g / dt) for g in gaps]
        bad = [g for g, n in zip(gaps, counts) if n < 1 or abs(n * dt - g) > 1e-9 * g]
        if bad:
            raise ValueError(
                f"{owner}: the observation interval {bad[0]} is not a whole number of steps "
                f"dt = {dt}; choose steps that divide every interval"
            )
        steps_per_interval.append(counts)
    start = x.new_zeros(B, m.state_size) if h0 is None else h0.to(dtype)
    with torch.no_grad():
        ref = m.hidden(_reference_states(m, x, t, start, options)[:, -1])
        errors = []
        for dt, counts in zip(dts, steps_per_interval):
            cell = m.discretize(scheme, dt)
            if h0 is None:
                s = cell.initial_state(B, dtype=dtype)
            elif cell.state_size != m.state_size:
                raise ValueError(
                    f"{owner}: the {scheme!r} cell has state size {cell.state_size} (it carries "
                    f"more than the model's state, {m.state_size}); leave h0 at its default"
                )
            else:
                s = start
            for i, n in enumerate(counts):
                for _ in range(n):
                    s = cell(x[:, i], s)
            errors.append(float((cell.hidden(s) - ref).abs().max()))
    errors = np.asarray(errors)
    floor = 1e3 * torch.finfo(dtype).eps * max(1.0, float(ref.abs().max()))
    if (errors < floor).any():
        warnings.warn(
            f"{owner}: some errors ({errors.min():.2e}) are at round-off level (< {floor:.1e}); "
            "the fitted order is unreliable. Use larger steps",
            stacklevel=2,
        )
    slope, intercept = np.polyfit(np.log(dts), np.log(np.maximum(errors, 1e-300)), 1)
    method = solvers.methods().get(scheme)
    expected = getattr(method, "order", None)
    return OrderResult(scheme, np.asarray(dts), errors, float(slope), float(intercept), expected)


def symplecticity_error(
    step: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    y: torch.Tensor,
    x: torch.Tensor | None = None,
    *,
    J: torch.Tensor | None = None,
) -> torch.Tensor:
    """``‖Mᵀ J M - J‖_F`` per sample, ``M = ∂ step(y) / ∂y``: zero for a symplectic step.

    Args:
        step: a map ``(batch, 2n) -> (batch, 2n)`` (for instance ``lambda y: net.layer(j, y)``
            of a :class:`~ctrnn.models.hamiltonian.HamiltonianNet`), or a cell / discrete
            :class:`~ctrnn.models.SequenceModel` with its input ``x`` held.
        y: the states ``(batch, 2n)`` where the step's Jacobian is taken.
        x: the input ``(batch, input_size)`` of a cell.
        J: the skew matrix ``(2n, 2n)`` (default the canonical ``[[0, -I], [I, 0]]``,
            momenta first).

    A symplectic step (semi-implicit Euler on a separable Hamiltonian system, the H2
    network) keeps this at round-off; explicit Euler (H1) does not.
    """
    owner = "symplecticity_error"
    if isinstance(step, (AbstractCell, SequenceModel)):
        cell = resolve_cell(step, owner)
        if x is None:
            raise ValueError(f"{owner}: a cell needs its input x (batch, {cell.input_size})")

        def f(s):
            return cell(expand_rows(x, s.shape[0], owner).to(s.dtype), s)

    elif callable(step):
        f = step
    else:
        raise TypeError(f"{owner}: step must be a map or a cell, got {type(step).__name__}")
    if y.dim() != 2 or y.shape[1] % 2:
        raise ValueError(f"{owner}: y must have shape (batch, 2n), p then q, got {tuple(y.shape)}")
    d = y.shape[1]
    J = skew_matrix("J1", d, dtype=y.dtype, device=y.device) if J is None else J.to(y)
    if J.shape != (d, d):
        raise ValueError(f"{owner}: J must be ({d}, {d}), got {tuple(J.shape)}")
    _, M = jacobian(f, y, owner)
    return (M.transpose(1, 2) @ J @ M - J).flatten(1).norm(dim=1)


def _logcosh(z: torch.Tensor) -> torch.Tensor:
    a = z.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


def _hamiltonian_model(model, owner: str) -> HamiltonianRNN:
    if isinstance(model, SequenceModel):
        model = model.model
    if not isinstance(model, HamiltonianRNN):
        raise TypeError(
            f"{owner}: expected a HamiltonianRNN or a SequenceModel holding one, got "
            f"{type(model).__name__}"
        )
    return model


def hamiltonian_energy(model: nn.Module, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``H(y; x) = 1ᵀ log cosh(K y + U x + b)`` of a Hamiltonian RNN, per sample ``(batch,)``.

    For a frozen input ``x`` the model's vector field is ``J ∇_y H``, so the exact flow keeps
    ``H`` constant; a discretization's departure from it is its energy error.
    """
    m = _hamiltonian_model(model, "hamiltonian_energy")
    u = m.input_map(x.to(y.dtype))
    if m.split:
        k = m.hidden_size // 2
        z = torch.cat([y[:, :k] @ m.K_p.T + u[:, :k], y[:, k:] @ m.K_q.T + u[:, k:]], dim=1)
    else:
        z = y @ m.K.T + u
    return _logcosh(z).sum(dim=1)


@dataclass(frozen=True)
class EnergyDrift:
    """The energy along a long run of a Hamiltonian model's cell (:func:`energy_drift`).

    Attributes:
        scheme, dt: the cell.
        times: ``(steps + 1,)``.
        energy: ``(batch, steps + 1)``, ``H`` after each step.
        drift: ``(batch, steps + 1)``, ``H_n - H_0``.
        max_drift: ``(batch,)``, ``max_n |H_n - H_0|``.
    """

    scheme: str
    dt: float
    times: torch.Tensor
    energy: torch.Tensor
    drift: torch.Tensor
    max_drift: torch.Tensor


def energy_drift(
    model: nn.Module,
    y0: torch.Tensor,
    steps: int,
    *,
    x: torch.Tensor | None = None,
    scheme: str = "semi_implicit_euler",
    dt: float = 0.1,
) -> EnergyDrift:
    """Run ``model.discretize(scheme, dt)`` for ``steps`` steps with a frozen input and
    record the Hamiltonian.

    A symplectic scheme keeps the energy error bounded (it exactly conserves a nearby
    modified Hamiltonian, Hairer, Lubich & Wanner, *Geometric Numerical Integration*, IX.8);
    explicit Euler lets it grow; RK4 keeps it small but lets it drift.

    Args:
        model: a :class:`~ctrnn.models.hamiltonian.HamiltonianRNN` or a SequenceModel
            holding one.
        y0: initial states ``(batch, hidden_size)``.
        steps: number of steps.
        x: the frozen input ``(batch, input_size)`` (default zeros).
        scheme: the discretization scheme (a symplectic splitting or a Runge–Kutta name).
        dt: its step.
    """
    owner = "energy_drift"
    m = _hamiltonian_model(model, owner)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{owner}: steps must be a positive integer, got {steps!r}")
    if y0.dim() != 2 or y0.shape[1] != m.hidden_size:
        raise ValueError(
            f"{owner}: y0 must have shape (batch, {m.hidden_size}), got {tuple(y0.shape)}"
        )
    cell = m.discretize(scheme, dt)
    x = y0.new_zeros(y0.shape[0], m.input_size) if x is None else x.to(y0)
    with torch.no_grad():
        y, energies = y0, [hamiltonian_energy(m, y0, x)]
        for _ in range(steps):
            y = cell(x, y)
            energies.append(hamiltonian_energy(m, y, x))
    energy = torch.stack(energies, dim=1)
    drift = energy - energy[:, :1]
    times = torch.arange(steps + 1, dtype=y0.dtype) * dt
    return EnergyDrift(scheme, float(dt), times, energy, drift, drift.abs().max(dim=1).values)
