"""Neural controlled differential equations (Kidger, Morrill, Foster and Lyons, *Neural
controlled differential equations for irregular time series*, NeurIPS 2020).

``z(t0) = ζ(X(t0))``, ``dz = f_θ(z) dX(t)``, read out from ``z(T)``. ``X`` interpolates the
observations with time as channel 0 and, optionally, one cumulative observation count per
channel (the paper's treatment of missing data).

- :class:`CDEVectorField`: ``f_θ``, an MLP ending in ``tanh``, ``(batch, hidden) ->
  (batch, hidden, channels)``.
- :class:`NeuralCDEModel`: the continuous formulation; ``discretize(scheme, dt)`` applies an
  explicit Runge–Kutta scheme to ``dz/dt = f_θ(z) dX/dt`` with the input ``dX/dt`` held over
  the step (exact for a path linear over the step).
- :class:`NeuralCDE`: the sequence module, ``forward(x, times=None, mask=None)``.
"""

from __future__ import annotations

import torch
from torch import nn

import solvers

from ._base import AbstractCell, AbstractContinuousRNN, prepare_sequence
from ._registry import register_model

__all__ = ["CDEVectorField", "NeuralCDE", "NeuralCDEModel", "build_path"]

_INTERPOLATIONS = ("hermite", "linear", "rectilinear", "natural_cubic")


class CDEVectorField(nn.Module):
    """``f_θ(z)``: ``(batch, hidden_size) -> (batch, hidden_size, channels)``.

    ``layers`` hidden layers of ``width`` units with ReLU, then a linear map to
    ``hidden_size · channels`` and ``tanh`` (as in Kidger et al., 2020: the ``tanh`` bounds the
    vector field, which keeps the solution from blowing up).
    """

    def __init__(self, hidden_size: int, channels: int, width: int, layers: int = 1):
        super().__init__()
        self.hidden_size, self.channels = hidden_size, channels
        mods: list[nn.Module] = []
        size = hidden_size
        for _ in range(layers):
            mods += [nn.Linear(size, width), nn.ReLU()]
            size = width
        mods.append(nn.Linear(size, hidden_size * channels))
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z)).reshape(z.shape[0], self.hidden_size, self.channels)


def _check_interpolation(owner: str, interpolation) -> str:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"{owner}: unknown interpolation {interpolation!r}; valid: {', '.join(_INTERPOLATIONS)}"
        )
    return interpolation


def build_path(
    x: torch.Tensor,
    times,
    mask,
    owner: str,
    *,
    input_size: int,
    interpolation: str = "hermite",
    observation_channels: bool = False,
):
    """The control path of a batch of observations.

    ``x (batch, T, input_size)`` with NaN (or ``mask`` False) where missing; ``times``
    ``None`` (``0, 1, …``), ``(T,)`` or ``(batch, T)``. The path's channels are
    ``[t, x_1 … x_C]`` and, with ``observation_channels``, ``[n_1 … n_C]`` where ``n_c(t_i)``
    counts the observations of channel ``c`` up to ``t_i`` (Kidger et al., 2020, section 3.5).
    Missing values are filled per channel by :func:`solvers.interpolate`; a channel never
    observed in a sample is filled with 0.

    Returns ``(path, t, lengths)``: ``t`` is ``(T,)`` when the batch shares its times, else
    ``(batch, T)``; ``lengths (batch,)`` counts the steps up to each sample's last observation.
    """
    _, t, observed, lengths = prepare_sequence(x, times, mask, owner)
    if x.shape[2] != input_size:
        raise ValueError(f"{owner}: expected {input_size} input channels, got {x.shape[2]}")
    if x.shape[1] < 2:
        raise ValueError(f"{owner}: a path needs at least 2 time steps, got T={x.shape[1]}")
    shared = times is None or torch.as_tensor(times).dim() == 1
    values = torch.where(observed, x, torch.full_like(x, float("nan")))
    channels = [t[..., None], values]
    if observation_channels:
        channels.append(observed.to(x.dtype).cumsum(dim=1))
    path_values = torch.cat(channels, dim=2)
    t_path = t[0] if shared else t
    extra = {"time_channel": 0} if interpolation == "rectilinear" else {}
    path = solvers.interpolate(path_values, t_path, kind=interpolation, fill_value=0.0, **extra)
    return path, t_path, lengths


def _last(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return hidden.gather(1, (lengths - 1)[:, None, None].expand(-1, 1, hidden.shape[2]))[:, 0]


class NeuralCDEModel(AbstractContinuousRNN):
    """The continuous formulation ``dz/dt = f_θ(z) dX/dt`` on a path of ``channels`` channels.

    As an :class:`AbstractContinuousRNN` its input is ``dX/dt`` (``input_size = channels``):
    ``vector_field(t, z, u) = f_θ(z) u``. ``discretize(scheme, dt)`` therefore gives the cell
    of ``scheme`` applied to the CDE with ``dX/dt = u`` constant over the step: for a path that
    is linear over the step (``u = ΔX / dt``) this is the scheme applied to the CDE itself,
    e.g. ``euler``: ``z_{n+1} = z_n + f_θ(z_n) ΔX_n``. It converges to the continuous
    solution at the scheme's order.
    """

    problem_type = "cde"

    def __init__(self, channels: int, hidden_size: int, width: int | None = None, layers: int = 1):
        super().__init__(channels, hidden_size)
        self.field = CDEVectorField(hidden_size, channels, width or hidden_size, layers)

    def vector_field(self, t, z, x):
        fz = self.field(z)
        return torch.bmm(fz, x[:, :, None])[:, :, 0]

    def problem(self, path: solvers.AbstractPath) -> solvers.CDE:  # type: ignore[override]
        """The ``solvers.CDE`` on ``path`` (a path, not a function of time as for ODE models)."""
        return solvers.CDE(self.field, path)

    def solve(self, path, times, z0, **solver_options) -> torch.Tensor:  # type: ignore[override]
        """``z`` at ``times`` (``(T,)`` or ``(batch, T)``) from ``z0``, ``(batch, T, hidden)``."""
        return solvers.solve(self.problem(path), z0, times, **solver_options).ys


class PathDrivenModel(nn.Module):
    """A model whose continuous part (``cde``) is driven by a path built from its inputs
    (:class:`NeuralCDE`, :class:`~ctrnn.models.ancde.ANCDE`). Subclasses set
    ``input_size``, ``interpolation``, ``observation_channels``, ``cde`` and ``solver``."""

    def path(self, x, times=None, mask=None):
        """``(path, t, lengths)`` for ``x`` (see :func:`build_path`)."""
        return build_path(
            x,
            times,
            mask,
            type(self).__name__,
            input_size=self.input_size,
            interpolation=self.interpolation,
            observation_channels=self.observation_channels,
        )


class NeuralCDE(PathDrivenModel):
    """A neural CDE over a batch of irregular, partly missing sequences.

    Args:
        input_size: data channels ``C`` (time is added as a channel here).
        hidden_size: size of ``z``.
        num_classes: size of the linear head on ``z`` at each sample's last observation.
        interpolation: ``"hermite"`` (default), ``"linear"``, ``"rectilinear"`` or
            ``"natural_cubic"`` (see docs/cde.md).
        observation_channels: add the cumulative observation count of each channel.
        width, layers: the vector field's hidden width (default ``hidden_size``) and depth.
        mode: ``"continuous"`` solves the CDE with ``solver`` options (method, dt, rtol, atol,
            adjoint, backend; default ``dopri5`` with rtol 1e-3, atol 1e-4); ``"discrete"``
            runs ``discretize(scheme, dt)`` over the increments of the path between
            observations (the linear path through the filled observations).
        scheme, dt: the discrete mode's scheme and step.

    ``forward(x, times=None, mask=None) -> (output, h_n)``: ``output (batch, T, hidden_size)``
    is ``z`` at every observation time, ``h_n`` at each sample's last observation.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_classes: int | None = None,
        interpolation: str = "hermite",
        observation_channels: bool = False,
        width: int | None = None,
        layers: int = 1,
        mode: str = "continuous",
        scheme: str = "rk4",
        dt: float = 1.0,
        solver: dict | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        if mode not in ("continuous", "discrete"):
            raise ValueError(f"{name}: mode must be 'continuous' or 'discrete', got {mode!r}")
        self.input_size = input_size
        self.interpolation = _check_interpolation(name, interpolation)
        self.observation_channels = bool(observation_channels)
        channels = 1 + input_size * (2 if observation_channels else 1)
        self.cde = NeuralCDEModel(channels, hidden_size, width, layers)
        self.initial = nn.Linear(channels, hidden_size)
        self.mode, self.scheme, self.dt = mode, scheme, dt
        if mode == "discrete":
            _ = self.cell  # build it now, so that a bad scheme or dt fails here
        self.solver = (
            dict(method="dopri5", rtol=1e-3, atol=1e-4) if solver is None else dict(solver)
        )
        self.head = None if num_classes is None else nn.Linear(hidden_size, num_classes)

    @property
    def cell(self) -> AbstractCell | None:
        """The discrete cell (discrete mode). Derived from ``cde`` and kept out of the module
        tree, so the state dict holds each parameter once and loads into either mode."""
        if self.mode != "discrete":
            return None
        cell = self.__dict__.get("_cell")
        if cell is None:
            cell = self.cde.discretize(self.scheme, self.dt)
            self.__dict__["_cell"] = cell
        return cell

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self.__dict__.pop("_cell", None)
        return out

    @property
    def hidden_size(self) -> int:
        return self.cde.hidden_size

    def discretize(self, scheme: str = "euler", dt: float = 1.0) -> AbstractCell:
        return self.cde.discretize(scheme, dt)

    def forward(self, x, times=None, mask=None):
        path, t, lengths = self.path(x, times, mask)
        z0 = self.initial(path.evaluate(t[..., 0]))
        if self.mode == "continuous":
            z = self.cde.solve(path, t, z0, **self.solver)
        else:
            dt = self.cell.dt
            states = [z0]
            for dx in path.values.diff(dim=1).unbind(1):
                states.append(self.cell(dx / dt, states[-1]))
            z = torch.stack(states, dim=1)
        return z, _last(z, lengths)

    def classify(self, x, times=None, mask=None) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` from ``z`` at each sample's last observation."""
        if self.head is None:
            raise ValueError(f"{type(self).__name__}.classify: built without num_classes")
        return self.head(self(x, times, mask)[1])


register_model("neural_cde", NeuralCDE)
