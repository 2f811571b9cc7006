"""The Neural CDE paper's protocol: dropped observations, time channel, stratified splits,
normalisation from training statistics."""

import math

import numpy as np
import pytest
import torch

from ctrnn.data import (
    TimeSeriesDataset,
    add_time_channel,
    channel_stats,
    drop_observations,
    japanese_vowels,
    load_dataset,
    make_splits,
    split_indices,
    standardize,
)


@pytest.fixture(scope="module")
def vowels():
    return japanese_vowels()


def _toy(n=60, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal((int(rng.integers(5, 15)), 2)) for _ in range(n)]
    return TimeSeriesDataset(values, np.arange(n) % classes, name="toy")


def test_drop_observations_drops_the_fraction_of_each_series():
    ds = _toy()
    for fraction in (0.3, 0.5, 0.7):
        dropped = drop_observations(add_time_channel(ds), fraction, seed=1, keep_channels=(0,))
        for before, after, t in zip(ds.values, dropped.values, ds.times):
            T = before.shape[0]
            rows = torch.isnan(after[:, 1:]).all(dim=1)
            assert int(rows.sum()) == min(math.floor(fraction * T + 0.5), T - 1)
            assert not torch.isnan(after[:, 1:][~rows]).any()  # the other points intact
            torch.testing.assert_close(after[~rows, 1:], before[~rows])
            torch.testing.assert_close(after[:, 0], t)  # the time channel is never dropped
        assert dropped.lengths == ds.lengths
    first = drop_observations(ds, 0.5, seed=1)
    again = drop_observations(ds, 0.5, seed=1)
    other = drop_observations(ds, 0.5, seed=2)
    assert all(torch.equal(a.isnan(), b.isnan()) for a, b in zip(first.values, again.values))
    assert not all(torch.equal(a.isnan(), b.isnan()) for a, b in zip(first.values, other.values))
    assert drop_observations(ds, 0.0) is ds


def test_drop_observations_errors():
    ds = _toy()
    for bad in (1.0, -0.1, "0.3", True):
        with pytest.raises(ValueError, match="fraction must be"):
            drop_observations(ds, bad)
    with pytest.raises(ValueError, match="keep_channels has 5, the data has 2 channels"):
        drop_observations(ds, 0.3, keep_channels=(5,))
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        drop_observations(ds, 0.3, seed=-1)


def test_load_dataset_missing_fraction_per_series(vowels):
    splits = load_dataset("JapaneseVowels", missing=0.3, normalize=False)
    raw_lengths = sorted(vowels[0].lengths + vowels[1].lengths)
    lengths = []
    for part in (splits.train, splits.val, splits.test):
        for v, t in zip(part.values, part.times):
            T = v.shape[0]
            dropped = torch.isnan(v[:, 1:]).all(dim=1)
            assert int(dropped.sum()) == math.floor(0.3 * T + 0.5)
            assert not torch.isnan(v[~dropped]).any()
            torch.testing.assert_close(v[:, 0], t)  # time channel intact, equal to the times
            lengths.append(T)
    assert sorted(lengths) == raw_lengths
    total = sum(int(torch.isnan(v[:, 1]).sum()) for v in splits.train.values)
    assert abs(total / sum(splits.train.lengths) - 0.3) < 0.02


def test_split_indices_stratified_and_deterministic(vowels):
    whole_labels = torch.cat([vowels[0].labels, vowels[1].labels])
    pooled = vowels[0].replace(
        values=vowels[0].values + vowels[1].values,
        times=vowels[0].times + vowels[1].times,
        labels=whole_labels,
    )
    parts = split_indices(pooled, (0.7, 0.15, 0.15), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(640))  # disjoint, covering
    counts = np.bincount(whole_labels.numpy(), minlength=9)
    for part, fraction in zip(parts, (0.7, 0.15, 0.15)):
        got = np.bincount(whole_labels.numpy()[part], minlength=9)
        # each class is divided in the proportions, up to rounding (at most one series)
        assert np.all(np.abs(got - fraction * counts) <= 1.0)
    again = split_indices(pooled, (0.7, 0.15, 0.15), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = split_indices(pooled, (0.7, 0.15, 0.15), seed=4)
    assert not np.array_equal(parts[0], other[0])


def test_split_indices_regression_and_errors():
    reg = TimeSeriesDataset(np.zeros((20, 2, 1)), np.linspace(0, 1, 20))
    parts = split_indices(reg, (0.5, 0.5), seed=0)
    assert [len(p) for p in parts] == [10, 10]
    with pytest.raises(ValueError, match="stratify needs class labels"):
        split_indices(reg, (0.5, 0.5), stratify=True)
    with pytest.raises(ValueError, match="fractions must be ≥ 0 and sum to 1"):
        split_indices(_toy(), (0.5, 0.6))


def test_pooled_split_sizes_and_class_proportions(vowels):
    splits = load_dataset("JapaneseVowels")
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) == 640 and splits.info["sizes"] == dict(zip(("train", "val", "test"), sizes))
    counts = np.bincount(torch.cat([vowels[0].labels, vowels[1].labels]).numpy())
    for part, fraction in zip(splits[:3], (0.7, 0.15, 0.15)):
        got = np.bincount(part.labels.numpy(), minlength=9)
        assert np.all(np.abs(got - fraction * counts) <= 1.0)
        assert part.classes == tuple(str(i) for i in range(1, 10)) and part.num_classes == 9
    assert splits.info["split"] == "pooled train and test, stratified 70/15/15 train/val/test"
    assert splits.info["licence"] == "CC BY 4.0" and splits.info["seed"] == 0


def test_original_split_keeps_the_test_set(vowels):
    splits = load_dataset("JapaneseVowels", split="original", normalize=False, time_channel=False)
    assert len(splits.test) == 370 and len(splits.train) + len(splits.val) == 270
    for a, b in zip(splits.test.values, vowels[1].values):
        torch.testing.assert_close(a, b)
    # 30 series per class in the archive's training set: 15% is 4.5, rounded the same way for
    # every class
    per_class = np.bincount(splits.val.labels.numpy()).tolist()
    assert per_class in ([4] * 9, [5] * 9)


def test_normalisation_uses_observed_training_values_only(vowels):
    train, test = vowels
    splits = make_splits(train, test, missing=0.5, seed=0, split="original")
    raw = make_splits(train, test, missing=0.5, seed=0, split="original", normalize=False)
    mean, std = channel_stats(raw.train)
    stats = splits.info["normalization"]
    torch.testing.assert_close(torch.tensor(stats["mean"]), mean[1:])
    torch.testing.assert_close(torch.tensor(stats["std"]), std[1:])
    # the training values are standardised; the time channel is left as it was
    m, s = channel_stats(splits.train)
    torch.testing.assert_close(m[1:], torch.zeros(12), atol=1e-5, rtol=0)
    torch.testing.assert_close(s[1:], torch.ones(12), atol=1e-5, rtol=0)
    for v, t in zip(splits.test.values, splits.test.times):
        torch.testing.assert_close(v[:, 0], t)
    # no leak: changing the test set changes neither the statistics nor the training data
    shifted = test.replace(values=[v * 100 + 1000 for v in test.values])
    leak = make_splits(train, shifted, missing=0.5, seed=0, split="original")
    assert leak.info["normalization"] == stats
    for a, b in zip(leak.train.values, splits.train.values):
        torch.testing.assert_close(a, b, equal_nan=True)
    assert float(torch.nanmean(leak.test.values[0][:, 1:])) > 100


def test_load_dataset_deterministic_by_seed():
    a = load_dataset("JapaneseVowels", missing=0.3, seed=5)
    b = load_dataset("JapaneseVowels", missing=0.3, seed=5)
    c = load_dataset("JapaneseVowels", missing=0.3, seed=6)
    for x, y in zip(a[:3], b[:3]):
        assert x.labels.tolist() == y.labels.tolist()
        for u, v in zip(x.values, y.values):
            torch.testing.assert_close(u, v, equal_nan=True, rtol=0, atol=0)
    assert a.info == b.info
    assert a.train.lengths != c.train.lengths or a.train.labels.tolist() != c.train.labels.tolist()


def test_standardize_and_make_splits_errors(vowels):
    ds = _toy()
    with pytest.raises(ValueError, match=r"mean and std must have shape \(2,\)"):
        standardize(ds, [0.0], [1.0])
    with pytest.raises(ValueError, match="std must be positive"):
        standardize(ds, [0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="split must be one of pooled, original, got 'random'"):
        make_splits(ds, split="random")
    with pytest.raises(ValueError, match="split='original' needs a separate test set"):
        make_splits(ds, split="original")
    with pytest.raises(ValueError, match="train and test differ: channels 2 vs 12"):
        make_splits(ds, vowels[1])


def test_channel_stats_ignores_missing_and_constant_channels():
    v = torch.tensor([[1.0, 5.0], [float("nan"), 5.0], [3.0, 5.0]])
    mean, std = channel_stats(TimeSeriesDataset([v], [0]))
    torch.testing.assert_close(mean, torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(std, torch.tensor([1.0, 1.0]))  # constant channel: std 1
