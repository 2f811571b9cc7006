"""torch's GRU and LSTM cells behind the library's interface (discrete baselines).

A whole sequence runs through ``torch.nn.GRU`` / ``torch.nn.LSTM`` with the cell's own
parameters (``torch.func.functional_call``): every input projected by one product before
the recurrence, oneDNN on the CPU and cuDNN on a GPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ._base import AbstractCell

__all__ = ["GRUCell", "LSTMCell"]


def _sequence_parameters(cell: nn.RNNCellBase) -> dict[str, torch.Tensor]:
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return {f"{n}_l0": getattr(cell, n) for n in names if getattr(cell, n, None) is not None}


def _template(owner: AbstractCell, kind: type[nn.RNNBase]) -> nn.RNNBase:
    """An ``nn.GRU``/``nn.LSTM`` of the cell's sizes on the meta device, kept out of the
    module tree; its parameters are replaced by the cell's at each call."""
    found = owner.__dict__.get("_sequence_template")
    if found is None:
        cell = owner.cell
        found = kind(
            cell.input_size, cell.hidden_size, bias=cell.bias, batch_first=True, device="meta"
        )
        owner.__dict__["_sequence_template"] = found
    return found


class GRUCell(AbstractCell):
    """``torch.nn.GRUCell`` (Cho et al. 2014) as an :class:`AbstractCell`. It reads no times:
    a ``dt`` is refused."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ):
        super().__init__(input_size, hidden_size)
        self.cell = nn.GRUCell(input_size, hidden_size, bias=bias, device=device, dtype=dtype)

    def step(self, x, h, dt=None):
        return self.cell(x, h)

    def run_sequence(self, x, dt=None, hx=None):
        """The hidden outputs ``(batch, T, hidden_size)``: ``torch.nn.GRU`` with this cell's
        parameters (equal to the step-by-step cell to round-off)."""
        self.step_sizes(dt, x.shape[0], x)  # refuses a dt
        h0 = None if hx is None else hx[None]
        gru = _template(self, nn.GRU)
        return functional_call(gru, _sequence_parameters(self.cell), (x, h0))[0]


class LSTMCell(AbstractCell):
    """``torch.nn.LSTMCell`` (Hochreiter & Schmidhuber 1997); the state is ``[h, c]``,
    ``(batch, 2 * hidden_size)``, and :meth:`hidden` reads ``h``. It reads no times."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ):
        super().__init__(input_size, hidden_size, 2 * hidden_size)
        self.cell = nn.LSTMCell(input_size, hidden_size, bias=bias, device=device, dtype=dtype)

    def step(self, x, state, dt=None):
        h, c = state.split(self.hidden_size, dim=-1)
        h, c = self.cell(x, (h, c))
        return torch.cat([h, c], dim=-1)

    def run_sequence(self, x, dt=None, hx=None):
        """The hidden outputs ``(batch, T, hidden_size)``: ``torch.nn.LSTM`` with this cell's
        parameters (equal to the step-by-step cell to round-off)."""
        self.step_sizes(dt, x.shape[0], x)  # refuses a dt
        state = None
        if hx is not None:
            h, c = hx.split(self.hidden_size, dim=-1)
            state = (h[None].contiguous(), c[None].contiguous())
        lstm = _template(self, nn.LSTM)
        return functional_call(lstm, _sequence_parameters(self.cell), (x, state))[0]
