"""Smoke tests of benchmarks/cde.py and benchmarks/sde.py: their quick runs write their own
subsections of one file, and the subsection update keeps everything else."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        # One thread: on a busy two-core machine, two spinning OpenMP threads per tiny op
        # make the run many times slower.
        [sys.executable, str(BENCH / script), "--quick", "--threads", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _cpu(text: str) -> str:
    return text.split("## CPU", 1)[1].split("## GPU", 1)[0]


def _subsection(section: str, name: str) -> str:
    rest = section.split(f"### {name}\n", 1)[1]
    for other in ("ODE", "CDE", "SDE"):
        rest = rest.split(f"\n### {other}\n", 1)[0]
    return rest


HEAD = "| implementation | median ms | spread (min–max) ms |"


def _seeded(tmp_path, name: str, body: str) -> Path:
    """A benchmarks file whose CPU section already holds subsection ``name``."""
    out = tmp_path / "b.md"
    _load("_common").write_report(out, torch.device("cpu"), name, f"### {name}\n\n{body}\n")
    return out


def test_quick_cde_writes_its_subsection_and_keeps_the_sde_one(tmp_path):
    pytest.importorskip("torchcde")
    out = _seeded(tmp_path, "SDE", "sde numbers, kept")
    proc = _run("cde.py", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks")
    assert "**CDE** (`benchmarks/cde.py`)" in text and "**SDE** (`benchmarks/sde.py`)" in text
    cpu = _cpu(text)
    assert "Not measured yet" not in cpu
    assert "Not measured yet" in text.split("## GPU", 1)[1]
    assert cpu.index("### CDE\n") < cpu.index("### SDE\n")
    assert _subsection(cpu, "SDE").strip() == "sde numbers, kept"

    cde = _subsection(cpu, "CDE")
    assert "Command: `python benchmarks/cde.py --quick --threads 1 --out" in cde
    for title in ("#### RK4 on 10 irregular observations", "#### RK4 on 20 irregular observations"):
        assert title in cde
    assert cde.count(HEAD) == 2
    for row in ("native direct", "native checkpoint", "native backsolve", "torchcde adjoint"):
        assert cde.count(f"| {row} |") == 2, row
    # one RK4 step per observation interval on both sides: 4 (T - 1) + 1 shape check
    assert cde.count("| 37 + 0 |") == 2 and cde.count("| 77 + 0 |") == 2


def test_quick_sde_writes_its_subsection_and_keeps_the_cde_one(tmp_path):
    pytest.importorskip("torchsde")
    out = _seeded(tmp_path, "CDE", "cde numbers, kept")
    proc = _run("sde.py", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    cpu = _cpu(text)
    assert "Not measured yet" not in cpu
    assert cpu.index("### CDE\n") < cpu.index("### SDE\n")
    assert _subsection(cpu, "CDE").strip() == "cde numbers, kept"

    sde = _subsection(cpu, "SDE")
    assert "Command: `python benchmarks/sde.py --quick --threads 1 --out" in sde
    for title in (
        "#### Itô Euler–Maruyama, 10 steps",
        "#### Itô Euler–Maruyama, 20 steps",
        "#### Stratonovich Heun, 10 steps",
        "#### Stratonovich Heun, 20 steps",
    ):
        assert title in sde
    assert sde.count(HEAD) == 4
    assert sde.count("| torchsde sdeint, BrownianPath |") == 4
    assert sde.count("| native backsolve |") == 2
    assert sde.count("| torchsde sdeint_adjoint, BrownianPath |") == 2


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_each_script_replaces_only_its_own_subsection(tmp_path):
    common = _load("_common")
    out = tmp_path / "b.md"
    # the layout before subsections: ode.py's tables right under the device heading
    legacy = "### RK4, 100 fixed steps\n\nold ode numbers\n"
    gpu = "## GPU\n\n### SDE\n\ngpu sde numbers\n"
    out.write_text("# Benchmarks\n\nold intro\n\n## CPU\n\n" + legacy + "\n" + gpu)
    cpu = torch.device("cpu")
    common.write_report(out, cpu, "CDE", "### CDE\n\ncde numbers\n")
    text = out.read_text()
    assert "old intro" not in text and text.startswith(common.INTRO)
    section = _cpu(text)
    # the legacy content became the ODE subsection, its headings one level down
    assert "### ODE\n\n#### RK4, 100 fixed steps\n\nold ode numbers" in section
    assert section.index("### ODE") < section.index("### CDE") and "cde numbers" in section
    assert text.rstrip().endswith("### SDE\n\ngpu sde numbers")

    common.write_report(out, cpu, "SDE", "## CPU\n\n### SDE\n\nsde numbers\n")
    common.write_report(out, cpu, "CDE", "cde numbers, again\n")  # heading added
    text = out.read_text()
    section = _cpu(text)
    assert [line for line in section.splitlines() if line.startswith("### ")] == [
        "### ODE",
        "### CDE",
        "### SDE",
    ]
    assert "old ode numbers" in section and "sde numbers" in section
    assert "cde numbers, again" in section and "cde numbers\n" not in section
    assert "gpu sde numbers" in text.split("## GPU", 1)[1]

    # ode.py's own entry point replaces the ODE subsection only
    ode = _load("ode")
    ode.write_report(out, cpu, "## CPU\n\nnew ode numbers\n")
    section = _cpu(out.read_text())
    assert "old ode numbers" not in section and "new ode numbers" in section
    assert "cde numbers, again" in section and "sde numbers" in section


def test_placeholder_names_every_script(tmp_path):
    common = _load("_common")
    out = tmp_path / "b.md"
    common.write_report(out, torch.device("cuda"), "SDE", "### SDE\n\ngpu sde numbers\n")
    cpu = _cpu(out.read_text())
    assert "Not measured yet" in cpu
    for script in ("ode.py", "cde.py", "sde.py"):
        assert f"python benchmarks/{script} --device cpu" in cpu
