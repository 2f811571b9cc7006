"""torch's GRU and LSTM cells behind the library's interface (discrete baselines)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import AbstractCell

__all__ = ["GRUCell", "LSTMCell"]


class GRUCell(AbstractCell):
    """``torch.nn.GRUCell`` (Cho et al. 2014) as an :class:`AbstractCell`."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ):
        super().__init__(input_size, hidden_size)
        self.cell = nn.GRUCell(input_size, hidden_size, bias=bias, device=device, dtype=dtype)

    def step(self, x, h, dt=None):
        return self.cell(x, h)


class LSTMCell(AbstractCell):
    """``torch.nn.LSTMCell`` (Hochreiter & Schmidhuber 1997); the state is ``[h, c]``,
    ``(batch, 2 * hidden_size)``, and :meth:`hidden` reads ``h``."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ):
        super().__init__(input_size, hidden_size, 2 * hidden_size)
        self.cell = nn.LSTMCell(input_size, hidden_size, bias=bias, device=device, dtype=dtype)

    def step(self, x, state, dt=None):
        h, c = state.split(self.hidden_size, dim=-1)
        h, c = self.cell(x, (h, c))
        return torch.cat([h, c], dim=-1)
