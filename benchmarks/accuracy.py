"""Test accuracy of every model, with the default training settings, on seven UEA/UCR archive
sets (the archive's own train/test split), with 0% and 50% of the time points dropped, beside
the published 1-NN DTW and ROCKET accuracies of each set. Writes ``docs/results.md``.

Every run is ``ctrnn train`` as a subprocess with one torch thread, exactly as the command
printed on the page, with nothing but the model, the data, the drop rate and the seed set.
Each finished run appends one row to the results file (``--results``); runs already there
are skipped, so an interrupted study continues where it stopped, and a subset is chosen on
the command line:

    python benchmarks/accuracy.py --data-root DIR                       # the whole grid
    python benchmarks/accuracy.py --data-root DIR --datasets ArrowHead --models gru gru_d \\
        --missing 0 --seeds 0                                           # a part of it
    python benchmarks/accuracy.py --table-only                          # the page from the rows

The archive sets are read from ``--data-root`` (``NAME/NAME_TRAIN.ts``) or from an installed
aeon or sktime (``ctrnn list`` shows what is found); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Smallest first (series × length of the training set), so that a partial study covers the
# most sets.
DATASETS = (
    "BasicMotions",
    "JapaneseVowels",
    "ArrowHead",
    "PickupGestureWiimoteZ",
    "OSULeaf",
    "ACSF1",
    "PLAID",
)
MISSING = (0.0, 0.5)
SEEDS = (0, 1, 2)

# What each set is (archive split: training / test series).
SHAPES = {
    "BasicMotions": "multivariate, 6 channels, 4 classes, 40/40 series, length 100",
    "JapaneseVowels": "multivariate, 12 channels, 9 classes, 270/370 series, lengths 7–29",
    "ArrowHead": "univariate, 3 classes, 36/175 series, length 251",
    "PickupGestureWiimoteZ": "univariate, 10 classes, 50/50 series, lengths 29–361",
    "OSULeaf": "univariate, 6 classes, 200/242 series, length 427",
    "ACSF1": "univariate, 10 classes, 100/100 series, length 1460",
    "PLAID": "univariate, 11 classes, 537/537 series, lengths 100–1344",
}

UCR_SUMMARY = (
    "the UCR archive's DataSummary.csv (Dau et al., 'The UCR time series archive', 2018): "
    "1-NN DTW with a full window ('DTW (w=100)'), accuracy = 1 − error, on the archive's split"
)
ROCKET_RESULTS = (
    "Dempster, Petitjean & Webb, 'ROCKET', Data Mining and Knowledge Discovery 34, 2020: "
    "results/results_ucr.csv of the authors' repository (angus924/rocket), mean of 10 runs"
)

# Published accuracies (%) on the archive split; None where no figure was verified.
PUBLISHED = {
    "ArrowHead": {"dtw": 70.29, "rocket": 81.43},
    "ACSF1": {"dtw": 64.00, "rocket": 88.60},
    "OSULeaf": {"dtw": 59.09, "rocket": 94.09},
    "PickupGestureWiimoteZ": {"dtw": 66.00, "rocket": 83.00},
    "PLAID": {"dtw": 83.61, "rocket": 90.26},
    "BasicMotions": {"dtw": None, "rocket": None},
    "JapaneseVowels": {"dtw": None, "rocket": None},
}

COLUMNS = (
    "dataset",
    "missing",
    "model",
    "seed",
    "status",
    "test_acc",
    "best_epoch",
    "epochs_run",
    "stopped_early",
    "train_seconds",
    "wall_seconds",
    "finished",
)


def available_models() -> list[str]:
    from ctrnn.models import available

    return list(available())


def run_dir(runs: Path, dataset: str, missing: float, model: str, seed: int) -> Path:
    return runs / dataset / f"missing{round(100 * missing)}" / model / f"seed{seed}"


def command(
    dataset: str, missing: float, model: str, seed: int, out: Path, data_root: str | None
) -> list[str]:
    """The ``ctrnn train`` command of one run: the defaults, the archive's split."""
    argv = ["ctrnn", "train", "--model", model, "--dataset", dataset, "--split", "original"]
    argv += ["--missing", f"{missing:g}", "--seed", str(seed)]
    if data_root is not None and dataset != "JapaneseVowels":  # JapaneseVowels is shipped
        argv += ["--data-root", data_root]
    return [*argv, "--out", str(out)]


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["missing"] = float(row["missing"])
        row["seed"] = int(row["seed"])
        row["test_acc"] = float(row["test_acc"]) if row["test_acc"] else None
    return rows


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in COLUMNS})


def key(row: dict) -> tuple:
    return (row["dataset"], float(row["missing"]), row["model"], int(row["seed"]))


def run_one(argv: list[str], out: Path, timeout: float | None) -> dict:
    """Run one ``ctrnn train``; its row (status ``ok``, ``timeout`` or ``error``)."""
    if out.exists():  # an interrupted run: start it again
        shutil.rmtree(out)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ctrnn", *argv[1:], "--no-progress"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall_seconds": f"{time.perf_counter() - start:.0f}"}
    wall = f"{time.perf_counter() - start:.0f}"
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return {"status": "error", "wall_seconds": wall}
    result = json.loads((out / "result.json").read_text())
    return {
        "status": "ok",
        "test_acc": result["test_acc"],
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "stopped_early": result["stopped_early"],
        "train_seconds": f"{result['seconds']:.1f}",
        "wall_seconds": wall,
    }


# -- the page ------------------------------------------------------------------------------------


def _cell(accs: list[float]) -> str:
    if not accs:
        return "–"
    mean = statistics.mean(accs)
    if len(accs) == 1:
        return f"{mean:.1f} (1)"
    return f"{mean:.1f} ± {statistics.stdev(accs):.1f} ({len(accs)})"


def _published(value) -> str:
    return "not verified" if value is None else f"{value:.1f}"


def summarise(rows: list[dict], models, datasets, missing, seeds):
    """``{(dataset, missing, model): [accuracy %, ...]}`` of the finished runs."""
    table: dict[tuple, list[float]] = {}
    for row in rows:
        if row["status"] != "ok" or row["test_acc"] is None:
            continue
        if row["model"] in models and row["dataset"] in datasets and row["seed"] in seeds:
            if row["missing"] in missing:
                table.setdefault((row["dataset"], row["missing"], row["model"]), []).append(
                    100 * row["test_acc"]
                )
    return table


def render(rows: list[dict], models, datasets, missing, seeds, notes: str = "") -> str:
    table = summarise(rows, models, datasets, missing, seeds)
    planned = len(models) * len(datasets) * len(missing) * len(seeds)
    done = sum(len(v) for v in table.values())
    failed = [
        r
        for r in rows
        if r["status"] != "ok"
        and r["model"] in models
        and r["dataset"] in datasets
        and r["missing"] in missing
    ]
    hours = sum(float(r["wall_seconds"] or 0) for r in rows) / 3600
    lines = [
        "# Results",
        "",
        "Test accuracy (%) of every model with the default training settings on seven UEA/UCR",
        "archive sets, on the archive's own train/test split (so the published figures",
        "apply), with 0% and 50% of each series' time points dropped; mean ± standard",
        "deviation over the seeds finished (their number in brackets). Produced by",
        "`benchmarks/accuracy.py`; every run is",
        "",
        "    ctrnn train --model MODEL --dataset SET --split original --missing M --seed S \\",
        "        [--data-root DIR] --out RUN_DIR",
        "",
        "and nothing else: hidden size 32; the default budget of 1000 optimiser steps (batches",
        "of 32) sets the epochs; Adam at 3e-3 with a cosine schedule, gradients clipped at norm",
        "1; early stopping on the validation loss (a stratified 15% of the archive's training",
        "set) with a patience of a quarter of the epochs; the model of the epoch with the",
        "lowest validation loss is tested. Each model uses its own default discretization or",
        "solver. The time is channel 0; values are standardised with the training statistics.",
        "",
        f"- **Coverage: {done} of {planned} runs** ({len(models)} models × {len(datasets)} sets "
        f"× {len(missing)} drop rates × {len(seeds)} seeds); "
        f"{len(failed)} more stopped by the time limit or an error (listed below). A dash is a "
        "run not done yet.",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, one "
        f"torch thread per run; Python {platform.python_version()}; "
        f"{hours:.1f} h of runs in all; page written "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"- 1-NN DTW: {UCR_SUMMARY}. ROCKET: {ROCKET_RESULTS}. 'not verified': no published "
        "figure could be checked in this session (none is given rather than one from memory).",
        "",
        "## Summary: the best model against 1-NN DTW",
        "",
        "| set | best model, 0% dropped | its accuracy | 1-NN DTW | ROCKET | within 3 points? |",
        "|---|---|---|---|---|---|",
    ]
    for dataset in datasets:
        scores = {
            m: statistics.mean(table[(dataset, 0.0, m)])
            for m in models
            if (dataset, 0.0, m) in table
        }
        pub = PUBLISHED.get(dataset, {"dtw": None, "rocket": None})
        if not scores:
            lines.append(
                f"| {dataset} | not run yet | – | {_published(pub['dtw'])} | "
                f"{_published(pub['rocket'])} | – |"
            )
            continue
        best = max(scores, key=scores.get)
        n_models = len(scores)
        verdict = "–"
        if pub["dtw"] is not None:
            gap = scores[best] - pub["dtw"]
            verdict = ("yes" if gap >= -3 else "no") + f" ({gap:+.1f})"
        lines.append(
            f"| {dataset} | {best} (of {n_models} models run) | {scores[best]:.1f} | "
            f"{_published(pub['dtw'])} | {_published(pub['rocket'])} | {verdict} |"
        )
    lines.append("")
    for dataset in datasets:
        pub = PUBLISHED.get(dataset, {"dtw": None, "rocket": None})
        lines += [
            f"## {dataset}",
            "",
            f"{SHAPES.get(dataset, '')}. Published, original split: 1-NN DTW "
            f"{_published(pub['dtw'])}, ROCKET {_published(pub['rocket'])}.",
            "",
            "| model | " + " | ".join(f"{m:.0%} dropped" for m in missing) + " |",
            "|---|" + "---|" * len(missing),
        ]
        for model in models:
            cells = [_cell(table.get((dataset, m, model), [])) for m in missing]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    if failed:
        lines += ["## Runs stopped by the time limit or an error", ""]
        for r in failed:
            lines.append(
                f"- {r['dataset']}, {r['missing']:.0%} dropped, {r['model']}, seed {r['seed']}: "
                f"{r['status']} after {r['wall_seconds']} s"
            )
        lines.append("")
    text = "\n".join(lines) + "\n"
    return text + ("\n" + notes if notes else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="SET")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL")
    parser.add_argument("--missing", nargs="+", type=float, default=list(MISSING))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--data-root", help="a directory of archive .ts sets (NAME/NAME_*.ts)")
    parser.add_argument("--runs", default="runs/accuracy", help="where the run directories go")
    parser.add_argument(
        "--results",
        default=str(ROOT / "benchmarks" / "results" / "accuracy.csv"),
        help="the file of result rows (appended to; its runs are skipped)",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--notes", help="a markdown file appended to the page")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds a run may take (default: no limit)"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="write the page from the rows, run nothing"
    )
    args = parser.parse_args(argv)
    models = args.models or available_models()
    data_root = None if args.data_root is None else str(Path(args.data_root).resolve())
    results, runs = Path(args.results), Path(args.runs)
    notes = Path(args.notes).read_text() if args.notes else ""
    done = {key(r) for r in read_rows(results)}
    todo = [
        (d, m, model, s)
        for d in args.datasets
        for m in args.missing
        for model in models
        for s in args.seeds
        if (d, float(m), model, s) not in done
    ]
    if not args.table_only:
        print(f"{len(todo)} runs to do ({len(done)} rows already in {results})", flush=True)
        for dataset, missing, model, seed in todo:
            out = run_dir(runs, dataset, missing, model, seed)
            argv_ = command(dataset, missing, model, seed, out, data_root)
            row = run_one(argv_, out, args.timeout)
            row.update(
                dataset=dataset,
                missing=missing,
                model=model,
                seed=seed,
                finished=f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}",
            )
            append_row(results, row)
            print(f"{shlex.join(argv_)}: {row['status']} {row.get('test_acc', '')}", flush=True)
            Path(args.out).write_text(
                render(read_rows(results), models, args.datasets, args.missing, args.seeds, notes)
            )
    Path(args.out).write_text(
        render(read_rows(results), models, args.datasets, args.missing, args.seeds, notes)
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
