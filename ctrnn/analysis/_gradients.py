"""Gradient norms through time, and their growth rate against the largest Lyapunov exponent.

``‖∂L/∂h_t‖`` for every state of a run shows whether gradients vanish or explode. Mikhaeil,
Monfared & Durstewitz ("On the difficulty of learning chaotic dynamics with RNNs", NeurIPS
2022) relate the two: the product of the Jacobians from step ``t`` to ``T`` grows like
``exp(λ_max (T - t))``, so the gradients of a loss at ``T`` explode when the largest
exponent is positive and vanish when it is negative, at that rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ctrnn.models import AbstractCell, SequenceModel, prepare_sequence
from ctrnn.models.hamiltonian import HamiltonianNet

from ._targets import as_sequence, resolve_cell

__all__ = ["GradientGrowth", "gradient_growth", "gradient_norms", "gradients_of_steps"]

#: ``loss(output, h_n) -> scalar`` on the hidden outputs and the final hidden state
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _default_loss(output: torch.Tensor, h_n: torch.Tensor) -> torch.Tensor:
    return h_n.sum()


def gradients_of_steps(
    step: Callable[[int, torch.Tensor], torch.Tensor],
    s0: torch.Tensor,
    T: int,
    hidden: Callable[[torch.Tensor], torch.Tensor],
    loss,
    owner: str,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """``‖∂L/∂s_t‖`` for ``t = 0 … T`` (``(batch, T + 1)``) of the run ``s_{n+1} = step(n, s_n)``.

    ``L = loss(output, h_n)`` with ``output (batch, T, hidden)`` the hidden part of
    ``s_1 … s_T`` and ``h_n`` its entry at ``lengths - 1`` (default: the last).
    """
    loss = _default_loss if loss is None else loss
    with torch.enable_grad():
        states = [s0.detach().clone().requires_grad_(True)]
        for n in range(T):
            states.append(step(n, states[-1]))
        output = torch.stack([hidden(s) for s in states[1:]], dim=1)
        if lengths is None:
            h_n = output[:, -1]
        else:
            index = (lengths - 1)[:, None, None].expand(-1, 1, output.shape[2])
            h_n = output.gather(1, index)[:, 0]
        value = loss(output, h_n)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{owner}: loss(output, h_n) must return a scalar tensor, got {got}")
        grads = torch.autograd.grad(value.reshape(()), states, allow_unused=True)
    norms = [
        torch.zeros(s0.shape[0], dtype=s0.dtype, device=s0.device)
        if g is None
        else g.flatten(1).norm(dim=1)
        for g in grads
    ]
    return torch.stack(norms, dim=1).detach()


def gradient_norms(
    model: nn.Module,
    x: torch.Tensor,
    times: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    loss: Loss | None = None,
    h0: torch.Tensor | None = None,
) -> torch.Tensor:
    """``‖∂L/∂h_t‖`` for every state ``h_0 … h_T`` of a run: ``(batch, T + 1)``.

    Args:
        model: a :class:`~ctrnn.models.SequenceModel` (discrete or continuous mode, any
            solver and adjoint), a cell (:class:`~ctrnn.models.AbstractCell`), or a depth-wise
            :class:`~ctrnn.models.hamiltonian.HamiltonianNet` (then ``t`` is the layer).
        x: ``(batch, T, input_size)`` inputs (missing values as the model takes them); for a
            ``HamiltonianNet``, the input features ``(batch, n)``.
        times: as for the model's ``forward`` (sequence models only).
        mask: as for the model's ``forward`` (sequence models only).
        loss: ``loss(output, h_n) -> scalar`` on the hidden outputs ``(batch, T, hidden)``
            and the final hidden state (default ``h_n.sum()``). Samples must not interact in
            the loss for the norms to be per sample (a sum or mean over the batch is fine).
        h0: initial state ``(batch, state_size)`` (default zeros, or ``x`` for a network).

    ``h_t`` is the whole state after ``t`` inputs (column 0 is the initial state): a τ-GRU's
    state includes its delay buffer, an LSTM's its cell state. In continuous mode the model
    is solved piecewise, one observation interval at a time with the model's solver
    options, and ``h_t`` is the state at the end of interval ``t`` (as the model's output
    ``t - 1``); each piece is differentiated by the configured adjoint, so every adjoint
    gives these norms. Delay models in continuous mode are rejected (the state at an
    observation time does not determine the future: the history does).
    """
    owner = "gradient_norms"
    if isinstance(model, HamiltonianNet):
        if times is not None or mask is not None:
            raise ValueError(f"{owner}: a HamiltonianNet takes no times or mask")
        y0 = x if h0 is None else h0
        return gradients_of_steps(model.layer, y0, model.depth, lambda s: s, loss, owner)
    if isinstance(model, AbstractCell):
        if times is not None or mask is not None:
            raise ValueError(
                f"{owner}: a bare cell takes no times or mask; wrap it in a SequenceModel for "
                "missing values and padding"
            )
        x = as_sequence(x, owner, "x")
        values, lengths = x, None
        cell = resolve_cell(model, owner)
    elif isinstance(model, SequenceModel):
        values, t, _, lengths = prepare_sequence(x, times, mask, owner)
        if values.shape[2] != model.model.input_size:
            raise ValueError(
                f"{owner}: expected {model.model.input_size} input channels, got {values.shape[2]}"
            )
        if model.mode == "continuous":
            return _continuous_norms(model, values, t, lengths, loss, h0, owner)
        cell = model.cell
    else:
        raise TypeError(
            f"{owner}: expected a SequenceModel, a cell or a HamiltonianNet, got "
            f"{type(model).__name__}; for a model that transforms its inputs first (GRU-D, "
            "Neural CDE, ODE-RNN), pass its cell with the inputs that cell reads"
        )
    B, T = values.shape[:2]
    if h0 is None:
        h0 = cell.initial_state(B, device=values.device, dtype=values.dtype)
    xs = values.unbind(1)
    return gradients_of_steps(lambda n, s: cell(xs[n], s), h0, T, cell.hidden, loss, owner, lengths)


def _continuous_norms(model, values, t, lengths, loss, h0, owner):
    continuous = model.model
    if continuous.problem_type == "dde":
        raise ValueError(
            f"{owner}: {type(continuous).__name__} in continuous mode is a delay equation; the "
            "gradient with respect to the state at one time does not capture its history. Use "
            "mode='discrete', whose cell state carries the delay buffer"
        )
    B, T = values.shape[:2]
    gap = (t[:, -1:] - t[:, -2:-1]) if T > 1 else torch.ones_like(t)
    t_ext = torch.cat([t, t[:, -1:] + gap], dim=1)
    if h0 is None:
        h0 = values.new_zeros(B, continuous.state_size)

    def step(n, s):
        x = values[:, n : n + 1].expand(-1, 2, -1)
        return continuous.solve(x, t_ext[:, n : n + 2], h0=s, **model.solver)[:, -1]

    return gradients_of_steps(step, h0, T, continuous.hidden, loss, owner, lengths)


@dataclass(frozen=True)
class GradientGrowth:
    """The largest Lyapunov exponent next to the growth rate of the gradient norms.

    Attributes:
        lyapunov: ``(batch,)`` the largest exponent per step along the run.
        lyapunov_stderr: ``(batch,)`` its standard error.
        rate: ``(batch,)`` the fitted slope of ``log ‖∂L/∂h_t‖`` against the number of
            steps back ``T - t``, over ``window``.
        norms: ``(batch, T + 1)`` the gradient norms (:func:`gradient_norms`).
        window: ``(first, last)`` steps back fitted.
    """

    lyapunov: torch.Tensor
    lyapunov_stderr: torch.Tensor
    rate: torch.Tensor
    norms: torch.Tensor
    window: tuple[int, int]


def gradient_growth(
    model: nn.Module,
    x: torch.Tensor,
    *,
    h0: torch.Tensor | None = None,
    transient: int | None = None,
    skip: int | None = None,
    loss: Loss | None = None,
    blocks: int = 5,
) -> GradientGrowth:
    """Measure the largest Lyapunov exponent and the gradient growth rate on the same run.

    Mikhaeil et al. (NeurIPS 2022) show that ``‖∂h_T/∂h_t‖`` grows like
    ``exp(λ_max (T - t))``; a loss gradient ``∂L/∂h_t = (∂h_T/∂h_t)ᵀ ∂L/∂h_T`` therefore
    grows at the rate ``λ_max`` per step back, for almost every ``∂L/∂h_T``.

    Args:
        model: a cell or a :class:`~ctrnn.models.SequenceModel`, discrete or continuous
            (continuous: observations at ``0, 1, …``, rates per unit time).
        x: inputs ``(batch, T, input_size)`` without missing values.
        h0: initial states (default zeros).
        transient: first steps of the run left out of both estimates (default ``T // 10``).
        skip: last steps (nearest the loss) left out of the gradient fit, while the
            backward vector aligns with the most expanding direction (default ``T // 10``).
        loss: as for :func:`gradient_norms`.
        blocks: blocks for the exponent's standard error.
    """
    from ._lyapunov import cell_map, flow_map, lyapunov_spectrum

    owner = "gradient_growth"
    x = as_sequence(x, owner, "x")
    B, T = x.shape[:2]
    transient = T // 10 if transient is None else transient
    skip = T // 10 if skip is None else skip
    if T - transient - skip < 2 or transient < 0 or skip < 0:
        raise ValueError(
            f"{owner}: a run of T = {T} steps leaves no window to fit after transient = "
            f"{transient} and skip = {skip}; pass a longer sequence"
        )
    norms = gradient_norms(model, x, loss=loss, h0=h0)
    continuous = isinstance(model, SequenceModel) and model.mode == "continuous"
    if continuous:
        f = flow_map(model, x)
        state_size = model.model.state_size
    else:
        f = cell_map(model, x)
        state_size = f.cell.state_size
    start = x.new_zeros(B, state_size) if h0 is None else h0
    steps = f.num_steps - transient
    res = lyapunov_spectrum(
        f, start, steps, transient=transient, k=1, blocks=min(blocks, steps), return_history=True
    )
    back = torch.arange(T, -1, -1, dtype=norms.dtype)  # steps back of h_0 … h_T
    keep = (back >= skip) & (back <= T - transient)
    s = back[keep]
    window = norms[:, keep]
    if not torch.isfinite(window).all():
        raise ValueError(
            f"{owner}: the gradient norms overflow to inf or NaN in {norms.dtype} over the "
            "fitted window (exploding gradients); run the model in float64 or on a shorter "
            "sequence"
        )
    logs = window.clamp_min(torch.finfo(norms.dtype).tiny).log()
    s_c = s - s.mean()
    rate = ((logs - logs.mean(dim=1, keepdim=True)) * s_c).sum(dim=1) / (s_c**2).sum()
    return GradientGrowth(
        lyapunov=res.exponents[:, 0],
        lyapunov_stderr=res.stderr[:, 0],
        rate=rate,
        norms=norms,
        window=(skip, T - transient),
    )
