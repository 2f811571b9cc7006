"""TimeSeriesDataset, Sample, collate/Batch and from_arrays."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ctrnn.data import (
    IGNORE_INDEX,
    Batch,
    Sample,
    TimeSeriesDataset,
    collate,
    from_arrays,
)


def _ragged(seed=0, n=6, channels=3):
    rng = np.random.default_rng(seed)
    values, times = [], []
    for i in range(n):
        T = 3 + i
        v = rng.standard_normal((T, channels)).astype(np.float32)
        v[rng.random((T, channels)) < 0.2] = np.nan
        values.append(v)
        times.append(np.cumsum(rng.uniform(0.1, 2.0, T)).astype(np.float32))
    return values, np.arange(n) % 3, times


def test_dataset_items_are_samples():
    values, labels, times = _ragged()
    ds = TimeSeriesDataset(values, labels, times, classes=("a", "b", "c"), name="toy")
    assert len(ds) == 6 and ds.num_channels == 3 and ds.num_classes == 3
    assert ds.lengths == [3, 4, 5, 6, 7, 8] and ds.task == "classification"
    assert ds.classes == ("a", "b", "c") and ds.name == "toy"
    s = ds[4]
    assert isinstance(s, Sample)
    assert s.values.dtype == torch.float32 and s.values.shape == (7, 3)
    assert s.times.dtype == torch.float32 and s.times.shape == (7,)
    assert s.mask.dtype == torch.bool and torch.equal(s.mask, ~torch.isnan(s.values))
    assert s.label.dtype == torch.int64 and s.label.dim() == 0 and int(s.label) == 1
    np.testing.assert_array_equal(s.values.numpy(), values[4])
    np.testing.assert_array_equal(s.times.numpy(), times[4])
    assert int(ds[-1].label) == 2
    with pytest.raises(IndexError, match="index 6 out of range"):
        ds[6]
    assert "lengths=3–8" in repr(ds)


def test_dataset_time_forms_and_defaults():
    x = np.zeros((4, 5, 2))
    ds = TimeSeriesDataset(x, [0, 1, 1, 0])
    assert ds.classes == ("0", "1") and ds.num_classes == 2
    torch.testing.assert_close(ds[2].times, torch.arange(5.0))
    shared = np.array([0.0, 0.5, 2.0, 2.5, 9.0])
    ds = TimeSeriesDataset(x, [0, 1, 1, 0], shared)
    torch.testing.assert_close(ds[3].times, torch.tensor(shared, dtype=torch.float32))
    per = np.stack([shared + i for i in range(4)])
    ds = TimeSeriesDataset(torch.zeros(4, 5, 2), torch.tensor([0, 1, 1, 0]), per)
    torch.testing.assert_close(ds[3].times, torch.tensor(shared + 3, dtype=torch.float32))


def test_dataset_regression_and_per_step_targets():
    ds = TimeSeriesDataset(np.zeros((3, 4, 1)), np.array([0.5, -1.0, 2.0]))
    assert ds.task == "regression" and ds.num_classes is None and ds.classes is None
    assert ds[1].label.dtype == torch.float32 and float(ds[1].label) == -1.0
    seq = TimeSeriesDataset(np.zeros((2, 4, 1)), np.array([[0, 1, 2, 0], [1, 1, 1, 1]]))
    assert seq.task == "sequence" and seq.num_classes == 3
    assert seq[0].label.shape == (4,)


def test_dataset_errors():
    x = [np.zeros((3, 2)), np.zeros((4, 2))]
    with pytest.raises(ValueError, match=r"series 1 are not strictly increasing at position 2"):
        TimeSeriesDataset(x, [0, 1], [np.arange(3.0), np.array([0.0, 1.0, 1.0, 2.0])])
    with pytest.raises(ValueError, match=r"series 0 are not finite at position 1: nan"):
        TimeSeriesDataset(x, [0, 1], [np.array([0.0, np.nan, 2.0]), np.arange(4.0)])
    with pytest.raises(ValueError, match="series 1 has 3 channels, series 0 has 2"):
        TimeSeriesDataset([np.zeros((3, 2)), np.zeros((4, 3))], [0, 1])
    with pytest.raises(ValueError, match=r"label 5 of series 1 is outside \[0, 2\)"):
        TimeSeriesDataset(x, [0, 5], classes=("a", "b"))
    with pytest.raises(ValueError, match="label -1 of series 0"):
        TimeSeriesDataset(x, [-1, 0])
    with pytest.raises(ValueError, match="3 labels for 2 series"):
        TimeSeriesDataset(x, [0, 1, 1])
    with pytest.raises(ValueError, match=r"series 0 must have shape \(T, C\)"):
        TimeSeriesDataset([np.zeros(3)], [0])
    with pytest.raises(ValueError, match=r"an array of shape \(3, 4\)"):
        TimeSeriesDataset(np.zeros((3, 4)), [0, 1, 2])
    with pytest.raises(ValueError, match="holds no series"):
        TimeSeriesDataset([], [])
    with pytest.raises(TypeError, match=r"use ctrnn\.data\.from_arrays"):
        TimeSeriesDataset(x, np.array(["a", "b"]))
    with pytest.raises(TypeError, match="values must be an"):
        TimeSeriesDataset("abc", [0])
    with pytest.raises(ValueError, match="do not match the series"):
        TimeSeriesDataset(x, [0, 1], np.arange(3.0))
    with pytest.raises(ValueError, match="1 time vectors for 2 series"):
        TimeSeriesDataset(x, [0, 1], [np.arange(3.0)])
    with pytest.raises(ValueError, match=r"times of series 1 have shape \(3,\), expected \(4,\)"):
        TimeSeriesDataset(x, [0, 1], [np.arange(3.0), np.arange(3.0)])
    with pytest.raises(TypeError, match="times must be None"):
        TimeSeriesDataset(x, [0, 1], "t")
    with pytest.raises(ValueError, match="float labels are regression targets"):
        TimeSeriesDataset(x, [0.5, 1.5], classes=("a", "b"))
    with pytest.raises(ValueError, match="class names must be unique"):
        TimeSeriesDataset(x, [0, 1], classes=("a", "a"))
    with pytest.raises(ValueError, match=r"labels must be \(N,\) or per-step \(N, T\)"):
        TimeSeriesDataset(x, np.zeros((2, 3, 1), dtype=int))
    with pytest.raises(ValueError, match="1 label sequences for 2 series"):
        TimeSeriesDataset(x, [np.zeros(3, dtype=int)])
    with pytest.raises(ValueError, match=r"label 7 of series 1 is outside \[0, 2\)"):
        TimeSeriesDataset(x, [np.zeros(3, dtype=int), np.array([0, 1, 7, 0])], classes="ab")
    with pytest.raises(TypeError, match="values must be numeric arrays, got str"):
        TimeSeriesDataset(["abc"], [0])
    with pytest.raises(TypeError, match=r"values must be numeric, got dtype torch\.complex64"):
        TimeSeriesDataset([torch.zeros(2, 1, dtype=torch.complex64)], [0])
    with pytest.raises(ValueError, match=r"per-step labels of series 1 must be \(4,\)"):
        TimeSeriesDataset(x, [np.zeros(3, dtype=int), np.zeros(3, dtype=int)])


def test_collate_pads_with_increasing_times_and_false_mask():
    values, labels, times = _ragged()
    ds = TimeSeriesDataset(values, labels, times)
    batch = collate([ds[0], ds[5], ds[2]])
    assert isinstance(batch, Batch) and len(batch) == 3
    assert batch.values.shape == (3, 8, 3) and batch.mask.shape == (3, 8, 3)
    assert batch.times.shape == (3, 8) and batch.times.dtype == torch.float32
    assert batch.lengths.tolist() == [3, 8, 5] and batch.lengths.dtype == torch.int64
    assert batch.labels.tolist() == [0, 2, 2] and batch.labels.dtype == torch.int64
    assert (batch.times.diff(dim=1) > 0).all()
    for row, i in enumerate([0, 5, 2]):
        L = ds.lengths[i]
        torch.testing.assert_close(batch.times[row, :L], ds[i].times)
        torch.testing.assert_close(batch.values[row, :L], ds[i].values, equal_nan=True)
        assert torch.equal(batch.mask[row, :L], ds[i].mask)
        assert torch.isnan(batch.values[row, L:]).all() and not batch.mask[row, L:].any()
        t = ds[i].times.double()
        spacing = (t[-1] - t[0]) / (L - 1)
        expected = t[-1] + spacing * torch.arange(1, 8 - L + 1, dtype=torch.float64)
        torch.testing.assert_close(batch.times[row, L:], expected.float())
    single = collate(
        [TimeSeriesDataset([np.ones((1, 1)), np.ones((3, 1))], [0, 0])[i] for i in (0, 1)]
    )
    assert single.times[0].tolist() == [0.0, 1.0, 2.0]  # one time point: spacing 1
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.lengths, batch.lengths)


def test_collate_per_step_labels_and_regression():
    seq = TimeSeriesDataset(
        [np.zeros((2, 1)), np.zeros((4, 1))], [np.array([1, 0]), np.array([0, 1, 1, 0])]
    )
    b = collate([seq[0], seq[1]])
    assert b.labels.tolist() == [[1, 0, IGNORE_INDEX, IGNORE_INDEX], [0, 1, 1, 0]]
    loss = torch.nn.functional.cross_entropy(torch.zeros(2, 2, 4), b.labels)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)
    reg = TimeSeriesDataset(np.zeros((2, 3, 1)), np.array([0.25, 4.0]))
    b = collate([reg[0], reg[1]])
    assert b.labels.dtype == torch.float32 and b.labels.tolist() == [0.25, 4.0]


def test_collate_errors():
    with pytest.raises(ValueError, match="empty list"):
        collate([])
    a = TimeSeriesDataset([np.zeros((2, 1))], [0])[0]
    b = TimeSeriesDataset([np.zeros((2, 2))], [0])[0]
    with pytest.raises(ValueError, match="sample 1 has 2 channels, sample 0 has 1"):
        collate([a, b])


def test_dataloader_round_trip():
    values, labels, times = _ragged(n=10)
    ds = TimeSeriesDataset(values, labels, times)
    loader = DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate)
    seen = 0
    for batch in loader:
        for row in range(len(batch)):
            i, L = seen + row, int(batch.lengths[row])
            assert L == ds.lengths[i] and int(batch.labels[row]) == labels[i]
            np.testing.assert_array_equal(batch.values[row, :L].numpy(), values[i])
            np.testing.assert_array_equal(batch.times[row, :L].numpy(), times[i])
        seen += len(batch)
    assert seen == 10


def test_subset_keeps_classes():
    values, labels, times = _ragged()
    ds = TimeSeriesDataset(values, labels, times, classes=("a", "b", "c"), name="toy")
    sub = ds.subset([0, 3])
    assert sub.classes == ds.classes and sub.num_classes == 3 and sub.name == "toy"
    assert sub.labels.tolist() == [0, 0] and sub.lengths == [3, 6]


def test_from_arrays_maps_labels_and_cuts_lengths():
    x = np.arange(24, dtype=float).reshape(3, 4, 2)
    ds = from_arrays(x, ["walk", "run", "walk"])
    assert ds.classes == ("run", "walk") and ds.labels.tolist() == [1, 0, 1]
    ds = from_arrays(x, [3, 1, 3], classes=[1, 2, 3])
    assert ds.classes == ("1", "2", "3") and ds.labels.tolist() == [2, 0, 2]
    ds = from_arrays(x, [0, 1, 0], times=np.array([0.0, 0.5, 1.5, 2.0]), lengths=[2, 4, 3])
    assert ds.lengths == [2, 4, 3]
    torch.testing.assert_close(ds[2].times, torch.tensor([0.0, 0.5, 1.5]))
    uni = from_arrays(np.zeros((2, 5)), ["x", "y"])
    assert uni.num_channels == 1
    reg = from_arrays(x, np.array([0.1, 0.2, 0.3]))
    assert reg.task == "regression"


def test_from_arrays_errors():
    x = np.zeros((2, 3, 1))
    with pytest.raises(ValueError, match="series 1 are not strictly increasing at position 1"):
        from_arrays(x, [0, 1], times=np.array([[0.0, 1.0, 2.0], [5.0, 4.0, 6.0]]))
    with pytest.raises(ValueError, match=r"label 'c' of series 1 is not in classes \['a', 'b'\]"):
        from_arrays(x, ["a", "c"], classes=["a", "b"])
    with pytest.raises(ValueError, match="3 lengths for 2 series"):
        from_arrays(x, [0, 1], lengths=[1, 2, 3])
    with pytest.raises(ValueError, match=r"length 4 of series 0 not in \[1, 3\]"):
        from_arrays(x, [0, 1], lengths=[4, 1])
    with pytest.raises(ValueError, match=r"labels must be \(N,\)"):
        from_arrays(x, [[0], [1]])
    with pytest.raises(ValueError, match="float labels are regression targets"):
        from_arrays(x, [0.5, 1.5], classes=["a"])


def test_csv_long_format_recipe(tmp_path):
    """The recipe of docs/data.md: one row per observation, columns id, time, channels, label."""
    rows = [
        (0, 0.0, 1.0, 10.0, "a"),
        (0, 0.7, 2.0, float("nan"), "a"),
        (1, 0.0, 3.0, 30.0, "b"),
        (1, 0.2, 4.0, 40.0, "b"),
        (1, 1.1, 5.0, 50.0, "b"),
    ]
    path = tmp_path / "series.csv"
    path.write_text("id,time,x1,x2,label\n" + "\n".join(",".join(map(str, r)) for r in rows))
    table = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    ids = np.unique(table["id"])
    rows_of = [table[table["id"] == i] for i in ids]
    values = [np.stack([r["x1"], r["x2"]], axis=1) for r in rows_of]
    times = [r["time"] for r in rows_of]
    labels = [r["label"][0] for r in rows_of]
    ds = from_arrays(values, labels, times)
    assert ds.classes == ("a", "b") and ds.lengths == [2, 3]
    assert torch.isnan(ds[0].values[1, 1]) and not ds[0].mask[1, 1]
    torch.testing.assert_close(ds[1].times, torch.tensor([0.0, 0.2, 1.1]))


@pytest.mark.gpu
def test_batches_move_to_the_gpu_and_pin():
    values, labels, times = _ragged(n=8)
    ds = TimeSeriesDataset(values, labels, times)
    loader = DataLoader(ds, batch_size=4, collate_fn=collate, pin_memory=True)
    for batch in loader:
        assert batch.values.is_pinned() and batch.labels.is_pinned()
        moved = batch.to("cuda", non_blocking=True)
        assert all(
            t.is_cuda for t in (moved.values, moved.times, moved.mask, moved.lengths, moved.labels)
        )
        torch.testing.assert_close(moved.values.cpu(), batch.values, equal_nan=True)
