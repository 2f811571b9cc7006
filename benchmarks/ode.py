"""Speed and memory of the ``solvers`` ODE solvers against torchdiffeq, in one process.

Workload: a two-layer MLP vector field (state → 128 → state, tanh), float32, solved over
t = [0, 1] (two outputs), then ``loss = ys[:, -1].pow(2).mean()`` and ``loss.backward()``.
Every case times forward and backward together.

    python benchmarks/ode.py [--device cpu|cuda] [--steps 100 1000] [--batch 256]
                             [--state 128] [--repeats 7] [--out docs/benchmarks.md] [--quick]
                             [--threads N]

``--quick`` is a smoke run (batch 16, state 16, RK4 with 10 and 20 steps, 2 repeats).

Without ``--out`` the tables are printed. With ``--out FILE`` the section of FILE for this
device ("## CPU" or "## GPU") is written or replaced; the other section is kept.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import solvers  # noqa: E402

HIDDEN = 128
WARMUP = 2
# dopri5 tolerances and the scale of its vector field: chosen so that the adaptive solve of
# the default workload takes a few dozen steps (the number is reported with the table).
DOPRI5_RTOL, DOPRI5_ATOL = 1e-6, 1e-8
DOPRI5_SCALE = 32.0

INTRO = """\
# Benchmarks

What is measured: one forward solve and one backward pass (`loss.backward()`) through it,
timed together, for this package's native solvers and for torchdiffeq called directly in the
same process, on the same vector field, initial state and parameters. The vector field is a
two-layer MLP (state → 128 → state, tanh) in float32; the solve goes from t = 0 to t = 1 and
returns the state at both times; the loss is the mean square of the final state, and the
gradients flow to the MLP's parameters. Fixed-step cases use RK4 with `dt = 1/steps` (note
that torchdiffeq's `rk4` is the 3/8-rule variant; both take four evaluations per step).
The adaptive case uses dopri5 with `rtol = 1e-6`, `atol = 1e-8` and the MLP's output
multiplied by a constant so that the solve takes a few dozen steps; the native solver keeps
one step size per sample while torchdiffeq keeps one for the whole batch, so their step
counts differ and are reported.

How: each case runs twice untimed (warm-up), then `--repeats` timed rounds, each of which
runs every case of the workload once (round robin, so that a disturbance from another
process on the machine spreads over all cases instead of falling on one); the table gives
the median, the minimum–maximum over the timed runs, and the ratio of medians to
torchdiffeq `odeint` of the same workload (below 1: faster than torchdiffeq). On a GPU the
clock is read after `torch.cuda.synchronize()`. Memory comes from one more, untimed run.
"Saved for backward" is the size of the tensors that autograd keeps from the forward pass
for the backward pass, collected with `torch.autograd.graph.saved_tensors_hooks` (each
storage counted once; the parameters are included). It is not the process's resident memory
and it does not include the recomputation that the checkpoint adjoint does during the
backward pass, but it is the quantity that the choice of adjoint changes. On a GPU the
tables also give the peak of `torch.cuda.max_memory_allocated()` over forward and backward,
above what was allocated before the run. "NFE" counts evaluations of the vector field in
the forward and in the backward pass (recomputation included). "grad diff" is the relative
L2 distance of each case's parameter gradient from torchdiffeq `odeint`'s: a check that all
cases compute the same thing (up to the methods' accuracy; RK4 variants and step-size
sequences differ). Absolute times depend on the machine; compare ratios within one run.
"""


# ---------------------------------------------------------------------------------------------
# The workload


class MLPField(nn.Module):
    """``f(t, y) = scale · W2 tanh(W1 y + b1) + b2``; ``t`` is ignored. Counts its calls."""

    def __init__(self, state: int, hidden: int, scale: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state, hidden), nn.Tanh(), nn.Linear(hidden, state))
        self.scale = scale
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        out = self.net(y)
        return out if self.scale == 1.0 else out * self.scale


# An implementation maps (field, y0, t) to (final state (batch, state), native Solution | None).
Impl = Callable[[MLPField, torch.Tensor, torch.Tensor], tuple[torch.Tensor, object]]


def native(method: str, adjoint: str, **kw) -> Impl:
    def run(f, y0, t):
        sol = solvers.solve(solvers.ODE(f), y0, t, method=method, adjoint=adjoint, **kw)
        return sol.ys[:, -1], sol

    return run


def peer(adjoint: bool, **kw) -> Impl:
    import torchdiffeq

    def run(f, y0, t):
        if adjoint:
            ys = torchdiffeq.odeint_adjoint(f, y0, t, **kw)
        else:
            ys = torchdiffeq.odeint(f, y0, t, **kw)
        return ys[-1], None

    return run


@dataclass
class Workload:
    key: str
    title: str
    scale: float
    impls: dict[str, Impl]
    adaptive: bool = False
    results: dict[str, Result] = field(default_factory=dict)


REFERENCE = "torchdiffeq odeint"


def workloads(steps: list[int]) -> list[Workload]:
    out = []
    for n in steps:
        dt = 1.0 / n
        opts = dict(method="rk4", options=dict(step_size=dt))
        out.append(
            Workload(
                key=f"rk4-{n}",
                title=f"RK4, {n} fixed steps (dt = 1/{n})",
                scale=1.0,
                impls={
                    "native direct": native("rk4", "direct", dt=dt),
                    "native checkpoint": native("rk4", "checkpoint", dt=dt),
                    "native backsolve": native("rk4", "backsolve", dt=dt),
                    REFERENCE: peer(False, **opts),
                    "torchdiffeq odeint_adjoint": peer(True, **opts),
                },
            )
        )
    tol = dict(rtol=DOPRI5_RTOL, atol=DOPRI5_ATOL)
    tdq = dict(method="dopri5", **tol)
    out.append(
        Workload(
            key="dopri5",
            title=f"dopri5, adaptive (rtol = {DOPRI5_RTOL:g}, atol = {DOPRI5_ATOL:g})",
            scale=DOPRI5_SCALE,
            adaptive=True,
            impls={
                "native direct": native("dopri5", "direct", **tol),
                "native checkpoint": native("dopri5", "checkpoint", **tol),
                "native backsolve": native("dopri5", "backsolve", **tol),
                REFERENCE: peer(False, **tdq),
                "torchdiffeq odeint_adjoint": peer(True, **tdq),
                # The native backsolve measures only state and adjoint in its backward error
                # norm (a seminorm); torchdiffeq does so only when asked.
                "torchdiffeq odeint_adjoint, seminorm": peer(
                    True, adjoint_options=dict(norm="seminorm"), **tdq
                ),
            },
        )
    )
    return out


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Result:
    times_ms: list[float]
    saved_bytes: int
    peak_bytes: int | None
    nfe_forward: int
    nfe_backward: int
    grad: torch.Tensor
    steps: str = ""  # adaptive step counts, in words

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_run(impl: Impl, f: MLPField, y0, t):
    for p in f.parameters():
        p.grad = None
    out, sol = impl(f, y0, t)
    out.pow(2).mean().backward()
    return sol


def _saved_for_backward(impl: Impl, f: MLPField, y0, t):
    """Bytes of the storages that autograd saves in the forward pass; NFEs; the gradient."""
    saved: dict[int, tuple[int, torch.Tensor]] = {}

    def pack(x):
        s = x.untyped_storage()
        # Keep a reference until the count is done, so that no address is reused meanwhile.
        saved[s.data_ptr()] = (s.nbytes(), x)
        return x

    for p in f.parameters():
        p.grad = None
    f.calls = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out, sol = impl(f, y0, t)
        loss = out.pow(2).mean()
    nfe_fwd = f.calls
    nbytes = sum(b for b, _ in saved.values())
    saved.clear()
    loss.backward()
    nfe_bwd = f.calls - nfe_fwd
    grad = torch.cat([p.grad.detach().flatten() for p in f.parameters()]).double().cpu()
    return nbytes, nfe_fwd, nfe_bwd, grad, sol


def _peak(impl: Impl, f: MLPField, y0, t, device) -> int:
    for p in f.parameters():
        p.grad = None
    _sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    _one_run(impl, f, y0, t)
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def _steps_in_words(nfe_fwd: int, sol) -> str:
    # dopri5 (FSAL): one evaluation at t0, one to choose the first step, six per attempt.
    attempts = (nfe_fwd - 2) / 6
    text = f"{attempts:.0f} attempted steps" if attempts == int(attempts) else ""
    if sol is not None:
        acc = sol.stats.num_accepted_steps.double()
        rej = sol.stats.num_rejected_steps.double()
        text = (
            f"{attempts:.0f} loop iterations; per sample {acc.mean():.1f} accepted "
            f"({acc.min():.0f}–{acc.max():.0f}) and {rej.mean():.1f} rejected on average"
        )
    return text


def _time_one(impl: Impl, f: MLPField, y0, t, device) -> float:
    _sync(device)
    start = time.perf_counter()
    _one_run(impl, f, y0, t)
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def measure(w: Workload, f: MLPField, y0, t, device, repeats: int) -> None:
    """Time every implementation of ``w`` and fill ``w.results``.

    The timed runs go round robin over the implementations, so that a disturbance from
    outside (another process on the machine) spreads over all of them instead of falling on
    one.
    """
    for impl in w.impls.values():
        for _ in range(WARMUP):
            _one_run(impl, f, y0, t)
    times: dict[str, list[float]] = {name: [] for name in w.impls}
    for r in range(repeats):
        for name, impl in w.impls.items():
            times[name].append(_time_one(impl, f, y0, t, device))
        _progress(
            f"[{w.key}] round {r + 1}/{repeats}: "
            + ", ".join(f"{name} {ts[-1]:.0f}" for name, ts in times.items())
            + " ms"
        )
    for name, impl in w.impls.items():
        nbytes, nfe_fwd, nfe_bwd, grad, sol = _saved_for_backward(impl, f, y0, t)
        peak = _peak(impl, f, y0, t, device) if device.type == "cuda" else None
        steps = _steps_in_words(nfe_fwd, sol) if w.adaptive else ""
        w.results[name] = Result(times[name], nbytes, peak, nfe_fwd, nfe_bwd, grad, steps)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Reporting


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def table(w: Workload, device: torch.device) -> str:
    ref = w.results[REFERENCE]
    cols = ["implementation", "median ms", "spread (min–max) ms", "vs torchdiffeq odeint"]
    cols.append("saved for backward MB")
    if device.type == "cuda":
        cols.append("peak GPU memory MB")
    cols += ["NFE fwd + bwd", "grad diff"]
    lines = [f"### {w.title}", ""]
    if w.scale != 1.0:
        lines += [f"Vector field: {w.scale:g} × MLP(y).", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    gref = ref.grad.norm().clamp_min(1e-300)
    for name, r in w.results.items():
        row = [
            name,
            f"{r.median:.1f}",
            f"{min(r.times_ms):.1f}–{max(r.times_ms):.1f}",
            f"{r.median / ref.median:.2f}×",
            _mb(r.saved_bytes),
        ]
        if device.type == "cuda":
            row.append(_mb(r.peak_bytes))
        row.append(f"{r.nfe_forward} + {r.nfe_backward}")
        row.append(f"{float((r.grad - ref.grad).norm() / gref):.1e}")
        lines.append("| " + " | ".join(row) + " |")
    if w.adaptive:
        lines.append("")
        lines.append("Forward steps:")
        lines.append("")
        native_steps = w.results["native direct"].steps
        lines.append(f"- native: {native_steps}")
        lines.append(f"- torchdiffeq: {w.results[REFERENCE].steps}")
    lines.append("")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except (OSError, IndexError):
        return "?"


def header(args, device: torch.device, load: tuple[str, str]) -> str:
    import torchdiffeq

    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
        machine += f"; host CPU {_cpu_model()}"
    else:
        machine = f"{_cpu_model()}, {os.cpu_count()} logical cores, "
        machine += f"{torch.get_num_threads()} torch threads"
    command = "python benchmarks/ode.py " + shlex.join(sys.argv[1:])
    fewer = ""
    if args.repeats < FULL["repeats"] and not args.quick:
        fewer = f" (fewer than the default {FULL['repeats']}, to keep the run short)"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"- Machine: {machine}",
            f"- torch {torch.__version__}, torchdiffeq {torchdiffeq.__version__}, "
            f"Python {platform.python_version()}",
            f"- Date: {date}; commit {_git_commit()}",
            f"- Command: `{command}`",
            f"- 1-minute load average of the machine at start / end: {load[0]} / {load[1]} "
            "(other processes compete for the cores when it exceeds the number of threads)",
            f"- Batch {args.batch}, state {args.state}, hidden {HIDDEN}, float32; "
            f"{WARMUP} warm-up runs, then {args.repeats} timed runs per case{fewer}",
            "",
        ]
    )


SECTIONS = {"cpu": "## CPU", "cuda": "## GPU"}


def _placeholder(kind: str) -> str:
    flag = "cuda" if kind == "cuda" else "cpu"
    return (
        f"{SECTIONS[kind]}\n\nNot measured yet. Run "
        f"`python benchmarks/ode.py --device {flag} --out docs/benchmarks.md`.\n"
    )


def _split_sections(text: str) -> dict[str, str]:
    """The "## CPU" and "## GPU" sections of an existing file, by device type."""
    found = {}
    heads = list(re.finditer(r"^## .*$", text, re.M))
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        for kind, title in SECTIONS.items():
            if m.group(0).strip() == title:
                found[kind] = text[m.start() : end].rstrip() + "\n"
    return found


def write_report(path: Path, device: torch.device, section: str) -> None:
    sections = _split_sections(path.read_text()) if path.exists() else {}
    sections[device.type] = section
    parts = [INTRO]
    for kind in SECTIONS:
        parts.append(sections.get(kind) or _placeholder(kind))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


# ---------------------------------------------------------------------------------------------


FULL = dict(steps=[100, 1000], batch=256, state=128, repeats=7)
QUICK = dict(steps=[10, 20], batch=16, state=16, repeats=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, nargs="+", help="RK4 step counts (default: 100 1000)")
    p.add_argument("--batch", type=int, help="default: 256")
    p.add_argument("--state", type=int, help="default: 128")
    p.add_argument("--repeats", type=int, help="timed runs per case (default: 7)")
    p.add_argument("--out", type=Path, default=None, help="markdown file to write or update")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batch 16, state 16, steps 10 and 20, 2 repeats (explicit flags win)",
    )
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch", "state", "repeats", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if min(args.steps) < 1:
        p.error("--steps must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torchdiffeq  # noqa: F401
    except ImportError:
        print(
            'benchmarks/ode.py compares against torchdiffeq: pip install "ctrnn[backends]"',
            file=sys.stderr,
        )
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/ode.py: --device cuda, but no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t = torch.tensor([0.0, 1.0], device=device)
    gen = torch.Generator().manual_seed(0)
    y0 = torch.randn(args.batch, args.state, generator=gen).to(device)
    load_start = _loadavg()
    body = []
    for w in workloads(args.steps):
        torch.manual_seed(0)
        f = MLPField(args.state, HIDDEN, w.scale).to(device)
        start = time.perf_counter()
        measure(w, f, y0, t, device, args.repeats)
        _progress(f"[{w.key}] done in {time.perf_counter() - start:.0f} s")
        body.append(table(w, device))
    section = (
        f"{SECTIONS[device.type]}\n\n{header(args, device, (load_start, _loadavg()))}\n"
        + "\n".join(body)
    )
    print(section)
    if args.out is not None:
        write_report(args.out, device, section)
        print(f"wrote the {SECTIONS[device.type]} section of {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
