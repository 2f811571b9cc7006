"""Speed and memory of the ``solvers`` SDE solves against torchsde, in one process.

Workload: diagonal noise, state 128, drift MLP (state → 128 → state, tanh), diffusion
``sigmoid(w ⊙ y + b)``, float32, solved over t = [0, 1] (two outputs) with ``dt = 1/steps``,
then ``loss = ys[:, -1].pow(2).mean()`` and ``loss.backward()``. Two schemes: Itô
Euler–Maruyama and Stratonovich Heun. Every case times forward and backward together.

    python benchmarks/sde.py [--device cpu|cuda] [--steps 100 1000] [--batch 256]
                             [--state 128] [--repeats 7] [--out docs/benchmarks.md] [--quick]
                             [--threads N]

``--quick`` is a smoke run (batch 16, state 16, 10 and 20 steps, 2 repeats).

Without ``--out`` the tables are printed. With ``--out FILE`` the "### SDE" subsection of
FILE's section for this device ("## CPU" or "## GPU") is written or replaced; everything
else in FILE is kept (see benchmarks/_common.py).
"""

from __future__ import annotations

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

HIDDEN = 128
SEED = 0
REFERENCE = "torchsde sdeint"
GRAD_REFERENCE = "torchsde sdeint, BrownianPath"
# scheme key -> (title, SDE type, native method, torchsde method, native adjoints)
SCHEMES = {
    "em": ("Itô Euler–Maruyama", "ito", "euler_maruyama", "euler", ("direct", "checkpoint")),
    "heun": (
        "Stratonovich Heun",
        "stratonovich",
        "heun",
        "heun",
        ("direct", "checkpoint", "backsolve"),
    ),
}


# ---------------------------------------------------------------------------------------------
# The workload


class Drift(nn.Module):
    """``f(t, y) = W2 tanh(W1 y + b1) + b2``; ``t`` is ignored. Counts its calls."""

    def __init__(self, state: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, state))
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.net(y)


class Diffusion(nn.Module):
    """``g(t, y) = sigmoid(w ⊙ y + b)``: component ``i`` depends on ``y_i`` only (diagonal
    noise)."""

    def __init__(self, state: int):
        super().__init__()
        self.weight = nn.Parameter(0.5 * torch.randn(state))
        self.bias = nn.Parameter(torch.zeros(state))

    def forward(self, t, y):
        return torch.sigmoid(y * self.weight + self.bias)


class Model(nn.Module):
    """Drift and diffusion; ``calls`` counts drift evaluations. ``sde_type`` and
    ``noise_type`` are what torchsde reads; ``f`` and ``g`` its calling convention."""

    noise_type = "diagonal"

    def __init__(self, state: int, sde_type: str):
        super().__init__()
        self.drift = Drift(state)
        self.diffusion = Diffusion(state)
        self.sde_type = sde_type

    @property
    def calls(self) -> int:
        return self.drift.calls

    @calls.setter
    def calls(self, value: int) -> None:
        self.drift.calls = value

    def f(self, t, y):
        return self.drift(t, y)

    def g(self, t, y):
        return self.diffusion(t, y)


def native(method: str, adjoint: str, dt: float):
    def run(model, y0, t):
        sde = solvers.SDE(
            model.drift, model.diffusion, noise="diagonal", sde_type=model.sde_type, seed=SEED
        )
        sol = solvers.solve(sde, y0, t, method=method, dt=dt, adjoint=adjoint)
        return sol.ys[:, -1], sol

    return run


def _same_path(model, y0, t, dt: float):
    """torchsde's view of the Brownian path that the native solve draws from ``SEED`` (the
    view that ``backend="torchsde"`` uses): ``SDE.brownian_path``, a tree over
    ``[0, dt·2^m]`` whose last level is the step grid, on which the native solve's own tree
    over its steps coincides to round-off."""
    import torchsde

    from solvers._backend_torchsde import _as_torchsde_brownian

    sde = solvers.SDE(model.drift, model.diffusion, sde_type=model.sde_type, seed=SEED)
    with torch.no_grad():
        g0 = model.diffusion(t[:1].expand(y0.shape[0]), y0)
    return _as_torchsde_brownian(sde.brownian_path(t[None], y0, g0, dt), torchsde)


def _own_noise(y0, t, dt: float):
    """torchsde's own Brownian motion, as ``sdeint`` makes it (new noise at every call), but
    told the step size: without the hint, ``BrownianInterval`` sizes its internal tree from
    the first queries, and the last, tiny step that float32 time accumulation adds
    (1 - 100 · 0.01 ≈ 7e-7) makes it build a tree of ~50,000 nodes in Python, seconds per
    solve."""
    import torchsde

    return torchsde.BrownianInterval(
        t0=t[0], t1=t[-1], size=tuple(y0.shape), dtype=y0.dtype, device=y0.device, dt=dt
    )


def peer(method: str, adjoint: bool, dt: float, same_path: bool):
    import torchsde

    def run(model, y0, t):
        bm = _same_path(model, y0, t, dt) if same_path else _own_noise(y0, t, dt)
        if adjoint:
            ys = torchsde.sdeint_adjoint(
                model, y0, t, bm=bm, method=method, adjoint_method=method, dt=dt
            )
        else:
            ys = torchsde.sdeint(model, y0, t, bm=bm, method=method, dt=dt)
        return ys[-1], None

    return run


def impls(scheme: str, dt: float) -> dict:
    _, _, method, tsm, adjoints = SCHEMES[scheme]
    out = {f"native {a}": native(method, a, dt) for a in adjoints}
    adjoint = "backsolve" in adjoints
    out[REFERENCE] = peer(tsm, False, dt, same_path=False)
    if adjoint:
        out["torchsde sdeint_adjoint"] = peer(tsm, True, dt, same_path=False)
    out[GRAD_REFERENCE] = peer(tsm, False, dt, same_path=True)
    if adjoint:
        out["torchsde sdeint_adjoint, BrownianPath"] = peer(tsm, True, dt, same_path=True)
    return out


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    return common.parse_step_args(__doc__, argv, "step counts")


def header(args, device, load) -> str:
    import torchsde

    return common.header(
        "sde.py",
        args,
        device,
        load,
        versions=f"torchsde {torchsde.__version__}",
        sizes=f"Batch {args.batch}, state {args.state}, drift hidden {HIDDEN}, diagonal "
        "noise, float32",
        default_repeats=common.STEP_FULL["repeats"],
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    device = common.prepare(args, "sde.py", "torchsde", "backends")
    if isinstance(device, int):
        return device
    t = torch.tensor([0.0, 1.0], device=device)
    gen = torch.Generator().manual_seed(0)
    y0 = torch.randn(args.batch, args.state, generator=gen).to(device)
    load_start = common.loadavg()
    body = []
    for scheme, (title, sde_type, *_) in SCHEMES.items():
        for n in args.steps:
            dt = 1.0 / n
            torch.manual_seed(0)
            model = Model(args.state, sde_type).to(device)
            key = f"{scheme}-{n}"
            start = time.perf_counter()
            cases = impls(scheme, dt)
            results = common.measure(key, cases, model, (y0, t), device, args.repeats)
            common.progress(f"[{key}] done in {time.perf_counter() - start:.0f} s")
            own_noise = [
                name for name in cases if name.startswith("torchsde") and "Path" not in name
            ]
            body.append(
                common.table(
                    f"{title}, {n} steps (dt = 1/{n})",
                    results,
                    device,
                    REFERENCE,
                    grad_reference=GRAD_REFERENCE,
                    no_grad_diff=own_noise,
                )
            )
    subsection = f"### SDE\n\n{header(args, device, (load_start, common.loadavg()))}\n" + "\n".join(
        body
    )
    common.finish(args, device, "SDE", subsection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
