"""The training configuration: one validated dataclass, to and from JSON and YAML."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["SolverOptions", "TrainConfig"]

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("none", "cosine", "plateau")
MONITORS = ("val_acc", "val_loss")
MODES = ("discrete", "continuous")
SPLITS = ("pooled", "original")
ADJOINTS = ("direct", "backsolve", "checkpoint")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(
        value
    )


def _check_int(owner: str, name: str, value, *, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_float(owner: str, name: str, value, *, minimum: float, strict: bool = False) -> float:
    ok = _is_number(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        relation = ">" if strict else ">="
        raise ValueError(
            f"{owner}: {name} must be a finite number {relation} {minimum}, got {value!r}"
        )
    return float(value)


def _check_choice(owner: str, name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _check_bool(owner: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be true or false, got {value!r}")
    return value


def _check_plain(owner: str, name: str, value) -> None:
    """Option values must survive JSON and YAML (and ``torch.load(weights_only=True)``)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(owner, name, item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{owner}: {name} keys must be strings, got {key!r}")
            _check_plain(owner, name, item)
        return
    raise ValueError(
        f"{owner}: {name} values must be numbers, strings, booleans, lists or dicts, "
        f"got {value!r} of type {type(value).__name__}"
    )


@dataclass(frozen=True)
class SolverOptions:
    """Options handed to :func:`solvers.solve` by models in continuous mode.

    Every field is optional; the ones given replace the model's default solver configuration
    as a whole (fields left as ``None`` take :func:`solvers.solve`'s defaults). An empty
    ``SolverOptions()`` leaves the model's own default in place.

    Attributes:
        method: a name from :func:`solvers.methods` (or :func:`solvers.sde_methods`).
        backend: a name from :func:`solvers.backends`.
        adjoint: ``"direct"``, ``"backsolve"`` or ``"checkpoint"``.
        rtol, atol: tolerances of adaptive methods (positive).
        dt: step of fixed-step methods, first step of adaptive ones (positive).
        max_steps: most steps per sample.
    """

    method: str | None = None
    backend: str | None = None
    adjoint: str | None = None
    rtol: float | None = None
    atol: float | None = None
    dt: float | None = None
    max_steps: int | None = None

    def __post_init__(self):
        import solvers

        owner = "TrainConfig"
        if self.method is not None:
            valid = (
                *solvers.methods(),
                *(m for m in solvers.sde_methods() if m not in solvers.methods()),
            )
            _check_choice(owner, "solver.method", self.method, valid)
        if self.backend is not None:
            _check_choice(owner, "solver.backend", self.backend, solvers.backends())
        if self.adjoint is not None:
            _check_choice(owner, "solver.adjoint", self.adjoint, ADJOINTS)
        for name in ("rtol", "atol", "dt"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(
                    self, name, _check_float(owner, f"solver.{name}", value, minimum=0, strict=True)
                )
        if self.max_steps is not None:
            _check_int(owner, "solver.max_steps", self.max_steps, minimum=1)

    def to_dict(self) -> dict[str, Any]:
        """The options that are set, as keyword arguments for :func:`solvers.solve`."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Each field is checked when the config is built;
    a bad value is a ValueError naming the field and the value.

    Attributes:
        model: a name from :func:`ctrnn.models.available`.
        hidden_size: the model's ``hidden_size``.
        model_options: further keyword arguments for :func:`ctrnn.models.create` (e.g.
            ``{"delay": 5.0}`` for ``tau_gru``, ``{"interpolation": "linear"}`` for
            ``neural_cde``, ``{"scheme": "rk4", "dt": 0.5}``).
        mode: ``"discrete"`` or ``"continuous"`` for models that have both; ``None`` takes the
            model's default, except that solver options switch such a model to continuous.
        solver: :class:`SolverOptions` for continuous mode (a dict is accepted).
        dataset: a name from :func:`ctrnn.data.available_datasets` (case-insensitive): a
            shipped or synthetic set, or any UEA/UCR archive set found under ``data_root`` or
            in an installed aeon's or sktime's data directory; or the path to an archive set's
            ``NAME_TRAIN.ts`` file or folder (stored as ``NAME``, its folder as
            ``data_root``). ``None`` for data handed to :func:`ctrnn.train.train` as ``data=``.
        dataset_options: options of a synthetic dataset's generator (e.g. ``{"n": 200}``).
        missing: fraction of time points dropped per series, in ``[0, 1)``.
        split: ``"pooled"`` (stratified 70/15/15) or ``"original"`` (see ``load_dataset``).
        time_channel: prepend the observation time as channel 0.
        normalize: standardise channels with the training statistics.
        data_root: where file-based datasets are looked up (``None``: the default); stored
            as an absolute path.
        data_seed: seed of the missing-data draw and the split (``None``: ``seed``).
        seed: seed of the model's initialisation, the shuffles and any noise.
        epochs: most training epochs; ``None`` (the default): as many as ``steps``
            optimiser steps take, ``ceil(steps / batches per epoch)``, so that a set of 50
            series and one of 50,000 both get a useful amount of training.
        steps: the budget of optimiser steps that sets the epochs when ``epochs`` is None.
        batch_size: global batch size (split across processes under ``torchrun``).
        optimizer: ``"adam"`` or ``"adamw"``.
        lr: learning rate (the peak of the schedule).
        weight_decay: L2 penalty (Adam) or decoupled weight decay (AdamW).
        schedule: ``"none"``, ``"cosine"`` (the default: from ``lr`` to ``min_lr`` over the
            epochs) or ``"plateau"``
            (multiply by ``lr_factor`` after ``lr_patience`` epochs without improvement of
            ``monitor``).
        lr_factor, lr_patience, min_lr: parameters of the schedules.
        clip_grad_norm: clip the gradient's global 2-norm to this value (``None``: no clip).
        patience: stop after this many epochs without improvement of ``monitor``;
            ``"auto"`` (the default): a quarter of the epochs, at least 10 (see
            :meth:`patience_for`); ``None``: run every epoch.
        monitor: ``"val_loss"`` (lower is better) or ``"val_acc"`` (higher is better); picks
            the best checkpoint and drives early stopping and the plateau schedule. ``None``
            (the default): ``"val_loss"``, which, unlike the accuracy of a small validation
            set, changes with every epoch that improves the model.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, … (under ``torchrun``, ``"cuda"`` means
            each process's ``LOCAL_RANK`` device).
        num_workers: DataLoader worker processes.
        tensorboard: write TensorBoard scalars; ``None`` does so when ``tensorboard`` is
            installed.
    """

    model: str = "gru_d"
    hidden_size: int = 32
    model_options: dict[str, Any] = field(default_factory=dict)
    mode: str | None = None
    solver: SolverOptions = field(default_factory=SolverOptions)
    dataset: str | None = "JapaneseVowels"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    missing: float = 0.0
    split: str = "pooled"
    time_channel: bool = True
    normalize: bool = True
    data_root: str | None = None
    data_seed: int | None = None
    seed: int = 0
    epochs: int | None = None
    steps: int = 1000
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    lr_factor: float = 0.5
    lr_patience: int = 5
    min_lr: float = 0.0
    clip_grad_norm: float | None = 1.0
    patience: int | str | None = "auto"
    monitor: str | None = None
    device: str = "cpu"
    num_workers: int = 0
    tensorboard: bool | None = None

    def __post_init__(self):
        import ctrnn.models

        owner = "TrainConfig"
        if self.model not in ctrnn.models.available():
            raise ValueError(
                f"{owner}: unknown model {self.model!r}; available models: "
                f"{', '.join(ctrnn.models.available())}"
            )
        _check_int(owner, "hidden_size", self.hidden_size, minimum=1)
        if not isinstance(self.model_options, dict):
            raise ValueError(
                f"{owner}: model_options must be a dict of keyword arguments, "
                f"got {self.model_options!r}"
            )
        _check_plain(owner, "model_options", self.model_options)
        reserved = {"input_size", "hidden_size", "num_classes", "mode", "solver"}
        clash = sorted(reserved & set(self.model_options))
        if clash:
            raise ValueError(
                f"{owner}: model_options may not set {clash[0]!r}; it is the config field "
                f"{clash[0]!r} (input_size and num_classes come from the dataset)"
            )
        if self.mode is not None:
            _check_choice(owner, "mode", self.mode, MODES)
        if isinstance(self.solver, dict):
            unknown = sorted(set(self.solver) - {f.name for f in dataclasses.fields(SolverOptions)})
            if unknown:
                raise ValueError(
                    f"{owner}: unknown solver option {unknown[0]!r}; valid: "
                    f"{', '.join(f.name for f in dataclasses.fields(SolverOptions))}"
                )
            object.__setattr__(self, "solver", SolverOptions(**self.solver))
        elif not isinstance(self.solver, SolverOptions):
            raise ValueError(
                f"{owner}: solver must be a SolverOptions or a mapping of solver options such "
                f"as {{'method': 'rk4', 'dt': 0.5}}, got {type(self.solver).__name__} "
                f"{self.solver!r}"
            )
        if not isinstance(self.dataset_options, dict):
            raise ValueError(
                f"{owner}: dataset_options must be a dict of keyword arguments, "
                f"got {self.dataset_options!r}"
            )
        _check_plain(owner, "dataset_options", self.dataset_options)
        if not (_is_number(self.missing) and 0 <= self.missing < 1):
            raise ValueError(f"{owner}: missing must be a fraction in [0, 1), got {self.missing!r}")
        object.__setattr__(self, "missing", float(self.missing))
        _check_choice(owner, "split", self.split, SPLITS)
        _check_bool(owner, "time_channel", self.time_channel)
        _check_bool(owner, "normalize", self.normalize)
        if self.data_root is not None:
            if not isinstance(self.data_root, (str, os.PathLike)):
                raise ValueError(
                    f"{owner}: data_root must be a path string, got {self.data_root!r}"
                )
            # stored resolved, so that evaluate and --resume work from any directory
            object.__setattr__(self, "data_root", str(Path(self.data_root).expanduser().resolve()))
        if self.dataset is not None:
            name, root = _canonical_dataset(self.dataset, self.data_root)
            object.__setattr__(self, "dataset", name)
            object.__setattr__(self, "data_root", root)
        if self.data_seed is not None:
            _check_int(owner, "data_seed", self.data_seed, minimum=0)
        _check_int(owner, "seed", self.seed, minimum=0)
        if self.epochs is not None:
            _check_int(owner, "epochs", self.epochs, minimum=1)
        _check_int(owner, "steps", self.steps, minimum=1)
        _check_int(owner, "batch_size", self.batch_size, minimum=1)
        _check_choice(owner, "optimizer", self.optimizer, OPTIMIZERS)
        object.__setattr__(self, "lr", _check_float(owner, "lr", self.lr, minimum=0, strict=True))
        object.__setattr__(
            self, "weight_decay", _check_float(owner, "weight_decay", self.weight_decay, minimum=0)
        )
        _check_choice(owner, "schedule", self.schedule, SCHEDULES)
        factor = _check_float(owner, "lr_factor", self.lr_factor, minimum=0, strict=True)
        if factor >= 1:
            raise ValueError(f"{owner}: lr_factor must be in (0, 1), got {self.lr_factor!r}")
        object.__setattr__(self, "lr_factor", factor)
        _check_int(owner, "lr_patience", self.lr_patience, minimum=0)
        object.__setattr__(self, "min_lr", _check_float(owner, "min_lr", self.min_lr, minimum=0))
        if self.clip_grad_norm is not None:
            object.__setattr__(
                self,
                "clip_grad_norm",
                _check_float(owner, "clip_grad_norm", self.clip_grad_norm, minimum=0, strict=True),
            )
        if self.patience is not None and self.patience != "auto":
            if not _is_int(self.patience) or self.patience < 1:
                raise ValueError(
                    f"{owner}: patience must be an integer >= 1, 'auto' or None (no early "
                    f"stopping), got {self.patience!r}"
                )
        if self.monitor is not None:
            _check_choice(owner, "monitor", self.monitor, MONITORS)
        if not isinstance(self.device, str):
            raise ValueError(
                f"{owner}: device must be a string such as 'cpu' or 'cuda', got {self.device!r}"
            )
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ValueError(
                f"{owner}: device must be 'cpu', 'cuda', 'cuda:N' or another torch device, "
                f"got {self.device!r}"
            ) from None
        _check_int(owner, "num_workers", self.num_workers, minimum=0)
        if self.tensorboard is not None:
            _check_bool(owner, "tensorboard", self.tensorboard)

    # -- rules that depend on the data -------------------------------------------------------

    def epochs_for(self, batches_per_epoch: int) -> int:
        """The epochs to run: ``epochs`` if set, else ``ceil(steps / batches_per_epoch)``."""
        if self.epochs is not None:
            return self.epochs
        return max(1, math.ceil(self.steps / max(1, batches_per_epoch)))

    def patience_for(self, epochs: int) -> int | None:
        """Early stopping's patience in epochs: ``patience`` if set, ``None`` for none, and
        for ``"auto"`` a quarter of ``epochs``, at least 10."""
        if self.patience == "auto":
            return max(10, math.ceil(epochs / 4))
        return self.patience

    # -- conversions -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (the solver as a dict of the options that are set)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "solver":
                value = value.to_dict()
            elif f.name in ("model_options", "dataset_options"):
                value = json.loads(json.dumps(value))
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; an unknown key is a ValueError listing the valid ones."""
        if not isinstance(data, dict):
            raise ValueError(f"TrainConfig: expected a mapping of fields, got {data!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(
                f"TrainConfig: unknown field {unknown[0]!r}; valid fields: {', '.join(names)}"
            )
        data = dict(data)
        for key in ("model_options", "dataset_options", "solver"):
            if key in data and data[key] is None:
                del data[key]
        return cls(**data)

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` applied (and validated)."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_yaml(self) -> str:
        """YAML text (needs pyyaml: ``pip install "ctrnn[train]"``)."""
        yaml = _import_yaml()
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write to ``path``: YAML for ``.yaml``/``.yml``, else JSON."""
        path = Path(path)
        text = self.to_yaml() if path.suffix.lower() in (".yaml", ".yml") else self.to_json()
        path.write_text(text)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a JSON or YAML file (by its suffix)."""
        return cls.from_dict(read_config_file(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON or YAML config file (by suffix: ``.json``, ``.yaml``, ``.yml``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {str(path)!r}: invalid JSON: {e}") from None
    elif suffix in (".yaml", ".yml"):
        yaml = _import_yaml()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"config file {str(path)!r}: invalid YAML: {e}") from None
        if data is None:
            data = {}
    else:
        raise ValueError(
            f"config file {str(path)!r}: expected a .json, .yaml or .yml file, got {suffix!r}"
        )
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {str(path)!r}: expected a mapping of fields, got {type(data).__name__}"
        )
    return data


def _import_yaml():
    try:
        import yaml
    except ImportError:
        raise ImportError(
            'YAML configs need pyyaml: pip install "ctrnn[train]" (or use a .json config)'
        ) from None
    return yaml


def _canonical_dataset(name, root: str | None) -> tuple[str, str | None]:
    from ctrnn.data.datasets import canonical_dataset

    if not isinstance(name, (str, os.PathLike)) or not os.fspath(name):
        raise ValueError(
            f"TrainConfig: dataset must be a dataset name or the path to an archive set's "
            f"_TRAIN.ts file or folder, got {name!r}"
        )
    try:
        return canonical_dataset(os.fspath(name), root)
    except ValueError as e:
        raise ValueError(f"TrainConfig: {e}") from None
