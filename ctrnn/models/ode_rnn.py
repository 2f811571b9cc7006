"""ODE-RNN (Rubanova, Chen and Duvenaud, *Latent ODEs for irregularly-sampled time series*,
NeurIPS 2019, Algorithm 1).

Between observations the hidden state follows ``dh/dt = f_θ(h)``; at each observation a GRU
update reads the values and the mask:

```
h'_i = ODESolve(f_θ, h_{i-1}, (t_{i-1}, t_i))
h_i  = GRUCell([x_i ⊙ m_i, m_i], h'_i)     if anything is observed at t_i, else h'_i
```

with ``h_0 = 0`` and no flow before the first observation.

- :class:`ODEFlow`: ``f_θ`` as a continuous model (an :class:`AbstractContinuousRNN` without
  input); ``discretize(scheme, dt)`` gives the cell of one step of the flow.
- :class:`ODERNNCell`: the discretized hybrid: one step of the flow, then the GRU update.
- :class:`ODERNN`: the sequence module; it solves the flow over every interval between
  observations with the ``solvers`` configuration given (one batched solve per interval).
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
)
from ._baselines import GRUCell
from ._registry import ModelSpec, register_model

__all__ = ["ODERNN", "ODEFlow", "ODERNNCell"]


class ODEFlow(AbstractContinuousRNN):
    """``dh/dt = f_θ(h)``: an MLP with ``layers`` hidden layers of ``width`` units and
    ``tanh`` (as in Rubanova et al., 2019).

    The flow has no input; ``input_size`` is 1 because cells need a positive input size,
    and the cells of :meth:`discretize` ignore that input. As a module, ``flow(t, h)`` is
    the vector field that :func:`solvers.solve` integrates.
    """

    def __init__(self, hidden_size: int, width: int | None = None, layers: int = 1):
        super().__init__(1, hidden_size)
        width = width or hidden_size
        mods: list[nn.Module] = []
        size = hidden_size
        for _ in range(layers):
            mods += [nn.Linear(size, width), nn.Tanh()]
            size = width
        mods.append(nn.Linear(size, hidden_size))
        self.net = nn.Sequential(*mods)

    def vector_field(self, t, h, x=None):
        return self.net(h)

    def forward(self, t, h):
        return self.net(h)


class ODERNNCell(AbstractCell):
    """The discrete ODE-RNN: ``h ← GRU([x ⊙ m, m], flow_step(h))`` with ``flow_step`` one
    step of ``scheme`` with step ``dt`` (see :meth:`ODERNN.discretize`).

    The input is ``[x ⊙ m, m]``, ``2 C`` features. Rows with nothing observed are the
    sequence module's business (it skips their update); the cell always applies it.
    """

    takes_dt = True

    def __init__(self, flow_cell: AbstractCell, update: GRUCell):
        super().__init__(update.input_size, update.hidden_size)
        self.flow_cell, self.update = flow_cell, update
        self.dt = flow_cell.dt

    def step(self, x, h, dt=None):
        zero = x.new_zeros(x.shape[0], 1)
        return self.update(x, self.flow_cell.step(zero, h, dt))


class ODERNN(AbstractSequenceModel):
    """ODE-RNN over a batch of irregular, partly missing sequences.

    Args:
        input_size: data channels ``C``; the GRU reads ``[x ⊙ m, m]`` (``2 C``).
        hidden_size: size of ``h``.
        num_classes: size of the linear head on ``h`` at each sample's last observation.
        width, layers: the flow MLP's hidden width (default ``hidden_size``) and depth.
        solver: options for :func:`solvers.solve` (method, dt, rtol, atol, adjoint, backend);
            default ``dict(method="rk4", dt=0.25)``. A fixed-step method splits each
            interval ``(t_{i-1}, t_i)`` into ``⌈Δt_i / dt⌉`` steps per sample.

    ``forward(x, times=None, mask=None) -> (output, h_n)``: ``output (batch, T, hidden_size)``
    is ``h_i`` after the update at ``t_i``, ``h_n`` at each sample's last observed step.
    Cost: ``T - 1`` batched solves (one per interval), each with its own setup; the flow
    cannot be one solve over all times because the GRU updates make ``h`` jump.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_classes: int | None = None,
        width: int | None = None,
        layers: int = 1,
        solver: dict | None = None,
    ):
        super().__init__(input_size, hidden_size)
        self.flow = ODEFlow(hidden_size, width, layers)
        self.update = GRUCell(2 * input_size, hidden_size)
        self.solver = dict(method="rk4", dt=0.25) if solver is None else dict(solver)
        self.head = self.make_head(num_classes)

    @property
    def formulation(self) -> ODEFlow:
        """The flow between observations (the GRU update at observations is discrete)."""
        return self.flow

    def wrap_cell(self, cell: AbstractCell) -> ODERNNCell:
        """The discrete ODE-RNN: one step of ``cell`` (the flow's) before each update;
        ``discretize(scheme, dt)`` is that for observations ``dt`` apart, and a per-sample
        ``dt`` steps each sample by its own gap."""
        return ODERNNCell(cell, self.update)

    def forward(self, x, times=None, mask=None):
        values, t, observed, lengths = self.prepare(x, times, mask)
        t, _ = observation_grid(t, lengths, self.time_scale)
        m = observed.to(values.dtype)
        inputs = torch.cat([values * m, m], dim=-1)
        any_obs = observed.any(dim=2, keepdim=True)
        intervals = torch.stack([t[:, :-1], t[:, 1:]], dim=-1)  # (B, T - 1, 2)
        problem = solvers.ODE(self.flow)
        xs, obs = inputs.unbind(1), any_obs.unbind(1)
        h = values.new_zeros(values.shape[0], self.hidden_size)
        h = torch.where(obs[0], self.update(xs[0], h), h)
        states = [h]
        for xi, oi, span in zip(xs[1:], obs[1:], intervals.unbind(1)):
            h = solvers.solve(problem, h, span, **self.solver).ys[:, -1]
            h = torch.where(oi, self.update(xi, h), h)
            states.append(h)
        output = torch.stack(states, dim=1)
        return output, last_observed(output, lengths)


register_model(
    ModelSpec("ode_rnn", ODERNN, sequence=True, summary="ODE-RNN (Rubanova et al., NeurIPS 2019)")
)
