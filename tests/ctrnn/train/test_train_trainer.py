"""train(): determinism, checkpoints, exact resumption, early stopping, tasks, errors."""

import csv
import json
import math
import sys

import pytest
import torch
from torch import nn

import ctrnn.models
from ctrnn.train import METRICS_COLUMNS, TrainConfig, load_run, read_metrics, train
from ctrnn.train._checkpoint import get_rng_state, set_rng_state
from ctrnn.train._distributed import ShardedBatchSampler
from ctrnn.train._loop import build_model

SPIRALS = dict(dataset="spirals", dataset_options={"n": 80, "min_length": 8, "max_length": 16})


def small(**changes) -> TrainConfig:
    return TrainConfig(
        **{**SPIRALS, "model": "gru", "hidden_size": 8, "epochs": 2, "batch_size": 16, **changes}
    )


def rows_without_seconds(path):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_metrics(path)]


def final_parameters(run_dir):
    state = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    return {k: v for k, v in state.items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_directory_and_metrics(tmp_path):
    result = train(small(), tmp_path / "run")
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {
        "config.json",
        "metrics.csv",
        "last.pt",
        "best.pt",
        "result.json",
    }
    with open(run / "metrics.csv") as f:
        assert next(csv.reader(f)) == list(METRICS_COLUMNS)
    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows == result.history
    for row in rows:
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["val_acc"] <= 1
        assert row["train_loss"] > 0 and row["seconds"] > 0
    assert rows[0]["lr"] == 3e-3 and rows[1]["lr"] < 3e-3  # the cosine schedule's peak, then less
    assert json.loads((run / "config.json").read_text()) == small().to_dict()
    summary = json.loads((run / "result.json").read_text())
    assert summary["test_acc"] == result.test_acc and summary["best_epoch"] == result.best_epoch
    best = min(rows, key=lambda r: r["val_loss"])  # first minimum: ties keep the earlier epoch
    assert result.best_epoch == best["epoch"] and result.best_metric == best["val_loss"]
    assert result.monitor == "val_loss"


def test_same_config_gives_bit_identical_runs(tmp_path):
    config = small(epochs=2, schedule="cosine", clip_grad_norm=0.5)
    train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    assert rows_without_seconds(tmp_path / "a/metrics.csv") == rows_without_seconds(
        tmp_path / "b/metrics.csv"
    )
    assert_same_state(final_parameters(tmp_path / "a"), final_parameters(tmp_path / "b"))
    other = train(config.replace(seed=1), tmp_path / "c")
    assert (
        other.history[0]["train_loss"] != read_metrics(tmp_path / "a/metrics.csv")[0]["train_loss"]
    )


def test_checkpoints_load_with_weights_only(tmp_path):
    train(small(epochs=1, schedule="plateau"), tmp_path)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and last["config"] == small(epochs=1, schedule="plateau").to_dict()
    for key in ("model", "optimizer", "scheduler", "rng", "loader_generators", "history"):
        assert key in last
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 1 and best["monitor"] == "val_loss"
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = get_rng_state()
    draws = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])  # noqa: NPY002
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])  # noqa: NPY002
    assert torch.equal(draws[0], again[0])
    assert (draws[1] == again[1]).all() and draws[2] == again[2]


class _Killed(Exception):
    pass


def _kill_after(epoch):
    def on_epoch(row):
        if row["epoch"] == epoch:
            raise _Killed

    return on_epoch


@pytest.mark.parametrize(
    "changes",
    [
        dict(schedule="cosine", clip_grad_norm=1.0),
        # noise drawn from torch's global generator, a plateau schedule, AdamW
        dict(model="noisy_rnn", schedule="plateau", lr_patience=0, optimizer="adamw"),
    ],
    ids=["gru-cosine", "noisy_rnn-plateau"],
)
def test_resume_continues_exactly(tmp_path, changes):
    config = small(epochs=4, **changes)
    train(config, tmp_path / "whole")
    with pytest.raises(_Killed):
        train(config, tmp_path / "part", on_epoch=_kill_after(2))
    # a kill between the checkpoint and the CSV write leaves an extra row: it is dropped
    with open(tmp_path / "part/metrics.csv", "a") as f:
        f.write("3,9,9,9,9,9,9\n")
    resumed = train(config, tmp_path / "part", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert rows_without_seconds(tmp_path / "whole/metrics.csv") == rows_without_seconds(
        tmp_path / "part/metrics.csv"
    )
    assert_same_state(final_parameters(tmp_path / "whole"), final_parameters(tmp_path / "part"))
    whole = json.loads((tmp_path / "whole/result.json").read_text())
    part = json.loads((tmp_path / "part/result.json").read_text())
    assert whole["test_loss"] == part["test_loss"] and whole["best_epoch"] == part["best_epoch"]


def test_resume_may_extend_epochs_but_not_change_the_run(tmp_path):
    train(small(epochs=1), tmp_path)
    with pytest.raises(ValueError, match="already holds a run"):
        train(small(epochs=1), tmp_path)
    with pytest.raises(ValueError, match=r"trained with lr=0.003, the config says lr=0.01"):
        train(small(epochs=2, lr=0.01), tmp_path, resume=True)
    result = train(small(epochs=2), tmp_path, resume=True)
    assert result.epochs_run == 2 and len(read_metrics(tmp_path / "metrics.csv")) == 2
    # resuming a finished run trains nothing more
    again = train(small(epochs=2), tmp_path, resume=True)
    assert again.history == result.history and again.test_loss == result.test_loss


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    result = train(small(epochs=1), tmp_path / "new", resume=True)
    assert result.epochs_run == 1


def test_early_stopping(tmp_path):
    # a learning rate too small to change any prediction: validation accuracy never improves
    result = train(small(epochs=5, lr=1e-12, patience=2, monitor="val_acc"), tmp_path)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert len(read_metrics(tmp_path / "metrics.csv")) == 3
    assert torch.load(tmp_path / "last.pt", weights_only=True)["stopped"]


def test_a_first_best_epoch_is_reported(tmp_path):
    from ctrnn.train import TrainingWarning

    with pytest.warns(
        TrainingWarning, match=r"best epoch by val_acc was the first of 3: .*lr 1e-12"
    ):
        result = train(small(epochs=3, lr=1e-12, monitor="val_acc"), tmp_path)
    assert result.best_epoch == 1


def test_the_budget_in_steps_sets_the_epochs(tmp_path):
    # 56 training series in batches of 16: 4 steps an epoch
    result = train(small(epochs=None, steps=10, patience=None), tmp_path / "a")
    assert result.epochs_run == 3 and len(read_metrics(tmp_path / "a/metrics.csv")) == 3
    assert small(epochs=None, steps=10).epochs_for(4) == 3 and small(epochs=7).epochs_for(4) == 7
    # the cosine schedule runs over the epochs the budget gives
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == 3e-3 and lrs[1] == pytest.approx(3e-3 * (1 + math.cos(math.pi / 3)) / 2)
    assert small().patience_for(100) == 25 and small().patience_for(8) == 10
    assert small(patience=None).patience_for(100) is None
    assert small(patience=4).patience_for(100) == 4


def test_early_stopping_on_the_validation_loss_by_default(tmp_path):
    # epochs past the best one count towards the patience; the best model is the one tested
    result = train(small(epochs=40, lr=0.05, patience=3), tmp_path)
    history = result.history
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    assert result.best_epoch == best + 1 and result.monitor == "val_loss"
    if result.stopped_early:
        assert len(history) == result.best_epoch + 3


def test_test_metrics_come_from_the_best_checkpoint(tmp_path):
    from ctrnn.train import evaluate

    result = train(small(epochs=3, lr=0.03, monitor="val_loss"), tmp_path)
    assert result.best_metric == min(r["val_loss"] for r in result.history)
    report = evaluate(tmp_path)
    assert report["epoch"] == result.best_epoch
    assert report["accuracy"] == pytest.approx(result.test_acc, abs=1e-12)
    assert report["loss"] == pytest.approx(result.test_loss, rel=1e-6)


def test_gru_d_learns_the_training_mean(tmp_path):
    train(small(model="gru_d", epochs=1, missing=0.3), tmp_path)
    run = load_run(tmp_path)
    x = torch.cat(run.splits.train.values)
    observed_mean = torch.nanmean(x, dim=0)
    assert torch.allclose(run.model.cell.x_mean, observed_mean, atol=1e-5)


def test_regression_task(tmp_path):
    config = small(dataset="adding", dataset_options={"n": 60, "length": 10})
    result = train(config, tmp_path)
    assert result.monitor == "val_loss" and result.test_acc is None
    rows = read_metrics(tmp_path / "metrics.csv")
    assert rows[0]["train_acc"] is None and rows[0]["val_loss"] > 0
    with pytest.raises(ValueError, match="monitor 'val_acc' needs class labels"):
        train(config.replace(monitor="val_acc"), tmp_path / "b")


def test_sequence_task(tmp_path):
    config = small(dataset="copy", dataset_options={"n": 40, "delay": 5, "memorize": 3})
    result = train(config, tmp_path)
    assert 0 <= result.test_acc <= 1 and result.monitor == "val_loss"


def test_model_options_mode_and_solver_reach_the_model():
    m = build_model("tau_gru", input_size=3, hidden_size=4, num_outputs=2, options={"delay": 2.0})
    assert m.mode == "discrete" and float(m.model.delay) == 2.0
    m = build_model(
        "tau_gru", input_size=3, hidden_size=4, num_outputs=2, solver={"method": "rk4", "dt": 0.5}
    )
    assert m.mode == "continuous" and m.solver == {"method": "rk4", "dt": 0.5}
    m = build_model(
        "neural_cde",
        input_size=3,
        hidden_size=4,
        num_outputs=2,
        solver={"method": "euler", "dt": 1.0},
    )
    assert m.solver == {"method": "euler", "dt": 1.0}


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        (
            "gru",
            dict(mode="continuous"),
            r"model .gru. has no mode option \(it is discrete only\); got mode .continuous.",
        ),
        (
            "ancde",
            dict(mode="discrete"),
            r"model .ancde. has no mode option \(it is always continuous\)",
        ),
        ("gru_d", dict(solver={"method": "dopri5"}), "model 'gru_d' takes no solver options"),
        (
            "tau_gru",
            dict(mode="discrete", solver={"method": "rk4"}),
            "apply in continuous mode, but mode is 'discrete'",
        ),
        ("gru", dict(options={"depth": 2}), "model 'gru': .*'depth'"),
    ],
)
def test_model_option_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, input_size=3, hidden_size=4, num_outputs=2, **kwargs)


class _NaNModel(nn.Module):
    def __init__(self, input_size, hidden_size, num_classes=None):
        super().__init__()
        self.w = nn.Parameter(torch.ones(num_classes))

    def classify(self, x, times=None, mask=None):
        return self.w * math.nan * torch.ones(x.shape[0], 1)


def test_a_non_finite_loss_stops_with_advice(tmp_path, monkeypatch):
    monkeypatch.setitem(ctrnn.models._registry._BUILDERS, "nan_model", _NaNModel)
    with pytest.raises(ValueError, match=r"epoch 1: the training loss is nan; lower lr .now 0.003"):
        train(small(model="nan_model"), tmp_path)


def test_config_type_and_device_errors(tmp_path):
    with pytest.raises(TypeError, match="config must be a TrainConfig or a dict, got str"):
        train("gru", tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(
            ValueError, match="device 'cuda' was asked for but CUDA is not available"
        ):
            train(small(device="cuda"), tmp_path)


def test_train_accepts_a_dict(tmp_path):
    result = train(small(epochs=1).to_dict(), tmp_path)
    assert result.config == small(epochs=1)


def test_progress_bar(tmp_path, capsys):
    pytest.importorskip("tqdm")
    train(small(epochs=1), tmp_path / "a", progress=True)
    assert "epoch 1/1" in capsys.readouterr().err
    train(small(epochs=1), tmp_path / "b")  # stderr is not a terminal: no bar
    assert capsys.readouterr().err == ""


def test_progress_without_tqdm_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r'pip install "ctrnn\[train\]"'):
        train(small(epochs=1), tmp_path, progress=True)


def test_tensorboard(tmp_path, monkeypatch):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            train(small(epochs=1, tensorboard=True), tmp_path)
        train(small(epochs=1), tmp_path / "auto")  # the default stays quiet without it
        assert not (tmp_path / "auto/tensorboard").exists()
    else:
        train(small(epochs=1, tensorboard=True), tmp_path)
        assert list((tmp_path / "tensorboard").iterdir())


def test_sharded_batches_partition_the_global_batches():
    n, batch = 23, 8
    single = list(ShardedBatchSampler(n, batch, shuffle=True, seed=3))
    shards = [
        list(ShardedBatchSampler(n, batch, rank=r, world_size=3, shuffle=True, seed=3))
        for r in range(3)
    ]
    for step, global_batch in enumerate(single):
        parts = [shard[step] for shard in shards]
        real = sorted(i for part in parts for i in part if i < n)
        assert real == sorted(global_batch)
    sampler = ShardedBatchSampler(n, batch, shuffle=True, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != single  # each epoch its own order
    # a last global batch smaller than the world: the empty rank gets a weight-0 copy
    tail = list(ShardedBatchSampler(9, 8, rank=1, world_size=2))
    assert tail[-1] == [9 + 8]


@pytest.mark.slow  # starts worker processes for every pass over a split
def test_worker_processes_do_not_change_the_run(tmp_path):
    a = train(small(epochs=1), tmp_path / "a")
    b = train(small(epochs=1, num_workers=1), tmp_path / "b")
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in (a.history[0], b.history[0])]
    assert strip[0] == strip[1]


@pytest.mark.gpu
def test_training_on_cuda_matches_the_cpu(tmp_path):
    cpu = train(small(epochs=2), tmp_path / "cpu")
    gpu = train(small(epochs=2, device="cuda"), tmp_path / "gpu")
    for mine, theirs in zip(gpu.history, cpu.history):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
    run = load_run(tmp_path / "gpu", device="cuda")
    assert next(run.model.parameters()).device.type == "cuda"


@pytest.mark.parametrize("name", ctrnn.models.available())
def test_every_model_trains(tmp_path, name):
    options = {"n": 40, "min_length": 4, "max_length": 8}
    config = small(model=name, hidden_size=4, epochs=1, dataset_options=options)
    result = train(config, tmp_path)
    assert math.isfinite(result.history[0]["train_loss"]) and 0 <= result.test_acc <= 1
    assert load_run(tmp_path).config["model"] == name
