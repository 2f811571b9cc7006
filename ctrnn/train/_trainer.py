"""``train(config, out_dir)``: a seeded, resumable training run that writes a run directory."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import _checkpoint, _distributed
from ._config import TrainConfig
from ._loop import (
    Predictor,
    build_model,
    evaluate_loader,
    make_loader,
    seed_everything,
    train_epoch,
)

__all__ = ["METRICS_COLUMNS", "TrainResult", "TrainingWarning", "train"]

#: the columns of ``metrics.csv``, one row per epoch
METRICS_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
CHECKPOINT_FORMAT = 1

# What a last.pt must hold to resume from it.
_LAST_KEYS = (
    "config",
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "loader_generators",
    "history",
    "best_metric",
    "best_epoch",
    "bad_epochs",
    "stopped",
    "best_model",
)

# Fields that may change when a run is resumed: they do not change what was computed so far.
_RESUMABLE_CHANGES = {"epochs", "steps", "patience", "device", "num_workers", "tensorboard"}


class TrainingWarning(UserWarning):
    """A run finished, but its result deserves a look (e.g. its best epoch was the first)."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns (also written to ``run_dir/result.json``).

    Attributes:
        run_dir: the run directory.
        config: the configuration.
        history: one dict per epoch with the ``metrics.csv`` columns.
        monitor: the metric that chose the best epoch (``"val_acc"`` or ``"val_loss"``).
        best_epoch: the epoch (from 1) of ``best.pt``.
        best_metric: the monitored value at ``best_epoch``.
        test_loss, test_acc: of the best model on the test split (``test_acc`` None for
            regression).
        epochs_run: epochs trained in all (over every resumption).
        stopped_early: whether early stopping ended the run.
        dataset: the name of the data trained on (an archive set's real name, or the name of
            the data handed to :func:`train`).
    """

    run_dir: Path
    config: TrainConfig
    history: list[dict]
    monitor: str
    best_epoch: int
    best_metric: float
    test_loss: float
    test_acc: float | None
    epochs_run: int
    stopped_early: bool
    dataset: str | None = None

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "dataset": self.dataset,
            "monitor": self.monitor,
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "test_loss": self.test_loss,
            "test_acc": self.test_acc,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "seconds": sum(row["seconds"] for row in self.history),
        }


def load_splits(config: TrainConfig, data=None):
    """The :class:`ctrnn.data.DatasetSplits` a config describes, or that ``data`` gives (see
    :func:`train`)."""
    from ctrnn.data import load_dataset

    protocol = dict(
        missing=config.missing,
        seed=config.seed if config.data_seed is None else config.data_seed,
        time_channel=config.time_channel,
        normalize=config.normalize,
        split=config.split,
    )
    if data is not None:
        return _user_splits(data, protocol)
    if config.dataset is None:
        raise ValueError(
            "the config names no dataset (dataset is None): set dataset, or hand the data to "
            "train(config, out_dir, data=...)"
        )
    return load_dataset(config.dataset, root=config.data_root, **protocol, **config.dataset_options)


def _user_splits(data, protocol: dict):
    from ctrnn.data import DatasetSplits, TimeSeriesDataset, make_splits

    if isinstance(data, DatasetSplits):
        return data
    if isinstance(data, TimeSeriesDataset):
        parts = (data,)
    elif (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(d, TimeSeriesDataset) for d in data)
    ):
        parts = tuple(data)
    else:
        raise TypeError(
            "train: data must be a ctrnn.data.TimeSeriesDataset (split by the config's "
            "protocol), a (train, test) pair of them, or a ctrnn.data.DatasetSplits; got "
            f"{type(data).__name__} (build datasets with ctrnn.data.from_arrays)"
        )
    name = parts[0].name or "user data"
    info = {"name": name, "source": "handed to ctrnn.train.train as data="}
    return make_splits(*parts, info=info, **protocol)


def _dataset_state(dataset) -> dict:
    return {
        "values": list(dataset.values),
        "times": list(dataset.times),
        "labels": dataset.labels,
        "classes": None if dataset.classes is None else list(dataset.classes),
        "name": dataset.name or "",
    }


def _save_data(path: Path, splits) -> None:
    """The splits of a run on user data, so that evaluate and --resume find them."""
    state = {name: _dataset_state(getattr(splits, name)) for name in ("train", "val", "test")}
    state["info"] = json.dumps(splits.info, default=str)
    _checkpoint.save(state, path)


def load_data(path: Path):
    """The :class:`ctrnn.data.DatasetSplits` that :func:`_save_data` wrote."""
    from ctrnn.data import DatasetSplits, TimeSeriesDataset

    state = _checkpoint.load(path, required=("train", "val", "test", "info"))
    try:
        parts = [
            TimeSeriesDataset(
                s["values"], s["labels"], s["times"], classes=s["classes"], name=s["name"] or None
            )
            for s in (state["train"], state["val"], state["test"])
        ]
        return DatasetSplits(*parts, json.loads(state["info"]))
    except (KeyError, TypeError, ValueError) as e:
        raise _checkpoint.CheckpointError(
            f"data file {str(path)!r} is damaged ({e}); train the run again"
        ) from None


def model_for(config: TrainConfig, splits) -> nn.Module:
    """The (untrained) model a config describes, sized for ``splits``."""
    train_set = splits.train
    num_outputs = 1 if train_set.task == "regression" else train_set.num_classes
    return build_model(
        config.model,
        input_size=train_set.num_channels,
        hidden_size=config.hidden_size,
        num_outputs=num_outputs,
        mode=config.mode,
        solver=config.solver.to_dict(),
        options=config.model_options,
    )


def monitor_for(config: TrainConfig, task: str) -> str:
    if config.monitor is not None:
        if config.monitor == "val_acc" and task == "regression":
            raise ValueError(
                f"monitor 'val_acc' needs class labels; dataset {config.dataset!r} is a "
                "regression task: use monitor 'val_loss'"
            )
        return config.monitor
    return "val_loss"


def _fit_data_statistics(model: nn.Module, dataset) -> None:
    """Models that impute from the training mean (GRU-D) learn it from the training set."""
    if hasattr(model, "fit_mean"):
        from ctrnn.data import collate

        batch = collate([dataset[i] for i in range(len(dataset))])
        model.fit_mean(batch.values, batch.mask)


def _make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(config: TrainConfig, optimizer, monitor: str, epochs: int):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs, eta_min=config.min_lr
        )
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max" if monitor == "val_acc" else "min",
            factor=config.lr_factor,
            patience=config.lr_patience,
            min_lr=config.min_lr,
        )
    return None


def _format(value) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def _csv_text(rows: list[dict], header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(METRICS_COLUMNS)
    for row in rows:
        writer.writerow([_format(row[c]) for c in METRICS_COLUMNS])
    return out.getvalue()


def _append_metrics(path: Path, row: dict) -> None:
    try:
        with open(path, "a", newline="") as f:
            f.write(_csv_text([row], header=False))
    except OSError as e:
        raise _checkpoint.RunWriteError(
            e.errno,
            f"could not append to {str(path)!r}: {e.strerror or e} (last.pt holds the epoch); "
            "free some space and resume (--resume)",
        ) from None


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.csv`` as dicts (numbers as floats, ``epoch`` as int, empty
    cells as None)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append(
            {
                k: (int(v) if k == "epoch" else (None if v == "" else float(v)))
                for k, v in row.items()
            }
        )
    return out


def _resolve_progress(progress, is_main: bool):
    """A tqdm class to draw epoch bars with, or None."""
    if not is_main or progress is False:
        return None
    if progress is None and not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress:
            raise ImportError('progress bars need tqdm: pip install "ctrnn[train]"') from None
        return None
    return tqdm


def _tensorboard_writer(config: TrainConfig, out_dir: Path, purge_step: int | None):
    if config.tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if config.tensorboard:
            raise ImportError(
                "TensorBoard logging needs the tensorboard package: pip install tensorboard "
                "(or set tensorboard to false)"
            ) from None
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=purge_step)


def _check_resumable(saved: dict, config: TrainConfig, out_dir: Path) -> None:
    current = config.to_dict()
    for key, value in current.items():
        if key in _RESUMABLE_CHANGES:
            continue
        if saved.get(key) != value:
            raise ValueError(
                f"resume: the run in {str(out_dir)!r} was trained with {key}={saved.get(key)!r}, "
                f"the config says {key}={value!r}; only {', '.join(sorted(_RESUMABLE_CHANGES))} "
                "may change when resuming (or train into a new directory)"
            )


def _has_unused_parameters(predictor: nn.Module, loader, ctx) -> bool:
    """Whether a training step leaves some parameter without a gradient (DDP must then be
    told, at the cost of a graph traversal per step). One step on the first batch, with the
    random state restored afterwards so that the run is unchanged."""
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    loader_state = loader.generator.get_state()
    with torch.random.fork_rng(devices=devices):
        batch, _ = next(iter(loader))
        batch = batch.to(ctx.device)
        predictor.train()
        pred = predictor(batch.values, batch.times, batch.mask)
        pred.float().sum().backward()
    loader.generator.set_state(loader_state)
    unused = any(p.grad is None for p in predictor.parameters() if p.requires_grad)
    predictor.zero_grad(set_to_none=True)
    return unused


def _improved(value: float, best: float | None, monitor: str) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if monitor == "val_acc" else value < best


def train(
    config: TrainConfig | dict,
    out_dir: str | Path,
    *,
    data=None,
    resume: bool = False,
    progress: bool | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train the model that ``config`` describes and write a run directory.

    Args:
        config: a :class:`TrainConfig` (or a dict of its fields).
        out_dir: the run directory (created). It receives ``config.json``, ``metrics.csv``
            (a row per epoch), ``last.pt`` (everything needed to resume, written atomically
            after every epoch), ``best.pt`` (the best model by ``config.monitor``),
            ``result.json`` and, when TensorBoard is on, ``tensorboard/``. It is locked while
            the run lasts: a second ``train`` into it raises :class:`RunDirectoryBusy`.
        data: the user's data instead of ``config.dataset``: a
            :class:`ctrnn.data.TimeSeriesDataset` (split and prepared by the config's protocol:
            ``missing``, ``split="pooled"``, ``time_channel``, ``normalize``), a ``(train,
            test)`` pair of them (``split`` may then be ``"original"``), or a ready
            :class:`ctrnn.data.DatasetSplits` used as it is. The run's config records
            ``dataset=None`` and the prepared splits are saved as ``data.pt`` in ``out_dir``,
            where :func:`evaluate` and ``resume`` find them.
        resume: continue the run in ``out_dir`` from its ``last.pt`` exactly where it stopped
            (the same metrics and parameters as an uninterrupted run). Without a ``last.pt``
            the run starts from the beginning. Without ``resume``, an ``out_dir`` that already
            holds a run is an error.
        progress: a tqdm bar per epoch; ``None`` draws one when stderr is a terminal.
        on_epoch: called (by the main process) with each epoch's metrics row (and
            ``epochs``, the number of epochs planned) after its checkpoint is written.

    How long it trains: ``config.epochs``, or by default as many epochs as
    ``config.steps`` optimiser steps take; it stops early after ``config.patience`` epochs
    without a better ``monitor`` (by default the validation loss; patience ``"auto"``: a
    quarter of the epochs, at least 10). The model of the best epoch is tested; when that is
    the first of several epochs, a :class:`TrainingWarning` says so.

    Under ``torchrun`` (``WORLD_SIZE > 1``) each process trains a DistributedDataParallel
    replica on its share of every global batch (``batch_size`` is the global batch);
    metrics are reduced over processes and only rank 0 writes files.

    Returns:
        A :class:`TrainResult`.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        raise TypeError(
            f"train: config must be a TrainConfig or a dict, got {type(config).__name__}"
        )
    out_dir = Path(out_dir)
    if data is not None or (resume and (out_dir / "data.pt").is_file()):
        config = config.replace(dataset=None, data_root=None, dataset_options={})
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(
            f"the run directory {str(out_dir)!r} is a file; choose a directory for the run (--out)"
        )
    ctx = _distributed.setup(config.device)
    try:
        with _RunDirectory(out_dir, ctx.is_main):
            return _train(
                config,
                out_dir,
                ctx,
                data=data,
                resume=resume,
                progress=progress,
                on_epoch=on_epoch,
            )
    finally:
        _distributed.teardown(ctx)


class _RunDirectory:
    """The run directory, created and locked by the main process for the run's duration
    (a second ``train`` into it is refused); temporary files that a killed run left behind
    are removed. A directory this run created and left empty (it failed before writing
    anything) is removed again."""

    def __init__(self, path: Path, is_main: bool):
        self.path, self.is_main = path, is_main
        self.lock = _checkpoint.RunDirectoryLock(path)
        self.created = False

    def __enter__(self):
        if not self.is_main:
            return self
        self.created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except OSError as e:
            raise _checkpoint.RunWriteError(
                e.errno,
                f"cannot write to the run directory {str(self.path)!r}: {e.strerror or e}; "
                "choose a writable directory (--out)",
            ) from None
        _checkpoint.remove_stale_temporaries(self.path)
        return self

    def __exit__(self, *exc):
        if not self.is_main:
            return
        self.lock.release()
        if self.created and {p.name for p in self.path.iterdir()} <= {".lock"}:
            try:
                (self.path / ".lock").unlink(missing_ok=True)
                self.path.rmdir()
            except OSError:
                pass


def _train(config, out_dir, ctx, *, data, resume, progress, on_epoch) -> TrainResult:
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if last_path.exists() and not resume:
        raise ValueError(
            f"{str(out_dir)!r} already holds a run (last.pt); pass resume=True (--resume) to "
            "continue it, or choose another directory"
        )
    checkpoint = None
    if resume and last_path.exists():
        checkpoint = _checkpoint.load(last_path, required=_LAST_KEYS)
        if not isinstance(checkpoint["config"], dict):
            raise _checkpoint.CheckpointError(
                f"checkpoint {str(last_path)!r} holds no configuration; it is damaged: delete "
                "it (and train again into a new directory)"
            )
        _check_resumable(checkpoint["config"], config, out_dir)
    seed_everything(config.seed)
    data_path = out_dir / "data.pt"
    if config.dataset is None and resume and data_path.exists():
        splits = load_data(data_path)
    else:
        splits = load_splits(config, data)
    task = splits.train.task
    monitor = monitor_for(config, task)
    model = model_for(config, splits)
    _fit_data_statistics(model, splits.train)
    if ctx.is_main:  # written once the data and the model are known to build
        _checkpoint.atomic_write_text(out_dir / "config.json", config.to_json())
        if config.dataset is None and not data_path.exists():
            _save_data(data_path, splits)
    model.to(ctx.device)
    predictor = Predictor(model, task)
    loaders = {
        name: make_loader(
            getattr(splits, name),
            config.batch_size,
            ctx,
            shuffle=name == "train",
            seed=config.seed,
            num_workers=config.num_workers,
        )
        for name in ("train", "val", "test")
    }
    net: nn.Module = predictor
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            predictor,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=_has_unused_parameters(predictor, loaders["train"], ctx),
        )
    epochs = config.epochs_for(len(loaders["train"]))
    patience = config.patience_for(epochs)
    optimizer = _make_optimizer(config, model.parameters())
    scheduler = _make_scheduler(config, optimizer, monitor, epochs)

    epoch, history, stopped = 0, [], False
    best_metric, best_epoch, bad_epochs = None, 0, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(checkpoint["scheduler"])
            for name, state in checkpoint["loader_generators"].items():
                loaders[name].generator.set_state(state)
            _checkpoint.set_rng_state(checkpoint["rng"])
            epoch, history = int(checkpoint["epoch"]), list(checkpoint["history"])
            best_metric, best_epoch = checkpoint["best_metric"], checkpoint["best_epoch"]
            bad_epochs, stopped = checkpoint["bad_epochs"], checkpoint["stopped"]
            best_state = checkpoint["best_model"]
            model.load_state_dict(best_state)  # checked now, loaded again at the end
            model.load_state_dict(checkpoint["model"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise _checkpoint.CheckpointError(
                f"checkpoint {str(last_path)!r} does not fit this run ({first}); it is damaged: "
                "delete it (and train again into a new directory)"
            ) from None

    writer = None
    if ctx.is_main:
        # rows past the checkpoint (a run killed between the two writes) are dropped
        _checkpoint.atomic_write_text(out_dir / "metrics.csv", _csv_text(history, header=True))
        writer = _tensorboard_writer(config, out_dir, purge_step=epoch + 1 if epoch else None)
    bar_class = _resolve_progress(progress, ctx.is_main)

    try:
        while epoch < epochs and not stopped:
            epoch += 1
            start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            loaders["train"].batch_sampler.set_epoch(epoch)
            bar = None
            if bar_class is not None:
                bar = bar_class(
                    total=len(loaders["train"]),
                    desc=f"epoch {epoch}/{epochs}",
                    leave=False,
                    file=sys.stderr,
                )
            try:
                train_loss, train_acc = train_epoch(
                    net,
                    loaders["train"],
                    optimizer,
                    task=task,
                    ctx=ctx,
                    clip_grad_norm=config.clip_grad_norm,
                    bar=bar,
                )
            finally:
                if bar is not None:
                    bar.close()
            if not math.isfinite(train_loss):
                raise ValueError(
                    f"epoch {epoch}: the training loss is {train_loss}; lower lr (now {lr}) or "
                    "set clip_grad_norm"
                )
            val_loss, val_acc = evaluate_loader(net, loaders["val"], task=task, ctx=ctx)
            value = val_acc if monitor == "val_acc" else val_loss
            if scheduler is not None:
                if config.schedule == "plateau":
                    scheduler.step(value)
                else:
                    scheduler.step()
            improved = _improved(value, best_metric, monitor)
            if improved:
                best_metric, best_epoch, bad_epochs = value, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            if patience is not None and bad_epochs >= patience:
                stopped = True
            row = dict(
                epoch=epoch,
                train_loss=train_loss,
                train_acc=train_acc,
                val_loss=val_loss,
                val_acc=val_acc,
                lr=lr,
                seconds=time.perf_counter() - start,
            )
            history.append(row)
            if ctx.is_main:
                common = dict(
                    format=CHECKPOINT_FORMAT,
                    config=config.to_dict(),
                    task=task,
                    classes=None if splits.train.classes is None else list(splits.train.classes),
                    input_size=splits.train.num_channels,
                )
                if improved:
                    _checkpoint.save(
                        dict(common, epoch=epoch, monitor=monitor, metric=value, model=best_state),
                        best_path,
                    )
                _checkpoint.save(
                    dict(
                        common,
                        epoch=epoch,
                        model=model.state_dict(),
                        optimizer=optimizer.state_dict(),
                        scheduler=None if scheduler is None else scheduler.state_dict(),
                        rng=_checkpoint.get_rng_state(),
                        loader_generators={k: v.generator.get_state() for k, v in loaders.items()},
                        history=history,
                        monitor=monitor,
                        best_metric=best_metric,
                        best_epoch=best_epoch,
                        bad_epochs=bad_epochs,
                        stopped=stopped,
                        best_model=best_state,
                    ),
                    last_path,
                )
                _append_metrics(out_dir / "metrics.csv", row)
                if writer is not None:
                    for key in METRICS_COLUMNS[1:]:
                        if row[key] is not None:
                            writer.add_scalar(key.replace("_", "/", 1), row[key], epoch)
                    writer.flush()
                if on_epoch is not None:
                    on_epoch(dict(row, epochs=epochs))
            ctx.barrier()
    finally:
        if writer is not None:
            writer.close()

    if best_metric is None:
        raise ValueError(
            f"no epoch produced a finite {monitor}; the validation set gave "
            f"{history[-1][monitor] if history else 'nothing'}"
        )
    if ctx.is_main and best_epoch == 1 and len(history) > 1:
        budget = f"{config.epochs} epochs" if config.epochs else f"{config.steps} steps"
        warnings.warn(
            f"the best epoch by {monitor} was the first of {len(history)}: the validation "
            f"{monitor} never improved after epoch 1, so the epoch-1 model is the one tested; "
            f"check the learning rate (lr {config.lr:g}), the budget ({budget}), the model "
            "and the data",
            TrainingWarning,
            stacklevel=3,
        )
    model.load_state_dict(best_state)
    test_loss, test_acc = evaluate_loader(net, loaders["test"], task=task, ctx=ctx)
    result = TrainResult(
        run_dir=out_dir,
        config=config,
        history=history,
        monitor=monitor,
        best_epoch=best_epoch,
        best_metric=best_metric,
        test_loss=test_loss,
        test_acc=test_acc,
        epochs_run=epoch,
        stopped_early=stopped,
        dataset=splits.info.get("name", config.dataset),
    )
    if ctx.is_main:
        _checkpoint.atomic_write_json(out_dir / "result.json", result.to_dict())
    return result
