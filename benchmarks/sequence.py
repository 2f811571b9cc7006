"""Sequence models against torch.nn.GRU: forward + backward cost per time step, in one run.

Every model of ``ctrnn.models.available()`` is built by ``ctrnn.models.create`` with its
defaults (its default mode, scheme and solver) at the same sizes, run over the same batch
of series (T unit-spaced observations, no missing values) and differentiated; the loss is
the mean square of ``h_n``. ``torch.nn.GRU`` (batch first, oneDNN on the CPU, cuDNN on a GPU)
runs on the same input in the same process. Each case: warm-up runs, then the median of the
timed runs; one torch thread by default (``torch.set_num_threads(1)``), as most users train
on the CPU. Run it with ``nice -n 10`` on a shared machine.

    python benchmarks/sequence.py --out docs/benchmarks.md        # writes "## Sequence models"
    python benchmarks/sequence.py --quick                          # smoke run, tiny sizes

With ``--out`` only the "## Sequence models" section of the file is replaced (added at the
end when missing); everything else in the file is kept.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ctrnn.models as M  # noqa: E402  (after the path set-up above)

SECTION = "## Sequence models"
WARMUP = 2
FULL = dict(batch=64, hidden=64, channels=32, length=1000, solve_length=100, repeats=5)
QUICK = dict(batch=4, hidden=8, channels=3, length=12, solve_length=6, repeats=2)


def machine() -> str:
    """The CPU's model name, as ``lscpu`` reports it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load() -> str:
    """The machine's 1-minute load average (other processes compete for the cores)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except (OSError, IndexError):
        return "?"


def timed(step, device, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``step`` after :data:`WARMUP` untimed ones."""
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def solves(model) -> bool:
    """Whether the model's default mode solves a differential equation (its cost per step
    is then that of a solver's steps, measured on shorter series)."""
    return model.formulation is not None and getattr(model, "mode", "continuous") == "continuous"


def gru_case(args, x, device):
    gru = nn.GRU(args.channels, args.hidden, batch_first=True, device=device)

    def step():
        gru.zero_grad(set_to_none=True)
        out, _ = gru(x)
        out[:, -1].pow(2).mean().backward()

    return step


def model_case(name, args, x, device):
    model = M.create(name, input_size=args.channels, hidden_size=args.hidden).to(device)

    def step():
        model.zero_grad(set_to_none=True)
        model(x)[1].pow(2).mean().backward()

    return model, step


def describe(model) -> str:
    mode = getattr(model, "mode", "continuous" if model.formulation is not None else "discrete")
    if mode == "discrete" and getattr(model, "scheme", None) and model.formulation is not None:
        return f"discrete, {model.scheme}"
    if mode == "continuous" and getattr(model, "solver", None):
        return "continuous, " + ", ".join(f"{k}={v}" for k, v in model.solver.items())
    return mode


def run(args) -> str:
    device = torch.device(args.device)
    load_start = load()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.length, args.channels, generator=g).to(device)
    inputs = {args.length: x, args.solve_length: x[:, : args.solve_length]}
    refs = {}

    def reference(length):
        if length not in refs:
            step = gru_case(args, inputs[length], device)
            refs[length] = statistics.median(timed(step, device, args.repeats))
        return refs[length]

    rows = [("torch.nn.GRU", "cuDNN" if device.type == "cuda" else "oneDNN", args.length)]
    for name in args.models:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        torch.manual_seed(0)
        model, _ = model_case(name, args, x, device)
        length = args.solve_length if solves(model) else args.length
        model, step = model_case(name, args, inputs[length], device)
        times = timed(step, device, args.repeats)
        rows.append((name, describe(model), length, statistics.median(times)))
    if any(length == args.solve_length for *_, length, _t in rows[1:]):
        rows.insert(1, ("torch.nn.GRU", rows[0][1], args.solve_length))
    for row in rows:
        if len(row) == 3:
            reference(row[2])
    lines = [
        f"- Machine: {machine()}; {torch.get_num_threads()} torch thread(s); device {device}",
        f"- torch {torch.__version__}, Python {platform.python_version()}; commit {commit()}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- Command: `python benchmarks/sequence.py {shlex.join(sys.argv[1:])}`",
        f"- 1-minute load average at start / end: {load_start} / {load()} (the machine has "
        f"{os.cpu_count()} logical cores; above that, other processes compete for them)",
        f"- Batch {args.batch}, hidden {args.hidden}, {args.channels} input channels, "
        f"T unit-spaced observations, float32; forward + backward of the mean square of h_n; "
        f"median of {args.repeats} runs after {WARMUP} warm-up runs",
        "- Each model as `ctrnn.models.create(name, input_size, hidden_size)` builds it: its "
        f"default mode, scheme and solver. T = {args.length}, except for the models whose "
        f"default mode solves a differential equation: T = {args.solve_length}, against "
        "nn.GRU at the same T",
        "",
        "| model | mode | T | ms per run | µs per step | ratio to nn.GRU |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        name, how, length = row[:3]
        t = row[3] if len(row) > 3 else reference(length)
        lines.append(
            f"| {name} | {how} | {length} | {1e3 * t:.1f} | {1e6 * t / length:.1f} | "
            f"{t / reference(length):.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, body: str) -> None:
    """Replace the "## Sequence models" section of ``path`` (add it at the end)."""
    text = path.read_text() if path.exists() else ""
    section = f"{SECTION}\n\n{body}"
    m = re.search(rf"^{re.escape(SECTION)}[ \t]*$", text, re.M)
    if m is None:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    else:
        nxt = re.search(r"^## ", text[m.end() :], re.M)
        end = m.end() + nxt.start() if nxt else len(text)
        tail = text[end:]
        text = text[: m.start()] + section + ("\n" + tail if tail else "")
    path.write_text(text)


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int)
    p.add_argument("--hidden", type=int)
    p.add_argument("--channels", type=int)
    p.add_argument("--length", type=int, help="T, the number of observations (default 1000)")
    p.add_argument(
        "--solve-length",
        type=int,
        help="T for the models whose default mode solves a differential equation (default 100)",
    )
    p.add_argument("--repeats", type=int)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--models", nargs="+", help="default: every model of available()")
    p.add_argument("--quick", action="store_true", help="smoke run at tiny sizes")
    p.add_argument("--out", type=Path, help="markdown file whose section to write")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("batch", "hidden", "channels", "length", "solve_length", "repeats", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be at least 1")
    unknown = [n for n in args.models or () if n not in M.available()]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; available: {', '.join(M.available())}")
    args.models = list(args.models or M.available())
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/sequence.py: --device cuda, but no CUDA device", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    body = run(args)
    print(f"{SECTION}\n\n{body}")
    if args.out is not None:
        write_section(args.out, body)
        print(f"wrote the {SECTION!r} section of {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
