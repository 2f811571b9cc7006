"""TrainConfig: validation of every field, JSON/YAML round trips, config files."""

import json
import sys

import pytest

from ctrnn.train import SolverOptions, TrainConfig
from ctrnn.train._config import read_config_file


def test_defaults_are_valid_and_round_trip_through_json():
    config = TrainConfig()
    assert config.model == "gru_d" and config.dataset == "JapaneseVowels"
    again = TrainConfig.from_dict(json.loads(config.to_json()))
    assert again == config


def test_full_config_round_trips_through_yaml_and_json(tmp_path):
    config = TrainConfig(
        model="tau_gru",
        hidden_size=16,
        model_options={"delay": 4.0, "scheme": "rk4"},
        mode="continuous",
        solver={"method": "rk4", "dt": 0.5, "adjoint": "backsolve"},
        dataset="japanesevowels",
        missing=0.3,
        epochs=3,
        optimizer="adamw",
        schedule="cosine",
        clip_grad_norm=1.0,
        patience=2,
        monitor="val_loss",
    )
    assert config.dataset == "JapaneseVowels"  # names match case-insensitively
    assert config.solver == SolverOptions(method="rk4", dt=0.5, adjoint="backsolve")
    for name in ("c.yaml", "c.yml", "c.json"):
        config.save(tmp_path / name)
        assert TrainConfig.load(tmp_path / name) == config
    assert config.to_dict()["solver"] == {"method": "rk4", "adjoint": "backsolve", "dt": 0.5}


def test_replace_validates():
    config = TrainConfig().replace(lr=0.01, epochs=2)
    assert (config.lr, config.epochs) == (0.01, 2)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        config.replace(epochs=0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "transformer", "unknown model 'transformer'; available models: gru,"),
        ("dataset", "MNIST", "unknown dataset 'MNIST'; available datasets: JapaneseVowels"),
        ("hidden_size", 0, "hidden_size must be an integer >= 1, got 0"),
        ("hidden_size", True, "hidden_size must be an integer >= 1, got True"),
        ("model_options", [1], "model_options must be a dict"),
        ("model_options", {"x": object()}, "model_options values must be numbers"),
        ("model_options", {"num_classes": 3}, "model_options may not set 'num_classes'"),
        ("dataset_options", "n=3", "dataset_options must be a dict"),
        ("mode", "hybrid", "mode must be one of discrete, continuous, got 'hybrid'"),
        ("solver", {"method": "rk5"}, "solver.method must be one of euler,"),
        ("solver", {"backend": "jax"}, "solver.backend must be one of native"),
        ("solver", {"adjoint": "magic"}, "solver.adjoint must be one of direct"),
        ("solver", {"rtol": 0}, r"solver.rtol must be a finite number > 0, got 0"),
        ("solver", {"dt": float("nan")}, r"solver.dt must be a finite number > 0, got nan"),
        ("solver", {"max_steps": 0}, r"solver.max_steps must be an integer >= 1, got 0"),
        ("solver", {"steps": 3}, "unknown solver option 'steps'"),
        ("solver", 3, "solver must be a SolverOptions or a mapping of solver options"),
        ("missing", 1.0, r"missing must be a fraction in \[0, 1\), got 1.0"),
        ("missing", "0.3", r"missing must be a fraction in \[0, 1\), got '0.3'"),
        ("split", "random", "split must be one of pooled, original, got 'random'"),
        ("time_channel", "yes", "time_channel must be true or false, got 'yes'"),
        ("normalize", 1, "normalize must be true or false, got 1"),
        ("data_root", 3, "data_root must be a path string, got 3"),
        ("data_seed", -1, "data_seed must be an integer >= 0, got -1"),
        ("seed", 1.5, "seed must be an integer >= 0, got 1.5"),
        ("epochs", 0, "epochs must be an integer >= 1, got 0"),
        ("batch_size", 0, "batch_size must be an integer >= 1, got 0"),
        ("optimizer", "sgd", "optimizer must be one of adam, adamw, got 'sgd'"),
        ("lr", 0, "lr must be a finite number > 0, got 0"),
        ("lr", float("inf"), "lr must be a finite number > 0, got inf"),
        ("weight_decay", -0.1, "weight_decay must be a finite number >= 0, got -0.1"),
        ("schedule", "step", "schedule must be one of none, cosine, plateau, got 'step'"),
        ("lr_factor", 1.0, r"lr_factor must be in \(0, 1\), got 1.0"),
        ("lr_factor", 0, "lr_factor must be a finite number > 0, got 0"),
        ("lr_patience", -1, "lr_patience must be an integer >= 0, got -1"),
        ("min_lr", -1, "min_lr must be a finite number >= 0, got -1"),
        ("clip_grad_norm", 0, "clip_grad_norm must be a finite number > 0, got 0"),
        (
            "patience",
            0,
            r"patience must be an integer >= 1, 'auto' or None \(no early stopping\), got 0",
        ),
        ("patience", "never", "patience must be an integer >= 1, 'auto' or None"),
        ("steps", 0, "steps must be an integer >= 1, got 0"),
        ("monitor", "test_acc", "monitor must be one of val_acc, val_loss, got 'test_acc'"),
        ("device", "gpu", "device must be 'cpu', 'cuda', 'cuda:N' or another torch device"),
        ("device", 0, "device must be a string such as 'cpu' or 'cuda', got 0"),
        ("num_workers", -1, "num_workers must be an integer >= 0, got -1"),
        ("tensorboard", "on", "tensorboard must be true or false, got 'on'"),
    ],
)
def test_each_bad_value_names_the_field_and_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_unknown_field_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown field 'learning_rate'; valid fields: model,"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="expected a mapping of fields, got"):
        TrainConfig.from_dict(["lr", 0.1])


def test_none_for_optional_mappings_means_empty():
    config = TrainConfig.from_dict({"model_options": None, "solver": None, "dataset_options": None})
    assert config.model_options == {} and config.solver == SolverOptions()


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config file .*nope.yaml' does not exist"):
        read_config_file(tmp_path / "nope.yaml")
    (tmp_path / "c.toml").write_text("x = 1")
    with pytest.raises(ValueError, match=r"expected a .json, .yaml or .yml file, got '.toml'"):
        read_config_file(tmp_path / "c.toml")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        read_config_file(tmp_path / "c.json")
    (tmp_path / "c.yaml").write_text("model: [unclosed")
    with pytest.raises(ValueError, match="invalid YAML"):
        read_config_file(tmp_path / "c.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping of fields, got list"):
        read_config_file(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(tmp_path / "empty.yaml") == {}


def test_yaml_without_pyyaml_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text("epochs: 2\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ImportError, match=r'pip install "ctrnn\[train\]"'):
        read_config_file(tmp_path / "c.yaml")
    with pytest.raises(ImportError, match="pyyaml"):
        TrainConfig().to_yaml()
