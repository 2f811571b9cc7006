"""GRU-D (Che, Purushotham, Cho, Sontag and Liu, *Recurrent neural networks for multivariate
time series with missing values*, Scientific Reports 2018) and the GRU-Δt baseline.

GRU-D, per time step ``t`` with observation mask ``m_t``, time since each channel's last
observation ``δ_t`` and that observation ``x'_t``:

```
γ_x = exp(-max(0, W_γx δ_t + b_γx))         (W_γx diagonal)
γ_h = exp(-max(0, W_γh δ_t + b_γh))
x̂_t = m_t x_t + (1 - m_t)(γ_x x'_t + (1 - γ_x) x̄)
ĥ   = γ_h ⊙ h_{t-1}
z_t = σ(W_z x̂_t + U_z ĥ + V_z m_t + b_z)
r_t = σ(W_r x̂_t + U_r ĥ + V_r m_t + b_r)
h̃_t = tanh(W x̂_t + U (r_t ⊙ ĥ) + V m_t + b)
h_t = (1 - z_t) ⊙ ĥ + z_t ⊙ h̃_t
```

with ``x̄`` the training mean per channel (the buffer ``x_mean``, see :meth:`GRUD.fit_mean`).

- :class:`GRUDCell`: one step, with ``torch.nn.GRUCell``'s conventions: the input is
  ``[x, m, δ]`` (``3 C`` features) and the state ``[h, x']`` (``hidden_size + C``).
- :class:`GRUD`: the sequence module; it computes ``δ`` from the times and the mask and does
  everything that is not recurrent (the decays, ``x̂``, the input projections) for all time
  steps at once, outside the loop.
- :class:`GRUDt`: GRU-Δt, a GRU on ``[x, m, Δt]`` (the baseline of Rubanova et al. 2019 and
  Kidger et al. 2020).
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import (
    AbstractCell,
    AbstractSequenceModel,
    last_observation_index,
    last_observed,
    observation_grid,
    prepare_sequence,
)
from ._baselines import GRUCell
from ._registry import ModelSpec, register_model

__all__ = ["GRUD", "GRUDCell", "GRUDt", "time_since_observation"]


def time_since_observation(times: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """``δ (batch, T, C)``: the time since each channel's previous observation.

    Che et al. (2018), eq. (5): ``δ_1 = 0``; ``δ_t = s_t - s_{t-1} + δ_{t-1}`` if
    ``m_{t-1} = 0``, else ``s_t - s_{t-1}``. Equivalently ``δ_t = s_t - s_τ`` with ``τ`` the
    last step before ``t`` where the channel was observed, or the first step if none.
    ``times (batch, T)``, ``observed (batch, T, C)`` boolean.
    """
    B, T, C = observed.shape
    last = last_observation_index(observed)
    before = torch.cat([torch.full_like(last[:, :1], -1), last[:, :-1]], dim=1).clamp_min(0)
    s = times[:, :, None].expand(B, T, C)
    return s - s.gather(1, before)


class GRUDCell(AbstractCell):
    """One GRU-D step (Che et al., 2018), built like ``torch.nn.GRUCell``.

    Args:
        input_size: data channels ``C``. The cell's input is ``[x, m, δ]``, ``3 C`` features:
            values (any finite number where missing), mask (1 observed, 0 missing) and time
            since the channel's last observation.
        hidden_size: size of ``h``.

    The state is ``[h, x']``, ``(batch, hidden_size + C)``: ``x'`` is each channel's last
    observation, updated as ``m x + (1 - m) x'``; :meth:`hidden` reads ``h``. Without ``hx``
    the state starts at ``h = 0`` and ``x' = x_mean`` (so before a channel's first
    observation its input is the mean). ``x_mean`` is a buffer, zeros until set.
    """

    def __init__(self, input_size: int, hidden_size: int, device=None, dtype=None):
        super().__init__(3 * input_size, hidden_size, hidden_size + input_size)
        C, H = input_size, hidden_size
        kw = dict(device=device, dtype=dtype)
        self.channels = C
        # γ_x: diagonal W_γx, as the paper prescribes (each channel decays on its own)
        self.decay_x_weight = nn.Parameter(torch.empty(C, **kw))
        self.decay_x_bias = nn.Parameter(torch.empty(C, **kw))
        self.decay_h = nn.Linear(C, H, **kw)
        # [W | V] for z, r and h̃, with b; U for z, r and h̃ (no bias)
        self.input_map = nn.Linear(2 * C, 3 * H, **kw)
        self.recurrent_map = nn.Linear(H, 3 * H, bias=False, **kw)
        self.register_buffer("x_mean", torch.zeros(C, **kw))
        bound = 1.0 / C**0.5
        nn.init.uniform_(self.decay_x_weight, -bound, bound)
        nn.init.uniform_(self.decay_x_bias, -bound, bound)

    def decay_x(self, delta: torch.Tensor) -> torch.Tensor:
        """``γ_x = exp(-max(0, W_γx δ + b_γx))`` with diagonal ``W_γx``."""
        return torch.exp(-torch.relu(delta * self.decay_x_weight + self.decay_x_bias))

    def decay_hidden(self, delta: torch.Tensor) -> torch.Tensor:
        """``γ_h = exp(-max(0, W_γh δ + b_γh))``, ``(…, hidden_size)``."""
        return torch.exp(-torch.relu(self.decay_h(delta)))

    def impute(self, x, m, delta, x_last):
        """``x̂ = m x + (1 - m)(γ_x x' + (1 - γ_x) x̄)``."""
        g = self.decay_x(delta)
        return m * x + (1 - m) * (g * x_last + (1 - g) * self.x_mean)

    def recurrence(self, projected: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The gated update from ``projected = [W x̂ + V m + b]`` (``3 H``) and ``ĥ``."""
        H = self.hidden_size
        uz, ur = (h @ self.recurrent_map.weight[: 2 * H].T).chunk(2, dim=-1)
        pz, pr, ph = projected.chunk(3, dim=-1)
        z = torch.sigmoid(pz + uz)
        r = torch.sigmoid(pr + ur)
        candidate = torch.tanh(ph + (r * h) @ self.recurrent_map.weight[2 * H :].T)
        return (1 - z) * h + z * candidate

    def initial_state(self, batch: int, *, device=None, dtype=None) -> torch.Tensor:
        h = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        x_last = self.x_mean.to(device=device, dtype=dtype).expand(batch, -1)
        return torch.cat([h, x_last], dim=-1)

    def step(self, inp, state, dt=None):
        x, m, delta = inp.split(self.channels, dim=-1)
        h, x_last = state.split([self.hidden_size, self.channels], dim=-1)
        x_hat = self.impute(x, m, delta, x_last)
        h = self.decay_hidden(delta) * h
        h = self.recurrence(self.input_map(torch.cat([x_hat, m], dim=-1)), h)
        return torch.cat([h, m * x + (1 - m) * x_last], dim=-1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden_size={self.hidden_size}"


class GRUD(AbstractSequenceModel):
    """GRU-D over a batch of irregular, partly missing sequences.

    Args:
        input_size: data channels ``C``.
        hidden_size: size of ``h``.
        num_classes: size of the linear head on ``h`` at each sample's last observation.

    ``forward(x, times=None, mask=None) -> (output, h_n)``: ``x (batch, T, C)`` with NaN (or
    ``mask`` False) where missing, ``times (T,)`` or ``(batch, T)`` (default ``0, 1, …``);
    ``output (batch, T, hidden_size)`` holds ``h_t``, ``h_n`` the state at each sample's last
    observed step. The empirical mean ``x̄`` is the buffer ``cell.x_mean`` (zeros by default,
    which suits standardised data); set it from training data with :meth:`fit_mean`.
    Times are read through ``δ``; GRU-D is discrete only (:meth:`discretize` refuses).
    """

    def __init__(self, input_size: int, hidden_size: int, *, num_classes: int | None = None):
        super().__init__(input_size, hidden_size)
        self.cell = GRUDCell(input_size, hidden_size)
        self.head = self.make_head(num_classes)

    @property
    def formulation(self):
        return None

    @torch.no_grad()
    def fit_mean(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Set ``x_mean`` to each channel's mean over the observed entries of ``x``.

        ``x (batch, T, C)`` with NaN or ``mask`` False where missing (the training set, not
        the test set). A channel never observed gets mean 0. Returns the new ``x_mean``.
        """
        _, _, observed, _ = prepare_sequence(x, None, mask, f"{type(self).__name__}.fit_mean")
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}.fit_mean: expected {self.input_size} channels, "
                f"got {x.shape[2]}"
            )
        filled = torch.where(observed, x, torch.zeros_like(x))
        count = observed.sum(dim=(0, 1))
        mean = filled.sum(dim=(0, 1)) / count.clamp_min(1)
        self.cell.x_mean.copy_(mean.to(self.cell.x_mean))
        return self.cell.x_mean

    def forward(self, x, times=None, mask=None):
        values, t, observed, lengths = self.prepare(x, times, mask)
        grid, _ = observation_grid(t, lengths, self.time_scale)
        cell = self.cell
        m = observed.to(values.dtype)
        delta = time_since_observation(grid, observed)
        # x'_t: the last observation strictly before t (x_mean before the first one)
        seen = observed.cumsum(dim=1) > 0
        held_before = torch.cat([values[:, :1], values[:, :-1]], dim=1)
        seen_before = torch.cat([torch.zeros_like(seen[:, :1]), seen[:, :-1]], dim=1)
        x_last = torch.where(seen_before, held_before, cell.x_mean.to(values))
        x_hat = cell.impute(values, m, delta, x_last)
        projected = cell.input_map(torch.cat([x_hat, m], dim=-1))
        decay = cell.decay_hidden(delta)
        h = values.new_zeros(values.shape[0], self.hidden_size)
        states = []
        for p, g in zip(projected.unbind(1), decay.unbind(1)):
            h = cell.recurrence(p, g * h)
            states.append(h)
        output = torch.stack(states, dim=1)
        return output, last_observed(output, lengths)


class GRUDt(AbstractSequenceModel):
    """GRU-Δt: a GRU whose input at step ``i`` is ``[x_i, m_i, Δt_i]``.

    ``x_i`` holds each missing value at its channel's last observation (zero before the
    first), ``m_i`` is the observation mask and ``Δt_i = t_i - t_{i-1}`` (``Δt_0 = 0``) the
    time since the previous time step. The cell is ``GRUCell(2 C + 1, hidden_size)``
    (``torch.nn.GRUCell``). Same ``forward`` and ``classify`` as :class:`GRUD`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_classes: int | None = None,
        bias: bool = True,
    ):
        super().__init__(input_size, hidden_size)
        self.cell = GRUCell(2 * input_size + 1, hidden_size, bias)
        self.head = self.make_head(num_classes)

    @property
    def formulation(self):
        return None

    def inputs(self, x, times=None, mask=None):
        """``([x, m, Δt] (batch, T, 2 C + 1), lengths)``: what the GRU reads."""
        values, t, observed, lengths = self.prepare(x, times, mask)
        grid, _ = observation_grid(t, lengths, self.time_scale)
        dt = torch.cat([torch.zeros_like(grid[:, :1]), grid.diff(dim=1)], dim=1)
        return torch.cat([values, observed.to(values.dtype), dt[..., None]], dim=-1), lengths

    def forward(self, x, times=None, mask=None):
        inputs, lengths = self.inputs(x, times, mask)
        output = self.cell.run_sequence(inputs)  # torch.nn.GRU with the cell's parameters
        return output, last_observed(output, lengths)


register_model(
    ModelSpec("gru_d", GRUD, sequence=True, summary="GRU-D (Che et al., Scientific Reports 2018)")
)
register_model(
    ModelSpec(
        "gru_dt",
        GRUDt,
        sequence=True,
        summary="GRU on [x, mask, Δt] (the baseline of Rubanova et al. 2019)",
    )
)
