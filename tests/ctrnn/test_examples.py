"""Every example script runs; the demo's loss falls."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import solvers
from ctrnn.cli import main
from ctrnn.demo import run_classification_demo, run_spiral_demo

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    return runpy.run_path(str(ROOT / "examples" / name))


def test_spiral_example_loss_falls(capsys):
    result = _load("spiral_ode.py")["main"](["--iterations", "40", "--method", "rk4"])
    assert result.losses[-1] < 0.8 * result.losses[0]
    assert "loss" in capsys.readouterr().out


def test_irregular_batch_example_marks_only_the_failing_sample(capsys):
    sol = _load("irregular_batch.py")["main"]()
    assert [s.name for s in sol.status] == ["SUCCESS", "SUCCESS", "SUCCESS", "DT_UNDERFLOW"] or (
        sol.status[:3] == (solvers.Status.SUCCESS,) * 3 and sol.status[3] != solvers.Status.SUCCESS
    )
    exact = 0.1 / (1 - 0.1 * torch.linspace(0, 1, 5))
    torch.testing.assert_close(sol.ys[0, :, 0], exact, rtol=1e-4, atol=1e-6)
    assert torch.isnan(sol.ys[3, -1, 0])


@pytest.mark.parametrize("adjoint", ["direct", "checkpoint", "backsolve"])
def test_demo_gradients_agree_across_adjoints(adjoint):
    a = run_spiral_demo(3, method="rk4", adjoint="direct", eval_every=3)
    b = run_spiral_demo(3, method="rk4", adjoint=adjoint, eval_every=3)
    assert a.losses == pytest.approx(b.losses, rel=1e-4)


def test_cli_demo_runs_and_reports(capsys):
    assert main(["demo", "--spiral", "--iterations", "5", "--method", "rk4"]) == 0
    out = capsys.readouterr().out
    assert "iteration" in out and "demo finished" in out


def test_cli_rejects_a_bad_option_value():
    with pytest.raises(SystemExit, match="unknown method 'nope'"):
        main(["demo", "--spiral", "--method", "nope"])
    with pytest.raises(SystemExit):
        main(["demo", "--spiral", "--iterations", "0"])
    with pytest.raises(SystemExit, match=r"unknown model.*lstm; valid: tau_gru, ancde"):
        main(["demo", "--models", "lstm"])


def test_classification_demo_trains_writes_runs_and_a_figure(tmp_path, capsys):
    # one model, one epoch, in one worker process: the whole path of `make demo`
    assert main(["demo", "--models", "gru_d", "--epochs", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "demo finished" in out
    result = json.loads((tmp_path / "gru_d" / "result.json").read_text())
    assert result["epochs_run"] == 2 and result["test_acc"] > 1 / 9  # above chance
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    # a second demo into the same directory replaces the demo's own run
    runs = run_classification_demo(tmp_path, models=["gru_d"], epochs=1)
    assert runs[0].epochs == 1 and runs[0].parameters > 0


def test_classification_demo_rejects_unknown_models():
    with pytest.raises(ValueError, match=r"unknown demo model\(s\) \['gru'\]"):
        run_classification_demo(models=["gru"])
    with pytest.raises(ValueError, match="models is empty"):
        run_classification_demo(models=[])


def test_cli_version_from_a_subprocess():
    out = subprocess.run(
        [sys.executable, "-m", "ctrnn", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("ctrnn ")


def test_compare_schemes_example(capsys):
    results, stable = _load("compare_schemes.py")["main"](
        ["--hidden-size", "4", "--steps", "0.1", "0.05", "0.025"]
    )
    expected = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "exponential_euler": 1, "imex": 1}
    for scheme, order in expected.items():
        assert abs(results[scheme].order - order) < 0.3, (scheme, results[scheme].order)
    # stiff damping: the schemes that treat it implicitly or exactly take the largest step
    assert stable["exponential_euler"] == stable["imex"] == 0.2
    assert stable["euler"] == 0.01
    assert "largest stable step" in capsys.readouterr().out


def test_cross_check_backends_example(capsys):
    report = _load("cross_check_backends.py")["main"]()
    pytest.importorskip("torchdiffeq")
    assert report["rk4, dt=0.05", "torchdiffeq"][0] < 1e-6  # the 3/8 rule: same order
    assert report["dopri5, tol=1e-8", "torchdiffeq"][0] < 1e-5
    if ("rk4, dt=0.05", "diffrax") in report:
        assert max(report["rk4, dt=0.05", "diffrax"]) < 1e-12  # the same steps
        assert report["dopri5, tol=1e-8", "diffrax"][0] < 1e-5
    assert "solution" in capsys.readouterr().out
