"""benchmarks/accuracy.py: the commands it runs and the table it writes from finished runs."""

import json
import runpy
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
study = runpy.run_path(str(ROOT / "benchmarks" / "accuracy.py"))


def test_commands_carry_the_setting_and_model_flags_once():
    argv = study["command"]("bm30", "neural_cde", 2, Path("runs/x"), "/data/bm")
    flags = argv[2:]
    assert argv[:2] == ["ctrnn", "train"]
    # BasicMotions replaces the common epochs and batch size instead of repeating them
    assert flags.count("--epochs") == 1 and flags[flags.index("--epochs") + 1] == "60"
    assert flags[flags.index("--batch-size") + 1] == "8"
    assert flags[flags.index("--solver") + 1] == "rk4" and "--data-root" in flags
    assert flags[flags.index("--seed") + 1] == "2" and flags[-2:] == ["--out", "runs/x"]
    jv = study["command"]("jv30", "gru_d", 0, Path("r"), "/data/bm")
    assert "--data-root" not in jv and jv[jv.index("--missing") + 1] == "0.3"


def test_the_table_is_built_from_finished_runs(tmp_path):
    # finished runs are reused: nothing is trained when every result.json exists
    for seed, acc in enumerate((0.90, 0.95, 1.0)):
        run = tmp_path / "runs" / "jv30" / "gru" / f"seed{seed}"
        run.mkdir(parents=True)
        result = {"test_acc": acc, "seconds": 30.0, "epochs_run": 30}
        (run / "result.json").write_text(json.dumps(result))
    notes = tmp_path / "notes.md"
    notes.write_text("## Reading the tables\n")
    out = tmp_path / "results.md"
    argv = ["--settings", "jv30", "--models", "gru", "--runs", str(tmp_path / "runs")]
    assert study["main"]([*argv, "--out", str(out), "--notes", str(notes)]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| gru |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "95.0 ± 5.0" and cells[2] == "90.0–100.0" and cells[3] == "3"
    assert cells[4] == "1.00"  # seconds per epoch
    command = shlex.split(cells[5].strip("`"))
    assert command[command.index("--out") + 1] == "runs/jv30/gru/seed{seed}"
    assert text.endswith("## Reading the tables\n")
