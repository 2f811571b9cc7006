"""The demo jobs.

``run_classification_demo`` (``ctrnn demo``, ``make demo``): τ-GRU, ANCDE, Neural CDE and GRU-D
trained on JapaneseVowels (shipped with the package) with 30% of the observations dropped,
on the CPU, a few minutes on two cores; the learning curves as a PNG.

``run_spiral_demo`` (``ctrnn demo --spiral``): a neural ODE fitted to a spiral, gradients by
the backsolve adjoint. Its data is a trajectory of the cubic spiral ``dy/dt = (y³) Aᵀ`` with
``A = [[-0.1, 2], [-2, -0.1]]`` (the example of Chen et al., Neural ordinary differential
equations, NeurIPS 2018), generated with a tight dopri5 solve: nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch
from torch import nn

import solvers

__all__ = [
    "DEMO_MODELS",
    "DemoRun",
    "SpiralResult",
    "plot_learning_curves",
    "run_classification_demo",
    "run_spiral_demo",
    "spiral_trajectory",
]

_TRUE_A = ((-0.1, 2.0), (-2.0, -0.1))


def spiral_trajectory(n_points: int = 1000, t_end: float = 25.0, dtype=torch.float32):
    """The ground-truth spiral: times ``(n_points,)`` and states ``(n_points, 2)``."""
    A = torch.tensor(_TRUE_A, dtype=torch.float64)
    t = torch.linspace(0.0, t_end, n_points, dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    sol = solvers.solve(solvers.ODE(lambda t, y: (y**3) @ A.T), y0, t, rtol=1e-9, atol=1e-10)
    return t.to(dtype), sol.ys[0].to(dtype)


class CubicODEFunc(nn.Module):
    """``dy/dt = MLP(y³)``: a 2 → hidden → 2 network with tanh."""

    def __init__(self, hidden: int = 50):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, t, y):
        return self.net(y**3)


@dataclass
class SpiralResult:
    losses: list[float]  # mean absolute error on the held-out windows, at each evaluation
    iterations: list[int]
    trajectory_loss: float  # mean absolute error of the whole trajectory, after training
    seconds: float


def run_spiral_demo(
    iterations: int = 300,
    *,
    batch_size: int = 20,
    batch_time: int = 10,
    eval_every: int = 25,
    lr: float = 1e-2,
    method: str = "rk4",
    adjoint: str = "backsolve",
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> SpiralResult:
    """Train a neural ODE on random windows of the spiral.

    Each batch holds ``batch_size`` windows of ``batch_time`` consecutive observations, each
    window with its own times: one batched solve on per-sample grids. Adam with a cosine
    learning-rate decay. Progress is measured on 200 fixed held-out windows; the returned
    ``trajectory_loss`` integrates the whole trajectory from its first point.
    ``log`` receives one line per evaluation.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    t, true_y = spiral_trajectory()
    func = CubicODEFunc()
    opt = torch.optim.Adam(func.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    options = dict(method=method, rtol=1e-5, atol=1e-6, adjoint=adjoint)
    if not solvers.methods()[method].adaptive:
        options["dt"] = float(t[1] - t[0])

    def windows(n, generator):
        s = torch.randint(0, len(t) - batch_time, (n,), generator=generator)
        return s, s[:, None] + torch.arange(batch_time)

    def window_loss(s, idx):
        pred = solvers.solve(solvers.ODE(func), true_y[s], t[idx], **options).ys
        return (pred - true_y[idx]).abs().mean()

    held_out = windows(200, torch.Generator().manual_seed(seed + 1))
    start = time.perf_counter()
    losses, its = [], []

    def evaluate(it):
        with torch.no_grad():
            loss = window_loss(*held_out).item()
        losses.append(loss)
        its.append(it)
        if log is not None:
            log(
                f"iteration {it:4d}   held-out window L1 loss {loss:.4f}   "
                f"({time.perf_counter() - start:.1f} s)"
            )

    evaluate(0)
    for it in range(1, iterations + 1):
        loss = window_loss(*windows(batch_size, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if it % eval_every == 0 or it == iterations:
            evaluate(it)
    with torch.no_grad():
        pred = solvers.solve(
            solvers.ODE(func), true_y[:1], t, method="dopri5", rtol=1e-6, atol=1e-7
        ).ys[0]
    trajectory_loss = (pred - true_y).abs().mean().item()
    return SpiralResult(losses, its, trajectory_loss, time.perf_counter() - start)


# -- the classification demo -------------------------------------------------------------------

# The CDE models take one RK4 step per unit of time: JapaneseVowels' observations are one unit
# apart before points are dropped, so every observation interval is a whole number of steps.
DEMO_MODELS: dict[str, dict] = {
    "tau_gru": {},
    "ancde": {"solver": {"method": "rk4", "dt": 1.0}},
    "neural_cde": {"solver": {"method": "rk4", "dt": 1.0}},
    "gru_d": {},
}


@dataclass
class DemoRun:
    """One model's demo run: the run directory and what the CLI reports of it."""

    model: str
    run_dir: Path
    test_acc: float
    best_epoch: int
    epochs: int
    seconds_per_epoch: float
    parameters: int
    history: list[dict] = field(repr=False)


def _demo_config(model: str, *, epochs: int, missing: float, seed: int, hidden_size: int):
    from ctrnn.train import TrainConfig

    return TrainConfig(
        model=model,
        hidden_size=hidden_size,
        dataset="JapaneseVowels",
        missing=missing,
        seed=seed,
        epochs=epochs,
        lr=3e-3,
        batch_size=32,
        **DEMO_MODELS[model],
    )


def _train_one(model: str, run_dir: str, config_kwargs: dict, threads: int) -> DemoRun:
    # runs in a worker process: one torch thread each, the workers share the cores
    from ctrnn.train import load_run, train

    torch.set_num_threads(threads)
    result = train(_demo_config(model, **config_kwargs), run_dir, progress=False)
    n_params = sum(p.numel() for p in load_run(run_dir).model.parameters())
    seconds = sum(row["seconds"] for row in result.history)
    return DemoRun(
        model=model,
        run_dir=Path(run_dir),
        test_acc=float(result.test_acc),
        best_epoch=int(result.best_epoch),
        epochs=len(result.history),
        seconds_per_epoch=seconds / max(len(result.history), 1),
        parameters=n_params,
        history=list(result.history),
    )


def run_classification_demo(
    out_dir: str | Path = "runs/demo",
    *,
    models: Sequence[str] = tuple(DEMO_MODELS),
    epochs: int = 30,
    missing: float = 0.3,
    seed: int = 0,
    hidden_size: int = 32,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[DemoRun]:
    """Train each of ``models`` on JapaneseVowels with ``missing`` of the time points dropped.

    Every model gets the same data (the seeded drop and the stratified 70/15/15 split of the
    pooled archive) and the training defaults of :class:`ctrnn.train.TrainConfig` (Adam at
    learning rate 3e-3 with a cosine schedule, clipping, early stopping on the validation
    loss), batch 32, at most ``epochs`` epochs, and is tested with the weights of its epoch
    of lowest validation loss. The runs go to ``out_dir/<model>`` (a run
    directory of :func:`ctrnn.train.train` each; a previous demo run there is replaced) and
    train in ``workers`` processes at once (default: one per CPU core, at most one per model),
    one torch thread each. ``log`` receives a line as each model finishes. Returns the runs in
    the order of ``models``.
    """
    unknown = [m for m in models if m not in DEMO_MODELS]
    if unknown:
        raise ValueError(
            f"run_classification_demo: unknown demo model(s) {unknown}; valid: "
            f"{', '.join(DEMO_MODELS)}"
        )
    if not models:
        raise ValueError("run_classification_demo: models is empty")
    out_dir = Path(out_dir)
    for model in models:
        run_dir = out_dir / model
        if (run_dir / "config.json").is_file():
            shutil.rmtree(run_dir)  # the demo's own previous run
    if workers is None:
        workers = min(len(models), os.cpu_count() or 1)
    config_kwargs = dict(epochs=epochs, missing=missing, seed=seed, hidden_size=hidden_size)
    runs: dict[str, DemoRun] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {
            pool.submit(_train_one, model, str(out_dir / model), config_kwargs, 1): model
            for model in models
        }
        for future in as_completed(futures):
            run = future.result()
            runs[run.model] = run
            if log is not None:
                log(
                    f"{run.model:<11} test accuracy {run.test_acc:.3f}   best epoch "
                    f"{run.best_epoch}/{run.epochs}   {run.seconds_per_epoch:.2f} s/epoch"
                )
    return [runs[m] for m in models]


def plot_learning_curves(runs: Sequence[DemoRun], path: str | Path, title: str = "") -> Path:
    """Training loss and validation accuracy per epoch of each run, as a PNG at ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError('plot_learning_curves needs matplotlib: pip install "ctrnn[plot]"') from e
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for run in runs:
        epochs = [row["epoch"] for row in run.history]
        ax_loss.plot(epochs, [row["train_loss"] for row in run.history], label=run.model)
        ax_acc.plot(epochs, [row["val_acc"] for row in run.history], label=run.model)
    ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
