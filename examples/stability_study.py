"""A small stability study with ctrnn.analysis, end to end.

1. A GRU and a τ-GRU are trained briefly on the adding problem; the Lyapunov spectrum of
   each trained cell, driven by fresh adding-problem inputs, is measured by the QR method,
   next to the growth rate of its gradients (Mikhaeil et al. 2022: the two agree).
2. The gradient norms ``‖∂L/∂y_j‖`` through the 64 layers of an H1 and an H2 Hamiltonian
   network (Galimberti et al.), at initialisation, with the symplecticity error of a layer.

    python examples/stability_study.py                  # the quick study, about 20 s on a CPU
    python examples/stability_study.py --full           # longer training and runs

Figures and a JSON of the numbers go to ``--out`` (default ``stability_study/``).
"""

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

import ctrnn.models as M
from ctrnn import analysis
from ctrnn.data import adding_problem, swiss_roll
from ctrnn.models.hamiltonian import HamiltonianNet

QUICK = dict(length=30, train=512, iterations=40, hidden=16, probe=200, exponents=6)
FULL = dict(length=100, train=4096, iterations=600, hidden=32, probe=1000, exponents=16)


def adding_tensors(n, length, seed):
    data = adding_problem(n, length, seed=seed)
    return torch.stack(list(data.values)), data.labels


def train(model, x, y, iterations, seed, log):
    """Adam on the mean squared error of the regression head; returns the losses."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for i in range(iterations):
        idx = torch.randint(0, x.shape[0], (64,), generator=g)
        loss = ((model.classify(x[idx])[:, 0] - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log and (i + 1) % max(1, iterations // 4) == 0:
            log(f"  iteration {i + 1}: mse {sum(losses[-10:]) / len(losses[-10:]):.4f}")
    return losses


def spectrum_of(model, probe, k):
    """Exponents (per step) of the trained cell driven by ``probe``, and its gradient growth."""
    model = copy.deepcopy(model).double().eval()
    x = probe.double()
    cell = model.cell
    h0 = torch.zeros(x.shape[0], cell.state_size, dtype=torch.float64)
    transient = x.shape[1] // 5
    res = analysis.lyapunov_spectrum(
        analysis.cell_map(model, x),
        h0,
        x.shape[1] - transient,
        transient=transient,
        k=min(k, cell.state_size),
        return_history=True,
    )
    growth = analysis.gradient_growth(model, x)
    return res, growth


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the longer study (minutes)")
    parser.add_argument("--out", default="stability_study", help="output directory")
    parser.add_argument("--iterations", type=int, help="override the training iterations")
    parser.add_argument("--probe", type=int, help="override the probe sequences' length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    cfg = dict(FULL if args.full else QUICK)
    for key in ("iterations", "probe"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    log = None if args.quiet else print
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.manual_seed(args.seed)

    # 1. GRU vs τ-GRU on the adding problem
    x, y = adding_tensors(cfg["train"], cfg["length"], args.seed)
    probe, _ = adding_tensors(8, cfg["probe"], args.seed + 1)
    H = cfg["hidden"]
    models = {
        "GRU": M.create("gru", input_size=2, hidden_size=H, num_classes=1),
        "τ-GRU": M.create("tau_gru", input_size=2, hidden_size=H, delay=10.0, num_classes=1),
    }
    report = {"config": cfg, "adding": {}, "hamiltonian": {}}
    spectra, norms = {}, {}
    for name, model in models.items():
        if log:
            log(f"training {name} on the adding problem (length {cfg['length']})")
        losses = train(model, x, y, cfg["iterations"], args.seed, log)
        res, growth = spectrum_of(model, probe, cfg["exponents"])
        spectra[name], norms[name] = res, growth.norms
        report["adding"][name] = {
            "mse_first": losses[0],
            "mse_last": sum(losses[-10:]) / len(losses[-10:]),
            "state_size": model.cell.state_size,
            "exponents": res.exponents.mean(0).tolist(),
            "stderr": res.stderr.mean(0).tolist(),
            "gradient_rate_per_step": growth.rate.mean().item(),
            "lambda_max_per_step": growth.lyapunov.mean().item(),
        }
        if log:
            ex = ", ".join(f"{v:.3f}" for v in res.exponents.mean(0)[:4].tolist())
            log(
                f"  {name}: leading exponents {ex} per step; gradient rate "
                f"{growth.rate.mean():.3f} vs λ_max {growth.lyapunov.mean():.3f}"
            )
    analysis.plot_spectra(
        spectra, path=out / "adding_spectra.png", title="Adding problem: trained cells"
    )
    analysis.plot_gradient_norms(
        norms, path=out / "adding_gradients.png", title="Adding problem: ‖∂L/∂h_t‖"
    )

    # 2. H1 vs H2 Hamiltonian networks at depth 64
    points, _ = swiss_roll(256, seed=args.seed)
    y0 = torch.cat([points, torch.zeros_like(points)], dim=1).double()
    ham = {}
    for scheme in ("H1", "H2"):
        torch.manual_seed(args.seed)
        net = HamiltonianNet(4, 64, h=0.2, scheme=scheme).double()
        g = analysis.gradient_norms(net, y0)
        ham[scheme] = g
        sympl = analysis.symplecticity_error(lambda s, net=net: net.layer(0, s), y0)
        report["hamiltonian"][scheme] = {
            "gradient_norm_input_median": g[:, 0].median().item(),
            "gradient_norm_output": g[:, -1].median().item(),
            "min_over_layers_median": g.min(dim=1).values.median().item(),
            "log_growth_per_layer": math.log(g[:, 0].median().item() / g[:, -1].median().item())
            / 64,
            "symplecticity_error_layer0_max": sympl.max().item(),
        }
        if log:
            r = report["hamiltonian"][scheme]
            log(
                f"{scheme} network, depth 64: median ‖∂L/∂y_0‖ = "
                f"{r['gradient_norm_input_median']:.3g} (‖∂L/∂y_64‖ = "
                f"{r['gradient_norm_output']:.3g}); layer symplecticity error "
                f"{r['symplecticity_error_layer0_max']:.1e}"
            )
    analysis.plot_gradient_norms(
        ham,
        path=out / "hamiltonian_gradients.png",
        title="Hamiltonian networks, depth 64",
        xlabel="layer j",
    )
    report["seconds"] = time.perf_counter() - start
    (out / "stability_study.json").write_text(json.dumps(report, indent=2))
    if log:
        log(f"wrote figures and stability_study.json to {out} in {report['seconds']:.1f} s")
    return report


if __name__ == "__main__":
    main()
