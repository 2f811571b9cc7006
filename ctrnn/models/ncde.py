"""Neural controlled differential equations (Kidger, Morrill, Foster and Lyons, *Neural
controlled differential equations for irregular time series*, NeurIPS 2020).

``z(t0) = ζ(X(t0))``, ``dz = f_θ(z) dX(t)``, read out from ``z(T)``. ``X`` interpolates the
observations with time as channel 0 (once, scaled: see ``time_channel``) and, optionally,
one cumulative observation count per channel (the paper's treatment of missing data).

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

from ._base import (
    AbstractCell,
    AbstractContinuousRNN,
    AbstractSequenceModel,
    last_observed,
    observation_grid,
    prepare_sequence,
)
from ._registry import ModelSpec, register_model
from ._validate import positive_number

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

    def forward(self, t: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """``f_θ(z)`` (autonomous: ``t``, the solvers' ``f(t, z)`` argument, is not read)."""
        return torch.tanh(self.net(z)).reshape(z.shape[0], self.hidden_size, self.channels)


def _check_interpolation(owner: str, interpolation) -> str:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"{owner}: unknown interpolation {interpolation!r}; valid: {', '.join(_INTERPOLATIONS)}"
        )
    return interpolation


_TIME_CHANNELS = ("span",)


def _check_time_channel(owner: str, time_channel):
    if time_channel is None or time_channel in _TIME_CHANNELS:
        return time_channel
    if isinstance(time_channel, str):
        raise ValueError(
            f"{owner}: time_channel must be 'span', a positive number or None, got {time_channel!r}"
        )
    return positive_number(owner, "time_channel", time_channel)


def time_channel_values(grid: torch.Tensor, lengths: torch.Tensor, time_channel) -> torch.Tensor:
    """The path's time channel ``(batch, T)`` on each sample's grid: ``(t - t_0) / s`` with
    ``s = t_last - t_0``, the sample's own span up to its last observation, for ``"span"``
    (so that the channel runs over ``[0, 1]``, 1 for a single observation), or the number
    ``s`` given."""
    start = grid[:, :1]
    if time_channel == "span":
        end = grid.gather(1, (lengths - 1)[:, None])
        span = end - start
        scale = torch.where(span > 0, span, torch.ones_like(span))
    else:
        scale = time_channel
    return (grid - start) / scale


def build_path(
    x: torch.Tensor,
    times,
    mask,
    owner: str,
    *,
    input_size: int,
    interpolation: str = "hermite",
    observation_channels: bool = False,
    time_channel="span",
):
    """The control path of a batch of observations.

    ``x (batch, T, input_size)`` with NaN (or ``mask`` False) where missing; ``times``
    ``None`` (``0, 1, …``), ``(T,)`` or ``(batch, T)``. The path's channels are
    ``[τ, x_1 … x_C]`` with the time channel ``τ`` of :func:`time_channel_values` (none when
    ``time_channel`` is ``None``: for data that already carries time as a channel) and,
    with ``observation_channels``, ``[n_1 … n_C]`` where ``n_c(t_i)`` counts the
    observations of channel ``c`` up to ``t_i`` (Kidger et al., 2020, section 3.5). Missing
    values are filled per channel by :func:`solvers.interpolate`; a channel never observed
    in a sample is filled with 0. The path runs over each sample's own grid
    (:func:`~ctrnn.models.observation_grid`): the times of trailing padding are not read.

    Returns ``(path, t, lengths)``: ``t`` is ``(T,)`` when the batch shares its times, else
    ``(batch, T)``; ``lengths (batch,)`` counts the steps up to each sample's last observation.
    """
    if isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[2] != input_size:
        raise ValueError(f"{owner}: expected {input_size} input channels, got {x.shape[2]}")
    _, t, observed, lengths = prepare_sequence(x, times, mask, owner)
    if x.shape[1] < 2:
        raise ValueError(f"{owner}: a path needs at least 2 time steps, got T={x.shape[1]}")
    if interpolation == "rectilinear" and time_channel is None:
        raise ValueError(
            f"{owner}: interpolation='rectilinear' needs the time channel; got time_channel=None"
        )
    grid, _ = observation_grid(t, lengths)
    shared = (times is None or torch.as_tensor(times).dim() == 1) and bool(
        (lengths == x.shape[1]).all()
    )
    values = torch.where(observed, x, torch.full_like(x, float("nan")))
    channels = [values]
    if time_channel is not None:
        channels.insert(0, time_channel_values(grid, lengths, time_channel)[..., None])
    if observation_channels:
        channels.append(observed.to(x.dtype).cumsum(dim=1))
    path_values = torch.cat(channels, dim=2)
    t_path = grid[0] if shared else grid
    extra = {"time_channel": 0} if interpolation == "rectilinear" else {}
    path = solvers.interpolate(path_values, t_path, kind=interpolation, fill_value=0.0, **extra)
    return path, t_path, lengths


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
        fz = self.field(t, z)
        return torch.bmm(fz, x[:, :, None])[:, :, 0]

    def problem(self, path: solvers.AbstractPath) -> solvers.CDE:  # type: ignore[override]
        """The ``solvers.CDE`` on ``path`` (a path, not a function of time as for ODE models)."""
        return solvers.CDE(self.field, path)

    def solve(self, path, times, z0, **solver_options) -> torch.Tensor:  # type: ignore[override]
        """``z`` at ``times`` (``(T,)`` or ``(batch, T)``) from ``z0``, ``(batch, T, hidden)``."""
        return solvers.solve(self.problem(path), z0, times, **solver_options).ys


class PathDrivenModel(AbstractSequenceModel):
    """An abstract sequence model whose continuous part (``cde``, the :attr:`formulation`)
    is driven by a path built from its inputs (:class:`NeuralCDE`,
    :class:`~ctrnn.models.ancde.ANCDE`). Subclasses call :meth:`setup_path` and set ``cde``
    and ``solver``."""

    def setup_path(self, interpolation, observation_channels, time_channel) -> int:
        """Check and keep the path options; returns the path's number of channels."""
        name = type(self).__name__
        self.interpolation = _check_interpolation(name, interpolation)
        self.observation_channels = bool(observation_channels)
        self.time_channel = _check_time_channel(name, time_channel)
        time = 0 if self.time_channel is None else 1
        return time + self.input_size * (2 if observation_channels else 1)

    @property
    def formulation(self) -> AbstractContinuousRNN:
        return self.cde

    def path(self, x, times=None, mask=None):
        """``(path, t, lengths)`` for ``x`` (see :func:`build_path`)."""
        if isinstance(x, torch.Tensor):
            self.check_dtype(x)
        return build_path(
            x,
            times,
            mask,
            type(self).__name__,
            input_size=self.input_size,
            interpolation=self.interpolation,
            observation_channels=self.observation_channels,
            time_channel=self.time_channel,
        )


class NeuralCDE(PathDrivenModel):
    """A neural CDE over a batch of irregular, partly missing sequences.

    Args:
        input_size: data channels ``C`` (time is added as a channel here, see
            ``time_channel``).
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
        time_channel: the path's time channel ``τ``: ``"span"`` (default) ``(t - t_0) /
            (t_last - t_0)``, each sample's own observation span mapped onto ``[0, 1]``, so
            that the control's size does not grow with the series' length; a number ``s``:
            ``(t - t_0) / s``; ``None``: no time channel (the data already has one).

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
        time_channel: float | str | None = "span",
    ):
        super().__init__(input_size, hidden_size)
        name = type(self).__name__
        if mode not in ("continuous", "discrete"):
            raise ValueError(f"{name}: mode must be 'continuous' or 'discrete', got {mode!r}")
        channels = self.setup_path(interpolation, observation_channels, time_channel)
        self.cde = NeuralCDEModel(channels, hidden_size, width, layers)
        self.initial = nn.Linear(channels, hidden_size)
        self.mode, self.scheme, self.dt = mode, scheme, dt
        if mode == "discrete":
            _ = self.cell  # build it now, so that a bad scheme or dt fails here
        self.solver = (
            dict(method="dopri5", rtol=1e-3, atol=1e-4) if solver is None else dict(solver)
        )
        self.head = self.make_head(num_classes)

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
        return z, last_observed(z, lengths)


register_model(
    ModelSpec(
        "neural_cde", NeuralCDE, sequence=True, summary="neural CDE (Kidger et al., NeurIPS 2020)"
    )
)
