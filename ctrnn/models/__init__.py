"""Recurrent models: continuous formulations, their discretizations into cells, and sequence
modules. Build any of them by name with :func:`create`; :func:`available` lists the names."""

from . import (  # noqa: F401  (each family's module registers its models)
    ancde,
    cornn,
    gru_d,
    hamiltonian,
    lipschitz,
    ncde,
    noisy,
    ode_rnn,
    tau_gru,
)
from ._base import (
    AbstractCell,
    AbstractContinuousRNN,
    AbstractSequenceModel,
    ExponentialEulerCell,
    InputDrivenField,
    RungeKuttaCell,
    SequenceModel,
    hold_inputs,
    last_observed,
    observation_grid,
    prepare_sequence,
    with_input_gradients,
)
from ._baselines import GRUCell, LSTMCell
from ._registry import ModelSpec, available, create, register_model, spec
from .ncde import PathDrivenModel

__all__ = [
    "AbstractCell",
    "AbstractContinuousRNN",
    "AbstractSequenceModel",
    "ExponentialEulerCell",
    "GRUCell",
    "InputDrivenField",
    "LSTMCell",
    "ModelSpec",
    "PathDrivenModel",
    "RungeKuttaCell",
    "SequenceModel",
    "available",
    "create",
    "hold_inputs",
    "last_observed",
    "observation_grid",
    "prepare_sequence",
    "register_model",
    "spec",
    "with_input_gradients",
]
