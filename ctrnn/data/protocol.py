"""The experimental protocol of the Neural CDE paper (Kidger, Morrill, Foster & Lyons, NeurIPS
2020): drop a fraction of each series' observations, add the time as a channel, split
train/validation/test stratified by class, and normalise with training statistics only."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._dataset import DatasetSplits, TimeSeriesDataset

__all__ = [
    "add_time_channel",
    "channel_stats",
    "drop_observations",
    "make_splits",
    "split_indices",
    "standardize",
]

# Independent random streams for the protocol's steps under one user seed.
_DROP_STREAM, _SPLIT_STREAM, _VAL_STREAM = 1, 2, 3


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def _check_seed(owner: str, seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{owner}: seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def drop_observations(
    dataset: TimeSeriesDataset, fraction: float, *, seed: int = 0, keep_channels=()
) -> TimeSeriesDataset:
    """Drop ``fraction`` of each series' time points: every channel at those points becomes
    NaN, except ``keep_channels`` (e.g. ``(0,)`` for a time channel).

    Each series of ``T`` points loses ``round(fraction · T)`` of them (at most ``T − 1``, so
    that every series keeps an observation), chosen uniformly without replacement by a
    generator seeded with ``seed``: the same seed drops the same points. The Neural CDE
    paper's code truncates ``fraction · T`` instead of rounding; with its fixed-length series
    the difference is at most one point per series. Times and lengths are unchanged.
    """
    owner = "drop_observations"
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError(f"{owner}: fraction must be a number in [0, 1), got {fraction!r}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{owner}: fraction must be in [0, 1), got {fraction!r}")
    seed = _check_seed(owner, seed)
    keep = [int(c) for c in keep_channels]
    for c in keep:
        if not 0 <= c < dataset.num_channels:
            raise ValueError(
                f"{owner}: keep_channels has {c}, the data has {dataset.num_channels} channels"
            )
    if fraction == 0.0:
        return dataset
    rng = _rng(seed, _DROP_STREAM)
    drop = np.ones(dataset.num_channels, dtype=bool)
    drop[keep] = False
    drop_t = torch.from_numpy(drop)
    out = []
    for v in dataset.values:
        T = v.shape[0]
        k = min(math.floor(fraction * T + 0.5), T - 1)
        rows = torch.from_numpy(np.sort(rng.permutation(T)[:k]))
        v = v.clone()
        block = v[rows]
        block[:, drop_t] = math.nan
        v[rows] = block
        out.append(v)
    return dataset.replace(values=out)


def add_time_channel(dataset: TimeSeriesDataset) -> TimeSeriesDataset:
    """Prepend each series' observation times as channel 0 (never missing)."""
    values = [torch.cat([t[:, None], v], dim=1) for v, t in zip(dataset.values, dataset.times)]
    return dataset.replace(values=values)


def split_indices(
    dataset: TimeSeriesDataset, fractions, *, seed: int = 0, stratify: bool | None = None
) -> list[np.ndarray]:
    """Random disjoint index sets covering ``dataset`` in the proportions ``fractions``.

    With ``stratify`` (default: for classification) each class is shuffled and divided in the
    proportions separately, so every part keeps the class proportions (up to rounding: part
    ``j`` of a class of ``n`` gets ``round(n · (f_0 + … + f_j)) − round(n · (f_0 + … + f_{j−1}))``
    series). Indices within a part are sorted. Seeded: the same seed gives the same parts.
    """
    owner = "split_indices"
    fractions = [float(f) for f in fractions]
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"{owner}: fractions must be ≥ 0 and sum to 1, got {fractions}")
    seed = _check_seed(owner, seed)
    if stratify is None:
        stratify = dataset.task == "classification"
    if stratify and dataset.task != "classification":
        raise ValueError(f"{owner}: stratify needs class labels, the task is {dataset.task!r}")
    rng = _rng(seed, _SPLIT_STREAM)
    if stratify:
        labels = dataset.labels.numpy()
        groups = [np.flatnonzero(labels == c) for c in range(dataset.num_classes)]
    else:
        groups = [np.arange(len(dataset))]
    bounds = np.cumsum([0.0, *fractions])
    bounds[-1] = 1.0
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for group in groups:
        shuffled = rng.permutation(group)
        cuts = np.floor(bounds * len(group) + 0.5).astype(int)
        for j in range(len(fractions)):
            parts[j].append(shuffled[cuts[j] : cuts[j + 1]])
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def channel_stats(dataset: TimeSeriesDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation ``(C,)`` over the observed (non-NaN) values.

    A channel with no observation gets mean 0 and std 1; a constant channel gets std 1.
    """
    stacked = torch.cat(dataset.values, dim=0).double()
    observed = ~torch.isnan(stacked)
    count = observed.sum(0)
    filled = torch.where(observed, stacked, torch.zeros_like(stacked))
    mean = filled.sum(0) / count.clamp_min(1)
    var = (torch.where(observed, stacked - mean, torch.zeros_like(stacked)) ** 2).sum(0)
    std = (var / count.clamp_min(1)).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.float(), std.float()


def standardize(dataset: TimeSeriesDataset, mean, std, *, skip_channels=()) -> TimeSeriesDataset:
    """``(values − mean) / std`` per channel, leaving ``skip_channels`` as they are."""
    mean = torch.as_tensor(mean, dtype=torch.float32).clone()
    std = torch.as_tensor(std, dtype=torch.float32).clone()
    C = dataset.num_channels
    if mean.shape != (C,) or std.shape != (C,):
        raise ValueError(
            f"standardize: mean and std must have shape ({C},), got {tuple(mean.shape)} and "
            f"{tuple(std.shape)}"
        )
    if not (std > 0).all():
        raise ValueError(f"standardize: std must be positive, got {std.tolist()}")
    for c in skip_channels:
        mean[c], std[c] = 0.0, 1.0
    return dataset.replace(values=[(v - mean) / std for v in dataset.values])


_SPLITS = ("pooled", "original")


def make_splits(
    train: TimeSeriesDataset,
    test: TimeSeriesDataset | None = None,
    *,
    missing: float = 0.0,
    seed: int = 0,
    time_channel: bool = True,
    normalize: bool = True,
    split: str = "pooled",
    info: dict | None = None,
) -> DatasetSplits:
    """Apply the Neural CDE paper's protocol to a dataset (or an archive's train/test pair).

    In order: pool ``train`` and ``test`` (``split="pooled"``), drop ``missing`` of each
    series' time points (:func:`drop_observations`, seeded), prepend the time channel
    (``time_channel``), split (``"pooled"``: stratified 70/15/15 train/val/test;
    ``"original"``: keep ``test`` and carve a stratified 15% validation set out of
    ``train``), and standardise every split with the per-channel mean and std of the observed
    training values (``normalize``; the time channel is left in its original units). Regression
    sets are split at random rather than by class. ``info`` (source, licence, …) is copied
    into the returned :attr:`DatasetSplits.info` with what was done.
    """
    owner = "make_splits"
    if split not in _SPLITS:
        raise ValueError(f"{owner}: split must be one of {', '.join(_SPLITS)}, got {split!r}")
    if split == "original" and test is None:
        raise ValueError(
            f"{owner}: split='original' needs a separate test set; this data has none (use "
            "split='pooled')"
        )
    seed = _check_seed(owner, seed)
    parts = [train] if test is None else [train, test]
    if test is not None:
        if test.num_channels != train.num_channels or test.classes != train.classes:
            raise ValueError(
                f"{owner}: train and test differ: channels {train.num_channels} vs "
                f"{test.num_channels}, classes {train.classes} vs {test.classes}"
            )
    # one dataset of everything, so that dropping does not depend on the split
    whole = _concat(parts)
    whole = drop_observations(whole, missing, seed=seed)
    if time_channel:
        whole = add_time_channel(whole)
    n_train = len(train)
    if split == "pooled":
        idx = split_indices(whole, (0.70, 0.15, 0.15), seed=seed)
        protocol = "pooled train and test, stratified 70/15/15 train/val/test"
        if test is None:
            protocol = "stratified 70/15/15 train/val/test"
        if whole.task != "classification":
            protocol = protocol.replace("stratified", "random")
    else:
        original = whole.subset(range(n_train))
        tr, va = split_indices(original, (0.85, 0.15), seed=seed)
        idx = [tr, va, np.arange(n_train, len(whole))]
        protocol = "original test set; stratified 15% of the training set for validation"
        if whole.task != "classification":
            protocol = protocol.replace("stratified", "random")
    for part, i in zip(("train", "val", "test"), idx):
        if len(i) == 0:
            raise ValueError(
                f"{owner}: the {part} split is empty ({len(whole)} series are too few for "
                f"{protocol!r})"
            )
    tr, va, te = (whole.subset(i) for i in idx)
    stats = None
    if normalize:
        skip = (0,) if time_channel else ()
        mean, std = channel_stats(tr)
        tr, va, te = (standardize(d, mean, std, skip_channels=skip) for d in (tr, va, te))
        if time_channel:
            mean, std = mean[1:], std[1:]
        stats = {"mean": mean.tolist(), "std": std.tolist()}
    record = dict(info or {})
    record.update(
        missing=float(missing),
        seed=seed,
        time_channel=bool(time_channel),
        normalization=stats,
        split=protocol,
        sizes={"train": len(tr), "val": len(va), "test": len(te)},
        classes=whole.classes,
        task=whole.task,
    )
    return DatasetSplits(tr, va, te, record)


def _concat(parts: list[TimeSeriesDataset]) -> TimeSeriesDataset:
    if len(parts) == 1:
        return parts[0]
    a, b = parts
    labels = a.labels + b.labels if a.task == "sequence" else torch.cat([a.labels, b.labels])
    return a.replace(values=a.values + b.values, times=a.times + b.times, labels=labels)
