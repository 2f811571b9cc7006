"""benchmarks/accuracy.py: the commands it runs, the rows it keeps, the page it writes."""

import runpy
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
study = runpy.run_path(str(ROOT / "benchmarks" / "accuracy.py"))


def test_commands_use_the_defaults_and_the_archive_split():
    argv = study["command"]("ArrowHead", 0.5, "gru_d", 2, Path("runs/x"), "/data/archive")
    assert argv[:2] == ["ctrnn", "train"]
    flags = argv[2:]
    assert flags[flags.index("--split") + 1] == "original"
    assert flags[flags.index("--missing") + 1] == "0.5" and flags[flags.index("--seed") + 1] == "2"
    assert flags[flags.index("--data-root") + 1] == "/data/archive"
    assert flags[-2:] == ["--out", "runs/x"]
    for tuned in ("--epochs", "--lr", "--batch-size", "--steps", "--hidden-size", "--solver"):
        assert tuned not in flags  # the defaults, nothing tuned per set
    shipped = study["command"]("JapaneseVowels", 0.0, "gru", 0, Path("r"), "/data/archive")
    assert "--data-root" not in shipped and shipped[shipped.index("--missing") + 1] == "0"


def test_rows_are_appended_and_finished_runs_skipped(tmp_path, monkeypatch):
    results = tmp_path / "rows.csv"
    calls = []

    def fake_run(argv, out, timeout):
        calls.append(shlex.join(argv))
        acc = 0.9 if "--seed 0" in calls[-1] else 0.8
        return {
            "status": "ok",
            "test_acc": acc,
            "best_epoch": 5,
            "epochs_run": 9,
            "stopped_early": True,
            "train_seconds": "1.0",
            "wall_seconds": "2",
        }

    monkeypatch.setitem(study["main"].__globals__, "run_one", fake_run)
    argv = ["--datasets", "ArrowHead", "--models", "gru", "gru_d", "--missing", "0", "0.5"]
    argv += ["--seeds", "0", "1", "--results", str(results), "--runs", str(tmp_path / "runs")]
    argv += ["--out", str(tmp_path / "results.md")]
    assert study["main"](argv) == 0
    assert len(calls) == 8 and len(study["read_rows"](results)) == 8
    calls.clear()
    assert study["main"](argv) == 0 and calls == []  # everything is done: nothing runs again
    argv[argv.index("1")] = "2"  # a new seed: only its runs
    assert study["main"](argv) == 0 and len(calls) == 4
    text = (tmp_path / "results.md").read_text()
    assert "Coverage: 8 of 8 runs" in text  # the page covers the seeds asked for (0 and 2)
    row = next(line for line in text.splitlines() if line.startswith("| gru |"))
    assert "85.0 ± 7.1 (2)" in row
    summary = next(line for line in text.splitlines() if line.startswith("| ArrowHead |"))
    assert "70.3" in summary and "81.4" in summary and "yes (+14.7)" in summary


def test_the_page_marks_missing_runs_and_unverified_figures(tmp_path):
    rows = [
        {
            "dataset": "JapaneseVowels",
            "missing": 0.0,
            "model": "gru",
            "seed": 0,
            "status": "ok",
            "test_acc": 0.95,
            "wall_seconds": "10",
        },
        {
            "dataset": "JapaneseVowels",
            "missing": 0.5,
            "model": "gru",
            "seed": 0,
            "status": "timeout",
            "test_acc": None,
            "wall_seconds": "600",
        },
    ]
    text = study["render"](rows, ["gru", "ode_rnn"], ["JapaneseVowels", "PLAID"], [0.0, 0.5], [0])
    assert "Coverage: 1 of 8 runs" in text and "1 more stopped" in text
    assert "| PLAID | not run yet |" in text and "not verified" in text
    assert "JapaneseVowels, 50% dropped, gru, seed 0: timeout after 600 s" in text
    assert "| ode_rnn | – | – |" in text
