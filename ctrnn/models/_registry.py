"""Models by name: ``create(name, **options)`` and ``available()``."""

from __future__ import annotations

from collections.abc import Callable

from ._base import SequenceModel

__all__ = ["available", "create", "register_model"]

_BUILDERS: dict[str, Callable[..., SequenceModel]] = {}


def register_model(name: str, builder: Callable[..., SequenceModel]) -> None:
    """Add a builder ``builder(input_size, hidden_size, **options) -> SequenceModel``."""
    if name in _BUILDERS:
        raise ValueError(f"a model named {name!r} is already registered")
    _BUILDERS[name] = builder


def available() -> tuple[str, ...]:
    """Names of the models that :func:`create` builds."""
    return tuple(_BUILDERS)


def create(name: str, **options) -> SequenceModel:
    """Build a model by name.

    Every model takes ``input_size``, ``hidden_size`` and ``num_classes`` (optional); models
    with a continuous formulation also take ``mode`` (``"discrete"`` or ``"continuous"``),
    ``scheme``, ``dt`` and ``solver`` (options for :func:`solvers.solve`); the rest are the
    family's own (see its docs page). An unknown name or option is a ValueError.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(_BUILDERS)}")
    try:
        return _BUILDERS[name](**options)
    except TypeError as e:
        raise ValueError(f"model {name!r}: {e}") from e


def _gru(input_size: int, hidden_size: int, num_classes: int | None = None, bias: bool = True):
    from ._baselines import GRUCell

    return SequenceModel(GRUCell(input_size, hidden_size, bias), num_classes=num_classes)


def _lstm(input_size: int, hidden_size: int, num_classes: int | None = None, bias: bool = True):
    from ._baselines import LSTMCell

    return SequenceModel(LSTMCell(input_size, hidden_size, bias), num_classes=num_classes)


register_model("gru", _gru)
register_model("lstm", _lstm)
