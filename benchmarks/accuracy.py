"""Test accuracy of the classifiers on JapaneseVowels (30/50/70% dropped) and BasicMotions.

Every line of the tables is ``ctrnn train`` run once per seed, as a subprocess with one torch
thread, exactly as the command printed next to it; the table gives the mean, the standard
deviation and the range over the seeds of the test accuracy at the best validation epoch.
Finished runs (a ``result.json`` in their run directory) are reused, so an interrupted
study continues where it stopped. Writes ``docs/results.md``.

    python benchmarks/accuracy.py                          # everything (about an hour, 2 cores)
    python benchmarks/accuracy.py --settings jv30 --models gru_d --seeds 0
    python benchmarks/accuracy.py --basic-motions-root DIR # BasicMotions without sktime
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# setting -> (dataset, missing fraction, title, flags that replace the common ones).
# BasicMotions has 56 training series: batches of 8 and 60 epochs make 420 optimiser steps
# (30 epochs of batches of 32 would be 60).
SETTINGS = {
    "jv30": ("JapaneseVowels", 0.3, "JapaneseVowels, 30% of the time points dropped", {}),
    "jv50": ("JapaneseVowels", 0.5, "JapaneseVowels, 50% dropped", {}),
    "jv70": ("JapaneseVowels", 0.7, "JapaneseVowels, 70% dropped", {}),
    "bm30": (
        "BasicMotions",
        0.3,
        "BasicMotions, 30% dropped (batches of 8, 60 epochs)",
        {"--epochs": "60", "--batch-size": "8"},
    ),
}

# model -> extra flags. The CDE models take one RK4 step per unit time (the archives'
# observations are one unit apart before points are dropped); ODE-RNN keeps its default
# (RK4, dt = 0.25 between observations).
MODELS = {
    "tau_gru": [],
    "ancde": ["--solver", "rk4", "--dt", "1.0"],
    "neural_cde": ["--solver", "rk4", "--dt", "1.0"],
    "gru_d": [],
    "ode_rnn": [],
    "gru_dt": [],
    "gru": [],
}

COMMON = {"--epochs": "30", "--lr": "3e-3", "--batch-size": "32", "--hidden-size": "32"}


def command(setting: str, model: str, seed: int, run_dir: Path, data_root: str | None):
    dataset, missing, _, flags = SETTINGS[setting]
    argv = ["ctrnn", "train", "--model", model, "--dataset", dataset, "--missing", str(missing)]
    argv += MODELS[model]
    for flag, value in {**COMMON, **flags}.items():
        argv += [flag, value]
    argv += ["--seed", str(seed)]
    if data_root is not None and dataset == "BasicMotions":
        argv += ["--data-root", data_root]
    return [*argv, "--out", str(run_dir)]


def run_one(argv: list[str]) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ctrnn", *argv[1:], "--no-progress"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def summarise(run_dirs: list[Path]) -> dict:
    accs, per_epoch, seconds = [], [], 0.0
    for run_dir in run_dirs:
        result = json.loads((run_dir / "result.json").read_text())
        accs.append(100 * result["test_acc"])
        per_epoch.append(result["seconds"] / max(result["epochs_run"], 1))
        seconds += result["seconds"]
    return {
        "n": len(accs),
        "mean": statistics.mean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "min": min(accs),
        "max": max(accs),
        "s_per_epoch": statistics.median(per_epoch),
        "seconds": seconds,
    }


def write(out: Path, tables: dict, args, elapsed: float) -> None:
    lines = [
        "# Results",
        "",
        "Test accuracy (%) of the classifiers, mean ± standard deviation over seeds (and the",
        "range), each at its best validation epoch; produced by `benchmarks/accuracy.py`, which",
        "runs the command given for each line once per seed (`{seed}` = 0, 1, 2).",
        "",
        "Protocol (the Neural CDE paper's, Kidger et al. 2020): for each series a seeded",
        "fraction of the time points is dropped (all channels at once); the observation time is",
        "kept as channel 0; the archive's train and test sets are pooled and split 70/15/15",
        "(stratified); channels are standardised with the training statistics. The seed sets",
        "the drop, the split and the initialisation. Every model: hidden size 32, Adam at",
        "3e-3, batch 32, 30 epochs (BasicMotions: batch 8, 60 epochs), no schedule, no early",
        "stopping. The CDE models take one RK4 step per unit time with the direct adjoint",
        "(`ancde`, `neural_cde`); ODE-RNN four RK4 steps per unit time; τ-GRU, GRU-D, GRU-Δt",
        "and GRU run their discrete cells.",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"one torch thread per run, {args.workers} runs at once; "
        f"Python {platform.python_version()}",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; training time summed over "
        f"the {sum(s['n'] for rows in tables.values() for s in rows.values())} runs: "
        f"{sum(s['seconds'] for rows in tables.values() for s in rows.values()) / 60:.0f} min "
        f"(this invocation: {elapsed / 60:.0f} min; finished runs are reused)",
        "- s/epoch: median over seeds of the training time per epoch (shared cores: compare "
        "within a table)",
        "",
    ]
    for setting, rows in tables.items():
        lines += [f"## {SETTINGS[setting][2]}", ""]
        lines += ["| model | test accuracy % | range | seeds | s/epoch | command |"]
        lines += ["|---|---|---|---|---|---|"]
        for model, s in rows.items():
            cmd = shlex.join(command(setting, model, 0, Path("runs/x"), args.basic_motions_root))
            cmd = cmd.replace("--seed 0", "--seed {seed}").replace(
                "--out runs/x", f"--out runs/{setting}/{model}/seed{{seed}}"
            )
            lines.append(
                f"| {model} | {s['mean']:.1f} ± {s['std']:.1f} | {s['min']:.1f}–{s['max']:.1f} "
                f"| {s['n']} | {s['s_per_epoch']:.2f} | `{cmd}` |"
            )
        lines.append("")
    out.write_text("\n".join(lines) + "\n" + args.notes_text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", default="runs/accuracy", help="where the run directories go")
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument(
        "--basic-motions-root",
        help="directory with BasicMotions_TRAIN.ts and _TEST.ts (default: from sktime)",
    )
    parser.add_argument(
        "--notes", help="a markdown file appended to the tables (discussion of the results)"
    )
    args = parser.parse_args(argv)
    args.notes_text = Path(args.notes).read_text() if args.notes else ""
    runs = Path(args.runs)
    jobs = {}
    for setting in args.settings:
        for model in args.models:
            for seed in args.seeds:
                run_dir = runs / setting / model / f"seed{seed}"
                if not (run_dir / "result.json").is_file():
                    if run_dir.exists():  # an interrupted run: start it again
                        shutil.rmtree(run_dir)
                    argv_ = command(setting, model, seed, run_dir, args.basic_motions_root)
                    jobs[(setting, model, seed)] = argv_
    start = time.perf_counter()
    print(f"{len(jobs)} runs to do", flush=True)
    with ThreadPoolExecutor(args.workers) as pool:
        futures = {pool.submit(run_one, argv_): key for key, argv_ in jobs.items()}
        for future in as_completed(futures):
            key = futures[future]
            print(f"{key}: {future.result():.0f} s", flush=True)
    tables = {
        setting: {
            model: summarise([runs / setting / model / f"seed{s}" for s in args.seeds])
            for model in args.models
        }
        for setting in args.settings
    }
    write(Path(args.out), tables, args, time.perf_counter() - start)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
