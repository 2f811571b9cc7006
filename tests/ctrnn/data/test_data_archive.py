"""Any UEA/UCR archive set by name or path: found under a data root or in an installed aeon or
sktime, univariate and variable-length sets, the archive's own split, and `ctrnn list`."""

import importlib.util

import numpy as np
import pytest

from ctrnn.cli import main
from ctrnn.data import archive_datasets, available_datasets, find_archive, load_dataset, read_ts
from ctrnn.train import TrainConfig

HEADER = (
    "% a comment in aeon's style\n"
    "# and one in the archive's\n"
    "@problemName {problem}\n@timeStamps false\n@missing false\n@univariate true\n"
    "@equalLength false\n@classLabel true up down\n@data\n"
)


def write_set(directory, name, n_train=12, n_test=8, problem=None, seed=0):
    """A univariate, variable-length two-class set: rising series are 'up', falling 'down'."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for part, n in (("TRAIN", n_train), ("TEST", n_test)):
        lines = [HEADER.format(problem=problem or name)]
        for i in range(n):
            length = int(rng.integers(5, 15))
            up = i % 2 == 0
            values = np.linspace(0, 1, length) * (1 if up else -1) + 0.1 * rng.normal(size=length)
            lines.append(",".join(f"{v:.3f}" for v in values) + (":up\n" if up else ":down\n"))
        (directory / f"{name}_{part}.ts").write_text("".join(lines))
    return directory / f"{name}_TRAIN.ts"


def test_read_ts_skips_percent_comments(tmp_path):
    train = read_ts(write_set(tmp_path, "Toy"))
    assert len(train) == 12 and train.num_channels == 1 and len(set(train.lengths)) > 1


def test_find_archive_by_name_path_and_folder(tmp_path):
    write_set(tmp_path / "root" / "Toy", "Toy")
    write_set(tmp_path / "root", "FlatSet")
    found = find_archive("toy", tmp_path / "root")
    assert found.name == "Toy" and found.test.name == "Toy_TEST.ts" and found.origin == "root"
    assert find_archive("FLATSET", tmp_path / "root").train == tmp_path / "root/FlatSet_TRAIN.ts"
    assert find_archive(str(tmp_path / "root" / "Toy" / "Toy_TRAIN.ts")).name == "Toy"
    assert find_archive(str(tmp_path / "root" / "Toy")).name == "Toy"
    assert set(archive_datasets(tmp_path / "root")) >= {"Toy", "FlatSet"}
    with pytest.raises(ValueError, match=r"holds several archive datasets \(FlatSet, Toy\)"):
        find_archive(str(tmp_path / "root"))
    with pytest.raises(FileNotFoundError, match=r"archive dataset 'Nope' not found .*--data-root"):
        find_archive("Nope", tmp_path / "root")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_archive(str(tmp_path / "missing" / "X_TRAIN.ts"))
    (tmp_path / "Toy_TEST.ts").write_text("")
    with pytest.raises(ValueError, match="is not an archive training file"):
        find_archive(str(tmp_path / "Toy_TEST.ts"))


def test_load_dataset_keeps_the_archive_split_and_the_real_name(tmp_path):
    write_set(tmp_path / "Toy", "Toy", problem="ToyProblem_TRAIN.ts")
    splits = load_dataset("toy", root=tmp_path, split="original", missing=0.5)
    assert splits.info["name"] == "Toy" and splits.train.name == "Toy"
    assert len(splits.test) == 8 and len(splits.train) + len(splits.val) == 12
    assert "Toy_TRAIN.ts" in splits.info["source"] and "not redistributed" in splits.info["licence"]
    pooled = load_dataset(str(tmp_path / "Toy" / "Toy_TRAIN.ts"))
    assert sum(pooled.info["sizes"].values()) == 20
    with pytest.raises(ValueError, match=r"unknown dataset 'Other'; valid: JapaneseVowels"):
        load_dataset("Other", root=tmp_path)
    with pytest.raises(ValueError, match="archive dataset 'Toy' takes no options"):
        load_dataset("Toy", root=tmp_path, n=3)


def test_sets_shipped_by_an_installed_aeon_are_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "aeon"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('aeon must not be imported')\n")
    write_set(package / "datasets" / "data" / "Wiggles", "Wiggles")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert archive_datasets()["Wiggles"].origin == "aeon"
    assert "Wiggles" in available_datasets()
    config = TrainConfig(dataset="wiggles")
    assert config.dataset == "Wiggles" and config.data_root is None
    assert load_dataset("wiggles", split="original").info["name"] == "Wiggles"


def test_config_takes_a_path_and_records_the_name_and_folder(tmp_path, monkeypatch):
    write_set(tmp_path / "data" / "Toy", "Toy")
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(dataset="data/Toy/Toy_TRAIN.ts")
    assert config.dataset == "Toy" and config.data_root == str(tmp_path / "data" / "Toy")
    with pytest.raises(ValueError, match=r"unknown dataset 'Toyy'; available datasets: .*Toy"):
        TrainConfig(dataset="Toyy", data_root="data")


def test_train_list_and_evaluate_an_archive_set(tmp_path, capsys, monkeypatch):
    write_set(tmp_path / "data" / "Toy", "Toy", n_train=20)
    monkeypatch.chdir(tmp_path)
    assert main(["list", "--data-root", "data"]) == 0
    out = capsys.readouterr().out
    assert "archive datasets found" in out and "Toy" in out and str(tmp_path / "data") in out
    argv = ["train", "--model", "gru", "--hidden-size", "4", "--epochs", "2"]
    argv += ["--dataset", "Toy", "--data-root", "data", "--split", "original", "--out", "run"]
    assert main(argv) == 0
    assert "on Toy" in capsys.readouterr().out
    run = tmp_path / "run"
    import json

    assert json.loads((run / "config.json").read_text())["dataset"] == "Toy"
    assert json.loads((run / "result.json").read_text())["dataset"] == "Toy"
    monkeypatch.chdir(tmp_path / "data")  # the stored data root is absolute
    assert main(["evaluate", str(run)]) == 0
    assert "8 series" in capsys.readouterr().out


AEON = importlib.util.find_spec("aeon")


@pytest.mark.skipif(AEON is None, reason="aeon is not installed")
def test_the_sets_aeon_ships():
    found = archive_datasets()
    for name in ("ArrowHead", "ACSF1", "OSULeaf", "PickupGestureWiimoteZ", "BasicMotions"):
        assert name in found
    splits = load_dataset("PickupGestureWiimoteZ", split="original", missing=0.5)
    assert len(splits.test) == 50 and len(set(splits.train.lengths)) > 1
    assert load_dataset("ArrowHead", split="original").info["sizes"]["test"] == 175
