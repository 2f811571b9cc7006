"""Speed and memory of the ``solvers`` CDE solves against torchcde, in one process.

Workload: a neural CDE on irregularly sampled series (batch × T observations × 8 channels,
time in channel 0), cubic Hermite path with backward differences, hidden state 64,
``f(t, z) = tanh(MLP(z))`` (64 → 128 → 64·8), ``z0 = Linear(8 → 64)(X(t0))``, RK4 with one step
per observation interval, ``loss = z(t_T).pow(2).mean()`` and ``loss.backward()``. Every case
times forward and backward together; the paths are built once, before the timing.

    python benchmarks/cde.py [--device cpu|cuda] [--obs 100 1000] [--batch 256]
                             [--hidden 64] [--channels 8] [--repeats 7]
                             [--out docs/benchmarks.md] [--quick] [--threads N]

``--quick`` is a smoke run (batch 16, hidden 16, 10 and 20 observations, 2 repeats).

Without ``--out`` the tables are printed. With ``--out FILE`` the "### CDE" subsection of
FILE's section for this device ("## CPU" or "## GPU") is written or replaced; everything
else in FILE is kept (see benchmarks/_common.py).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _common as common  # noqa: E402

import solvers  # noqa: E402

MLP_WIDTH = 128
REFERENCE = "torchcde direct"


# ---------------------------------------------------------------------------------------------
# The workload


class Field(nn.Module):
    """``f(t, z) = tanh(W2 tanh(W1 z + b1) + b2)`` as a (hidden, channels) matrix per sample."""

    def __init__(self, hidden: int, channels: int):
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.net = nn.Sequential(
            nn.Linear(hidden, MLP_WIDTH), nn.Tanh(), nn.Linear(MLP_WIDTH, hidden * channels)
        )
        self.calls = 0

    def forward(self, t, z):
        self.calls += 1
        return torch.tanh(self.net(z)).reshape(z.shape[0], self.hidden, self.channels)


class Model(nn.Module):
    """The vector field and the map ``X(t0) -> z0``; ``calls`` counts evaluations of f."""

    def __init__(self, hidden: int, channels: int):
        super().__init__()
        self.field = Field(hidden, channels)
        self.embed = nn.Linear(channels, hidden)

    @property
    def calls(self) -> int:
        return self.field.calls

    @calls.setter
    def calls(self, value: int) -> None:
        self.field.calls = value


class _TimeIgnoring(nn.Module):
    """``f`` in torchcde's calling convention ``func(t, z)``."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f = f

    def forward(self, t, z):
        return self.f(t, z)


def data(batch: int, obs: int, channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Irregular times shared by the batch (sorted uniform on [0, 1], the first at 0) and
    values (batch, obs, channels): time in channel 0, sinusoids of random frequency and phase
    in the others."""
    gen = torch.Generator().manual_seed(0)
    times = torch.sort(torch.rand(obs, generator=gen)).values
    times[0] = 0.0
    if not bool((times.diff() > 0).all()):  # pragma: no cover - a tie among the draws
        raise RuntimeError("two observation times coincide; change the seed")
    freq = 0.5 + torch.rand(batch, 1, channels - 1, generator=gen)
    phase = torch.rand(batch, 1, channels - 1, generator=gen)
    x = torch.sin(2 * math.pi * (freq * times[None, :, None] + phase))
    values = torch.cat([times.expand(batch, obs)[..., None], x], dim=-1)
    return values.to(device), times.to(device)


def native(adjoint: str, dt: float):
    def run(model, path, times, X):
        z0 = model.embed(path.evaluate(times[0]))
        sol = solvers.solve(
            solvers.CDE(model.field, path), z0, times, method="rk4", dt=dt, adjoint=adjoint
        )
        return sol.ys[:, -1], sol

    return run


def native_graphed(adjoint: str, dt: float):
    """``solvers.prepare(...).cuda_graph(z0)``: captured on the first (warm-up) call; the map
    to ``z0`` runs eagerly and its gradient flows in from the replayed backward graph."""
    graphs = {}

    def run(model, path, times, X):
        z0 = model.embed(path.evaluate(times[0]))
        key = (id(model), id(path), id(times))
        if key not in graphs:
            problem = solvers.CDE(model.field, path)
            prepared = solvers.prepare(problem, times, method="rk4", dt=dt, adjoint=adjoint)
            graphs[key] = prepared.cuda_graph(z0.detach().requires_grad_(True))
        sol = graphs[key](z0)
        return sol.ys[:, -1], sol

    return run


def _knots(times: torch.Tensor):
    """A torchdiffeq ``grid_constructor`` that steps on the observation times between the
    ends of the solve. torchdiffeq calls it with the solve's own ``t``, which runs backwards
    in the adjoint's backward solve (and then negates the grid)."""

    def grid(func, y0, t):
        a, b = t[0], t[-1]
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        inside = times[(times > lo) & (times < hi)].to(t.dtype)
        out = torch.cat([lo[None], inside, hi[None]])
        return out if bool(a <= b) else out.flip(0)

    return grid


def peer(adjoint: bool):
    import torchcde

    def run(model, path, times, X):
        z0 = model.embed(X.evaluate(X.interval[0]))
        kw = dict(adjoint_params=tuple(model.field.parameters())) if adjoint else {}
        # Outputs at the two ends only; the steps land on the observation times: one RK4 step
        # per interval, forward and (adjoint) backward.
        zs = torchcde.cdeint(
            X,
            _TimeIgnoring(model.field),
            z0,
            X.interval,
            adjoint=adjoint,
            method="rk4",
            options=dict(grid_constructor=_knots(times)),
            **kw,
        )
        return zs[:, -1], None

    return run


ADJOINTS = ("direct", "checkpoint", "backsolve")


def impls(dt: float, device: torch.device) -> dict:
    out = {f"native {a}": native(a, dt) for a in ADJOINTS}
    if device.type == "cuda":
        out.update({f"native {a}, CUDA graph": native_graphed(a, dt) for a in ADJOINTS})
    out[REFERENCE] = peer(False)
    out["torchcde adjoint"] = peer(True)
    return out


# ---------------------------------------------------------------------------------------------


FULL = dict(obs=[100, 1000], batch=256, hidden=64, channels=8, repeats=7)
QUICK = dict(obs=[10, 20], batch=16, hidden=16, channels=8, repeats=2)


def parse_args(argv=None):
    p = common.argument_parser(__doc__)
    p.add_argument("--obs", type=int, nargs="+", help="observations per series (default: 100 1000)")
    p.add_argument("--hidden", type=int, help="hidden state size (default: 64)")
    p.add_argument("--channels", type=int, help="channels, time included (default: 8)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batch 16, hidden 16, 10 and 20 observations, 2 repeats "
        "(explicit flags win)",
    )
    args = common.fill_defaults(p, p.parse_args(argv), FULL, QUICK, "obs")
    if min(args.obs) < 2:
        p.error("--obs must be at least 2")
    if args.channels < 2:
        p.error("--channels must be at least 2 (time and one observed channel)")
    return args


def header(args, device, load) -> str:
    import torchcde
    import torchdiffeq

    return common.header(
        "cde.py",
        args,
        device,
        load,
        versions=f"torchcde {torchcde.__version__}, torchdiffeq {torchdiffeq.__version__}",
        sizes=f"Batch {args.batch}, {args.channels} channels (time included), hidden "
        f"{args.hidden}, MLP width {MLP_WIDTH}, float32",
        default_repeats=FULL["repeats"],
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    device = common.prepare(args, "cde.py", "torchcde", "backends")
    if isinstance(device, int):
        return device
    import torchcde

    load_start = common.loadavg()
    body = []
    for n in args.obs:
        values, times = data(args.batch, n, args.channels, device)
        path = solvers.interpolate(values, times, kind="hermite")
        coeffs = torchcde.hermite_cubic_coefficients_with_backward_differences(values, t=times)
        X = torchcde.CubicSpline(coeffs, t=times)
        spacing = times.diff()
        dt = float(spacing.max())
        torch.manual_seed(0)
        model = Model(args.hidden, args.channels).to(device)
        key = f"cde-{n}"
        start = time.perf_counter()
        cases = impls(dt, device)
        results = common.measure(key, cases, model, (path, times, X), device, args.repeats)
        common.progress(f"[{key}] done in {time.perf_counter() - start:.0f} s")
        note = (
            f"Observation spacing {float(spacing.min()):.2g} to {dt:.2g}; "
            f"{n - 1} RK4 steps, one per interval."
        )
        title = f"RK4 on {n} irregular observations"
        notes = [note] + ([common.GRAPH_NOTE] if device.type == "cuda" else [])
        body.append(common.table(title, results, device, REFERENCE, notes=notes))
    subsection = f"### CDE\n\n{header(args, device, (load_start, common.loadavg()))}\n" + "\n".join(
        body
    )
    common.finish(args, device, "CDE", subsection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
