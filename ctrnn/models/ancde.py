"""Attentive neural controlled differential equations (Jhin, Shin, Hwang, Cho and Park,
*Attentive neural controlled differential equations for time-series classification and
forecasting*, ICDM 2021).

Two CDEs. The bottom one reads the observation path ``X`` and produces attention::

    h(t0) = ζ_b(X(t0)),   dh = f_b(h) dX(t),   a(t) = σ(W h(t) + b)

(``a`` has one value per channel, or one per time with ``attention="timewise"``). The top one
is driven by the attended path ``Y = a ⊙ X``::

    z(t0) = ζ(Y(t0)),   dz = f(z) dY(t),   dY/dt = a ⊙ dX/dt + (da/dt) ⊙ X

with ``da/dt = σ'(W h + b) ⊙ W dh/dt`` and ``dh/dt = f_b(h) dX/dt``, computed exactly. Both are
solved together as one ODE on the state ``[z, h]``: this equals solving the bottom CDE first
and the top one on its output (the paper's order), and needs no stored bottom trajectory.
With ``a ≡ 1`` the model is exactly :class:`~ctrnn.models.ncde.NeuralCDE`.
"""

from __future__ import annotations

import torch
from torch import nn

import solvers

from ._base import AbstractContinuousRNN, last_observed, with_input_gradients
from ._registry import ModelSpec, register_model
from ._validate import positive_int as _positive_int
from .ncde import CDEVectorField, PathDrivenModel

__all__ = ["ANCDE", "AttentiveCDEModel"]

_ATTENTION = ("channelwise", "timewise")
_DERIVATIVE = ("exact", "reference")


class AttentiveCDEModel(AbstractContinuousRNN):
    """The joint formulation of both CDEs on the state ``[z (hidden_size), h (attention_size)]``.

    :meth:`derivative` gives ``d[z, h]/dt`` from ``X(t)`` and ``dX/dt(t)``. As an
    :class:`AbstractContinuousRNN` its input is ``[X(t_n), dX/dt]`` (``input_size =
    2 · channels``) for a path linear over a step, and ``vector_field``'s ``t`` is the time
    since the step's start (as :class:`~ctrnn.models.RungeKuttaCell` calls it), so that
    ``discretize(scheme, dt)`` sees ``X(t_n + s) = X(t_n) + s dX/dt`` at every stage and
    converges at the scheme's order.

    Args:
        channels: the path's channels ``C``.
        hidden_size: size of the top state ``z``.
        attention_size: size of the bottom state ``h`` (default ``hidden_size``).
        attention: ``"channelwise"`` (``a`` is ``(batch, C)``) or ``"timewise"`` (one value
            per time, shared by the channels).
        hard: round ``a`` to 0 or 1 with straight-through gradients. ``Y`` is then piecewise
            ``a ⊙ X`` with ``a`` constant, so ``dY/dt = a ⊙ dX/dt`` (the jumps of ``Y`` where
            ``a`` switches are not integrated); the backward pass uses the soft
            ``dY/dt``'s gradients (straight-through on ``Y``).
        derivative: ``"exact"`` (default) or ``"reference"``: the authors' code uses
            ``a ⊙ dX/dt + (da/dt) ⊙ dX/dt``, offered for reproducing their numbers only.
        width, layers: the vector fields' hidden width and depth.
    """

    problem_type = "ode"

    def __init__(
        self,
        channels: int,
        hidden_size: int,
        attention_size: int | None = None,
        *,
        attention: str = "channelwise",
        hard: bool = False,
        derivative: str = "exact",
        width: int | None = None,
        layers: int = 1,
    ):
        name = type(self).__name__
        channels = _positive_int(name, "channels", channels)
        attention_size = _positive_int(
            name, "attention_size", hidden_size if attention_size is None else attention_size
        )
        super().__init__(2 * channels, hidden_size, hidden_size + attention_size)
        if attention not in _ATTENTION:
            raise ValueError(
                f"{name}: attention must be one of {', '.join(_ATTENTION)}, got {attention!r}"
            )
        if derivative not in _DERIVATIVE:
            raise ValueError(
                f"{name}: derivative must be one of {', '.join(_DERIVATIVE)}, got {derivative!r}"
            )
        self.channels, self.attention_size = channels, attention_size
        self.attention_kind, self.hard, self.derivative_kind = attention, bool(hard), derivative
        width = width or hidden_size
        self.bottom = CDEVectorField(attention_size, channels, width, layers)
        self.readout = nn.Linear(attention_size, channels if attention == "channelwise" else 1)
        self.top = CDEVectorField(hidden_size, channels, width, layers)

    def attention(self, h: torch.Tensor, dh: torch.Tensor | None = None):
        """``(a, da/dt)`` from ``h`` and ``dh/dt`` (``da/dt`` is ``None`` without ``dh``)."""
        s = torch.sigmoid(self.readout(h))
        ds = None if dh is None else s * (1 - s) * (dh @ self.readout.weight.T)
        if self.hard:
            s = s + (torch.round(s) - s).detach()
            ds = None if ds is None else ds - ds.detach()
        return s, ds

    def derivative(self, y: torch.Tensor, X: torch.Tensor, dX: torch.Tensor) -> torch.Tensor:
        """``d[z, h]/dt`` at the state ``y (batch, state_size)`` given ``X``, ``dX/dt``."""
        H = self.hidden_size
        z, h = y[:, :H], y[:, H:]
        dh = torch.bmm(self.bottom(None, h), dX[:, :, None])[:, :, 0]
        a, da = self.attention(h, dh)
        dY = a * dX + da * (X if self.derivative_kind == "exact" else dX)
        dz = torch.bmm(self.top(None, z), dY[:, :, None])[:, :, 0]
        return torch.cat([dz, dh], dim=1)

    def vector_field(self, t, y, x):
        C = self.channels
        dX = x[:, C:]
        return self.derivative(y, x[:, :C] + t.reshape(-1, 1) * dX, dX)

    def problem(self, path: solvers.AbstractPath) -> solvers.ODE:  # type: ignore[override]
        """The joint ``solvers.ODE`` driven by ``path``; the path's knots are its jump times."""
        return solvers.ODE(_PathDriven(self, path), jump_times=path.jump_times)

    def solve(self, path, times, y0, **solver_options) -> torch.Tensor:  # type: ignore[override]
        """``[z, h]`` at ``times`` from ``y0``: ``(batch, T, state_size)``."""
        problem = self.problem(path)
        options = with_input_gradients(solver_options, problem, *path.tensors())
        return solvers.solve(problem, y0, times, **options).ys


class _PathDriven(nn.Module):
    """``f(t, y)`` of the joint ODE; a module so that every adjoint finds the parameters."""

    def __init__(self, model: AttentiveCDEModel, path: solvers.AbstractPath):
        super().__init__()
        self.model, self.path = model, path

    def forward(self, t, y):
        t = t.reshape(t.shape[0]) if t.dim() > 1 else t  # (batch, 1) from the solvers
        return self.model.derivative(y, self.path.evaluate(t), self.path.derivative(t))


class ANCDE(PathDrivenModel):
    """An attentive neural CDE over a batch of irregular, partly missing sequences.

    Args:
        input_size, hidden_size, num_classes, interpolation, observation_channels, width,
            layers, solver, time_channel: as for :class:`~ctrnn.models.ncde.NeuralCDE`
            (``solver`` defaults to ``dopri5`` with rtol 1e-3, atol 1e-4; the joint problem
            is an ODE, so the ``torchcde`` backend does not apply).
        attention_size, attention, hard, derivative: see :class:`AttentiveCDEModel`.

    ``forward(x, times=None, mask=None) -> (output, h_n)``: ``z`` at every observation time
    ``(batch, T, hidden_size)`` and at each sample's last observation.
    :meth:`attention_weights` returns ``a`` at the observation times.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_classes: int | None = None,
        interpolation: str = "hermite",
        observation_channels: bool = False,
        attention_size: int | None = None,
        attention: str = "channelwise",
        hard: bool = False,
        derivative: str = "exact",
        width: int | None = None,
        layers: int = 1,
        solver: dict | None = None,
        time_channel: float | str | None = "span",
    ):
        super().__init__(input_size, hidden_size)
        channels = self.setup_path(interpolation, observation_channels, time_channel)
        self.cde = AttentiveCDEModel(
            channels,
            hidden_size,
            attention_size,
            attention=attention,
            hard=hard,
            derivative=derivative,
            width=width,
            layers=layers,
        )
        self.initial = nn.Linear(channels, hidden_size)
        self.initial_attention = nn.Linear(channels, self.cde.attention_size)
        self.solver = (
            dict(method="dopri5", rtol=1e-3, atol=1e-4) if solver is None else dict(solver)
        )
        self.head = self.make_head(num_classes)

    def _solve(self, x, times, mask):
        path, t, lengths = self.path(x, times, mask)
        X0 = path.evaluate(t[..., 0])
        h0 = self.initial_attention(X0)
        a0, _ = self.cde.attention(h0)
        y0 = torch.cat([self.initial(a0 * X0), h0], dim=1)
        return self.cde.solve(path, t, y0, **self.solver), lengths

    def forward(self, x, times=None, mask=None):
        y, lengths = self._solve(x, times, mask)
        z = y[..., : self.hidden_size]
        return z, last_observed(z, lengths)

    def attention_weights(self, x, times=None, mask=None) -> torch.Tensor:
        """``a`` at the observation times: ``(batch, T, channels)`` or ``(batch, T, 1)``."""
        y, _ = self._solve(x, times, mask)
        return self.cde.attention(y[..., self.hidden_size :])[0]


register_model(
    ModelSpec(
        "ancde", ANCDE, sequence=True, summary="attentive neural CDE (Jhin et al., ICDM 2021)"
    )
)
