"""``ctrnn analyze``: ``add_arguments`` and ``run`` on fresh and loaded models."""

import argparse
import json
import types

import pytest
import torch

import ctrnn.models as M
from ctrnn.analysis import _cli

PNG = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("matplotlib")


def parse(*argv):
    parser = argparse.ArgumentParser(prog="ctrnn analyze")
    _cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_fresh_gru_every_analysis(tmp_path, capsys):
    args = parse("--model", "gru", "--hidden-size", "3", "--length", "60", "--out", str(tmp_path))
    assert _cli.run(args) == 0
    report = json.loads((tmp_path / "analysis.json").read_text())
    assert report["source"] == {"model": "gru", "options": {}}
    assert set(report["figures"]) == {"lyapunov", "gradients", "gradient_growth", "jacobian"}
    for name in report["figures"].values():
        assert (tmp_path / name).read_bytes()[:8] == PNG
    lyap = report["lyapunov"]
    assert len(lyap["exponents_mean"]) == 3 and lyap["per"] == "step"
    assert lyap["largest"] == max(lyap["exponents_mean"])
    # a fresh GRU contracts, and its gradients vanish at about the same rate
    grads = report["gradients"]
    assert lyap["largest"] < 0
    assert grads["rate_per_step"] == pytest.approx(grads["lyapunov_max_per_step"], abs=0.05)
    assert report["jacobian"]["cell_spectral_radius_max"] < 1
    assert "no input-driven continuous formulation" in report["order"]["skipped"]
    assert "wrote 4 figures" in capsys.readouterr().out
    # the same seed gives the same fresh model and inputs
    again = tmp_path / "again"
    _cli.run(
        parse(
            "--model",
            "gru",
            "--hidden-size",
            "3",
            "--length",
            "60",
            "--lyapunov",
            "--out",
            str(again),
        )
    )
    assert json.loads((again / "analysis.json").read_text())["lyapunov"] == lyap


def test_fresh_continuous_model_selected_analyses(tmp_path):
    args = parse(
        "--model",
        "lipschitz_rnn",
        "--hidden-size",
        "2",
        "--input-size",
        "1",
        "--option",
        "scheme=rk4",
        "--option",
        "dt=0.5",
        "--length",
        "20",
        "--batch",
        "2",
        "--jacobian",
        "--order",
        "--schemes",
        "euler,imex",
        "--out",
        str(tmp_path),
    )
    assert _cli.run(args) == 0
    report = json.loads((tmp_path / "analysis.json").read_text())
    assert report["source"]["options"] == {"scheme": "rk4", "dt": 0.5}
    assert set(report["figures"]) == {"jacobian", "stability", "order"}
    assert "lyapunov" not in report and "gradients" not in report
    assert report["jacobian"]["stability_dt"] == 0.5
    assert set(report["jacobian"]["fraction_inside_region"]) == {"rk4"}
    order = report["order"]
    assert order["euler"]["order"] == pytest.approx(1, abs=0.2)
    assert "not a scheme of LipschitzRNN" in order["imex"]["skipped"]


def test_run_dir_goes_through_the_training_loader(tmp_path, monkeypatch):
    model = M.create("gru", input_size=2, hidden_size=2)
    seen = []

    def load_run(run_dir):
        seen.append(run_dir)
        return types.SimpleNamespace(model=model, config={"model": "gru", "dataset": "adding"})

    monkeypatch.setitem(
        __import__("sys").modules, "ctrnn.train", types.SimpleNamespace(load_run=load_run)
    )
    args = parse("some/run", "--lyapunov", "--length", "10", "--out", str(tmp_path))
    assert _cli.run(args) == 0
    assert seen == ["some/run"]
    report = json.loads((tmp_path / "analysis.json").read_text())
    assert report["source"] == {
        "run_dir": "some/run",
        "config": {"model": "gru", "dataset": "adding"},
    }
    assert report["model"] == "SequenceModel" and len(report["lyapunov"]["exponents_mean"]) == 2
    assert model.training  # analysed on a copy


def test_models_that_transform_their_inputs_are_analysed_through_their_cell(tmp_path):
    args = parse(
        "--model",
        "gru_d",
        "--hidden-size",
        "2",
        "--length",
        "10",
        "--lyapunov",
        "--out",
        str(tmp_path),
    )
    assert _cli.run(args) == 0
    report = json.loads((tmp_path / "analysis.json").read_text())
    assert report["cell"] == "GRUDCell" and "transforms its inputs" in report["note"]
    assert report["state_size"] == 4  # h and the last observation of each channel


def test_errors(tmp_path):
    out = str(tmp_path)
    with pytest.raises(SystemExit, match="give a run directory or --model NAME"):
        _cli.run(parse("--out", out))
    with pytest.raises(SystemExit, match="not both"):
        _cli.run(parse("run", "--model", "gru", "--out", out))
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        _cli.run(parse("--model", "nope", "--out", out))
    with pytest.raises(SystemExit):
        parse("--model", "gru", "--length", "0", "--out", out)
    with pytest.raises(SystemExit):
        parse("--model", "gru", "--option", "novalue", "--out", out)
    with pytest.raises(SystemExit):
        parse("--model", "gru")  # --out is required
    assert torch.get_default_dtype() == torch.float32


def test_the_ctrnn_command_runs_analyze_on_a_fresh_model(tmp_path, capsys):
    from ctrnn.cli import main

    out = tmp_path / "figs"
    argv = ["analyze", "--model", "gru", "--length", "20", "--lyapunov", "--out", str(out)]
    assert main(argv) == 0
    assert "wrote 1 figure and analysis.json" in capsys.readouterr().out
    report = json.loads((out / "analysis.json").read_text())
    assert set(report["figures"]) == {"lyapunov"} and (out / "lyapunov.png").is_file()
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        main(["analyze", "--model", "nope", "--out", str(out)])


def test_a_trained_run_is_driven_by_its_own_test_series(tmp_path):
    from ctrnn.data import TimeSeriesDataset
    from ctrnn.train import TrainConfig, train

    # streams: series dealt in turn, missing values held, joined end to end, cycled
    nan = float("nan")
    a = torch.tensor([[1.0, 2.0], [nan, 3.0], [4.0, nan]])
    b = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    ds = TimeSeriesDataset([a, b], torch.tensor([0, 1]))
    x = _cli._test_streams(ds, 2, 5)
    held_a = torch.tensor([[1.0, 2.0], [1.0, 3.0], [4.0, 3.0]], dtype=torch.float64)
    assert x.shape == (2, 5, 2) and x.dtype == torch.float64
    torch.testing.assert_close(x[0], torch.cat([held_a, b.double()]))  # a, then b again
    torch.testing.assert_close(x[1], torch.cat([b.double(), held_a])[:5])

    config = TrainConfig(model="gru", hidden_size=4, dataset="JapaneseVowels", epochs=1)
    train(config, tmp_path / "run", progress=False)
    out = tmp_path / "figs"
    args = parse(str(tmp_path / "run"), "--lyapunov", "--length", "40", "--out", str(out))
    assert _cli.run(args) == 0
    report = json.loads((out / "analysis.json").read_text())
    assert report["input"].startswith("the run's test series")
    assert report["source"]["config"]["dataset"] == "JapaneseVowels"
    assert len(report["lyapunov"]["exponents_mean"]) == 4


@pytest.mark.parametrize("name", ["neural_cde", "ancde"])
def test_path_driven_models_have_the_lyapunov_spectrum_of_their_cde(tmp_path, name):
    args = parse(
        "--model", name, "--hidden-size", "2", "--length", "10", "--lyapunov",
        "--option", 'solver={"method": "rk4", "dt": 0.5}', "--out", str(tmp_path),
    )  # fmt: skip
    assert _cli.run(args) == 0
    report = json.loads((tmp_path / "analysis.json").read_text())
    assert report["lyapunov"]["of"].startswith("flow of its CDE along the path")
    assert "its Lyapunov spectrum is that of its CDE" in report["note"]
    # the CDE's state: z (Neural CDE) or [z, h] (ANCDE), the state of the model's cell too
    assert len(report["lyapunov"]["exponents_mean"]) == report["state_size"]
