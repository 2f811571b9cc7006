"""The `ctrnn train / evaluate / list` commands, run in-process through ctrnn.cli.main."""

import json

import pytest

import solvers
from ctrnn.cli import _build_parser, main, train_config_from_args
from ctrnn.data import available_datasets
from ctrnn.models import available
from ctrnn.train import read_metrics

SPIRALS = [
    "--dataset",
    "spirals",
    "--dataset-option",
    "n=80",
    "--dataset-option",
    "min_length=8",
    "--dataset-option",
    "max_length=16",
    "--hidden-size",
    "8",
    "--batch-size",
    "16",
]


def parse(*argv):
    return train_config_from_args(_build_parser().parse_args(["train", *argv]))


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (*available(), *available_datasets(), *solvers.methods(), *solvers.backends()):
        assert name in out
    assert "euler_maruyama" in out and "backsolve" in out


def test_train_then_evaluate(tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert main(["train", "--model", "gru", *SPIRALS, "--epochs", "2", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "epoch   1/2" in out and "epoch   2/2" in out and "test accuracy" in out
    assert len(read_metrics(out_dir / "metrics.csv")) == 2
    assert main(["evaluate", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out and "counter-clockwise" in out
    assert (out_dir / "evaluation.json").exists()


def test_train_gru_d_on_japanese_vowels_with_missing_data(tmp_path, capsys):
    argv = ["train", "--model", "gru_d", "--dataset", "JapaneseVowels", "--missing", "0.3"]
    argv += ["--epochs", "1", "--hidden-size", "8", "--out", str(tmp_path)]
    assert main(argv) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["model"], config["dataset"], config["missing"]) == (
        "gru_d",
        "JapaneseVowels",
        0.3,
    )
    assert "on JapaneseVowels (missing 0.3)" in capsys.readouterr().out


def test_yaml_config_with_flags_overriding_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: tau_gru\nhidden_size: 8\nepochs: 5\nlr: 0.01\nmodel_options: {delay: 2.0}\n"
        "solver: {method: rk4, dt: 0.5}\n"
    )
    config = parse(
        "--config",
        str(path),
        "--epochs",
        "2",
        "--model-option",
        "scheme=heun",
        "--adjoint",
        "backsolve",
        "--out",
        str(tmp_path / "run"),
    )
    assert (config.model, config.epochs, config.lr, config.hidden_size) == ("tau_gru", 2, 0.01, 8)
    assert config.model_options == {"delay": 2.0, "scheme": "heun"}
    assert config.solver.to_dict() == {"method": "rk4", "adjoint": "backsolve", "dt": 0.5}


def test_flags_map_to_fields():
    config = parse(
        "--model",
        "neural_cde",
        "--dataset",
        "basicmotions",
        "--split",
        "original",
        "--no-time-channel",
        "--no-normalize",
        "--data-seed",
        "4",
        "--seed",
        "3",
        "--optimizer",
        "adamw",
        "--weight-decay",
        "0.1",
        "--schedule",
        "plateau",
        "--lr-factor",
        "0.2",
        "--lr-patience",
        "1",
        "--min-lr",
        "1e-5",
        "--clip-grad-norm",
        "2",
        "--patience",
        "3",
        "--monitor",
        "val_loss",
        "--device",
        "cpu",
        "--num-workers",
        "0",
        "--no-tensorboard",
        "--solver",
        "dopri5",
        "--backend",
        "torchcde",
        "--rtol",
        "1e-3",
        "--atol",
        "1e-4",
        "--max-steps",
        "500",
        "--out",
        "x",
    )
    assert config.dataset == "BasicMotions" and config.split == "original"
    assert (config.time_channel, config.normalize, config.tensorboard) == (False, False, False)
    assert (config.seed, config.data_seed, config.patience, config.monitor) == (3, 4, 3, "val_loss")
    assert (config.optimizer, config.weight_decay, config.schedule) == ("adamw", 0.1, "plateau")
    assert (config.lr_factor, config.lr_patience, config.min_lr) == (0.2, 1, 1e-5)
    assert config.clip_grad_norm == 2.0
    assert config.solver.to_dict() == dict(
        method="dopri5", backend="torchcde", rtol=1e-3, atol=1e-4, max_steps=500
    )


def test_resume_reads_the_run_config(tmp_path, capsys):
    out_dir = str(tmp_path)
    assert main(["train", "--model", "gru", *SPIRALS, "--epochs", "1", "--out", out_dir]) == 0
    # only what changes: the rest comes from RUN_DIR/config.json
    assert main(["train", "--resume", "--epochs", "2", "--out", out_dir]) == 0
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "gru"
    capsys.readouterr()
    assert main(["train", "--model", "gru", *SPIRALS, "--epochs", "1", "--out", out_dir]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "transformer"], "unknown model 'transformer'; available models: gru, lstm"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'; available datasets: JapaneseVowels"),
        (["--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
        (["--solver", "rk5"], "solver.method must be one of euler, midpoint"),
        (["--backend", "jax"], "solver.backend must be one of native"),
        (["--optimizer", "sgd"], "optimizer must be one of adam, adamw, got 'sgd'"),
        (["--missing", "1.5"], r"missing must be a fraction in [0, 1), got 1.5"),
        (["--model", "gru_d", "--solver", "dopri5"], "model 'gru_d' takes no solver options"),
        (["--model", "gru", "--model-option", "depth=2"], "model 'gru': "),
        (["--config", "nope.yaml"], "config file 'nope.yaml' does not exist"),
    ],
)
def test_bad_settings_exit_2_with_a_message(tmp_path, capsys, argv, message):
    status = main(["train", *SPIRALS, "--epochs", "1", *argv, "--out", str(tmp_path / "r")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("ctrnn train: error: ") and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hidden-size", "0"], "expected a positive integer, got 0"),
        (["--epochs", "two"], "expected a positive integer, got 'two'"),
        (["--seed", "-1"], "expected a non-negative integer, got -1"),
        (["--seed", "x"], "expected a non-negative integer, got 'x'"),
        (["--lr", "fast"], "expected a number, got 'fast'"),
        (["--model-option", "delay"], "expected KEY=VALUE, got 'delay'"),
    ],
)
def test_malformed_flags_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["train", *argv, "--out", "x"])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_evaluate_errors(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is not a finished run directory" in capsys.readouterr().err
