"""``ctrnn analyze``: stability figures and numbers for a trained run or a fresh model.

``add_arguments(parser)`` (defined in :mod:`ctrnn.cli`) declares the options; ``run(args)``
builds or loads the model, drives it with a random input sequence, writes one PNG per
analysis and ``analysis.json`` with the numbers to ``--out``, and returns the exit status.
A trained run comes from ``ctrnn.train.load_run(run_dir)`` (an object with ``.model`` and
``.config``); a fresh model from ``ctrnn.models.create(--model, ...)``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import warnings
from pathlib import Path

import torch

from ctrnn.cli import add_analyze_arguments

ANALYSES = ("lyapunov", "gradients", "jacobian", "order")


# The options are declared in ctrnn.cli, which must not import torch (`ctrnn --help`).
add_arguments = add_analyze_arguments


def load_model(args: argparse.Namespace):
    """``(model, description, test set)`` from ``args.run_dir`` (the run's test split, when
    the loaded run has one) or ``args.model`` (no data: ``None``)."""
    import ctrnn.models

    if args.run_dir is not None:
        if args.model is not None:
            raise SystemExit("ctrnn analyze: give a run directory or --model, not both")
        from ctrnn.train import load_run

        loaded = load_run(args.run_dir)
        config = dict(getattr(loaded, "config", {}) or {})
        splits = getattr(loaded, "splits", None)
        test = None if splits is None else splits.test
        return loaded.model, {"run_dir": str(args.run_dir), "config": config}, test
    if args.model is None:
        raise SystemExit(
            "ctrnn analyze: give a run directory or --model NAME (one of "
            f"{', '.join(ctrnn.models.available())})"
        )
    options = dict(args.option)
    with torch.random.fork_rng():  # the fresh weights follow --seed, torch's generator is kept
        torch.manual_seed(args.seed)
        try:
            model = ctrnn.models.create(
                args.model, input_size=args.input_size, hidden_size=args.hidden_size, **options
            )
        except ValueError as e:
            raise SystemExit(f"ctrnn analyze: {e}") from None
    return model, {"model": args.model, "options": options}, None


def _test_streams(test, batch: int, length: int) -> torch.Tensor:
    """``(batch, length, channels)`` float64 inputs made of a dataset's series: each series'
    missing values held at their last observation (as the models read them), the series
    dealt to the ``batch`` streams in turn and joined end to end (from the first again when
    the set runs out) until every stream has ``length`` steps."""
    from ctrnn.models._base import prepare_sequence

    streams: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    filled = [0] * batch
    i = 0
    while min(filled) < length:
        sample = test[i % len(test)]
        values = prepare_sequence(sample.values[None].double(), None, sample.mask[None], "")[0]
        b = filled.index(min(filled))
        streams[b].append(values[0])
        filled[b] += values.shape[1]
        i += 1
    return torch.stack([torch.cat(parts)[:length] for parts in streams])


def _input_size(model) -> int:
    from ctrnn.models import SequenceModel

    if isinstance(model, SequenceModel):
        return model.model.input_size
    return model.input_size


def _cell_of(model):
    """The discrete cell an analysis runs on, and whether it reads the raw inputs."""
    from ctrnn.models import AbstractCell, SequenceModel

    if isinstance(model, SequenceModel):
        if model.mode == "discrete":
            return model.cell, True
        return model.model.discretize(model.scheme, model.dt), True
    cell = getattr(model, "cell", None)
    if not isinstance(cell, AbstractCell):
        cell = model.discretize()
    return cell, False


def _numbers(t: torch.Tensor) -> list:
    return [None if not math.isfinite(v) else v for v in t.detach().reshape(-1).tolist()]


def run(args: argparse.Namespace) -> int:
    """Run ``ctrnn analyze``; returns the exit status."""
    from ctrnn import analysis
    from ctrnn.models import PathDrivenModel, SequenceModel

    model, source, test = load_model(args)
    model = copy.deepcopy(model).double().eval()
    chosen = [a for a in ANALYSES if getattr(args, a)] or list(ANALYSES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)
    cell, raw = _cell_of(model)
    seq = isinstance(model, SequenceModel)
    channels = _input_size(model) if raw else cell.input_size
    if raw and test is not None and len(test) > 0:
        x = _test_streams(test, args.batch, args.length)
        described = (
            f"the run's test series (missing values held), joined end to end into "
            f"{args.batch} streams of length {args.length}, {channels} ch."
        )
    else:
        x = torch.randn(args.batch, args.length, channels, generator=g, dtype=torch.float64)
        described = f"standard normal, batch {args.batch}, length {args.length}, {channels} ch."
    report: dict = {
        "source": source,
        "model": type(model).__name__,
        "cell": type(cell).__name__,
        "state_size": cell.state_size,
        "input": described,
        "figures": {},
    }
    if not raw:
        report["note"] = (
            f"{type(model).__name__} transforms its inputs before its cell; the analyses run "
            f"on its cell {type(cell).__name__} driven by random inputs of the "
            f"{cell.input_size} features that cell reads"
        )
    continuous = seq and model.mode == "continuous"
    transient = args.length // 5
    h0 = torch.zeros(args.batch, cell.state_size, dtype=torch.float64)
    path_driven = isinstance(model, PathDrivenModel)
    if path_driven:
        # the Lyapunov spectrum of the CDE along the path of real (or random) observations
        if test is not None and len(test) > 0:
            observations = _test_streams(test, args.batch, args.length)
            what = "the run's test series joined end to end"
        else:
            shape = (args.batch, args.length, model.input_size)
            observations = torch.randn(*shape, generator=g, dtype=torch.float64)
            what = "standard normal observations"
        report["note"] += (
            f"; its Lyapunov spectrum is that of its CDE along the path it builds from {what}"
        )

    if "lyapunov" in chosen:
        if continuous and model.model.problem_type not in ("dde", "cde"):
            f = analysis.flow_map(model, x)
            h0 = torch.zeros(args.batch, model.model.state_size, dtype=torch.float64)
            target = "flow of the continuous model over each observation interval"
        elif path_driven:
            f = analysis.flow_map(model, observations)
            h0 = torch.zeros(args.batch, model.cde.state_size, dtype=torch.float64)
            target = f"flow of its CDE along the path of {what}, over each observation interval"
        else:
            f, target = analysis.cell_map(cell, x), f"cell {type(cell).__name__}"
        res = analysis.lyapunov_spectrum(
            f,
            h0,
            f.num_steps - transient,
            transient=transient,
            k=args.exponents,
            blocks=5,
            return_history=True,
        )
        mean = res.exponents.mean(0)
        report["lyapunov"] = {
            "of": target,
            "per": res.per,
            "exponents_mean": _numbers(mean),
            "exponents": [_numbers(r) for r in res.exponents],
            "stderr_mean": _numbers(res.stderr.mean(0)),
            "largest": float(mean[0]),
            "sum": float(res.exponents.sum(1).mean()),
        }
        report["figures"]["lyapunov"] = _save(
            analysis.plot_lyapunov_convergence(res, title=f"{type(cell).__name__}: exponents"),
            out / "lyapunov.png",
        )

    if "gradients" in chosen:
        delay = continuous and model.model.problem_type == "dde"
        growth = analysis.gradient_growth(model if seq and not delay else cell, x)
        report["gradients"] = {
            "loss": "sum of the final hidden state",
            "norm_first": float(growth.norms[:, 0].mean()),
            "norm_last": float(growth.norms[:, -1].mean()),
            "rate_per_step": float(growth.rate.mean()),
            "lyapunov_max_per_step": float(growth.lyapunov.mean()),
            "window_steps_back": list(growth.window),
        }
        report["figures"]["gradients"] = _save(
            analysis.plot_gradient_norms({type(cell).__name__: growth.norms}),
            out / "gradients.png",
        )
        report["figures"]["gradient_growth"] = _save(
            analysis.plot_gradient_growth(growth), out / "gradient_growth.png"
        )

    if "jacobian" in chosen:
        eig = analysis.cell_jacobian_eigenvalues(cell, x[:, : min(args.length, 50)])
        section = {
            "cell_spectral_radius_max": float(eig.abs().max()),
            "cell_spectral_radius_mean": float(eig.abs().amax(-1).mean()),
        }
        report["figures"]["jacobian"] = _save(
            analysis.plot_eigenvalues(eig, title=f"{type(cell).__name__}: step Jacobian"),
            out / "jacobian.png",
        )
        field = _vector_field_spectrum(model, x[:, : min(args.length, 50)])
        if field is not None:
            lam, schemes, dt = field
            inside = {
                s: float(analysis.in_stability_region(s, (dt * lam).numpy()).mean())
                for s in schemes
            }
            section.update(
                vector_field_spectral_abscissa=float(lam.real.max()),
                stability_dt=dt,
                fraction_inside_region=inside,
            )
            report["figures"]["stability"] = _save(
                analysis.plot_stability_region(schemes, eigenvalues=lam, dt=dt),
                out / "stability.png",
            )
        report["jacobian"] = section

    if "order" in chosen:
        report["order"] = _orders(model, x, args, out, report["figures"])

    with open(out / "analysis.json", "w") as fh:
        json.dump(report, fh, indent=2)
    n = len(report["figures"])
    print(f"ctrnn analyze: wrote {n} figure{'s' * (n != 1)} and analysis.json to {out}")
    return 0


def _save(fig, path: Path) -> str:
    fig.savefig(path, format="png", dpi=90)
    return path.name


def _continuous_of(model):
    from ctrnn.models import AbstractContinuousRNN, SequenceModel

    inner = model.model if isinstance(model, SequenceModel) else None
    return inner if isinstance(inner, AbstractContinuousRNN) else None


def _vector_field_spectrum(model, x):
    import solvers
    from ctrnn import analysis

    cont = _continuous_of(model)
    if cont is None or cont.problem_type in ("dde", "cde"):
        return None
    from ._discretization import _reference_states

    t = torch.arange(x.shape[1], dtype=x.dtype)
    h0 = x.new_zeros(x.shape[0], cont.state_size)
    # the vector field (an SDE's drift) as an ODE, along the run it defines
    states = _reference_states(cont, x, t, h0, dict(method="rk4", dt=0.1))
    lam = analysis.vector_field_eigenvalues(cont, states, x)
    rk = solvers.methods().get(model.scheme)
    explicit = isinstance(rk, solvers.ExplicitRungeKutta) and not rk.adaptive
    schemes = [model.scheme] if explicit else ["euler", "rk4"]
    return lam, schemes, float(model.dt)


def _orders(model, x, args, out: Path, figures: dict) -> dict:
    from ctrnn import analysis

    cont = _continuous_of(model)
    if cont is None or cont.problem_type == "cde":
        return {"skipped": f"{type(model).__name__} has no input-driven continuous formulation"}
    section, results = {}, {}
    steps = {"euler": [0.1, 0.05, 0.025], "rk4": [0.5, 0.25, 0.125]}
    reference = dict(method="dopri5", rtol=1e-10, atol=1e-12)
    section["reference"] = "dopri5, rtol 1e-10, atol 1e-12; two observation intervals"
    for scheme in [s.strip() for s in args.schemes.split(",") if s.strip()]:
        if scheme not in cont.schemes():
            section[scheme] = {"skipped": f"not a scheme of {type(cont).__name__}"}
            continue
        dts = steps.get(scheme, [0.2, 0.1, 0.05])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                r = analysis.empirical_order(
                    cont, x[:2, :3], scheme=scheme, dts=dts, reference=reference
                )
            except ValueError as e:
                section[scheme] = {"skipped": str(e)}
                continue
        results[scheme] = r
        section[scheme] = {
            "order": r.order,
            "expected": r.expected,
            "dts": r.dts.tolist(),
            "errors": r.errors.tolist(),
        }
        if caught:
            section[scheme]["warnings"] = [str(w.message) for w in caught]
    if results:
        figures["order"] = _save(analysis.plot_order(results), out / "order.png")
    return section
