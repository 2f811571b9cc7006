"""Speed and memory of the ``solvers`` ODE solvers against torchdiffeq, in one process.

Workload: a two-layer MLP vector field (state → 128 → state, tanh), float32, solved over
t = [0, 1] (two outputs), then ``loss = ys[:, -1].pow(2).mean()`` and ``loss.backward()``.
Every case times forward and backward together.

    python benchmarks/ode.py [--device cpu|cuda] [--steps 100 1000] [--batch 256]
                             [--state 128] [--repeats 7] [--out docs/benchmarks.md] [--quick]
                             [--threads N]

``--quick`` is a smoke run (batch 16, state 16, RK4 with 10 and 20 steps, 2 repeats).

Without ``--out`` the tables are printed. With ``--out FILE`` the "### ODE" subsection of
FILE's section for this device ("## CPU" or "## GPU") is written or replaced; the other
subsections ("### CDE", "### SDE") and the other device's section are kept. The timing,
memory and markdown machinery is shared with cde.py and sde.py (benchmarks/_common.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _common as common  # noqa: E402
from _common import GRAPH_NOTE, SECTIONS, WARMUP, Result  # noqa: E402, F401

import solvers  # noqa: E402

HIDDEN = 128
# dopri5 tolerances and the scale of its vector field: chosen so that the adaptive solve of
# the default workload takes a few dozen steps (the number is reported with the table).
DOPRI5_RTOL, DOPRI5_ATOL = 1e-6, 1e-8
DOPRI5_SCALE = 32.0


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


def native_graphed(method: str, adjoint: str, **kw) -> Impl:
    """``solvers.prepare(...).cuda_graph(y0)``: planned once, forward and backward captured in
    CUDA graphs on the first call (a warm-up run, so outside the timing), replayed after."""
    graphs = {}

    def run(f, y0, t):
        key = (id(f), id(y0), id(t))
        if key not in graphs:
            prepared = solvers.prepare(solvers.ODE(f), t, method=method, adjoint=adjoint, **kw)
            graphs[key] = prepared.cuda_graph(y0)
        sol = graphs[key](y0)
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
    notes: list[str] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)


REFERENCE = "torchdiffeq odeint"


def workloads(steps: list[int], device: torch.device) -> list[Workload]:
    out = []
    for n in steps:
        dt = 1.0 / n
        opts = dict(method="rk4", options=dict(step_size=dt))
        impls = {
            "native direct": native("rk4", "direct", dt=dt),
            "native checkpoint": native("rk4", "checkpoint", dt=dt),
            "native backsolve": native("rk4", "backsolve", dt=dt),
        }
        if device.type == "cuda":
            for adjoint in ("direct", "checkpoint", "backsolve"):
                impls[f"native {adjoint}, CUDA graph"] = native_graphed("rk4", adjoint, dt=dt)
        impls[REFERENCE] = peer(False, **opts)
        impls["torchdiffeq odeint_adjoint"] = peer(True, **opts)
        out.append(
            Workload(
                key=f"rk4-{n}",
                title=f"RK4, {n} fixed steps (dt = 1/{n})",
                scale=1.0,
                impls=impls,
                notes=[GRAPH_NOTE] if device.type == "cuda" else [],
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


def measure(w: Workload, f: MLPField, y0, t, device, repeats: int) -> None:
    """Time every implementation of ``w`` and fill ``w.results`` (round robin; see
    :func:`_common.measure`)."""
    describe = _steps_in_words if w.adaptive else None
    w.results = common.measure(w.key, w.impls, f, (y0, t), device, repeats, describe)


# ---------------------------------------------------------------------------------------------
# Reporting


def table(w: Workload, device: torch.device) -> str:
    notes = [f"Vector field: {w.scale:g} × MLP(y)."] if w.scale != 1.0 else []
    notes += w.notes
    text = common.table(w.title, w.results, device, REFERENCE, notes=notes)
    if w.adaptive:
        lines = ["Forward steps:", ""]
        lines.append(f"- native: {w.results['native direct'].steps}")
        lines.append(f"- torchdiffeq: {w.results[REFERENCE].steps}")
        text += "\n" + "\n".join(lines) + "\n"
    return text


def header(args, device: torch.device, load: tuple[str, str]) -> str:
    import torchdiffeq

    return common.header(
        "ode.py",
        args,
        device,
        load,
        versions=f"torchdiffeq {torchdiffeq.__version__}",
        sizes=f"Batch {args.batch}, state {args.state}, hidden {HIDDEN}, float32",
        default_repeats=common.STEP_FULL["repeats"],
    )


def write_report(path: Path, device: torch.device, section: str) -> None:
    """Write or replace the "### ODE" subsection of ``device``'s section of ``path``; a
    leading "## CPU" / "## GPU" line of ``section`` is dropped."""
    common.write_report(path, device, "ODE", section)


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    return common.parse_step_args(__doc__, argv, "RK4 step counts")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = common.prepare(args, "ode.py", "torchdiffeq", "backends")
    if isinstance(device, int):
        return device
    t = torch.tensor([0.0, 1.0], device=device)
    gen = torch.Generator().manual_seed(0)
    y0 = torch.randn(args.batch, args.state, generator=gen).to(device)
    load_start = common.loadavg()
    body = []
    for w in workloads(args.steps, device):
        torch.manual_seed(0)
        f = MLPField(args.state, HIDDEN, w.scale).to(device)
        start = time.perf_counter()
        measure(w, f, y0, t, device, args.repeats)
        common.progress(f"[{w.key}] done in {time.perf_counter() - start:.0f} s")
        body.append(table(w, device))
    subsection = f"### ODE\n\n{header(args, device, (load_start, common.loadavg()))}\n" + "\n".join(
        body
    )
    common.finish(args, device, "ODE", subsection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
