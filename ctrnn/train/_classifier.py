"""A scikit-learn style classifier over any model, for aeon/sktime-shaped data."""

from __future__ import annotations

import inspect

import numpy as np
import torch

from ctrnn.data._dataset import check_no_infinity

from ._config import TrainConfig
from ._distributed import Context
from ._loop import (
    Predictor,
    build_model,
    evaluate_loader,
    make_loader,
    seed_everything,
    train_epoch,
)
from ._trainer import _fit_data_statistics, _improved, _make_optimizer, _make_scheduler

__all__ = ["TimeSeriesClassifier"]


def _as_series(X, owner: str) -> list[np.ndarray]:
    """``(n_cases, n_channels, n_timepoints)`` or a list of ``(n_channels, n_timepoints_i)``
    (aeon/sktime's layouts; 1-D items are one channel) as a list of ``(T_i, C)`` arrays."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if isinstance(X, np.ndarray):
        if X.ndim == 2:
            raise ValueError(
                f"{owner}: X has shape {X.shape}; expected (n_cases, n_channels, n_timepoints) "
                "(for one channel use X[:, None, :])"
            )
        if X.ndim != 3:
            raise ValueError(
                f"{owner}: X must be (n_cases, n_channels, n_timepoints) or a list of "
                f"(n_channels, n_timepoints_i) arrays, got an array of shape {X.shape}"
            )
        items = list(X)
    elif isinstance(X, (list, tuple)):
        items = list(X)
    else:
        raise TypeError(
            f"{owner}: X must be a 3-D array (n_cases, n_channels, n_timepoints) or a list of "
            f"(n_channels, n_timepoints_i) arrays, got {type(X).__name__}"
        )
    if not items:
        raise ValueError(f"{owner}: X holds no series")
    out = []
    for i, item in enumerate(items):
        try:
            a = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError):
            raise TypeError(f"{owner}: series {i} of X is not numeric") from None
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] == 0:
            raise ValueError(
                f"{owner}: series {i} of X must be (n_channels, n_timepoints) with at least one "
                f"time point, got shape {a.shape}"
            )
        a = np.ascontiguousarray(a.T)
        check_no_infinity(torch.from_numpy(a), owner, f"series {i} of X")
        out.append(a)
    return out


class TimeSeriesClassifier:
    """Classify multivariate time series with any ``ctrnn`` model, scikit-learn style.

    ``X`` is aeon/sktime's layout: an ``(n_cases, n_channels, n_timepoints)`` array, or a list
    of ``(n_channels, n_timepoints_i)`` arrays of different lengths; NaN marks a missing
    value. Observation times are ``times`` where given (a ``(n_timepoints,)`` array shared by
    every series, ``(n_cases, n_timepoints)``, or a list of ``(n_timepoints_i,)`` arrays;
    strictly increasing), else ``0, 1, …``. Labels are any hashable values (strings,
    integers); ``classes_`` holds them sorted.

    Args:
        model: a name from :func:`ctrnn.models.available`.
        hidden_size: the model's hidden size.
        epochs: training epochs (the most, with early stopping); None (the default): as
            many as ``steps`` optimiser steps take.
        steps: the budget of optimiser steps that sets the epochs when ``epochs`` is None.
        batch_size: the batch size.
        lr: the learning rate.
        weight_decay: as in :class:`~ctrnn.train.TrainConfig`.
        optimizer: ``"adam"`` or ``"adamw"``.
        schedule: ``"cosine"`` (the default: from ``lr`` to 0 over the epochs) or ``"none"``.
        clip_grad_norm: clip the gradient's 2-norm to this value (None: no clipping).
        validation_fraction: hold out this stratified fraction of ``fit``'s data; the model
            kept is the one with the lowest validation loss (0: train on everything and keep
            the last epoch).
        patience: stop after this many epochs without a better validation loss (needs
            ``validation_fraction``).
        time_channel: prepend the time as channel 0.
        normalize: standardise channels with the mean and std of the observed training
            values (remembered for ``predict``).
        mode: as in :class:`~ctrnn.train.TrainConfig`.
        solver: options for continuous mode, as in :class:`~ctrnn.train.TrainConfig`.
        model_options: further options of the model, as in
            :class:`~ctrnn.train.TrainConfig`.
        device: a torch device name.
        seed: seeds the initialisation, the shuffles and the validation split. ``fit`` uses
            its own random state and leaves torch's, NumPy's and Python's global ones as they
            were.

    Attributes (after ``fit``):
        classes_: the sorted distinct labels.
        n_channels_: channels of ``X``.
        model_: the trained model (eval mode).
        history_: a dict per epoch (``train_loss``, ``train_acc``, ``val_loss``,
            ``val_acc``).
        best_epoch_: the epoch of ``model_``.

    The parameters follow scikit-learn's conventions (``get_params``, ``set_params``, no
    work in ``__init__``), so ``sklearn.base.clone``, ``cross_val_score`` and pipelines work
    with it; scikit-learn itself is not needed.
    """

    _estimator_type = "classifier"

    def __init__(
        self,
        model: str = "gru_d",
        *,
        hidden_size: int = 32,
        epochs: int | None = None,
        steps: int = 1000,
        batch_size: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        schedule: str = "cosine",
        clip_grad_norm: float | None = 1.0,
        validation_fraction: float = 0.0,
        patience: int | None = None,
        time_channel: bool = True,
        normalize: bool = True,
        mode: str | None = None,
        solver: dict | None = None,
        model_options: dict | None = None,
        device: str = "cpu",
        seed: int = 0,
    ):
        self.model = model
        self.hidden_size = hidden_size
        self.epochs = epochs
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.schedule = schedule
        self.clip_grad_norm = clip_grad_norm
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.time_channel = time_channel
        self.normalize = normalize
        self.mode = mode
        self.solver = solver
        self.model_options = model_options
        self.device = device
        self.seed = seed

    # -- scikit-learn's parameter protocol ---------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters as a dict."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> TimeSeriesClassifier:
        """Set constructor parameters; an unknown name is a ValueError listing the valid ones."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"TimeSeriesClassifier: invalid parameter {name!r}; valid parameters: "
                    f"{', '.join(valid)}"
                )
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        # Called only by scikit-learn (>= 1.6), so importing it here costs nothing otherwise.
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(),
            input_tags=InputTags(allow_nan=True, two_d_array=False, three_d_array=True),
        )

    def __repr__(self) -> str:
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if name != "self"
        }
        changed = [
            f"{k}={v!r}"
            for k, v in self.get_params().items()
            if v is not defaults[k] and v != defaults[k]
        ]
        return f"TimeSeriesClassifier({', '.join(changed)})"

    # -- fitting -----------------------------------------------------------------------------

    def _config(self) -> TrainConfig:
        owner = "TimeSeriesClassifier"
        if self.schedule == "plateau":
            raise ValueError(
                f"{owner}: schedule must be 'none' or 'cosine', got 'plateau' (use "
                "ctrnn.train.train for a plateau schedule)"
            )
        fraction = self.validation_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not (0 <= fraction < 1)
        ):
            raise ValueError(
                f"{owner}: validation_fraction must be in [0, 1), got {self.validation_fraction!r}"
            )
        if self.patience is not None and fraction == 0:
            raise ValueError(
                f"{owner}: patience={self.patience!r} needs a validation set; set "
                "validation_fraction (e.g. 0.15)"
            )
        # TrainConfig checks every shared field and names the bad one
        return TrainConfig(
            model=self.model,
            hidden_size=self.hidden_size,
            model_options=dict(self.model_options or {}),
            mode=self.mode,
            solver=dict(self.solver or {}),
            time_channel=self.time_channel,
            normalize=self.normalize,
            seed=self.seed,
            epochs=self.epochs,
            steps=self.steps,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            clip_grad_norm=self.clip_grad_norm,
            patience=self.patience,
            monitor="val_loss",
            device=self.device,
        )

    def _dataset(self, series, labels, classes, times=None):
        from ctrnn.data import TimeSeriesDataset, add_time_channel

        dataset = TimeSeriesDataset(
            series, labels, times, classes=classes, name="TimeSeriesClassifier"
        )
        if self.time_channel:
            dataset = add_time_channel(dataset)
        return dataset

    def fit(self, X, y, times=None) -> TimeSeriesClassifier:
        """Train on ``X`` (see the class docs) and labels ``y`` ``(n_cases,)``, observed at
        ``times`` (None: ``0, 1, …``)."""
        from ctrnn.data import channel_stats, split_indices, standardize

        owner = "TimeSeriesClassifier.fit"
        config = self._config()
        series = _as_series(X, owner)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(series):
            raise ValueError(
                f"{owner}: y must be (n_cases,) = ({len(series)},), got shape {y.shape}"
            )
        classes, index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{owner}: y must hold at least 2 classes, got {classes.tolist()}")
        dataset = self._dataset(series, index.astype(np.int64), [str(c) for c in classes], times)
        stats = None
        if self.normalize:
            mean, std = channel_stats(dataset)
            stats = (mean, std)
            dataset = standardize(dataset, mean, std, skip_channels=self._skip())
        val = None
        if self.validation_fraction > 0:
            fit_idx, val_idx = split_indices(
                dataset, (1 - self.validation_fraction, self.validation_fraction), seed=self.seed
            )
            if len(val_idx) == 0 or len(fit_idx) == 0:
                raise ValueError(
                    f"{owner}: validation_fraction={self.validation_fraction} of "
                    f"{len(dataset)} series leaves an empty part; change it or give more data"
                )
            dataset, val = dataset.subset(fit_idx), dataset.subset(val_idx)

        devices = [torch.device(config.device)] if config.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices), _preserved_global_rngs():
            seed_everything(config.seed)
            model, history, best_epoch = self._train(config, dataset, val)
        self.classes_ = classes
        self.n_channels_ = series[0].shape[1]
        self._stats = stats
        self.model_ = model.eval()
        self.history_ = history
        self.best_epoch_ = best_epoch
        return self

    def _skip(self) -> tuple[int, ...]:
        return (0,) if self.time_channel else ()

    def _train(self, config: TrainConfig, train_set, val_set):
        ctx = Context(rank=0, world_size=1, device=torch.device(config.device))
        if ctx.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"TimeSeriesClassifier: device {config.device!r} but CUDA is not available"
            )
        model = build_model(
            config.model,
            input_size=train_set.num_channels,
            hidden_size=config.hidden_size,
            num_outputs=train_set.num_classes,
            mode=config.mode,
            solver=config.solver.to_dict(),
            options=config.model_options,
        )
        _fit_data_statistics(model, train_set)
        model.to(ctx.device)
        net = Predictor(model, "classification")
        optimizer = _make_optimizer(config, model.parameters())
        loader = make_loader(train_set, config.batch_size, ctx, shuffle=True, seed=config.seed)
        epochs = config.epochs_for(len(loader))
        patience = config.patience_for(epochs)
        scheduler = _make_scheduler(config, optimizer, "val_loss", epochs)
        val_loader = (
            None
            if val_set is None
            else make_loader(val_set, config.batch_size, ctx, shuffle=False, seed=config.seed)
        )
        history, best, best_epoch, bad = [], None, epochs, 0
        best_state = None
        for epoch in range(1, epochs + 1):
            loader.batch_sampler.set_epoch(epoch)
            train_loss, train_acc = train_epoch(
                net,
                loader,
                optimizer,
                task="classification",
                ctx=ctx,
                clip_grad_norm=config.clip_grad_norm,
            )
            row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc)
            if scheduler is not None:
                scheduler.step()
            if val_loader is not None:
                val_loss, val_acc = evaluate_loader(net, val_loader, task="classification", ctx=ctx)
                row.update(val_loss=val_loss, val_acc=val_acc)
                if _improved(val_loss, best, "val_loss"):
                    best, best_epoch, bad = val_loss, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
            history.append(row)
            if patience is not None and bad >= patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        return model, history, best_epoch

    # -- prediction --------------------------------------------------------------------------

    def _check_fitted(self, owner: str) -> None:
        if not hasattr(self, "model_"):
            raise ValueError(
                f"TimeSeriesClassifier.{owner}: this classifier is not fitted yet; call "
                "fit(X, y) first"
            )

    def predict_proba(self, X, times=None) -> np.ndarray:
        """Class probabilities ``(n_cases, n_classes)``, columns in the order of ``classes_``;
        ``times`` as in :meth:`fit`."""
        from ctrnn.data import standardize

        self._check_fitted("predict_proba")
        owner = "TimeSeriesClassifier.predict_proba"
        series = _as_series(X, owner)
        if series[0].shape[1] != self.n_channels_:
            raise ValueError(
                f"{owner}: X has {series[0].shape[1]} channels, the classifier was fitted on "
                f"{self.n_channels_}"
            )
        labels = np.zeros(len(series), dtype=np.int64)
        dataset = self._dataset(series, labels, [str(c) for c in self.classes_], times)
        if self._stats is not None:
            dataset = standardize(dataset, *self._stats, skip_channels=self._skip())
        device = next(self.model_.parameters()).device
        ctx = Context(rank=0, world_size=1, device=device)
        loader = make_loader(dataset, self.batch_size, ctx, shuffle=False, seed=0)
        _, (logits, _) = evaluate_loader(
            Predictor(self.model_, "classification"),
            loader,
            task="classification",
            ctx=ctx,
            collect=True,
        )
        return torch.softmax(logits.double(), dim=-1).numpy()

    def predict(self, X, times=None) -> np.ndarray:
        """The most probable class of each series, ``(n_cases,)`` of ``classes_``' type."""
        self._check_fitted("predict")
        return self.classes_[self.predict_proba(X, times).argmax(axis=1)]

    def score(self, X, y, times=None) -> float:
        """Accuracy of :meth:`predict` on ``X`` against ``y``."""
        y = np.asarray(y)
        predicted = self.predict(X, times)
        if y.shape != predicted.shape:
            raise ValueError(
                f"TimeSeriesClassifier.score: y must be ({len(predicted)},), got shape {y.shape}"
            )
        return float(np.mean(predicted == y))


class _preserved_global_rngs:
    """Restore NumPy's and Python's global generators (``torch.random.fork_rng`` does torch's)."""

    def __enter__(self):
        import random

        self._numpy = np.random.get_state()  # noqa: NPY002 (saving the global generator)
        self._python = random.getstate()
        return self

    def __exit__(self, *exc):
        import random

        np.random.set_state(self._numpy)  # noqa: NPY002 (restoring the global generator)
        random.setstate(self._python)
        return False
