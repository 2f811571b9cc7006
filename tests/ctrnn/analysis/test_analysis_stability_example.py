"""examples/stability_study.py runs end to end (shortened) and its numbers hold together."""

import json
import runpy
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[3]


def test_stability_study_example(tmp_path):
    main = runpy.run_path(str(ROOT / "examples" / "stability_study.py"))["main"]
    report = main(["--out", str(tmp_path), "--quiet", "--iterations", "6", "--probe", "60"])
    for name in ("adding_spectra", "adding_gradients", "hamiltonian_gradients"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert json.loads((tmp_path / "stability_study.json").read_text())["config"]["probe"] == 60
    gru, tau = report["adding"]["GRU"], report["adding"]["τ-GRU"]
    for r in (gru, tau):
        assert r["mse_last"] < r["mse_first"]
        # Mikhaeil et al.: the gradients decay at the rate of the largest exponent
        assert r["gradient_rate_per_step"] == pytest.approx(r["lambda_max_per_step"], abs=0.03)
    assert tau["state_size"] == 11 * 16  # h and a delay buffer of 10 steps
    assert tau["exponents"][0] > gru["exponents"][0]  # the delay keeps a slower mode
    h1, h2 = report["hamiltonian"]["H1"], report["hamiltonian"]["H2"]
    assert h2["symplecticity_error_layer0_max"] < 1e-12 < h1["symplecticity_error_layer0_max"]
    assert h1["gradient_norm_output"] == pytest.approx(2.0)  # ‖∂(Σ y_64)/∂y_64‖ = √4
