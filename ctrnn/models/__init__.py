"""Recurrent models: continuous formulations, their discretizations into cells, and sequence
modules. Build any of them by name with :func:`create`; :func:`available` lists the names."""

from ._base import (
    AbstractCell,
    AbstractContinuousRNN,
    RungeKuttaCell,
    SequenceModel,
    hold_inputs,
    prepare_sequence,
)
from ._baselines import GRUCell, LSTMCell
from ._registry import available, create, register_model

__all__ = [
    "AbstractCell",
    "AbstractContinuousRNN",
    "GRUCell",
    "LSTMCell",
    "RungeKuttaCell",
    "SequenceModel",
    "available",
    "create",
    "hold_inputs",
    "prepare_sequence",
    "register_model",
]
