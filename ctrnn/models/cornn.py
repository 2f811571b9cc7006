"""Coupled oscillatory RNN, coRNN (Rusch & Mishra, "Coupled oscillatory recurrent neural
network (coRNN): an accurate and (gradient) stable architecture for learning long time
dependencies", ICLR 2021).

A network of damped, driven, coupled nonlinear oscillators::

    y'' = σ(W y + 𝒲 y' + V u(t) + b) - γ y - ε y'

written as the first-order system in ``(y, z = y')``; the state is ``[y, z]``,
``(batch, 2 * hidden_size)``, and the hidden output is ``y``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import AbstractCell, AbstractContinuousRNN, check_step
from ._registry import ModelSpec, register_model

__all__ = ["CoRNN", "CoRNNCell"]

#: the paper's scheme and the variant of the authors' public code
IMEX_SCHEMES = ("imex", "imex_explicit_damping")


def _nonnegative(owner: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{owner}: {name} must be a non-negative number, got {value!r}")
    return float(value)


class CoRNN(AbstractContinuousRNN):
    """The continuous coRNN: ``dy/dt = z``, ``dz/dt = σ(W y + 𝒲 z + V u + b) - γ y - ε z``.

    Args:
        input_size: channels of ``u``.
        hidden_size: number of oscillators ``m``; the state is ``[y, z]``, ``(batch, 2m)``.
        gamma: ``γ > 0``, the restoring force (default 2.7, the paper's sequential-MNIST value).
        epsilon: ``ε > 0``, the damping (default 4.7).
        activation: ``σ``, default ``torch.tanh``.

    Parameters: ``W`` and ``𝒲`` (``recurrent_y``, ``recurrent_z``, ``(m, m)``, no bias) and
    ``V u + b`` (``input_map``, ``nn.Linear(input_size, m)``).

    Schemes: every explicit Runge–Kutta one (``euler``, ``rk4``, …) applied to the first-order
    system, plus ``imex`` (the paper's eq. 3, exactly) and ``imex_explicit_damping`` (see
    :class:`CoRNNCell`).
    """

    extra_schemes = IMEX_SCHEMES

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        gamma: float = 2.7,
        epsilon: float = 4.7,
        activation=torch.tanh,
        device=None,
        dtype=None,
    ):
        super().__init__(input_size, hidden_size, 2 * hidden_size)
        self.gamma = _nonnegative("CoRNN", "gamma", gamma)
        self.epsilon = _nonnegative("CoRNN", "epsilon", epsilon)
        self.activation = activation
        kw = dict(device=device, dtype=dtype)
        self.input_map = nn.Linear(input_size, hidden_size, **kw)
        self.recurrent_y = nn.Linear(hidden_size, hidden_size, bias=False, **kw)
        self.recurrent_z = nn.Linear(hidden_size, hidden_size, bias=False, **kw)

    def drive(self, y: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``σ(W y + 𝒲 z + V x + b)``, ``(batch, m)``."""
        return self.activation(self.recurrent_y(y) + self.recurrent_z(z) + self.input_map(x))

    def vector_field(self, t, h, x):
        y, z = h.split(self.hidden_size, dim=-1)
        dz = self.drive(y, z, x) - self.gamma * y - self.epsilon * z
        return torch.cat([z, dz], dim=-1)

    def linear_part(self):
        """``[[0, I], [-γ I, -ε I]]`` on ``[y, z]``: the oscillator's restoring force and
        damping, which ``discretize("exponential_euler", dt)`` integrates exactly."""
        w = self.recurrent_y.weight
        eye = torch.eye(self.hidden_size, dtype=w.dtype, device=w.device)
        zero = torch.zeros_like(eye)
        return torch.cat(
            [torch.cat([zero, eye], 1), torch.cat([-self.gamma * eye, -self.epsilon * eye], 1)]
        )

    def discretize(self, scheme: str = "imex", dt: float = 1.0) -> AbstractCell:
        if scheme in IMEX_SCHEMES:
            dt = check_step("CoRNN.discretize", dt)
            return CoRNNCell(
                self.input_size, self.hidden_size, dt, self.gamma, self.epsilon, scheme, model=self
            )
        if scheme in ("semi_implicit_euler", "semi_implicit_euler_drift_first"):
            raise ValueError(
                f"CoRNN.discretize: {scheme!r} needs a separable Hamiltonian system (dp/dt "
                "depending on q only, dq/dt on p only); coRNN's dz/dt depends on z (damping "
                "ε z and the coupling 𝒲 z), so it is not one. Use 'imex' (the paper's "
                "semi-implicit scheme), 'euler' or 'rk4'"
            )
        return super().discretize(scheme, dt)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, gamma={self.gamma}, epsilon={self.epsilon}"


class CoRNNCell(AbstractCell):
    """The paper's discrete coRNN cell (Rusch & Mishra 2021, eq. 3), state ``[y, z]``::

        z_n = z_{n-1} + Δt σ(W y_{n-1} + 𝒲 z_{n-1} + V u_n + b) - Δt γ y_{n-1} - Δt ε z_n
        y_n = y_{n-1} + Δt z_n

    The damping is implicit, so ``z_n = (z_{n-1} + Δt (σ(…) - γ y_{n-1})) / (1 + Δt ε)``.
    ``scheme="imex_explicit_damping"`` takes ``- Δt ε z_{n-1}`` instead, as the authors'
    public code does (a deviation from the paper's equation, kept as a named option).

    Follows ``torch.nn.GRUCell``: ``CoRNNCell(input_size, hidden_size, dt=0.042, gamma=2.7,
    epsilon=4.7)`` builds its own :class:`CoRNN` (``cell.model``); :meth:`CoRNN.discretize`
    passes ``model=`` so that the cell shares the continuous model's parameters. A
    per-sample step (``forward(..., dt=...)``, ``(batch,)``) replaces ``Δt`` in both lines.
    """

    takes_dt = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        dt: float = 0.042,
        gamma: float = 2.7,
        epsilon: float = 4.7,
        scheme: str = "imex",
        device=None,
        dtype=None,
        *,
        model: CoRNN | None = None,
    ):
        super().__init__(input_size, hidden_size, 2 * hidden_size)
        if scheme not in IMEX_SCHEMES:
            raise ValueError(f"CoRNNCell: scheme must be one of {IMEX_SCHEMES}, got {scheme!r}")
        dt = check_step("CoRNNCell", dt)
        if model is None:
            model = CoRNN(input_size, hidden_size, gamma, epsilon, device=device, dtype=dtype)
        self.model, self.dt, self.scheme = model, float(dt), scheme

    def step(self, x, h, dt=None):
        m = self.model
        dt = self.dt if dt is None else dt[:, None]
        y, z = h.split(self.hidden_size, dim=-1)
        z_explicit = z + dt * (m.drive(y, z, x) - m.gamma * y)
        if self.scheme == "imex":
            z = z_explicit / (1 + dt * m.epsilon)
        else:
            z = z_explicit - dt * m.epsilon * z
        y = y + dt * z
        return torch.cat([y, z], dim=-1)

    def extra_repr(self):
        return f"CoRNN, scheme={self.scheme!r}, dt={self.dt}"


register_model(
    ModelSpec(
        "cornn",
        CoRNN,
        defaults=dict(scheme="imex", dt=0.042),
        summary="coupled oscillatory RNN (Rusch & Mishra, ICLR 2021)",
    )
)
