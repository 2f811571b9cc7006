"""train(config, out_dir, data=...) on the user's datasets, and TimeSeriesClassifier with
observation times."""

import json

import numpy as np
import pytest
import torch

from ctrnn.data import from_arrays, load_dataset
from ctrnn.train import TimeSeriesClassifier, TrainConfig, evaluate, load_run, train


def user_set(n=60, seed=0, name="waves"):
    rng = np.random.default_rng(seed)
    labels = np.array(["slow", "fast"] * (n // 2))
    t = np.sort(rng.uniform(0, 6, size=(n, 12)), axis=1)
    freq = np.where(labels == "slow", 1.0, 3.0)[:, None]
    values = np.sin(freq * t)[:, :, None] + 0.05 * rng.normal(size=(n, 12, 1))
    return from_arrays(values, labels, t, name=name)


CONFIG = TrainConfig(model="gru", hidden_size=6, epochs=2, batch_size=16)


def test_train_on_a_users_dataset_then_evaluate_and_resume(tmp_path):
    result = train(CONFIG, tmp_path / "run", data=user_set())
    run = tmp_path / "run"
    assert (
        result.dataset == "waves"
        and json.loads((run / "result.json").read_text())["dataset"] == "waves"
    )
    assert json.loads((run / "config.json").read_text())["dataset"] is None
    assert (run / "data.pt").is_file()
    report = evaluate(run)
    assert report["n"] == len(load_run(run).splits.test) and report["classes"] == ["fast", "slow"]
    again = train(CONFIG.replace(epochs=3), run, resume=True)
    assert again.epochs_run == 3 and again.dataset == "waves"


def test_train_on_a_users_train_test_pair_with_the_original_split(tmp_path):
    train_set, test_set = user_set(40, seed=1), user_set(20, seed=2)
    result = train(CONFIG.replace(split="original"), tmp_path / "run", data=(train_set, test_set))
    assert result.dataset == "waves"
    assert len(load_run(tmp_path / "run").splits.test) == 20


def test_train_on_ready_splits_and_bad_data(tmp_path):
    splits = load_dataset("spirals", n=60)
    assert train(CONFIG, tmp_path / "a", data=splits).dataset == "spirals"
    with pytest.raises(
        TypeError, match=r"data must be a ctrnn.data.TimeSeriesDataset .*from_arrays"
    ):
        train(CONFIG, tmp_path / "b", data=np.zeros((3, 4, 1)))
    with pytest.raises(ValueError, match=r"config names no dataset .*data="):
        train(CONFIG.replace(dataset=None), tmp_path / "c")


def test_classifier_uses_the_observation_times():
    data = user_set(40)
    X = np.stack([v.numpy().T for v in data.values])  # (n, 1, T)
    times = np.stack([t.numpy() for t in data.times])
    y = np.array(data.classes)[data.labels.numpy()]
    clf = TimeSeriesClassifier("gru", hidden_size=6, epochs=2, seed=0).fit(X, y, times=times)
    with_times = clf.predict_proba(X, times=times)
    default_times = clf.predict_proba(X)
    assert with_times.shape == (40, 2) and not np.allclose(with_times, default_times)
    assert 0 <= clf.score(X, y, times=times) <= 1
    per_series = [t for t in times]
    assert np.allclose(clf.predict_proba(X, times=per_series), with_times)
    with pytest.raises(ValueError, match="times of series 0 are not strictly increasing"):
        TimeSeriesClassifier("gru", epochs=1).fit(X, y, times=times[:, ::-1].copy())
    with pytest.raises(ValueError, match=r"times of shape \(5,\) do not match"):
        clf.predict(X, times=np.arange(5.0))


def test_classifier_with_variable_lengths_and_times():
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(2, n)) for n in (5, 9, 7, 6) * 3]
    times = [np.cumsum(rng.uniform(0.5, 1.5, size=x.shape[1])) for x in X]
    y = ["a", "b"] * 6
    clf = TimeSeriesClassifier("gru_dt", hidden_size=4, epochs=1).fit(X, y, times=times)
    assert clf.predict(X, times=times).shape == (12,)
    assert torch.is_tensor(next(clf.model_.parameters()))
