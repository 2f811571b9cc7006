"""Noise and stability for the noise-injected RNN (Lim, Erichson, Hodgkinson & Mahoney,
"Noisy recurrent neural networks", NeurIPS 2021).

The paper argues that injecting noise in training favours more stable dynamics. To check
that, the spectrum and the gradient norms of the same model are measured with and without
the noise. The noise is drawn once per step and sample before a run and then given to the
cell as data, so that every tangent vector (and the backward pass) sees the same
realisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ctrnn.models.noisy import NoisyRNN, NoisyRNNCell, NoisyRNNCodeCell

__all__ = ["NoiseStudy", "draw_noise", "noise_study", "noisy_step"]


def draw_noise(cell, inputs: torch.Tensor, seed: int) -> dict | None:
    """Per-step noise ``{name: (batch, T, hidden)}`` for a noisy cell in training mode, else
    ``None`` (the cell is then deterministic)."""
    if not isinstance(cell, (NoisyRNNCell, NoisyRNNCodeCell)) or not cell.model.noisy():
        return None
    B, T = inputs.shape[:2]
    shape = (B, T, cell.hidden_size)
    g = torch.Generator(device=inputs.device).manual_seed(seed)
    kw = dict(generator=g, dtype=inputs.dtype, device=inputs.device)
    if isinstance(cell, NoisyRNNCell):
        return {"dw": torch.randn(shape, **kw) * math.sqrt(cell.dt)}
    return {"xi": torch.randn(shape, **kw), "u": torch.rand(shape, **kw)}


def noisy_step(cell, x: torch.Tensor, h: torch.Tensor, draws: dict | None) -> torch.Tensor:
    """One step of a noise-injected cell with the given noise (``None``: without noise)."""
    if isinstance(cell, NoisyRNNCell):
        dw = None if draws is None else draws["dw"].to(h.dtype)
        return cell.step_with_increment(x, h, dw)
    # the authors' code's cell: h + d ⊙ m ⊙ F + σ_add ξ, m ~ U[1 - σ_mult, 1)
    m = cell.model
    update = m.dynamics(h, x)
    if draws is None:
        return h + m.unit_step * update
    scale = 1 - m.sigma_mult + m.sigma_mult * draws["u"].to(h.dtype)
    return h + m.unit_step * update * scale + m.sigma_add * draws["xi"].to(h.dtype)


@dataclass(frozen=True)
class NoiseStudy:
    """The same model measured with and without its injected noise (:func:`noise_study`).

    Attributes:
        exponents_clean, exponents_noisy: ``(batch, k)`` Lyapunov exponents per step of the
            cell, largest first.
        stderr_clean, stderr_noisy: their standard errors.
        gradients_clean, gradients_noisy: ``(batch, T + 1)`` norms ``‖∂L/∂h_t‖``.
        dt: the cell's step (divide the exponents by it for rates per unit time).
    """

    exponents_clean: torch.Tensor
    exponents_noisy: torch.Tensor
    stderr_clean: torch.Tensor
    stderr_noisy: torch.Tensor
    gradients_clean: torch.Tensor
    gradients_noisy: torch.Tensor
    dt: float


def noise_study(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    h0: torch.Tensor | None = None,
    k: int | None = None,
    transient: int = 0,
    seed: int = 0,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    blocks: int = 10,
) -> NoiseStudy:
    """Spectrum and gradient norms of a noise-injected RNN's cell, with and without noise.

    Args:
        model: a :class:`~ctrnn.models.noisy.NoisyRNN`, or a discrete-mode
            :class:`~ctrnn.models.SequenceModel` holding one (its ``dt``; the cell is the
            paper's Euler–Maruyama cell, or the code variant's).
        inputs: ``(batch, T, input_size)`` or ``(T, input_size)``.
        h0: initial states ``(batch, hidden_size)`` (default zeros, batch of ``inputs``).
        k: number of exponents (default all).
        transient: steps not averaged in the spectrum.
        seed: seed of the noise.
        loss: ``loss(output, h_n) -> scalar`` for the gradient norms (default
            ``h_n.sum()``), see :func:`gradient_norms`.
        blocks: blocks for the standard error of the exponents.

    The noisy run uses the model's noise levels as they are (``sigma_add``, ``sigma_mult``,
    ``noise_scale``) whatever its train/eval mode; the clean run is the same cell with the
    noise set to zero. Both runs see the same inputs and start from the same states.
    """
    from ctrnn.models import SequenceModel

    from ._gradients import gradients_of_steps
    from ._lyapunov import CellMap, lyapunov_spectrum
    from ._targets import as_sequence

    owner = "noise_study"
    dt = 0.01
    if isinstance(model, SequenceModel) and isinstance(model.model, NoisyRNN):
        model, dt = model.model, model.dt
    if not isinstance(model, NoisyRNN):
        raise TypeError(
            f"{owner}: expected a NoisyRNN or a SequenceModel holding one, got "
            f"{type(model).__name__}"
        )
    cell = model.discretize("euler_maruyama", dt)
    inputs = as_sequence(inputs, owner)
    B, T = inputs.shape[:2]
    if h0 is None:
        h0 = inputs.new_zeros(B, model.state_size)
    was_training = model.training
    spectra, grads = {}, {}
    try:
        model.train()  # noisy() is true in training only; the draws are made here, once
        draws = draw_noise(cell, inputs, seed)
        if draws is None:
            raise ValueError(
                f"{owner}: the model injects no noise (sigma_add = {model.sigma_add}, "
                f"sigma_mult = {model.sigma_mult}, noise_scale = {model.noise_scale}); set a "
                "noise level"
            )
        # in evaluation mode the cell is its drift; the noisy run gets the draws as data
        model.eval()
        for name, noise in (("clean", None), ("noisy", draws)):
            f = CellMap(cell, inputs, noise)
            spectra[name] = lyapunov_spectrum(
                f, h0, T - transient, transient=transient, k=k, blocks=blocks, return_history=True
            )
            grads[name] = gradients_of_steps(f, h0, T, cell.hidden, loss, owner)
    finally:
        model.train(was_training)
    return NoiseStudy(
        exponents_clean=spectra["clean"].exponents,
        exponents_noisy=spectra["noisy"].exponents,
        stderr_clean=spectra["clean"].stderr,
        stderr_noisy=spectra["noisy"].stderr,
        gradients_clean=grads["clean"],
        gradients_noisy=grads["noisy"],
        dt=float(dt),
    )
