"""What an analysis runs on: the discrete cell or the continuous formulation of a model."""

from __future__ import annotations

import torch

from ctrnn.models import AbstractCell, AbstractContinuousRNN, SequenceModel

__all__ = ["as_sequence", "resolve_cell", "resolve_continuous"]


def resolve_cell(model, owner: str) -> AbstractCell:
    """The discrete cell of ``model``: a cell itself, or a discrete-mode ``SequenceModel``'s."""
    if isinstance(model, AbstractCell):
        return model
    if isinstance(model, SequenceModel):
        if model.mode == "discrete":
            return model.cell
        raise ValueError(
            f"{owner}: the SequenceModel runs in continuous mode; use flow_map(model, inputs) "
            "for the flow of its continuous formulation, or pass model.model.discretize("
            "scheme, dt) for a cell"
        )
    raise TypeError(
        f"{owner}: expected a cell (ctrnn.models.AbstractCell) or a SequenceModel, got "
        f"{type(model).__name__}; for a model that transforms its inputs first (GRU-D, "
        "GRU-Δt, Neural CDE, ODE-RNN) pass its cell (model.cell or model.discretize(...)) "
        "with the inputs that cell reads"
    )


def resolve_continuous(model, owner: str) -> tuple[AbstractContinuousRNN, dict]:
    """``(continuous model, default solver options)`` of ``model``."""
    if isinstance(model, SequenceModel):
        if not isinstance(model.model, AbstractContinuousRNN):
            raise ValueError(
                f"{owner}: the SequenceModel wraps the discrete cell "
                f"{type(model.model).__name__}, which has no continuous formulation; use "
                "cell_map(model, inputs)"
            )
        return model.model, dict(model.solver)
    if isinstance(model, AbstractContinuousRNN):
        return model, dict(method="dopri5")
    raise TypeError(
        f"{owner}: expected a continuous model (ctrnn.models.AbstractContinuousRNN) or a "
        f"SequenceModel holding one, got {type(model).__name__}"
    )


def as_sequence(inputs, owner: str, name: str = "inputs") -> torch.Tensor:
    """``inputs`` as ``(batch, T, channels)``; ``(T, channels)`` becomes batch 1."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(
            f"{owner}: {name} must be a tensor (batch, T, channels), got {type(inputs).__name__}"
        )
    if inputs.dim() == 2:
        inputs = inputs.unsqueeze(0)
    if inputs.dim() != 3:
        raise ValueError(
            f"{owner}: {name} must have shape (batch, T, channels) or (T, channels), got "
            f"{tuple(inputs.shape)}"
        )
    return inputs
