"""The dataset, sample and batch types, and the collate function that pads a batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "DatasetSplits",
    "Sample",
    "TimeSeriesDataset",
    "collate",
    "from_arrays",
]

#: what the constructors accept as arrays: NumPy arrays, tensors, or (nested) sequences of them
ArrayLike = np.ndarray | torch.Tensor | Sequence

#: the label of padded time steps in per-step (``task == "sequence"``) batches; it is the
#: default ``ignore_index`` of :func:`torch.nn.functional.cross_entropy`
IGNORE_INDEX = -100


class Sample(NamedTuple):
    """One series.

    Attributes:
        values: ``(T, C)`` float32, NaN where missing.
        times: ``(T,)`` float32, strictly increasing.
        mask: ``(T, C)`` bool, True where observed (``~isnan(values)``).
        label: the target: a 0-d int64 class index (classification), a 0-d float32 value
            (regression), or a ``(T,)`` int64 class index per time step (``task ==
            "sequence"``).
    """

    values: torch.Tensor
    times: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor


@dataclass
class Batch:
    """A padded batch of series (built by :func:`collate`).

    Attributes:
        values: ``(B, T, C)`` float32, NaN where missing and in the padding.
        times: ``(B, T)`` float32, strictly increasing per row; past a sample's end the times
            continue at the sample's mean spacing (``last + k · mean spacing``).
        mask: ``(B, T, C)`` bool, False where missing and in the padding.
        lengths: ``(B,)`` int64, each sample's number of time steps.
        labels: ``(B,)`` int64 class indices, ``(B,)`` float32 regression targets, or
            ``(B, T)`` int64 per-step classes with :data:`IGNORE_INDEX` in the padding.
    """

    values: torch.Tensor
    times: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.values.shape[0]

    def to(self, device, non_blocking: bool = False) -> Batch:
        """The batch with every tensor on ``device``."""
        return Batch(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def pin_memory(self) -> Batch:
        """The batch in pinned memory (called by ``DataLoader(pin_memory=True)``)."""
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})


class DatasetSplits(NamedTuple):
    """Train, validation and test sets, and how they were made.

    ``info`` records the source, licence, missing fraction, seed, normalisation statistics
    and split protocol (see :func:`ctrnn.data.load_dataset`).
    """

    train: TimeSeriesDataset
    val: TimeSeriesDataset
    test: TimeSeriesDataset
    info: dict[str, Any]


def _as_float_tensor(x, owner: str, what: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.ascontiguousarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{owner}: {what} must be numeric arrays, got {type(x).__name__}") from e
    if not (t.is_floating_point() or t.dtype in _INT_DTYPES or t.dtype == torch.bool):
        raise TypeError(f"{owner}: {what} must be numeric, got dtype {t.dtype}")
    return t.detach().to("cpu", torch.float32)


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_no_infinity(values: torch.Tensor, owner: str, what: str) -> None:
    """Refuse ±inf in a ``(T, C)`` series: NaN marks a missing value, but an infinite one
    would turn the normalisation statistics, and then the training, to NaN."""
    if torch.isinf(values).any():
        t, c = (int(i) for i in torch.isinf(values).nonzero()[0])
        raise ValueError(
            f"{owner}: {what} holds {float(values[t, c])} at time step {t}, channel {c}; values "
            "must be finite, with NaN marking a missing value: replace infinities with NaN (e.g. "
            "x[~np.isfinite(x)] = np.nan) or clip them"
        )


def _split_series(values, owner: str) -> list[torch.Tensor]:
    if isinstance(values, (torch.Tensor, np.ndarray)):
        if values.ndim != 3:
            raise ValueError(
                f"{owner}: values must be an (N, T, C) array or a list of (T_i, C) arrays, "
                f"got an array of shape {tuple(values.shape)}"
            )
        values = list(values)
    elif not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        raise TypeError(
            f"{owner}: values must be an (N, T, C) array or a list of (T_i, C) arrays, "
            f"got {type(values).__name__}"
        )
    out = []
    for i, v in enumerate(values):
        v = _as_float_tensor(v, owner, "values")
        if v.dim() != 2 or v.shape[0] == 0:
            raise ValueError(
                f"{owner}: series {i} must have shape (T, C) with T ≥ 1, got {tuple(v.shape)} "
                "(for one channel use .reshape(-1, 1))"
            )
        check_no_infinity(v, owner, f"series {i}")
        out.append(v)
    if not out:
        raise ValueError(f"{owner}: values holds no series")
    channels = out[0].shape[1]
    for i, v in enumerate(out):
        if v.shape[1] != channels:
            raise ValueError(
                f"{owner}: series {i} has {v.shape[1]} channels, series 0 has {channels}"
            )
    return out


def _split_times(times, lengths: list[int], owner: str) -> list[torch.Tensor]:
    n = len(lengths)
    if times is None:
        return [torch.arange(T, dtype=torch.float32) for T in lengths]
    if isinstance(times, (torch.Tensor, np.ndarray)) and times.ndim in (1, 2):
        t = _as_float_tensor(times, owner, "times")
        if t.dim() == 1:
            t = t.expand(n, -1)
        if t.shape[0] != n or any(T != t.shape[1] for T in lengths):
            raise ValueError(
                f"{owner}: times of shape {tuple(times.shape)} do not match the series "
                f"(N={n}, lengths {min(lengths)}–{max(lengths)}); give a list of (T_i,) times "
                "for series of different lengths"
            )
        times = list(t)
    elif isinstance(times, Sequence) and not isinstance(times, (str, bytes)):
        if len(times) != n:
            raise ValueError(f"{owner}: {len(times)} time vectors for {n} series")
        times = [_as_float_tensor(t, owner, "times") for t in times]
    else:
        raise TypeError(
            f"{owner}: times must be None, a (T,) or (N, T) array or a list of (T_i,) arrays, "
            f"got {type(times).__name__}"
        )
    for i, (t, T) in enumerate(zip(times, lengths)):
        if t.dim() != 1 or t.shape[0] != T:
            raise ValueError(
                f"{owner}: times of series {i} have shape {tuple(t.shape)}, expected ({T},)"
            )
    if _times_valid(times, lengths):
        return [t.contiguous() for t in times]
    for i, t in enumerate(times):
        if not torch.isfinite(t).all():
            pos = int((~torch.isfinite(t)).nonzero()[0])
            raise ValueError(
                f"{owner}: times of series {i} are not finite at position {pos}: {float(t[pos])}"
            )
        bad = (t[1:] <= t[:-1]).nonzero()
        if len(bad):
            pos = int(bad[0]) + 1
            raise ValueError(
                f"{owner}: times of series {i} are not strictly increasing at position {pos}: "
                f"t[{pos}] = {float(t[pos])!r} after t[{pos - 1}] = {float(t[pos - 1])!r}"
            )
    return [t.contiguous() for t in times]


def _times_valid(times: list[torch.Tensor], lengths: list[int]) -> bool:
    """All finite and strictly increasing within each series (one vectorised check)."""
    flat = torch.cat(times)
    if not torch.isfinite(flat).all():
        return False
    increasing = flat[1:] > flat[:-1]
    starts = torch.tensor(lengths[:-1], dtype=torch.long).cumsum(0) - 1  # the gaps between series
    increasing[starts] = True
    return bool(increasing.all())


class TimeSeriesDataset(Dataset):
    """A set of irregularly sampled, partly observed multivariate series with targets.

    Args:
        values: a list of ``(T_i, C)`` arrays or tensors (series of different lengths), or an
            ``(N, T, C)`` array; NaN marks a missing value; ±inf is refused.
        labels: ``(N,)`` integer class indices in ``[0, num_classes)``; or ``(N,)`` floats for
            regression (then ``num_classes`` is None); or per-time-step integer classes, an
            ``(N, T)`` array or a list of ``(T_i,)`` arrays (``task == "sequence"``).
        times: None (``0, 1, …, T_i − 1``), a ``(T,)`` array shared by all series, an
            ``(N, T)`` array, or a list of ``(T_i,)`` arrays; strictly increasing.
        classes: the class names, in index order (default ``("0", "1", …)``); its length is
            ``num_classes``.
        name: a name for messages and records.

    Attributes:
        values: the list of ``(T_i, C)`` float32 tensors.
        times: the list of ``(T_i,)`` float32 tensors.
        labels: the targets, an ``(N,)`` tensor or (``task == "sequence"``) a list of ``(T_i,)``
            tensors.
        lengths: ``[T_i]``.
        num_channels: ``C``.
        num_classes: the number of classes (None for regression).
        classes: the class names (None for regression).
        name: the name given.
        task: ``"classification"``, ``"regression"`` or ``"sequence"``.

    Items are :class:`Sample` tuples; batch them with :func:`collate`.
    """

    def __init__(
        self,
        values: ArrayLike,
        labels: ArrayLike,
        times: ArrayLike | None = None,
        *,
        classes: Sequence | None = None,
        name: str | None = None,
    ):
        owner = f"TimeSeriesDataset({name!r})" if name else "TimeSeriesDataset"
        self.name = name
        self.values = _split_series(values, owner)
        self.lengths = [v.shape[0] for v in self.values]
        self.times = _split_times(times, self.lengths, owner)
        self.labels, self.task = self._check_labels(labels, owner)
        if self.task == "regression":
            if classes is not None:
                raise ValueError(f"{owner}: float labels are regression targets; got classes")
            self.classes, self.num_classes = None, None
            return
        labels = torch.cat(self.labels) if self.task == "sequence" else self.labels
        top = int(labels.max()) + 1
        if classes is None:
            classes = tuple(str(i) for i in range(top))
        self.classes = tuple(str(c) for c in classes)
        self.num_classes = len(self.classes)
        if len(set(self.classes)) != self.num_classes:
            raise ValueError(f"{owner}: class names must be unique, got {self.classes}")
        if self.task == "sequence":
            flat = torch.cat(self.labels)
            series = torch.repeat_interleave(torch.arange(len(self)), torch.tensor(self.lengths))
        else:
            flat, series = self.labels, torch.arange(len(self))
        bad = ((flat < 0) | (flat >= self.num_classes)).nonzero()
        if len(bad):
            first = int(bad[0])
            raise ValueError(
                f"{owner}: label {int(flat[first])} of series {int(series[first])} is outside "
                f"[0, {self.num_classes}) for classes {self.classes}"
            )

    def _check_labels(self, labels, owner: str):
        n = len(self.values)
        if isinstance(labels, (list, tuple)) and labels and np.ndim(labels[0]) >= 1:
            labs = [torch.as_tensor(np.asarray(lab)) for lab in labels]
        else:
            arr = labels if isinstance(labels, torch.Tensor) else np.asarray(labels)
            if isinstance(arr, np.ndarray) and arr.dtype.kind not in "biuf":
                raise TypeError(
                    f"{owner}: labels must be integer class indices or float targets, got "
                    f"dtype {arr.dtype}; use ctrnn.data.from_arrays for class names"
                )
            arr = torch.as_tensor(arr)
            if arr.dim() == 1:
                if arr.shape[0] != n:
                    raise ValueError(f"{owner}: {arr.shape[0]} labels for {n} series")
                if arr.is_floating_point():
                    return arr.detach().cpu().float(), "regression"
                return arr.detach().cpu().long(), "classification"
            if arr.dim() != 2:
                raise ValueError(
                    f"{owner}: labels must be (N,) or per-step (N, T), got {tuple(arr.shape)}"
                )
            labs = list(arr)
        if len(labs) != n:
            raise ValueError(f"{owner}: {len(labs)} label sequences for {n} series")
        out = []
        for i, (lab, T) in enumerate(zip(labs, self.lengths)):
            if lab.is_floating_point() or lab.dim() != 1 or lab.shape[0] != T:
                raise ValueError(
                    f"{owner}: per-step labels of series {i} must be ({T},) integers, got "
                    f"shape {tuple(lab.shape)} dtype {lab.dtype}"
                )
            out.append(lab.detach().cpu().long())
        return out, "sequence"

    @property
    def num_channels(self) -> int:
        return self.values[0].shape[1]

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index) -> Sample:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"TimeSeriesDataset: index {i} out of range for {len(self)} series")
        v = self.values[i]
        return Sample(v, self.times[i], ~torch.isnan(v), self.labels[i])

    def __repr__(self) -> str:
        lo, hi = min(self.lengths), max(self.lengths)
        length = f"{lo}" if lo == hi else f"{lo}–{hi}"
        classes = "" if self.num_classes is None else f", classes={self.num_classes}"
        return (
            f"TimeSeriesDataset(name={self.name!r}, n={len(self)}, channels={self.num_channels}"
            f"{classes}, task={self.task!r}, lengths={length})"
        )

    def subset(self, indices) -> TimeSeriesDataset:
        """The series at ``indices``, with the same classes and name."""
        idx = [int(i) for i in indices]
        labels = (
            [self.labels[i] for i in idx] if self.task == "sequence" else self.labels[idx].clone()
        )
        return self.replace(
            values=[self.values[i] for i in idx], times=[self.times[i] for i in idx], labels=labels
        )

    def replace(self, *, values=None, times=None, labels=None, name=None) -> TimeSeriesDataset:
        """A new dataset with some of ``values``, ``times``, ``labels``, ``name`` replaced
        (the classes are kept); it is validated like any new dataset."""
        return TimeSeriesDataset(
            self.values if values is None else values,
            self.labels if labels is None else labels,
            self.times if times is None else times,
            classes=self.classes,
            name=self.name if name is None else name,
        )


def collate(samples: Sequence[Sample]) -> Batch:
    """Pad a list of :class:`Sample` to the longest one and stack it into a :class:`Batch`.

    Padding has NaN values and a False mask; its times continue each sample's grid at the
    sample's mean spacing (``(t_last − t_0) / (T_i − 1)``, or 1 for a single time point), so
    every row of ``times`` stays strictly increasing. Per-step labels are padded with
    :data:`IGNORE_INDEX`. Use it as ``DataLoader(dataset, batch_size=..., collate_fn=collate)``.
    """
    if len(samples) == 0:
        raise ValueError("collate: got an empty list of samples")
    lengths = [s.values.shape[0] for s in samples]
    channels = samples[0].values.shape[1]
    for i, s in enumerate(samples):
        if s.values.shape[1] != channels:
            raise ValueError(
                f"collate: sample {i} has {s.values.shape[1]} channels, sample 0 has {channels}"
            )
    B, T = len(samples), max(lengths)
    values = torch.full((B, T, channels), math.nan, dtype=torch.float32)
    mask = torch.zeros(B, T, channels, dtype=torch.bool)
    times = torch.empty(B, T, dtype=torch.float32)
    per_step = samples[0].label.dim() == 1
    if per_step:
        labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.int64)
    for i, (s, L) in enumerate(zip(samples, lengths)):
        values[i, :L] = s.values
        mask[i, :L] = s.mask
        times[i, :L] = s.times
        if L < T:
            t = s.times.double()
            spacing = float(t[-1] - t[0]) / (L - 1) if L > 1 else 1.0
            steps = torch.arange(1, T - L + 1, dtype=torch.float64)
            times[i, L:] = (t[-1] + spacing * steps).float()
        if per_step:
            labels[i, :L] = s.label
    if not per_step:
        labels = torch.stack([s.label for s in samples])
    return Batch(values, times, mask, torch.tensor(lengths, dtype=torch.int64), labels)


def from_arrays(
    values: ArrayLike,
    labels: ArrayLike,
    times: ArrayLike | None = None,
    *,
    classes: Sequence | None = None,
    lengths: Sequence[int] | None = None,
    name: str | None = None,
) -> TimeSeriesDataset:
    """A :class:`TimeSeriesDataset` from NumPy arrays (e.g. loaded from CSV files).

    Args:
        values: ``(N, T, C)``, ``(N, T)`` (one channel) or a list of ``(T_i, C)`` arrays; NaN
            where missing.
        labels: ``(N,)`` class names or values of any kind (strings, integers), mapped to
            indices in the order of ``classes``; float labels are regression targets.
        times: None (``0, 1, …``), ``(T,)``, ``(N, T)`` or a list of ``(T_i,)``; strictly
            increasing (an error names the series and position where they are not).
        classes: every class, in index order (default: the sorted distinct labels).
        lengths: ``(N,)`` numbers of time steps to keep of each row of a padded ``(N, T, …)``
            array (its times are cut to match).
        name: the dataset's name.
    """
    if isinstance(values, np.ndarray) and values.ndim == 2:
        values = values[:, :, None]
    if lengths is not None:
        lengths = [int(n) for n in lengths]
        if len(lengths) != len(values):
            raise ValueError(f"from_arrays: {len(lengths)} lengths for {len(values)} series")
        for i, (n, v) in enumerate(zip(lengths, values)):
            if not 1 <= n <= len(v):
                raise ValueError(f"from_arrays: length {n} of series {i} not in [1, {len(v)}]")
        values = [v[:n] for v, n in zip(values, lengths)]
        if times is not None:
            t = np.asarray(times) if not isinstance(times, (list, tuple)) else times
            if isinstance(t, np.ndarray) and t.ndim == 1:
                times = [t[:n] for n in lengths]
            else:
                times = [ti[:n] for ti, n in zip(t, lengths)]
    labs = np.asarray(labels)
    if labs.ndim != 1:
        raise ValueError(f"from_arrays: labels must be (N,), got shape {labs.shape}")
    if labs.dtype.kind == "f":
        if classes is not None:
            raise ValueError("from_arrays: float labels are regression targets; got classes")
        return TimeSeriesDataset(values, labs.astype(np.float32), times, name=name)
    names = [str(x) for x in labs.tolist()]
    if classes is None:
        distinct = np.unique(labs)
        classes = [str(c) for c in distinct.tolist()]
    else:
        classes = [str(c) for c in classes]
    index = {c: i for i, c in enumerate(classes)}
    idx = []
    for i, lab in enumerate(names):
        if lab not in index:
            raise ValueError(
                f"from_arrays: label {lab!r} of series {i} is not in classes {classes}"
            )
        idx.append(index[lab])
    return TimeSeriesDataset(
        values, np.asarray(idx, dtype=np.int64), times, classes=classes, name=name
    )
