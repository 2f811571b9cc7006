"""Every figure function draws, returns a Figure and writes a PNG."""

import sys

import pytest
import torch

import ctrnn.models as M
from ctrnn import analysis

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

D = torch.float64
PNG = b"\x89PNG\r\n\x1a\n"


def henon(x):
    return torch.stack([1 - 1.4 * x[:, 0] ** 2 + x[:, 1], 0.3 * x[:, 0]], dim=1)


@pytest.fixture(scope="module")
def results():
    torch.manual_seed(0)
    model = M.create("lipschitz_rnn", input_size=1, hidden_size=2, scheme="rk4", dt=0.5).double()
    x = torch.randn(2, 20, 1, dtype=D)
    ham = M.create("hamiltonian", input_size=1, hidden_size=2).double()
    return {
        "lyapunov": analysis.lyapunov_spectrum(
            henon, torch.full((2, 2), 0.1, dtype=D), 50, return_history=True
        ),
        "norms": analysis.gradient_norms(model, x),
        "growth": analysis.gradient_growth(model, x),
        "eig": analysis.cell_jacobian_eigenvalues(model, x),
        "field": analysis.vector_field_eigenvalues(model, torch.randn(5, 2, dtype=D), x[0, :5]),
        "order": analysis.empirical_order(model, x[:, :3], scheme="euler", dts=[0.5, 0.25]),
        "drift": analysis.energy_drift(ham, torch.randn(2, 2, dtype=D), 20, dt=0.1),
    }


def _draw(name, r):
    return {
        "convergence": lambda p: analysis.plot_lyapunov_convergence(r["lyapunov"], path=p),
        "spectra": lambda p: analysis.plot_spectra(
            {"henon": r["lyapunov"], "tensor": r["lyapunov"].exponents}, path=p
        ),
        "norms": lambda p: analysis.plot_gradient_norms({"a": r["norms"]}, path=p),
        "norms_tensor": lambda p: analysis.plot_gradient_norms(r["norms"][0], path=p),
        "growth": lambda p: analysis.plot_gradient_growth(r["growth"], path=p),
        "eig": lambda p: analysis.plot_eigenvalues(r["eig"], path=p),
        "stability": lambda p: analysis.plot_stability_region(
            ["euler", "rk4"], eigenvalues=r["field"], dt=0.5, path=p
        ),
        "stability_alone": lambda p: analysis.plot_stability_region("heun", path=p),
        "order": lambda p: analysis.plot_order([r["order"]], path=p),
        "drift": lambda p: analysis.plot_energy_drift({"SIE": r["drift"]}, path=p),
    }[name]


NAMES = [
    "convergence",
    "spectra",
    "norms",
    "norms_tensor",
    "growth",
    "eig",
    "stability",
    "stability_alone",
    "order",
    "drift",
]


@pytest.mark.parametrize("name", NAMES)
def test_figure_is_returned_and_saved(name, results, tmp_path):
    path = tmp_path / "sub" / f"{name}.png"
    fig = _draw(name, results)(path)
    assert isinstance(fig, Figure)
    assert path.read_bytes()[:8] == PNG
    assert _draw(name, results)(None).axes  # without a path: drawn, nothing written


def test_missing_matplotlib_names_the_extra(monkeypatch, results):
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match=r'pip install "ctrnn\[plot\]"'):
        analysis.plot_gradient_norms(results["norms"])
