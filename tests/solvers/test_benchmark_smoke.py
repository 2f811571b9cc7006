"""Smoke test of benchmarks/ode.py: the quick run writes both device sections and the tables."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchdiffeq")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ode.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        # One thread: on a busy two-core machine, two spinning OpenMP threads per tiny op
        # make the run many times slower.
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quick_benchmark_writes_tables_and_both_sections(tmp_path):
    out = tmp_path / "b.md"
    proc = _run("--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks")
    assert "## CPU" in text and "## GPU" in text
    cpu = text.split("## CPU", 1)[1].split("## GPU", 1)[0]
    gpu = text.split("## GPU", 1)[1]
    assert "Not measured yet" in gpu
    assert "Not measured yet" not in cpu
    for title in ("### RK4, 10 fixed steps", "### RK4, 20 fixed steps", "### dopri5, adaptive"):
        assert title in cpu
    assert cpu.count("| implementation | median ms | spread (min–max) ms |") == 3
    for row in (
        "| native direct |",
        "| native checkpoint |",
        "| native backsolve |",
        "| torchdiffeq odeint | ",
        "| torchdiffeq odeint_adjoint |",
    ):
        assert cpu.count(row) == 3, row
    assert "saved for backward MB" in cpu
    assert "Command: `python benchmarks/ode.py --quick --threads 1 --out" in cpu


def _load_script():
    spec = importlib.util.spec_from_file_location("benchmarks_ode", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_rewriting_one_section_keeps_the_other(tmp_path):
    bench = _load_script()
    out = tmp_path / "b.md"
    gpu = "## GPU\n\nmeasured elsewhere, keep me\n"
    out.write_text("# Benchmarks\n\nold intro\n\n## CPU\n\nold numbers\n\n" + gpu)
    bench.write_report(out, torch.device("cpu"), "## CPU\n\nnew numbers\n")
    text = out.read_text()
    assert "old intro" not in text and "old numbers" not in text
    assert "new numbers" in text
    assert text.rstrip().endswith("measured elsewhere, keep me")
    assert text.index("## CPU") < text.index("## GPU")
    # and the other way round: a GPU write keeps the CPU section just written
    bench.write_report(out, torch.device("cuda"), "## GPU\n\ngpu numbers\n")
    text = out.read_text()
    assert "new numbers" in text and "gpu numbers" in text and "keep me" not in text


def test_missing_other_section_gets_a_placeholder(tmp_path):
    bench = _load_script()
    out = tmp_path / "b.md"
    bench.write_report(out, torch.device("cuda"), "## GPU\n\ngpu numbers\n")
    text = out.read_text()
    cpu = text.split("## CPU", 1)[1].split("## GPU", 1)[0]
    assert "Not measured yet" in cpu and "--device cpu" in cpu
