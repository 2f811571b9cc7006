"""The shipped and installed archive sets, the synthetic tasks, load_dataset, and the models
on collated batches."""

import importlib.util
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import ctrnn.data
from ctrnn.data import (
    COPY_CLASSES,
    adding_problem,
    available_datasets,
    basic_motions,
    collate,
    copy_task,
    japanese_vowels,
    load_dataset,
    planar_dataset,
    spirals,
)
from ctrnn.models import create

SKTIME_WHEEL = Path("/tmp/wheels/sktime-1.2.0-py3-none-any.whl")


@pytest.fixture(scope="module")
def vowels():
    return japanese_vowels()


@pytest.fixture(scope="module")
def dropped():
    return load_dataset("JapaneseVowels", missing=0.3)


def test_japanese_vowels_shipped(vowels):
    train, test = vowels
    assert (len(train), len(test)) == (270, 370)
    assert train.num_channels == test.num_channels == 12
    assert train.classes == test.classes == tuple(str(i) for i in range(1, 10))
    assert train.num_classes == 9 and train.name == "JapaneseVowels"
    lengths = train.lengths + test.lengths
    assert (min(lengths), max(lengths)) == (7, 29)
    assert np.bincount(train.labels.numpy()).tolist() == [30] * 9
    assert np.bincount(test.labels.numpy()).tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    assert all(torch.isfinite(v).all() for v in train.values + test.values)
    here = Path(ctrnn.data.__file__).parent
    sizes = [(here / f"JapaneseVowels_{p}.ts.gz").stat().st_size for p in ("TRAIN", "TEST")]
    assert sum(sizes) < 1_000_000
    record = (here / "DATASETS.md").read_text()
    assert "CC BY 4.0" in record and "Kudo" in record


def _fake_basic_motions(directory: Path) -> None:
    directory.mkdir(parents=True)
    header = (
        "@problemName BasicMotions\n@univariate false\n@dimensions 2\n@equalLength true\n"
        "@seriesLength 3\n@classLabel true Standing Running\n@data\n"
    )
    train = "1,2,3:4,5,6:Running\n" + "0,1,2:3,4,5:Standing\n" * 9
    (directory / "BasicMotions_TRAIN.ts").write_text(header + train)
    (directory / "BasicMotions_TEST.ts").write_text(header + "0,0,0:1,1,1:Standing\n")


def test_basic_motions_from_root_or_an_installed_sktime(tmp_path, monkeypatch):
    _fake_basic_motions(tmp_path / "flat")
    train, _ = basic_motions(tmp_path / "flat")
    assert train.classes == ("Standing", "Running") and train.labels.tolist() == [1] + [0] * 9
    # found in an installed sktime's data directory, without importing sktime
    package = tmp_path / "site" / "sktime"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('sktime must not be imported')\n")
    _fake_basic_motions(package / "datasets" / "data" / "BasicMotions")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    splits = load_dataset("BasicMotions", split="original", normalize=False, time_channel=False)
    assert len(splits.test) == 1 and splits.test.labels.tolist() == [0]
    assert "licence" in splits.info and "not stated" in splits.info["licence"]


def test_basic_motions_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(ImportError, match=r'pip install "ctrnn\[data\]"'):
        load_dataset("BasicMotions")
    with pytest.raises(FileNotFoundError, match=r"no BasicMotions_TRAIN\.ts"):
        basic_motions(tmp_path)


@pytest.mark.skipif(not SKTIME_WHEEL.exists(), reason="the sktime 1.2.0 wheel is not at hand")
def test_basic_motions_real_files(tmp_path):
    with zipfile.ZipFile(SKTIME_WHEEL) as wheel:
        for part in ("TRAIN", "TEST"):
            name = f"sktime/datasets/data/BasicMotions/BasicMotions_{part}.ts"
            (tmp_path / f"BasicMotions_{part}.ts").write_bytes(wheel.read(name))
    train, test = basic_motions(tmp_path)
    assert (len(train), len(test)) == (40, 40)
    assert train.num_channels == 6 and set(train.lengths + test.lengths) == {100}
    assert train.classes == ("Standing", "Running", "Walking", "Badminton")
    assert np.bincount(train.labels.numpy()).tolist() == [10] * 4
    splits = load_dataset("basicmotions", root=tmp_path, missing=0.5)
    assert splits.train.num_channels == 7 and sum(splits.info["sizes"].values()) == 80


def test_available_and_unknown_names():
    names = available_datasets()
    assert names[:2] == ["JapaneseVowels", "BasicMotions"]
    assert {"adding", "copy", "spirals", "swiss_roll", "double_circles", "double_moons"} <= set(
        names
    )
    with pytest.raises(ValueError, match="unknown dataset 'MNIST'; valid: JapaneseVowels, Basic"):
        load_dataset("MNIST")
    assert load_dataset("SPIRALS", n=20).info["name"] == "spirals"


def test_load_dataset_option_errors(tmp_path):
    with pytest.raises(ValueError, match="JapaneseVowels takes no options, got n"):
        load_dataset("JapaneseVowels", n=5)
    with pytest.raises(ValueError, match="adding is synthetic and reads no files"):
        load_dataset("adding", root=tmp_path)
    with pytest.raises(ValueError, match="adding is synthetic and has no original test set"):
        load_dataset("adding", split="original")
    with pytest.raises(ValueError, match="bad option for adding"):
        load_dataset("adding", colour="red")
    with pytest.raises(ValueError, match="split must be one of pooled, original"):
        load_dataset("JapaneseVowels", split="all")
    with pytest.raises(
        ValueError, match=r"make_splits: the \w+ split is empty \(4 series are too few"
    ):
        load_dataset("spirals", n=4)


def test_adding_problem():
    ds = adding_problem(50, 20, seed=1)
    assert ds.task == "regression" and ds.num_classes is None and ds.lengths == [20] * 50
    for s in ds:
        marks = s.values[:, 1].nonzero()[:, 0].tolist()
        assert len(marks) == 2 and marks[0] < 10 <= marks[1]
        assert ((s.values[:, 0] >= 0) & (s.values[:, 0] <= 1)).all()
        torch.testing.assert_close(s.label, s.values[marks, 0].sum())
    again = adding_problem(50, 20, seed=1)
    assert torch.equal(again.labels, ds.labels)
    assert not torch.equal(adding_problem(50, 20, seed=2).labels, ds.labels)
    splits = load_dataset("adding", n=40, length=10)
    assert splits.info["split"] == "random 70/15/15 train/val/test"
    with pytest.raises(ValueError, match="length must be an integer ≥ 2, got 1"):
        adding_problem(10, 1)


def test_copy_task():
    ds = copy_task(8, delay=5, memorize=3, seed=0)
    assert ds.task == "sequence" and ds.classes == COPY_CLASSES and ds.num_classes == 9
    assert ds.num_channels == 10 and ds.lengths == [11] * 8
    for s in ds:
        inputs = s.values.argmax(dim=1)
        assert (s.values.sum(dim=1) == 1).all()  # one-hot
        symbols = inputs[:3]
        assert (symbols < 8).all() and (inputs[3:7] == 8).all() and inputs[7] == 9
        assert (inputs[8:] == 8).all()
        assert (s.label[:8] == 8).all() and torch.equal(s.label[8:], symbols)
    batch = collate([ds[0], ds[1]])
    assert batch.labels.shape == (2, 11)
    # a memoryless model's loss: predict the blank until the end, then uniform symbols
    assert math.isclose(3 * math.log(8) / 11, 0.567, abs_tol=1e-3)


def test_spirals_turn_by_class():
    ds = spirals(40, min_length=10, max_length=30, seed=3)
    assert ds.classes == ("counter-clockwise", "clockwise") and ds.num_channels == 2
    assert 10 <= min(ds.lengths) and max(ds.lengths) <= 30 and len(set(ds.lengths)) > 5
    for s in ds:
        assert (s.times.diff() > 0).all() and s.times[0] == 0
        gaps = s.times.diff()
        assert gaps.max() / gaps.min() > 2  # irregular sampling
        angle = torch.atan2(s.values[:, 1], s.values[:, 0]).double()
        turn = torch.remainder(angle.diff() + math.pi, 2 * math.pi) - math.pi
        assert (turn.sum() > 0) == (int(s.label) == 0)
    again = spirals(40, min_length=10, max_length=30, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(ds.values, again.values))
    with pytest.raises(ValueError, match="max_length must be an integer ≥ 10, got 5"):
        spirals(10, min_length=10, max_length=5)
    with pytest.raises(ValueError, match="duration must be a positive number, got 0"):
        spirals(10, duration=0)
    with pytest.raises(ValueError, match="noise must be a number ≥ 0, got -1"):
        spirals(10, noise=-1)


def test_planar_sets_reuse_the_hamiltonian_generators():
    from ctrnn.models import hamiltonian

    assert hamiltonian.swiss_roll is ctrnn.data.swiss_roll
    points, labels = hamiltonian.double_moons(30, noise=0.1, seed=2)
    ds = planar_dataset("double_moons", 30, noise=0.1, seed=2, steps=4)
    assert ds.lengths == [4] * 30 and ds.num_channels == 2
    torch.testing.assert_close(ds[5].values, points[5].expand(4, 2))
    assert torch.equal(ds.labels, labels)
    with pytest.raises(ValueError, match="unknown set 'spiral'; valid: swiss_roll"):
        planar_dataset("spiral")
    splits = load_dataset("swiss_roll", n=100)
    assert splits.train.num_channels == 3 and sum(splits.info["sizes"].values()) == 100


def test_gru_d_classifies_a_collated_batch(dropped):
    splits = dropped
    batch = collate([splits.train[i] for i in range(16)])
    torch.manual_seed(0)
    model = create("gru_d", input_size=splits.train.num_channels, hidden_size=16, num_classes=9)
    logits = model.classify(batch.values, batch.times, batch.mask)
    assert logits.shape == (16, 9) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "name, options",
    [
        ("gru", {}),
        ("neural_cde", {"solver": {"method": "rk4", "dt": 0.5}}),
        ("neural_cde", {"mode": "discrete"}),
    ],
)
def test_padding_does_not_reach_the_final_state(name, options, dropped):
    samples = [dropped.train[i] for i in range(4)]
    batch = collate(samples)
    short = int(batch.lengths.argmin())
    assert batch.lengths[short] < batch.lengths.max()
    torch.manual_seed(0)
    model = create(name, input_size=13, hidden_size=16, num_classes=9, **options)
    with torch.no_grad():
        padded = model.classify(batch.values, batch.times, batch.mask)[short]
        alone = collate([samples[short]])
        single = model.classify(alone.values, alone.times, alone.mask)[0]
    torch.testing.assert_close(padded, single, rtol=0, atol=1e-5)
