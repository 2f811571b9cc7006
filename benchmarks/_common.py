"""What the benchmark scripts share: the timing protocol, the memory measurements, the tables
and the update of docs/benchmarks.md.

A *model* is an ``nn.Module`` whose parameters receive the gradients and which has an integer
attribute ``calls``: the number of vector-field evaluations so far (the scripts reset it).
An *implementation* is a callable ``impl(model, *inputs) -> (out, solution)``: it solves,
returns the tensor whose mean square is the loss and the native ``Solution`` (or ``None`` for
a peer library).

docs/benchmarks.md holds the introduction, then one section per device ("## CPU", "## GPU"),
and in each section one subsection per script ("### ODE", "### CDE", "### SDE"). A script
replaces only its own subsection of its device's section and keeps everything else.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WARMUP = 2

INTRO = """\
# Benchmarks

What is measured: one forward solve and one backward pass (`loss.backward()`) through it,
timed together, for this package's native solvers and for the established PyTorch library of
the same kind called directly in the same process (torchdiffeq for ODEs, torchcde for CDEs,
torchsde for SDEs), on the same vector field, initial state and parameters, in float32.

**ODE** (`benchmarks/ode.py`). The workload of issue 12: batch 32, state 32, the vector
field a two-layer MLP (32 → 64 → 32, tanh); the solve goes from t = 0 to t = 1 and returns
the state at both times; the loss is the mean square of the final state, and the gradients
flow to the MLP's parameters. Fixed-step cases use RK4 with `dt = 1/steps` (10 and 100
steps; torchdiffeq's `rk4` is the 3/8-rule variant; both take four evaluations per step);
their rows: a hand-written eager RK4 loop with Python-float times and steps (the floor for
an eager solver), native `solve` with each adjoint, `solvers.prepare(..., compile=True)`
(one RK4 step compiled by `torch.compile`, forward and backward, called by the Python loop;
the compilation is the first call, reported under the table), torchdiffeq, and diffrax
(`jax.jit` of `jax.value_and_grad` of the same loss, on the CPU, with the same RK4 tableau,
`RecursiveCheckpointAdjoint` and `BacksolveAdjoint`). The adaptive case uses dopri5 with
`rtol = 1e-6`, `atol = 1e-8` and the MLP's output multiplied by 32 so that the solve takes a
few dozen steps; the native solver and torchode keep one step size per sample while
torchdiffeq keeps one for the whole batch, so their step counts differ and are reported. The
per-sample case (batch 64) gives each sample 50 output times of its own: the native solver
and torchode solve the batch at once, torchdiffeq one sample at a time (its reference there).
Reference elsewhere: torchdiffeq `odeint`.

**CDE** (`benchmarks/cde.py`). A neural CDE on irregularly sampled series: 8 channels
observed at T = 100 or 1000 times shared by the batch, drawn uniformly on [0, 1] (seeded),
sorted, the first set to 0; channel 0 is the time itself, channels 1–7 are
`sin(2π(a·t + b))` with a frequency `a` in [0.5, 1.5) and a phase `b` in [0, 1) per sample
and channel. The control X is the cubic Hermite interpolation with backward differences of
the observations: `solvers.interpolate(values, times, kind="hermite")` natively,
`torchcde.hermite_cubic_coefficients_with_backward_differences` and `torchcde.CubicSpline`
for torchcde; both paths are built once, before the timing (torchcde treats the coefficients
as preprocessing), and agree to round-off. The hidden state (64) starts at
`z0 = Linear(8 → 64)(X(t0))`; the vector field is `f(z) = tanh(MLP(z))` reshaped to
(64, 8), the MLP being 64 → 128 → 512 with tanh, and `dz = f(z) dX`. Both sides take exactly
one RK4 step per observation interval. Natively the output times are the observation times
and `dt` is the largest spacing, so that each interval is one step (`⌈Δt/dt⌉ = 1`; the
native solver cannot step on irregular knots otherwise). torchcde gets
`cdeint(X, f, z0, X.interval, method="rk4", options=dict(grid_constructor=...))`, the grid
being the observation times: two outputs, and torchdiffeq's fixed-grid solver steps from
knot to knot (also backwards in the adjoint). Asking torchcde for all T outputs instead
(`t = times`, no step size: the same steps) is slower (2.6× in a trial with T = 1000, batch
64), because torchdiffeq writes each output into a preallocated (T, batch, hidden) tensor
and the backward pass of every such write copies the whole gradient tensor. The native
solver keeps its T outputs at little cost in time, but its `checkpoint` and `backsolve` keep
them for the backward pass (batch × T × hidden numbers), so their saved-for-backward memory
grows with T where that of torchcde's adjoint, with two outputs, does not. The NFE columns
confirm the steps: 4 evaluations per interval on both sides, forward and (for the adjoints)
backward, plus one call by each library to check shapes. The loss is the mean square of
the hidden state at the last observation; the gradients flow to f and to the map that makes
`z0`. Cases: native `direct`, `checkpoint` and `backsolve`; torchcde `adjoint=False`
(the reference) and `adjoint=True` (torchdiffeq's `odeint_adjoint`, also one RK4 step per
interval backwards). torchdiffeq's `rk4` is again the 3/8 rule, so the gradients differ by
the method's error, not by round-off.

**SDE** (`benchmarks/sde.py`). State 128, diagonal noise: drift `f(y)` = MLP
(128 → 128 → 128, tanh), diffusion `g(y) = sigmoid(w ⊙ y + b)` with one weight and bias
per component (so that `gᵢ` depends on `yᵢ` only, as diagonal noise requires); `y0` is
standard normal; the solve goes from t = 0 to t = 1 with `dt = 1/steps` and returns the
state at both times; the loss is the mean square of the final state, the gradients flow to
the drift's and the diffusion's parameters. Two schemes, with the same scheme on both sides:
Itô Euler–Maruyama (native `euler_maruyama`, `direct` and `checkpoint`, against
`torchsde.sdeint(method="euler")`; native `backsolve` needs a Stratonovich SDE), and
Stratonovich Heun (native `heun`, `direct`, `checkpoint` and `backsolve` — the stochastic
adjoint, integrated backwards with the Heun rule on the same increments — against
`torchsde.sdeint(method="heun")` and
`torchsde.sdeint_adjoint(method="heun", adjoint_method="heun")`; torchsde's default adjoint
method would be the midpoint rule). The reference is torchsde with its own Brownian motion:
a new `torchsde.BrownianInterval` at every run, as `sdeint` makes it, but given the step size
(`dt=`, the documented hint for fixed-step solvers). Without the hint it sizes its internal
tree from the first queries, and the last step of torchsde's loop is then fatal to speed:
torchsde advances time by adding `dt` in the precision of `t` (float32), falls short of
t = 1 by about 1e-6 and takes one more, tiny step, after which the interval refines its tree
to that size (tens of thousands of nodes, built in Python, seconds per solve whatever the
batch). The extra step is taken with either Brownian motion (here at 100 and 1000 steps)
and shows as one more step's drift evaluations in the torchsde rows' NFE.
The
native solver draws its own Brownian path from the seed: a Brownian tree over its steps,
generated top-down a block of steps at a time, about one normal per step and noise channel
(see [the SDE page](sde.md#precision-and-cost)). To check the gradients, torchsde is also run
on that same path, handed over as its `bm` as `backend="torchsde"` does: `SDE.brownian_path`,
the `solvers.BrownianPath` over `[0, dt·2^m]` (`2^m` the step count rounded up to a power of
two) whose last level, `m` levels down, is the step grid: rows marked "BrownianPath". There the
solutions agree with the native ones to round-off, and "grad diff" is measured against
`torchsde sdeint, BrownianPath`; the rows with torchsde's own Brownian motion see other noise
and have no grad diff. One exception: at 1000 steps torchsde's own clock (float32 sums of
`dt`) drifts from the grid by up to 1% of a step, and between grid points the path is linear,
which shows as Euler–Maruyama's grad diff of about 2e-4 (an Euler–Maruyama loop at
torchsde's times reproduces torchsde bit for bit, the same loop at the grid times the native
solve to 1e-6). The difference between the two kinds of torchsde rows is the cost of
sampling the `BrownianPath` through torchsde's interface: two queries per step, one step at a
time, each descending the `m` levels of the tree, where the native solve generates the
increments a block of steps at a time.

How: each case runs twice untimed (warm-up), then `--repeats` timed rounds, each of which
runs every case of the workload once (round robin, so that a disturbance from another
process on the machine spreads over all cases instead of falling on one); the table gives
the median, the minimum–maximum over the timed runs, and the ratio of medians to the
reference case of the same workload (named in the column; below 1: faster than it). On a GPU
the clock is read after `torch.cuda.synchronize()`. Memory comes from one more, untimed run.
"Saved for backward" is the size of the tensors that autograd keeps from the forward pass
for the backward pass, collected with `torch.autograd.graph.saved_tensors_hooks` (each
storage counted once; the parameters are included). It is not the process's resident memory
and it does not include the recomputation that the checkpoint adjoint does during the
backward pass, but it is the quantity that the choice of adjoint changes. On a GPU the
tables also give the peak of `torch.cuda.max_memory_allocated()` over forward and backward,
above what was allocated before the run. "NFE" counts evaluations of the vector field (for
an SDE: of the drift) in the forward and in the backward pass (recomputation included).
"grad diff" is the relative L2 distance of each case's parameter gradient from the
reference's (for the SDE: from torchsde's on the same Brownian path): a check that all
cases compute the same thing (up to the methods' accuracy; RK4 variants, step-size sequences
and adjoint discretisations differ). Absolute times depend on the machine; compare ratios
within one run.
"""


# ---------------------------------------------------------------------------------------------
# Measuring

# impl(model, *inputs) -> (output whose mean square is the loss, native Solution | None)
Impl = Callable[..., tuple[torch.Tensor, object]]


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def one_run(impl: Impl, model: nn.Module, inputs: tuple):
    for p in model.parameters():
        p.grad = None
    out, sol = impl(model, *inputs)
    out.pow(2).mean().backward()
    return sol


def saved_for_backward(impl: Impl, model: nn.Module, inputs: tuple):
    """Bytes of the storages that autograd saves in the forward pass; NFEs; the gradient."""
    saved: dict[int, tuple[int, torch.Tensor]] = {}

    def pack(x):
        s = x.untyped_storage()
        # Keep a reference until the count is done, so that no address is reused meanwhile.
        saved[s.data_ptr()] = (s.nbytes(), x)
        return x

    for p in model.parameters():
        p.grad = None
    model.calls = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out, sol = impl(model, *inputs)
        loss = out.pow(2).mean()
    nfe_fwd = model.calls
    nbytes = sum(b for b, _ in saved.values())
    saved.clear()
    loss.backward()
    nfe_bwd = model.calls - nfe_fwd
    grad = torch.cat([p.grad.detach().flatten() for p in model.parameters()]).double().cpu()
    return nbytes, nfe_fwd, nfe_bwd, grad, sol


def peak(impl: Impl, model: nn.Module, inputs: tuple, device) -> int:
    for p in model.parameters():
        p.grad = None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    one_run(impl, model, inputs)
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base


# The clock of the timed runs: wall time (the default), or with --clock cpu the CPU time of
# the process (time.process_time), which on a machine shared with other work leaves out the
# time spent waiting for a core.
CLOCK = {"fn": time.perf_counter}


def time_one(impl: Impl, model: nn.Module, inputs: tuple, device) -> float:
    clock = CLOCK["fn"]
    sync(device)
    start = clock()
    one_run(impl, model, inputs)
    sync(device)
    return (clock() - start) * 1e3


def measure(
    key: str,
    impls: dict[str, Impl],
    model: nn.Module,
    inputs: tuple,
    device: torch.device,
    repeats: int,
    describe: Callable[[int, object], str] | None = None,
) -> dict[str, Result]:
    """Time every implementation and return its :class:`Result`, by name.

    The timed runs go round robin over the implementations, so that a disturbance from
    outside (another process on the machine) spreads over all of them instead of falling on
    one. ``describe(nfe_forward, solution)`` fills ``Result.steps`` when given.
    """
    for impl in impls.values():
        for _ in range(WARMUP):
            one_run(impl, model, inputs)
    times: dict[str, list[float]] = {name: [] for name in impls}
    for r in range(repeats):
        for name, impl in impls.items():
            times[name].append(time_one(impl, model, inputs, device))
        progress(
            f"[{key}] round {r + 1}/{repeats}: "
            + ", ".join(f"{name} {ts[-1]:.0f}" for name, ts in times.items())
            + " ms"
        )
    results = {}
    for name, impl in impls.items():
        nbytes, nfe_fwd, nfe_bwd, grad, sol = saved_for_backward(impl, model, inputs)
        mem = peak(impl, model, inputs, device) if device.type == "cuda" else None
        steps = describe(nfe_fwd, sol) if describe is not None else ""
        results[name] = Result(times[name], nbytes, mem, nfe_fwd, nfe_bwd, grad, steps)
    return results


# ---------------------------------------------------------------------------------------------
# Reporting


def mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def table(
    title: str,
    results: dict[str, Result],
    device: torch.device,
    reference: str,
    *,
    grad_reference: str | None = None,
    no_grad_diff: Iterable[str] = (),
    no_counts: Iterable[str] = (),
    notes: Iterable[str] = (),
    level: int = 4,
) -> str:
    """One workload's markdown table: heading, notes, then one row per implementation.

    Ratios are to ``reference``; gradients are compared with ``grad_reference`` (default:
    ``reference``), except for the rows in ``no_grad_diff`` ("—"). The rows in ``no_counts``
    (a peer outside torch: JAX) have no saved-for-backward size and no NFE ("—").
    """
    uncounted = set(no_counts)
    ref = results[reference]
    gref = results[grad_reference or reference].grad
    skip = set(no_grad_diff)
    cols = ["implementation", "median ms", "spread (min–max) ms", f"vs {reference}"]
    cols.append("saved for backward MB")
    if device.type == "cuda":
        cols.append("peak GPU memory MB")
    cols += ["NFE fwd + bwd", "grad diff"]
    lines = [f"{'#' * level} {title}", ""]
    for note in notes:
        lines += [note, ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    gnorm = gref.norm().clamp_min(1e-300)
    for name, r in results.items():
        row = [
            name,
            f"{r.median:.1f}",
            f"{min(r.times_ms):.1f}–{max(r.times_ms):.1f}",
            f"{r.median / ref.median:.2f}×",
            "—" if name in uncounted else mb(r.saved_bytes),
        ]
        if device.type == "cuda":
            row.append(mb(r.peak_bytes))
        row.append("—" if name in uncounted else f"{r.nfe_forward} + {r.nfe_backward}")
        row.append("—" if name in skip else f"{float((r.grad - gref).norm() / gnorm):.1e}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
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


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except (OSError, IndexError):
        return "?"


def header(
    script: str,
    args,
    device: torch.device,
    load: tuple[str, str],
    *,
    versions: str,
    sizes: str,
    default_repeats: int,
) -> str:
    """The bullet list that opens a subsection: machine, versions, date, command, load, sizes.

    ``versions`` names the peer libraries (e.g. "torchdiffeq 0.2.5"); ``sizes`` describes the
    workload's dimensions.
    """
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
        machine += f"; host CPU {cpu_model()}"
    else:
        machine = f"{cpu_model()}, {os.cpu_count()} logical cores, "
        machine += f"{torch.get_num_threads()} torch threads"
    command = f"python benchmarks/{script} " + shlex.join(sys.argv[1:])
    fewer = ""
    if args.repeats < default_repeats and not args.quick:
        fewer = f" (fewer than the default {default_repeats}, to keep the run short)"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"- Machine: {machine}",
            f"- torch {torch.__version__}, {versions}, Python {platform.python_version()}",
            f"- Date: {date}; commit {git_commit()}",
            f"- Command: `{command}`",
            f"- 1-minute load average of the machine at start / end: {load[0]} / {load[1]} "
            "(other processes compete for the cores when it exceeds the number of threads)",
            f"- {sizes}; {WARMUP} warm-up runs, then {args.repeats} timed runs per case{fewer}",
            "- Clock: "
            + (
                "CPU time of the process (`time.process_time`): the machine was shared with "
                "other work, and CPU time leaves out the waits for a core"
                if getattr(args, "clock", "wall") == "cpu"
                else "wall time"
            ),
            "",
        ]
    )


# ---------------------------------------------------------------------------------------------
# The note under every table with CUDA-graph rows (ode.py, cde.py).
GRAPH_NOTE = (
    "CUDA graph rows: `solvers.prepare(...).cuda_graph(y0)`, captured during the warm-up "
    "runs. A replay calls no Python, so their NFE and saved-for-backward columns stay at what "
    "the replay itself adds (none), and their peak GPU memory leaves out the graphs' private "
    "memory pool, which was allocated at capture."
)

# docs/benchmarks.md: one section per device, one subsection per script
SECTIONS = {"cpu": "## CPU", "cuda": "## GPU"}
# subsection name -> the script that writes it, in the order of the file
SUBSECTIONS = {"ODE": "ode.py", "CDE": "cde.py", "SDE": "sde.py"}


def _placeholder(kind: str) -> str:
    flag = "cuda" if kind == "cuda" else "cpu"
    runs = ", ".join(
        f"`python benchmarks/{script} --device {flag} --out docs/benchmarks.md`"
        for script in SUBSECTIONS.values()
    )
    return f"{SECTIONS[kind]}\n\nNot measured yet. Run {runs}.\n"


def split_sections(text: str) -> dict[str, str]:
    """The bodies (below the heading line) of the "## CPU" and "## GPU" sections."""
    found = {}
    heads = list(re.finditer(r"^## .*$", text, re.M))
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        for kind, title in SECTIONS.items():
            if m.group(0).strip() == title:
                found[kind] = text[m.end() : end].strip("\n")
    return found


def other_sections(text: str) -> list[str]:
    """The "## ..." sections other than the device sections (e.g. "## Sequence models",
    written by benchmarks/sequence.py), each with its heading, in the order of the file:
    a script that rewrites its subsection keeps them."""
    found = []
    heads = list(re.finditer(r"^## .*$", text, re.M))
    for i, m in enumerate(heads):
        if m.group(0).strip() in SECTIONS.values():
            continue
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        found.append(text[m.start() : end].strip("\n") + "\n")
    return found


def split_subsections(body: str) -> dict[str, str]:
    """The "### ODE" / "### CDE" / "### SDE" subsections of a section body, each with its
    heading line.

    A body without any of them is what ``ode.py`` wrote before the subsections existed (or a
    placeholder): unless it is a placeholder, it is kept as the ODE subsection, its "###"
    headings moved one level down.
    """
    names = "|".join(SUBSECTIONS)
    heads = list(re.finditer(rf"^### ({names})[ \t]*$", body, re.M))
    if not heads:
        body = body.strip("\n")
        if not body or body.startswith("Not measured yet"):
            return {}
        return {"ODE": "### ODE\n\n" + re.sub(r"^###(?= )", "####", body, flags=re.M)}
    found = {}
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(body)
        found[m.group(1)] = body[m.start() : end].strip("\n")
    return found


def _as_subsection(name: str, text: str) -> str:
    """``text`` as the subsection ``name``: a leading device heading is dropped and the
    "### name" heading added when missing."""
    text = text.strip("\n")
    first, _, rest = text.partition("\n")
    if first.strip() in SECTIONS.values():
        text = rest.strip("\n")
    if not re.match(rf"### {name}[ \t]*(\n|$)", text):
        text = f"### {name}\n\n{text}"
    return text


def write_report(path: Path, device: torch.device, name: str, text: str) -> None:
    """Write or replace subsection ``name`` of ``device``'s section of ``path``.

    The introduction is rewritten; the other subsections of the section and the other
    device's section are kept; a device without any subsection gets a placeholder.
    """
    if name not in SUBSECTIONS:
        raise ValueError(f"unknown subsection {name!r}; valid: {', '.join(SUBSECTIONS)}")
    previous = path.read_text() if path.exists() else ""
    old = split_sections(previous)
    others = other_sections(previous)
    subs = {kind: split_subsections(body) for kind, body in old.items()}
    subs.setdefault(device.type, {})[name] = _as_subsection(name, text)
    parts = [INTRO]
    for kind, title in SECTIONS.items():
        present = [subs.get(kind, {}).get(n) for n in SUBSECTIONS]
        present = [s for s in present if s]
        if present:
            parts.append(f"{title}\n\n" + "\n\n".join(present) + "\n")
        else:
            parts.append(_placeholder(kind))
    parts += others
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


# ---------------------------------------------------------------------------------------------
# Command line


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the flags that every script has."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, help="default: 256")
    p.add_argument("--repeats", type=int, help="timed runs per case (default: 7)")
    p.add_argument("--out", type=Path, default=None, help="markdown file to write or update")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or the process's CPU time (for a CPU run on a shared machine)",
    )
    return p


def fill_defaults(
    p: argparse.ArgumentParser, args, full: dict, quick: dict, counts: str
) -> argparse.Namespace:
    """Apply the defaults (``quick`` under ``--quick``; explicit flags win) and check that
    the sizes are positive; ``counts`` names the list of step/observation counts."""
    defaults = quick if args.quick else full
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("batch", "state", "hidden", "channels", "repeats", "threads"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if min(getattr(args, counts)) < 1:
        p.error(f"--{counts} must be positive")
    return args


# Defaults of the step-count workloads (ODE and SDE): full run and --quick smoke run.
STEP_FULL = dict(steps=[100, 1000], batch=256, state=128, repeats=7)
STEP_QUICK = dict(steps=[10, 20], batch=16, state=16, repeats=2)


def parse_step_args(doc: str, argv, steps_help: str) -> argparse.Namespace:
    """The command line of a step-count workload: the common options, ``--steps``,
    ``--state`` and ``--quick``, with :data:`STEP_FULL` / :data:`STEP_QUICK` defaults."""
    p = argument_parser(doc)
    p.add_argument("--steps", type=int, nargs="+", help=f"{steps_help} (default: 100 1000)")
    p.add_argument("--state", type=int, help="default: 128")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batch 16, state 16, steps 10 and 20, 2 repeats (explicit flags win)",
    )
    return fill_defaults(p, p.parse_args(argv), STEP_FULL, STEP_QUICK, "steps")


def prepare(args, script: str, peer: str, extra: str) -> torch.device | int:
    """Import check of the peer, device check, thread count: the device, or an exit code."""
    try:
        __import__(peer)
    except ImportError:
        print(
            f'benchmarks/{script} compares against {peer}: pip install "ctrnn[{extra}]"',
            file=sys.stderr,
        )
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"benchmarks/{script}: --device cuda, but no CUDA device is available", file=sys.stderr
        )
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if getattr(args, "clock", "wall") == "cpu":
        if args.device != "cpu":
            print(f"benchmarks/{script}: --clock cpu times CPU runs only", file=sys.stderr)
            return 2
        CLOCK["fn"] = time.process_time
    return torch.device(args.device)


def finish(args, device: torch.device, name: str, subsection: str) -> None:
    """Print the subsection under its device heading and, with ``--out``, write it."""
    print(f"{SECTIONS[device.type]}\n\n{subsection}")
    if args.out is not None:
        write_report(args.out, device, name, subsection)
        print(
            f"wrote the {SECTIONS[device.type]} / ### {name} subsection of {args.out}",
            file=sys.stderr,
        )
