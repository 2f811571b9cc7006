"""The ``ctrnn`` command line: ``train``, ``evaluate``, ``list`` and ``demo``.

Each subcommand is a pair: ``_add_<name>(commands)`` declares its arguments and
``_run_<name>(args)`` runs it; :data:`_RUNNERS` maps the names to the runners. Heavy imports
happen inside the runners, so ``ctrnn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

from ctrnn import __version__


def _int_at_least(minimum: int, kind: str) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum``, named ``kind`` in its errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_nonnegative_int = _int_at_least(0, "non-negative")


def _patience(text: str) -> int | str:
    """``--patience``: a positive integer, ``auto`` or ``none`` (kept as the word here, so
    that an unset flag stays distinguishable; it becomes None in the config)."""
    if text.lower() in ("auto", "none"):
        return text.lower()
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, 'auto' or 'none', got {text!r}"
        ) from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _key_value(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word is a string
    return key, value


# -- demo --------------------------------------------------------------------------------------


def _add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="train tau_gru, ancde, neural_cde and gru_d on JapaneseVowels with 30%% of the "
        "points dropped (CPU, a few minutes)",
        description="Train tau_gru, ancde, neural_cde and gru_d on JapaneseVowels (shipped with "
        "the package) with 30%% of the time points dropped, on the CPU; print a results table "
        "and write the learning curves as a PNG. With --spiral: fit a neural ODE to a spiral "
        "with the backsolve adjoint instead.",
    )
    demo.add_argument("--out", default="runs/demo", help="where the runs go (default runs/demo)")
    demo.add_argument(
        "--epochs", type=_positive_int, default=30, help="epochs per model (default 30)"
    )
    demo.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="a subset of tau_gru ancde neural_cde gru_d (default: all four)",
    )
    demo.add_argument(
        "--workers", type=_positive_int, help="processes training at once (default: the cores)"
    )
    demo.add_argument("--seed", type=int, default=0)
    spiral = demo.add_argument_group("the spiral demo (--spiral)")
    spiral.add_argument(
        "--spiral", action="store_true", help="fit a neural ODE to a spiral instead"
    )
    spiral.add_argument(
        "--iterations", type=_positive_int, default=300, help="training iterations (default 300)"
    )
    spiral.add_argument("--method", default="rk4", help="solver method (default rk4)")
    spiral.add_argument(
        "--adjoint",
        default="backsolve",
        choices=("direct", "backsolve", "checkpoint"),
        help="how gradients are computed (default backsolve)",
    )


def _run_demo(args: argparse.Namespace) -> int:
    if not args.spiral:
        return _run_classification_demo(args)
    import solvers
    from ctrnn.demo import run_spiral_demo

    if args.method not in solvers.methods():
        raise SystemExit(
            f"ctrnn demo: unknown method {args.method!r}; valid: {', '.join(solvers.methods())}"
        )
    print(
        f"Fitting a neural ODE to a spiral: method {args.method}, adjoint {args.adjoint}, "
        f"{args.iterations} iterations of 20 windows with per-sample time grids"
    )
    result = run_spiral_demo(
        args.iterations, method=args.method, adjoint=args.adjoint, seed=args.seed, log=print
    )
    first, last = result.losses[0], result.losses[-1]
    print(
        f"demo finished in {result.seconds:.1f} s: held-out L1 loss {first:.4f} -> {last:.4f}; "
        f"whole trajectory from its first point: L1 {result.trajectory_loss:.4f}"
    )
    return 0


def _run_classification_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ctrnn.demo import DEMO_MODELS, plot_learning_curves, run_classification_demo

    models = args.models or list(DEMO_MODELS)
    unknown = [m for m in models if m not in DEMO_MODELS]
    if unknown:
        raise SystemExit(
            f"ctrnn demo: unknown model(s) {', '.join(unknown)}; valid: {', '.join(DEMO_MODELS)}"
        )
    print(
        f"Training {', '.join(models)} on JapaneseVowels with 30% of the time points dropped "
        f"({args.epochs} epochs each, on the CPU); runs in {args.out}/"
    )
    start = time.perf_counter()
    runs = run_classification_demo(
        args.out, models=models, epochs=args.epochs, seed=args.seed, workers=args.workers, log=print
    )
    print()
    print(f"{'model':<12}{'test accuracy':>14}{'best epoch':>12}{'s/epoch':>9}{'parameters':>12}")
    for run in runs:
        print(
            f"{run.model:<12}{run.test_acc:>14.3f}{run.best_epoch:>12d}"
            f"{run.seconds_per_epoch:>9.2f}{run.parameters:>12d}"
        )
    try:
        figure = plot_learning_curves(
            runs,
            Path(args.out) / "learning_curves.png",
            title="JapaneseVowels, 30% of the time points dropped",
        )
        print(f"\nlearning curves: {figure}")
    except ImportError as e:
        print(f"\nno learning-curve figure: {e}")
    print(
        f"demo finished in {time.perf_counter() - start:.0f} s; "
        f"`ctrnn evaluate {args.out}/<model>` for a confusion matrix"
    )
    return 0


# -- train -------------------------------------------------------------------------------------

# command-line flag -> TrainConfig field, for the flags that set a field directly
_TRAIN_FLAGS = {
    "model": "model",
    "hidden_size": "hidden_size",
    "mode": "mode",
    "dataset": "dataset",
    "missing": "missing",
    "split": "split",
    "time_channel": "time_channel",
    "normalize": "normalize",
    "data_root": "data_root",
    "data_seed": "data_seed",
    "seed": "seed",
    "epochs": "epochs",
    "steps": "steps",
    "batch_size": "batch_size",
    "optimizer": "optimizer",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "schedule": "schedule",
    "lr_factor": "lr_factor",
    "lr_patience": "lr_patience",
    "min_lr": "min_lr",
    "clip_grad_norm": "clip_grad_norm",
    "patience": "patience",
    "monitor": "monitor",
    "device": "device",
    "num_workers": "num_workers",
    "tensorboard": "tensorboard",
}
# flag -> key of TrainConfig.solver
_SOLVER_FLAGS = {
    "solver": "method",
    "backend": "backend",
    "adjoint": "adjoint",
    "rtol": "rtol",
    "atol": "atol",
    "dt": "dt",
    "max_steps": "max_steps",
}


def _add_train(commands) -> None:
    # Choices are not declared to argparse: the config checks every value (and lists the
    # valid ones), so a config file and the flags get the same messages.
    p = commands.add_parser(
        "train",
        help="train a model on a dataset into a run directory",
        description=(
            "Train a model on a dataset. Settings come from the defaults, then the run "
            "directory's config.json when resuming, then --config FILE, then the flags. Under "
            "torchrun (torchrun --nproc_per_node=N -m ctrnn train ...) each process trains a "
            "DistributedDataParallel replica; --batch-size is the global batch."
        ),
        epilog=(
            "example: ctrnn train --model gru_d --dataset JapaneseVowels --missing 0.3 "
            "--epochs 30 --out runs/gru_d"
        ),
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory")
    p.add_argument("--config", metavar="FILE", help="a YAML or JSON config file")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="no progress bar (it is drawn only when stderr is a terminal anyway)",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", help="model name (see `ctrnn list`)")
    g.add_argument("--hidden-size", type=_positive_int)
    g.add_argument("--mode", help="discrete or continuous, for models that have both")
    g.add_argument(
        "--model-option",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        default=[],
        help="another option of the model, e.g. delay=5 or interpolation=linear (repeatable)",
    )
    g = p.add_argument_group("solver (continuous mode)")
    g.add_argument("--solver", metavar="METHOD", help="e.g. dopri5, rk4 (see `ctrnn list`)")
    g.add_argument("--backend", help="native, torchdiffeq, ...")
    g.add_argument("--adjoint", help="direct, backsolve or checkpoint")
    g.add_argument("--rtol", type=_number)
    g.add_argument("--atol", type=_number)
    g.add_argument("--dt", type=_number, help="step of fixed-step methods")
    g.add_argument("--max-steps", type=_positive_int)
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        help="a dataset name (see `ctrnn list`): shipped, synthetic, or any UEA/UCR archive set "
        "under --data-root or in an installed aeon or sktime; or the path to an archive set's "
        "NAME_TRAIN.ts file or folder",
    )
    g.add_argument("--missing", type=_number, help="fraction of time points dropped")
    g.add_argument(
        "--split",
        help="pooled (pool the archive's train and test sets, split 70/15/15) or original "
        "(keep the archive's test set, so that published accuracies apply)",
    )
    g.add_argument("--no-time-channel", dest="time_channel", action="store_false", default=None)
    g.add_argument("--no-normalize", dest="normalize", action="store_false", default=None)
    g.add_argument(
        "--data-root",
        metavar="DIR",
        help="a directory of archive .ts files (NAME_TRAIN.ts, NAME_TEST.ts, directly or in "
        "NAME/), searched before aeon's and sktime's copies",
    )
    g.add_argument("--data-seed", type=_nonnegative_int, help="seed of the drop and split")
    g.add_argument(
        "--dataset-option",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        default=[],
        help="an option of a synthetic dataset's generator, e.g. n=200 (repeatable)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--seed", type=_nonnegative_int)
    g.add_argument(
        "--epochs",
        type=_positive_int,
        help="most epochs (default: as many as --steps optimiser steps take)",
    )
    g.add_argument(
        "--steps",
        type=_positive_int,
        help="the budget of optimiser steps that sets the epochs (default 1000)",
    )
    g.add_argument("--batch-size", type=_positive_int)
    g.add_argument("--optimizer", help="adam or adamw")
    g.add_argument("--lr", type=_number)
    g.add_argument("--weight-decay", type=_number)
    g.add_argument("--schedule", help="none, cosine or plateau")
    g.add_argument("--lr-factor", type=_number)
    g.add_argument("--lr-patience", type=_nonnegative_int)
    g.add_argument("--min-lr", type=_number)
    g.add_argument("--clip-grad-norm", type=_number)
    g.add_argument(
        "--patience",
        type=_patience,
        help="early-stopping patience in epochs, 'auto' (default: a quarter of the epochs, at "
        "least 10) or 'none'",
    )
    g.add_argument("--monitor", help="val_loss (default) or val_acc: picks the best epoch")
    g = p.add_argument_group("execution")
    g.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    g.add_argument("--num-workers", type=_nonnegative_int)
    g.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write TensorBoard scalars (default: when tensorboard is installed)",
    )


_MAPPING_FIELDS = {
    "solver": "solver: {method: rk4, dt: 0.5}",
    "model_options": "model_options: {delay: 5.0}",
    "dataset_options": "dataset_options: {n: 200}",
}


def _checked_mappings(fields: dict, source) -> dict:
    """The fields of a config file, with a clear error where a mapping field is not one
    (the command line merges flags into them)."""
    for key, example in _MAPPING_FIELDS.items():
        value = fields.get(key)
        if value is not None and not isinstance(value, dict):
            raise ValueError(
                f"config file {str(source)!r}: {key} must be a mapping of option names to "
                f"values, e.g. {example}; got {type(value).__name__} {value!r}"
            )
    return fields


def train_config_from_args(args: argparse.Namespace):
    """The :class:`ctrnn.train.TrainConfig` of a parsed ``ctrnn train`` command line."""
    from pathlib import Path

    from ctrnn.train import TrainConfig
    from ctrnn.train._config import read_config_file

    fields: dict = {}
    saved = Path(args.out) / "config.json"
    if args.resume and saved.is_file():
        fields.update(_checked_mappings(read_config_file(saved), saved))
    if args.config:
        fields.update(_checked_mappings(read_config_file(args.config), args.config))
    for flag, name in _TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            fields[name] = value
    if fields.get("patience") == "none":
        fields["patience"] = None
    solver = dict(fields.get("solver") or {})
    for flag, key in _SOLVER_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            solver[key] = value
    fields["solver"] = solver
    for flag, name in (("model_option", "model_options"), ("dataset_option", "dataset_options")):
        if getattr(args, flag):
            fields[name] = {**(fields.get(name) or {}), **dict(getattr(args, flag))}
    return TrainConfig.from_dict(fields)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _run_train(args: argparse.Namespace) -> int:
    from ctrnn.train import train

    config = train_config_from_args(args)
    main = _is_main_process()
    if main:
        solver = config.solver.to_dict()
        print(
            f"training {config.model} (hidden {config.hidden_size}"
            f"{', ' + config.mode if config.mode else ''}"
            f"{', solver ' + json.dumps(solver) if solver else ''}) on {config.dataset} "
            f"(missing {config.missing:g}) for "
            + (
                f"up to {config.epochs} epochs"
                if config.epochs is not None
                else f"a budget of {config.steps} optimiser steps"
            )
            + f" -> {args.out}",
            flush=True,
        )

    def on_epoch(row: dict) -> None:
        print(
            f"epoch {row['epoch']:>3}/{row['epochs']}  train loss {_fmt(row['train_loss'])} "
            f"acc {_fmt(row['train_acc'])}  val loss {_fmt(row['val_loss'])} "
            f"acc {_fmt(row['val_acc'])}  lr {row['lr']:.3g}  {row['seconds']:.1f} s",
            flush=True,
        )

    result = train(config, args.out, resume=args.resume, progress=args.progress, on_epoch=on_epoch)
    if main:
        summary = result.to_dict()
        stop = " (stopped early)" if result.stopped_early else ""
        print(
            f"done{stop}: best epoch {result.best_epoch} ({result.monitor} "
            f"{result.best_metric:.4f}); test loss {result.test_loss:.4f}, test accuracy "
            f"{_fmt(result.test_acc)}; {summary['seconds']:.1f} s of training; "
            f"`ctrnn evaluate {args.out}` for the confusion matrix"
        )
    return 0


# -- evaluate ----------------------------------------------------------------------------------


def _add_evaluate(commands) -> None:
    p = commands.add_parser(
        "evaluate",
        help="test accuracy, confusion matrix and per-class figures of a trained run",
        description=(
            "Evaluate a run's best model; writes RUN_DIR/evaluation.json and, with matplotlib, "
            "RUN_DIR/confusion_matrix.png."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", default="test", help="train, val or test (default test)")
    p.add_argument("--device", default="cpu")


def _run_evaluate(args: argparse.Namespace) -> int:
    from ctrnn.train import evaluate

    report = evaluate(args.run_dir, split=args.split, device=args.device)
    print(
        f"{args.run_dir}: {report['split']} split, {report['n']} series, model of epoch "
        f"{report['epoch']}"
    )
    if "accuracy" not in report:
        print(
            f"loss (MSE) {report['loss']:.4f}  RMSE {report['rmse']:.4f}  MAE {report['mae']:.4f}"
        )
        return 0
    print(
        f"accuracy {report['accuracy']:.4f}  loss {report['loss']:.4f}  "
        f"macro F1 {report['macro_f1']:.4f}"
    )
    classes = report["classes"]
    width = max(5, *(len(c) for c in classes))
    print(f"{'class':<{width}}  precision  recall      f1  support")
    for name in classes:
        c = report["per_class"][name]
        print(
            f"{name:<{width}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:6.3f}  "
            f"{c['support']:7d}"
        )
    print("confusion matrix (rows: true class, columns: predicted):")
    cell = max(3, len(str(max(max(r) for r in report["confusion_matrix"]))))
    print(" " * width + " " + " ".join(f"{c[:cell]:>{cell}}" for c in classes))
    for name, row in zip(classes, report["confusion_matrix"]):
        print(f"{name:<{width}} " + " ".join(f"{v:>{cell}d}" for v in row))
    written = "evaluation.json" + (f" and {report['figure']}" if report["figure"] else "")
    print(f"wrote {written}")
    return 0


# -- list --------------------------------------------------------------------------------------


def _add_list(commands) -> None:
    p = commands.add_parser(
        "list",
        help="models, datasets (with the archive sets found), solver methods and backends",
        description="List the models, datasets, solver methods and backends by name. The "
        "datasets are the shipped and synthetic ones and every UEA/UCR archive set found in "
        "--data-root and in an installed aeon's or sktime's data directory.",
    )
    p.add_argument(
        "--data-root", metavar="DIR", help="also list the archive .ts sets in this directory"
    )


def _run_list(args: argparse.Namespace) -> int:
    import solvers
    from ctrnn.data import archive_datasets
    from ctrnn.data.datasets import _REGISTRY
    from ctrnn.models import available

    print("models:   " + ", ".join(available()))
    print("datasets: " + ", ".join(e.name for e in _REGISTRY.values()))
    found = archive_datasets(args.data_root)
    where = {"root": "--data-root", "aeon": "aeon", "sktime": "sktime"}
    if found:
        print("archive datasets found (ctrnn train --dataset NAME):")
        width = max(len(n) for n in found) + 2
        for name, files in found.items():
            test = "" if files.test is not None else "  (no _TEST file: --split pooled only)"
            print(f"  {name:<{width}}{where[files.origin]}: {files.folder}{test}")
    else:
        print(
            "archive datasets found: none (pass --data-root DIR holding NAME_TRAIN.ts and "
            'NAME_TEST.ts, or pip install "ctrnn[data]" for the sets that sktime ships)'
        )
    print("methods (and the problems each accepts):")
    for name, method in solvers.methods().items():
        kinds = ", ".join(method.problems)
        step = "adaptive" if method.adaptive else "fixed step"
        print(f"  {name:<32} order {method.order}, {step}; {kinds}")
    print("SDE methods:")
    for name, method in solvers.sde_methods().items():
        print(f"  {name:<32} {method.sde_type}, strong order {method.strong_order}")
    print("backends: " + ", ".join(solvers.backends()))
    print("adjoints: direct, backsolve, checkpoint")
    return 0


# -- analyze -----------------------------------------------------------------------------------


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``ctrnn analyze`` on ``parser``."""
    parser.add_argument(
        "run_dir", nargs="?", default=None, help="a training run directory (or use --model)"
    )
    parser.add_argument("--model", help="analyse a fresh model of this name instead of a run")
    parser.add_argument("--input-size", type=_positive_int, default=2, help="default 2")
    parser.add_argument("--hidden-size", type=_positive_int, default=8, help="default 8")
    parser.add_argument(
        "--option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another model option, e.g. --option delay=4.0 --option mode=continuous",
    )
    parser.add_argument(
        "--length", type=_positive_int, default=120, help="steps of the input sequence (120)"
    )
    parser.add_argument("--batch", type=_positive_int, default=4, help="initial states (4)")
    parser.add_argument(
        "--exponents", type=_positive_int, default=None, help="how many exponents (all)"
    )
    parser.add_argument(
        "--schemes", default="euler,rk4", help="schemes for --order (default euler,rk4)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the fresh weights and the inputs (0)"
    )
    for name, text in (
        ("lyapunov", "Lyapunov spectrum and its convergence"),
        ("gradients", "gradient norms through time and their growth rate vs λ_max"),
        ("jacobian", "Jacobian eigenvalues (and the scheme's stability region)"),
        ("order", "empirical order of the schemes against a reference solve"),
    ):
        parser.add_argument(f"--{name}", action="store_true", help=text)
    parser.add_argument("--out", required=True, help="directory for the figures and JSON")


def _add_analyze(commands) -> None:
    analyze = commands.add_parser(
        "analyze",
        help="stability figures of a trained run or a fresh model (Lyapunov spectrum, "
        "gradient norms, Jacobian spectra, order of schemes)",
        description="Write PNG figures and analysis.json for a trained run (RUN_DIR, written "
        "by `ctrnn train`) or a fresh model (--model NAME), driven by a random input sequence.",
    )
    add_analyze_arguments(analyze)


def _run_analyze(args: argparse.Namespace) -> int:
    from ctrnn.analysis._cli import run

    return run(args)


# -- the command -------------------------------------------------------------------------------

_ADDERS: tuple[Callable, ...] = (_add_train, _add_evaluate, _add_analyze, _add_list, _add_demo)
_RUNNERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": _run_train,
    "evaluate": _run_evaluate,
    "analyze": _run_analyze,
    "list": _run_list,
    "demo": _run_demo,
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrnn",
        description="Continuous-time recurrent neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _ADDERS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ctrnn`` command.

    Args:
        argv: The arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The process exit status: 0, or 2 for a bad argument or setting, an unreadable or
        damaged file, a run directory that cannot be written or is in use by another run (the
        message on stderr names it).
    """
    args = _build_parser().parse_args(argv)
    from ctrnn.train._checkpoint import RunDirectoryBusy

    try:
        return _RUNNERS[args.command](args)
    except (ValueError, OSError, ImportError, RunDirectoryBusy) as e:
        message = e.strerror if isinstance(e, OSError) and e.strerror else e
        if isinstance(e, OSError) and e.filename and str(e.filename) not in str(message):
            message = f"{message}: {e.filename!r}"
        print(f"ctrnn {args.command}: error: {message}", file=sys.stderr)
        return 2
