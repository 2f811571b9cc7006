"""A finished run: ``load_run(run_dir)`` and ``evaluate(run_dir)``."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from . import _checkpoint
from ._config import TrainConfig
from ._distributed import Context
from ._loop import Predictor, build_model, evaluate_loader, make_loader
from ._trainer import load_data, load_splits, read_metrics

__all__ = ["Run", "classification_report", "evaluate", "load_run"]

_SPLITS = ("train", "val", "test")
_BEST_KEYS = ("config", "epoch", "monitor", "metric", "task", "classes", "input_size", "model")


class Run:
    """A run directory written by :func:`ctrnn.train.train`.

    Attributes:
        run_dir: the directory.
        config: the configuration, a dict (``TrainConfig.from_dict(run.config)`` rebuilds it).
        model: the best model (``best.pt``), in eval mode, on ``device``.
        epoch: the epoch ``best.pt`` was saved at.
        monitor, metric: the metric that chose it and its value.
        task: ``"classification"``, ``"regression"`` or ``"sequence"``.
        classes: the class names (None for regression).
        splits: the :class:`ctrnn.data.DatasetSplits` rebuilt from the config, or read from
            ``data.pt`` for a run on the user's data (loaded on first use).
        history: the rows of ``metrics.csv``.
    """

    def __init__(self, run_dir: Path, checkpoint: dict, model: nn.Module):
        self.run_dir = run_dir
        self.config: dict = checkpoint["config"]
        self.model = model
        self.epoch: int = checkpoint["epoch"]
        self.monitor: str = checkpoint["monitor"]
        self.metric: float = checkpoint["metric"]
        self.task: str = checkpoint["task"]
        self.classes = None if checkpoint["classes"] is None else tuple(checkpoint["classes"])

    @cached_property
    def splits(self):
        data = self.run_dir / "data.pt"
        if self.config.get("dataset") is None and data.is_file():
            return load_data(data)
        return load_splits(TrainConfig.from_dict(self.config))

    @property
    def history(self) -> list[dict]:
        path = self.run_dir / "metrics.csv"
        return read_metrics(path) if path.exists() else []

    def __repr__(self) -> str:
        return (
            f"Run({str(self.run_dir)!r}, model={self.config['model']!r}, "
            f"dataset={self.config['dataset']!r}, epoch={self.epoch}, "
            f"{self.monitor}={self.metric:.4g})"
        )


def load_run(run_dir: str | Path, *, device: str = "cpu") -> Run:
    """Load the best model of a run directory (``best.pt``) and its configuration."""
    run_dir = Path(run_dir)
    path = run_dir / "best.pt"
    if not path.is_file():
        detail = (
            "it holds no run (no best.pt)" if run_dir.is_dir() else "the directory does not exist"
        )
        raise FileNotFoundError(
            f"load_run: {str(run_dir)!r} is not a finished run directory: {detail}; train one "
            "with `ctrnn train --out DIR`"
        )
    checkpoint = _checkpoint.load(path, required=_BEST_KEYS)
    try:
        config = TrainConfig.from_dict(checkpoint["config"])
        classes = checkpoint["classes"]
        model = build_model(
            config.model,
            input_size=checkpoint["input_size"],
            hidden_size=config.hidden_size,
            num_outputs=1 if classes is None else len(classes),
            mode=config.mode,
            solver=config.solver.to_dict(),
            options=config.model_options,
        )
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise _checkpoint.CheckpointError(
            f"checkpoint {str(path)!r} does not describe a model that can be rebuilt ({first}); "
            "it is damaged: train the run again"
        ) from None
    model.to(torch.device(device)).eval()
    return Run(run_dir, checkpoint, model)


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classes) -> dict:
    """Accuracy, confusion matrix (rows: true class, columns: predicted) and per-class
    precision, recall, F1 and support, with their unweighted (macro) means. A class never
    predicted has precision 0; never present, recall 0."""
    k = len(classes)
    predicted = logits.argmax(-1)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    tp = confusion.diagonal().double()
    predicted_count = confusion.sum(0).double()
    support = confusion.sum(1).double()
    precision = torch.where(predicted_count > 0, tp / predicted_count.clamp_min(1), 0.0)
    recall = torch.where(support > 0, tp / support.clamp_min(1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), 0.0)
    per_class = {
        str(name): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    n = int(confusion.sum())
    return {
        "accuracy": float(tp.sum()) / n if n else math.nan,
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }


def evaluate(
    run_dir: str | Path, *, split: str = "test", device: str = "cpu", batch_size: int | None = None
) -> dict:
    """Evaluate a run's best model on one of its splits; write ``evaluation.json`` (and, for
    classification with matplotlib installed, ``confusion_matrix.png``) into ``run_dir``.

    Returns:
        For classification: ``loss`` (cross-entropy), ``accuracy``, ``confusion_matrix``
        (rows: true class, columns: predicted), ``per_class`` precision/recall/F1/support,
        macro means, ``classes``. For regression: ``loss`` (mean squared error), ``rmse``,
        ``mae``. Also ``split``, ``n``, ``epoch`` (of the best model), and ``figure`` (the PNG's
        path, or None).
    """
    if split not in _SPLITS:
        raise ValueError(f"evaluate: split must be one of {', '.join(_SPLITS)}, got {split!r}")
    run = load_run(run_dir, device=device)
    dataset = getattr(run.splits, split)
    ctx = Context(rank=0, world_size=1, device=torch.device(device))
    size = batch_size or run.config["batch_size"]
    loader = make_loader(dataset, size, ctx, shuffle=False, seed=0)
    (loss, _), (preds, labels) = evaluate_loader(
        Predictor(run.model, run.task), loader, task=run.task, ctx=ctx, collect=True
    )
    report: dict = {"split": split, "n": len(dataset), "epoch": run.epoch, "loss": loss}
    figure = None
    if run.task == "regression":
        err = preds.double() - labels.double()
        report.update(rmse=float(err.pow(2).mean().sqrt()), mae=float(err.abs().mean()))
    else:
        report.update(classification_report(preds, labels, run.classes))
        report["classes"] = list(run.classes)
        figure = _confusion_figure(report, run, Path(run_dir) / "confusion_matrix.png")
    report["figure"] = None if figure is None else str(figure)
    _checkpoint.atomic_write_json(Path(run_dir) / "evaluation.json", report)
    return report


def _confusion_figure(report: dict, run: Run, path: Path) -> Path | None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    matrix = torch.tensor(report["confusion_matrix"], dtype=torch.float64)
    k = matrix.shape[0]
    size = max(4.0, 0.5 * k + 2)
    fig = Figure(figsize=(size, size * 0.9))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(matrix.numpy(), cmap="Blues")
    top = float(matrix.max()) if matrix.numel() else 0.0
    for i in range(k):
        for j in range(k):
            value = int(matrix[i, j])
            color = "white" if value > top / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(k), run.classes, rotation=45, ha="right")
    ax.set_yticks(range(k), run.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{run.config['model']} on {run.config['dataset']} ({report['split']}): "
        f"accuracy {report['accuracy']:.3f}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
