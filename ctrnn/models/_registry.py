"""Models by name: ``create(name, **options)``, ``available()`` and the specs behind them.

A model is registered once as a :class:`ModelSpec`: what is built (a continuous formulation
or a cell class that :class:`~ctrnn.models.SequenceModel` runs, or a sequence-model class)
and the defaults of the sequence options. The options that :func:`create` accepts are read
from the signatures of what is built, so no builder re-lists them, and an unknown option
is refused before anything is built, naming the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._base import AbstractSequenceModel, SequenceModel

__all__ = ["ModelSpec", "available", "create", "register_model", "spec"]

#: options that SequenceModel takes around a formulation or a cell
_SEQUENCE_OPTIONS = ("num_classes", "mode", "scheme", "dt", "solver", "time_scale")
#: options of a formulation or cell that create passes on to SequenceModel's result instead
_PLACEMENT = ("device", "dtype")
_SIZES = ("input_size", "hidden_size")


@dataclass(frozen=True)
class ModelSpec:
    """How :func:`create` builds one model.

    Args:
        name: the registry name.
        build: a class. With ``sequence=False`` it is a continuous formulation
            (:class:`~ctrnn.models.AbstractContinuousRNN`) or a cell, built as
            ``build(input_size, hidden_size, **own options)`` and run by a
            :class:`~ctrnn.models.SequenceModel`; with ``sequence=True`` it is an
            :class:`~ctrnn.models.AbstractSequenceModel` built with every option.
        sequence: see ``build``.
        defaults: defaults of the sequence options (``scheme``, ``dt``, ``mode``, …) that
            differ from :class:`~ctrnn.models.SequenceModel`'s.
        discrete_only: ``build`` is a cell: no ``mode``, ``scheme`` or ``solver`` option.
        reads_times: ``False`` for the baselines that read no observation times (a GRU,
            an LSTM); documented, and checked by the contract tests.
        summary: one line for listings.
    """

    name: str
    build: type
    sequence: bool = False
    defaults: Mapping[str, object] = field(default_factory=dict)
    discrete_only: bool = False
    reads_times: bool = True
    summary: str = ""

    def __post_init__(self):
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        if not isinstance(self.build, type):
            raise TypeError(f"ModelSpec {self.name!r}: build must be a class, got {self.build!r}")
        if self.sequence and not issubclass(self.build, AbstractSequenceModel):
            raise TypeError(
                f"ModelSpec {self.name!r}: a sequence spec builds an AbstractSequenceModel, "
                f"got {self.build.__name__}"
            )
        unknown = set(self.defaults) - set(self.options())
        if unknown:
            raise ValueError(
                f"ModelSpec {self.name!r}: defaults for unknown options {sorted(unknown)}"
            )

    def _own(self) -> dict[str, inspect.Parameter]:
        params = dict(inspect.signature(self.build).parameters)
        for p in params.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                raise TypeError(
                    f"ModelSpec {self.name!r}: {self.build.__name__} takes *args/**kwargs; "
                    "its options must be named"
                )
        return params

    def options(self) -> dict[str, inspect.Parameter]:
        """Every option :func:`create` accepts for this model, with its default."""
        own = self._own()
        if self.sequence:
            params = own
        else:
            sequence = inspect.signature(SequenceModel).parameters
            names = ("num_classes", "dt", "time_scale")
            if not self.discrete_only:
                names = ("num_classes", "mode", "scheme", "dt", "solver", "time_scale")
            params = {n: p for n, p in own.items()}
            for n in names:
                params[n] = sequence[n]
        return {
            n: p.replace(default=self.defaults[n], kind=p.KEYWORD_ONLY)
            if n in self.defaults
            else p.replace(kind=p.KEYWORD_ONLY)
            for n, p in params.items()
        }

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.Signature(list(self.options().values()))

    def __call__(self, **options) -> AbstractSequenceModel:
        accepted = self.options()
        unknown = [k for k in options if k not in accepted]
        if unknown:
            raise ValueError(
                f"model {self.name!r}: unknown option {unknown[0]!r}; valid options: "
                f"{', '.join(accepted)}"
            )
        missing = [
            n
            for n, p in accepted.items()
            if p.default is inspect.Parameter.empty and n not in options
        ]
        if missing:
            raise ValueError(f"model {self.name!r}: missing required option {missing[0]!r}")
        values = {
            n: p.default for n, p in accepted.items() if p.default is not inspect.Parameter.empty
        }
        values.update(options)
        if self.sequence:
            return self.build(**values)
        seq = {n: values.pop(n) for n in _SEQUENCE_OPTIONS if n in values}
        core = self.build(**values)
        model = SequenceModel(core, **seq)
        placement = {n: values[n] for n in _PLACEMENT if values.get(n) is not None}
        return model.to(**placement) if placement else model


_SPECS: dict[str, ModelSpec] = {}
#: kept for callers that read the registry directly (each entry is callable with a signature)
_BUILDERS = _SPECS


def register_model(spec_or_name: ModelSpec | str, build: Callable | None = None, **kw) -> None:
    """Register a :class:`ModelSpec` (or ``register_model(name, build, **spec fields)``)."""
    if not isinstance(spec_or_name, ModelSpec):
        spec_or_name = ModelSpec(spec_or_name, build, **kw)
    if spec_or_name.name in _SPECS:
        raise ValueError(f"a model named {spec_or_name.name!r} is already registered")
    _SPECS[spec_or_name.name] = spec_or_name


def available() -> tuple[str, ...]:
    """Names of the models that :func:`create` builds."""
    return tuple(_SPECS)


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model (its options: ``spec(name).options()``)."""
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(_SPECS)}")
    return _SPECS[name]


def create(name: str, **options) -> AbstractSequenceModel:
    """Build a model by name.

    Every model takes ``input_size``, ``hidden_size`` and ``num_classes`` (optional); models
    with a continuous formulation also take ``mode`` (``"discrete"`` or ``"continuous"``),
    ``scheme``, ``dt``, ``solver`` (options for :func:`solvers.solve`) and ``time_scale``;
    the rest are the family's own (see its docs page, or ``spec(name).options()``). An
    unknown name or option is a ValueError naming the valid ones; errors raised while
    building come through unchanged.
    """
    return spec(name)(**options)


def _register_baselines() -> None:
    from ._baselines import GRUCell, LSTMCell

    register_model(
        ModelSpec(
            "gru",
            GRUCell,
            discrete_only=True,
            reads_times=False,
            summary="torch.nn.GRUCell (Cho et al. 2014); reads no times",
        )
    )
    register_model(
        ModelSpec(
            "lstm",
            LSTMCell,
            discrete_only=True,
            reads_times=False,
            summary="torch.nn.LSTMCell (Hochreiter & Schmidhuber 1997); reads no times",
        )
    )


_register_baselines()
