"""Speed and memory of the ``solvers`` ODE solvers against torchdiffeq, torchode and diffrax,
in one process.

Workload (issue 12): a two-layer MLP vector field (state → hidden → state, tanh), float32,
solved over t = [0, 1] (two outputs), then ``loss = ys[:, -1].pow(2).mean()`` and
``loss.backward()``. Every case times forward and backward together.

    python benchmarks/ode.py [--device cpu|cuda] [--steps 10 100] [--batch 32] [--state 32]
                             [--hidden 64] [--repeats 15] [--out docs/benchmarks.md] [--quick]
                             [--threads N] [--clock wall|cpu] [--no-compile] [--no-diffrax]

Workloads: RK4 with each step count (a hand-written eager loop, native ``solve`` with each
adjoint, ``prepare(..., compile=True)``, torchdiffeq, diffrax jitted), dopri5 adaptive
(native, torchdiffeq, torchode) and per-sample output times (batch 64, 50 own output times
per sample, dopri5: native, torchode, torchdiffeq one sample at a time).

``--quick`` is a smoke run (batch 16, state 16, RK4 with 10 and 20 steps, 2 repeats, no
compilation, no diffrax, no per-sample workload).

Without ``--out`` the tables are printed. With ``--out FILE`` the "### ODE" subsection of
FILE's section for this device ("## CPU" or "## GPU") is written or replaced; the other
subsections ("### CDE", "### SDE"), the other device's section and other sections ("## Sequence
models") are kept. The timing, memory and markdown machinery is shared with cde.py and sde.py
(benchmarks/_common.py).
"""

from __future__ import annotations

import os
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

# dopri5 tolerances and the scale of its vector field: chosen so that the adaptive solve of
# the default workload takes a few dozen steps (the number is reported with the table).
DOPRI5_RTOL, DOPRI5_ATOL = 1e-6, 1e-8
DOPRI5_SCALE = 32.0
# per-sample output times: batch, output times per sample, tolerances
PER_SAMPLE_BATCH, PER_SAMPLE_T = 64, 50
PER_SAMPLE_RTOL, PER_SAMPLE_ATOL = 1e-6, 1e-8

FULL = dict(steps=[10, 100], batch=32, state=32, hidden=64, repeats=15)
QUICK = dict(steps=[10, 20], batch=16, state=16, hidden=32, repeats=2)

# compile time of each compiled case, in seconds (the first, untimed, call), by case name
COMPILE_S: dict[str, float] = {}


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
        if not torch.compiler.is_compiling():  # a counter would be a constant of the graph
            self.calls += 1
        out = self.net(y)
        return out if self.scale == 1.0 else out * self.scale


# An implementation maps (field, y0, t) to (output, native Solution | None); the loss is the
# output's mean square.
Impl = Callable[[MLPField, torch.Tensor, torch.Tensor], tuple[torch.Tensor, object]]


def native(method: str, adjoint: str, **kw) -> Impl:
    def run(f, y0, t):
        sol = solvers.solve(solvers.ODE(f), y0, t, method=method, adjoint=adjoint, **kw)
        return sol.ys[:, -1], sol

    return run


def native_all_outputs(method: str, **kw) -> Impl:
    """Per-sample output times: the loss is over every output."""

    def run(f, y0, t):
        sol = solvers.solve(solvers.ODE(f), y0, t, method=method, **kw)
        return sol.ys, sol

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


def native_compiled(name: str, method: str, **kw) -> Impl:
    """``solvers.prepare(..., compile=True)``: one RK step compiled (forward and backward) at
    the first call, which is a warm-up run; its duration is kept in ``COMPILE_S``."""
    prepared = {}

    def run(f, y0, t):
        key = (id(f), id(t))
        if key not in prepared:
            prepared[key] = solvers.prepare(solvers.ODE(f), t, method=method, compile=True, **kw)
            start = time.perf_counter()
            sol = prepared[key](y0)
            COMPILE_S[name] = time.perf_counter() - start
            return sol.ys[:, -1], sol
        sol = prepared[key](y0)
        return sol.ys[:, -1], sol

    return run


def hand_rk4(steps: int) -> Impl:
    """The classical RK4 written out by hand, eagerly, with Python-float times and steps: the
    floor that the native fixed-step solve is measured against."""

    def run(f, y0, t):
        t0, t1 = float(t[0]), float(t[-1])
        h = (t1 - t0) / steps
        y, tt = y0, t0
        for _ in range(steps):
            k1 = f(tt, y)
            k2 = f(tt + h / 2, y + h / 2 * k1)
            k3 = f(tt + h / 2, y + h / 2 * k2)
            k4 = f(tt + h, y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            tt += h
        return y, None

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


def peer_per_sample(**kw) -> Impl:
    """torchdiffeq has one time grid per solve: one solve per sample, on its own times."""
    import torchdiffeq

    def run(f, y0, t):
        ys = [torchdiffeq.odeint(f, y0[i : i + 1], t[i], **kw)[:, 0] for i in range(len(y0))]
        return torch.stack(ys), None

    return run


def torchode_dopri5(rtol: float, atol: float, all_outputs: bool = False) -> Impl:
    """torchode's dopri5 with its integral controller (per-sample steps, as the native
    solver), direct backpropagation (``AutoDiffAdjoint``); the solver is built once."""
    import torchode

    built = {}

    def run(f, y0, t):
        if id(f) not in built:
            term = torchode.ODETerm(f)
            method = torchode.Dopri5(term=term)
            control = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
            built[id(f)] = torchode.AutoDiffAdjoint(method, control)
        t_eval = t if t.ndim == 2 else t.expand(y0.shape[0], -1)
        sol = built[id(f)].solve(torchode.InitialValueProblem(y0=y0, t_eval=t_eval))
        return (sol.ys if all_outputs else sol.ys[:, -1]), None

    return run


class _FromJax(torch.autograd.Function):
    """A jitted JAX ``value_and_grad`` of the benchmark's loss, as an autograd node: the
    forward pass computes the final state and the parameters' gradients in one call (the
    timing covers both), the backward pass hands the gradients to the parameters."""

    @staticmethod
    def forward(ctx, fn, y0, *params):
        import jax.numpy as jnp
        import numpy as np

        p = tuple(jnp.asarray(x.detach().cpu().numpy()) for x in params)
        (_, y_end), grads = fn(p, jnp.asarray(y0.detach().cpu().numpy()))
        ctx.grads = [torch.from_numpy(np.array(g)) for g in grads]
        return torch.from_numpy(np.array(y_end))

    @staticmethod
    def backward(ctx, grad_out):
        # the gradient of mean(y_end ** 2), the loss every case is timed with
        return (None, None, *ctx.grads)


def diffrax_rk4(steps: int, adjoint: str) -> Impl:
    """diffrax, jitted (XLA on the CPU): the same MLP and RK4 tableau (this package's, as
    the diffrax backend builds it), ``RecursiveCheckpointAdjoint`` (diffrax's default) or
    ``BacksolveAdjoint``; the jit compilation happens in the first, warm-up, call."""
    import diffrax
    import jax
    import jax.numpy as jnp

    from solvers._backend_diffrax import _rk4_class

    rk4 = _rk4_class()
    fns = {}

    def build(scale):
        def field(t, y, p):
            w1, b1, w2, b2 = p
            out = jnp.tanh(y @ w1.T + b1) @ w2.T + b2
            return out if scale == 1.0 else out * scale

        adj = (
            diffrax.BacksolveAdjoint(solver=rk4())
            if adjoint == "backsolve"
            else diffrax.RecursiveCheckpointAdjoint()
        )

        def loss(p, y0):
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(field),
                rk4(),
                t0=0.0,
                t1=1.0,
                dt0=1.0 / steps,
                y0=y0,
                args=p,
                saveat=diffrax.SaveAt(t1=True),
                adjoint=adj,
                max_steps=steps + 1,
            )
            y_end = sol.ys[-1]
            return jnp.mean(y_end**2), y_end

        return jax.jit(jax.value_and_grad(loss, has_aux=True))

    def run(f, y0, t):
        if id(f) not in fns:
            fns[id(f)] = build(f.scale)
        return _FromJax.apply(fns[id(f)], y0, *f.parameters()), None

    return run


@dataclass
class Workload:
    key: str
    title: str
    scale: float
    impls: dict[str, Impl]
    adaptive: bool = False
    per_sample: bool = False
    notes: list[str] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)
    reference: str = "torchdiffeq odeint"
    outside_torch: tuple[str, ...] = ()  # rows without NFE and memory counts


REFERENCE = "torchdiffeq odeint"
PER_SAMPLE_REFERENCE = "torchdiffeq odeint, one sample at a time"


def _have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def workloads(steps: list[int], device: torch.device, args) -> list[Workload]:
    out = []
    compile_ok = not args.quick and not args.no_compile
    jax_ok = not args.quick and not args.no_diffrax and device.type == "cpu" and _have("diffrax")
    for n in steps:
        dt = 1.0 / n
        opts = dict(method="rk4", options=dict(step_size=dt))
        impls = {
            "hand-written RK4 loop, eager": hand_rk4(n),
            "native direct": native("rk4", "direct", dt=dt),
            "native checkpoint": native("rk4", "checkpoint", dt=dt),
            "native backsolve": native("rk4", "backsolve", dt=dt),
        }
        if compile_ok:
            name = "native prepare(compile=True), direct"
            impls[name] = native_compiled(f"{name}, {n} steps", "rk4", dt=dt)
        if device.type == "cuda":
            for adjoint in ("direct", "checkpoint", "backsolve"):
                impls[f"native {adjoint}, CUDA graph"] = native_graphed("rk4", adjoint, dt=dt)
        impls[REFERENCE] = peer(False, **opts)
        impls["torchdiffeq odeint_adjoint"] = peer(True, **opts)
        jax_rows: tuple[str, ...] = ()
        if compile_ok:
            jax_rows += ("native prepare(compile=True), direct",)
        if jax_ok:
            names = ("diffrax jit, RecursiveCheckpointAdjoint", "diffrax jit, BacksolveAdjoint")
            jax_rows += names
            impls[names[0]] = diffrax_rk4(n, "checkpoint")
            impls[names[1]] = diffrax_rk4(n, "backsolve")
        notes = [GRAPH_NOTE] if device.type == "cuda" else []
        out.append(
            Workload(
                key=f"rk4-{n}",
                title=f"RK4, {n} fixed steps (dt = 1/{n})",
                scale=1.0,
                impls=impls,
                notes=notes,
                outside_torch=jax_rows,
            )
        )
    tol = dict(rtol=DOPRI5_RTOL, atol=DOPRI5_ATOL)
    tdq = dict(method="dopri5", **tol)
    impls = {
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
    }
    if _have("torchode"):
        impls["torchode dopri5"] = torchode_dopri5(**tol)
    out.append(
        Workload(
            key="dopri5",
            title=f"dopri5, adaptive (rtol = {DOPRI5_RTOL:g}, atol = {DOPRI5_ATOL:g})",
            scale=DOPRI5_SCALE,
            adaptive=True,
            impls=impls,
        )
    )
    if not args.quick:
        tol = dict(rtol=PER_SAMPLE_RTOL, atol=PER_SAMPLE_ATOL)
        impls = {"native direct": native_all_outputs("dopri5", **tol)}
        if _have("torchode"):
            impls["torchode dopri5"] = torchode_dopri5(**tol, all_outputs=True)
        impls[PER_SAMPLE_REFERENCE] = peer_per_sample(method="dopri5", **tol)
        out.append(
            Workload(
                key="per-sample",
                title=(
                    f"dopri5, {PER_SAMPLE_T} output times of its own per sample, batch "
                    f"{PER_SAMPLE_BATCH} (rtol = {PER_SAMPLE_RTOL:g}, atol = "
                    f"{PER_SAMPLE_ATOL:g})"
                ),
                scale=DOPRI5_SCALE,
                adaptive=True,
                per_sample=True,
                impls=impls,
                reference=PER_SAMPLE_REFERENCE,
                notes=[
                    "Each sample's output times: 0, then 49 sorted uniform draws in (0, 1) "
                    "(seeded); the loss is the mean square of every output."
                ],
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
    describe = _steps_in_words if w.adaptive and not w.per_sample else None
    w.results = common.measure(w.key, w.impls, f, (y0, t), device, repeats, describe)


# ---------------------------------------------------------------------------------------------
# Reporting


def table(w: Workload, device: torch.device) -> str:
    notes = [f"Vector field: {w.scale:g} × MLP(y)."] if w.scale != 1.0 else []
    notes += w.notes
    compiled = {k: v for k, v in COMPILE_S.items() if k.endswith(f", {w.key[4:]} steps")}
    for name, secs in compiled.items():
        notes.append(
            f"Compilation of `{name.rsplit(',', 1)[0]}`: {secs:.0f} s (its first call, "
            "untimed; one step compiled, forward and backward, whatever the number of steps; "
            "TorchInductor's caches disabled, so every compilation starts cold). Its NFE "
            "and saved-for-backward columns are not counted (the compiled graph does not call "
            "the module's Python code)."
        )
    if any(name.startswith("diffrax") for name in w.outside_torch):
        notes.append(
            "diffrax rows: `jax.jit(jax.value_and_grad(loss))` of the same loss, MLP, "
            "parameters and RK4 tableau, called from an autograd node that hands the "
            "gradients back to the torch parameters (the conversions are timed too); XLA "
            "on one thread; NFE and saved-for-backward are not counted outside torch."
        )
    text = common.table(
        w.title, w.results, device, w.reference, no_counts=w.outside_torch, notes=notes
    )
    if w.adaptive and not w.per_sample:
        lines = ["Forward steps:", ""]
        lines.append(f"- native: {w.results['native direct'].steps}")
        lines.append(f"- torchdiffeq: {w.results[REFERENCE].steps}")
        text += "\n" + "\n".join(lines) + "\n"
    return text


def targets(ws: list[Workload]) -> str:
    """The ratios that issue 12 sets targets for, from this run's medians."""
    by_key = {w.key: w.results for w in ws}
    lines = []

    def ratio(key, a, b):
        r = by_key.get(key, {})
        return r[a].median / r[b].median if a in r and b in r else None

    def add(text, value, target, below=True):
        if value is None:
            return
        met = value <= target if below else value >= target
        lines.append(f"- {text}: {value:.2f}× (target {target:g}×: {'met' if met else 'not met'})")

    for key in sorted((k for k in by_key if k.startswith("rk4-")), key=lambda k: int(k[4:])):
        n = key[4:]
        hand = "hand-written RK4 loop, eager"
        direct = ratio(key, "native direct", hand)
        add(f"native direct / hand-written loop, {n} steps", direct, 1.05)
        add(
            f"native backsolve / native direct, {n} steps",
            ratio(key, "native backsolve", "native direct"),
            1.6,
        )
        name = "native prepare(compile=True), direct"
        add(f"compiled step / torchdiffeq odeint, {n} steps", ratio(key, name, REFERENCE), 0.5)
        secs = COMPILE_S.get(f"{name}, {n} steps")
        if secs is not None:
            lines.append(f"- compilation, {n} steps: {secs:.0f} s (target: under 60 s)")
    add(
        "per-sample dopri5 grids, native / torchode",
        ratio("per-sample", "native direct", "torchode dopri5"),
        1.0,
    )
    if not lines:
        return ""
    return "#### Issue 12 targets, from this run\n\n" + "\n".join(lines) + "\n"


def header(args, device: torch.device, load: tuple[str, str]) -> str:
    import torchdiffeq

    versions = [f"torchdiffeq {torchdiffeq.__version__}"]
    for name in ("torchode", "jax", "diffrax"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except (ImportError, AttributeError):
            pass
    return common.header(
        "ode.py",
        args,
        device,
        load,
        versions=", ".join(versions),
        sizes=f"Batch {args.batch}, state {args.state}, hidden {args.hidden}, float32",
        default_repeats=FULL["repeats"],
    )


def write_report(path: Path, device: torch.device, section: str) -> None:
    """Write or replace the "### ODE" subsection of ``device``'s section of ``path``; a
    leading "## CPU" / "## GPU" line of ``section`` is dropped."""
    common.write_report(path, device, "ODE", section)


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = common.argument_parser(__doc__)
    p.add_argument("--steps", type=int, nargs="+", help="RK4 step counts (default: 10 100)")
    p.add_argument("--state", type=int, help="default: 32")
    p.add_argument("--hidden", type=int, help="default: 64")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled rows")
    p.add_argument("--no-diffrax", action="store_true", help="leave out the diffrax rows")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batch 16, state 16, steps 10 and 20, 2 repeats (explicit flags win)",
    )
    return common.fill_defaults(p, p.parse_args(argv), FULL, QUICK, "steps")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads == 1 and "XLA_FLAGS" not in os.environ:
        # XLA on one thread too, before jax is imported
        os.environ["XLA_FLAGS"] = (
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    device = common.prepare(args, "ode.py", "torchdiffeq", "backends")
    if isinstance(device, int):
        return device
    if not args.quick and not args.no_compile:
        import torch._inductor.config as inductor_config

        inductor_config.force_disable_caches = True  # compile times from cold
    t = torch.tensor([0.0, 1.0], device=device)
    gen = torch.Generator().manual_seed(0)
    y0 = torch.randn(args.batch, args.state, generator=gen).to(device)
    load_start = common.loadavg()
    body, done = [], []
    for w in workloads(args.steps, device, args):
        torch.manual_seed(0)
        f = MLPField(args.state, args.hidden, w.scale).to(device)
        yw, tw = y0, t
        if w.per_sample:
            g = torch.Generator().manual_seed(1)
            yw = torch.randn(PER_SAMPLE_BATCH, args.state, generator=g).to(device)
            tw = torch.rand(PER_SAMPLE_BATCH, PER_SAMPLE_T, generator=g).sort(dim=1).values
            tw[:, 0] = 0.0
            tw = tw.to(device)
        start = time.perf_counter()
        measure(w, f, yw, tw, device, args.repeats)
        common.progress(f"[{w.key}] done in {time.perf_counter() - start:.0f} s")
        body.append(table(w, device))
        done.append(w)
    summary = targets(done)
    if summary and not args.quick:
        body.insert(0, summary)
    subsection = f"### ODE\n\n{header(args, device, (load_start, common.loadavg()))}\n" + "\n".join(
        body
    )
    common.finish(args, device, "ODE", subsection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
