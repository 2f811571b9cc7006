"""The pieces of a training loop shared by :func:`ctrnn.train.train` and the scikit-learn
style classifier: the model by config, the task's loss, one epoch of training, evaluation."""

from __future__ import annotations

import inspect
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ctrnn.data import IGNORE_INDEX, collate

from ._distributed import Context, ShardedBatchSampler, WeightedDataset

__all__ = [
    "Predictor",
    "build_model",
    "evaluate_loader",
    "make_loader",
    "seed_everything",
    "train_epoch",
]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's global generator and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global generator, for user code)
    random.seed(seed)


def _builder_parameters(name: str) -> dict[str, inspect.Parameter] | None:
    from ctrnn.models._registry import _BUILDERS

    params = inspect.signature(_BUILDERS[name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None  # takes anything: let the builder judge
    return dict(params)


def build_model(
    name: str,
    *,
    input_size: int,
    hidden_size: int,
    num_outputs: int,
    mode: str | None = None,
    solver: dict | None = None,
    options: dict | None = None,
) -> nn.Module:
    """``ctrnn.models.create`` with the trainer's rules for ``mode`` and ``solver``.

    Solver options switch a model that has both modes to continuous unless ``mode`` says
    otherwise; they are an error for a model without a continuous formulation, and with
    ``mode="discrete"``.
    """
    import ctrnn.models

    kwargs = dict(options or {})
    params = _builder_parameters(name)
    has = (lambda key: True) if params is None else (lambda key: key in params)
    if mode is not None:
        if not has("mode"):
            kind = "always continuous" if has("solver") else "discrete only"
            raise ValueError(f"model {name!r} has no mode option (it is {kind}); got mode {mode!r}")
        kwargs["mode"] = mode
    if solver:
        if not has("solver"):
            raise ValueError(
                f"model {name!r} takes no solver options (it has no continuous formulation); "
                f"got {solver}"
            )
        if mode == "discrete":
            raise ValueError(
                f"solver options {solver} apply in continuous mode, but mode is 'discrete'"
            )
        kwargs["solver"] = dict(solver)
        if mode is None and has("mode"):
            kwargs["mode"] = "continuous"
    return ctrnn.models.create(
        name, input_size=input_size, hidden_size=hidden_size, num_classes=num_outputs, **kwargs
    )


class Predictor(nn.Module):
    """A model's predictions for a task as one ``forward``, so that DistributedDataParallel
    sees the call: class logits ``(B, K)`` (``"classification"``), values ``(B,)``
    (``"regression"``, a head of size 1) or per-step logits ``(B, T, K)`` (``"sequence"``,
    the head applied to every output)."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, values, times, mask):
        if self.task == "classification":
            return self.model.classify(values, times, mask)
        if self.task == "regression":
            return self.model.classify(values, times, mask)[:, 0]
        output = self.model(values, times, mask)[0]
        return self.model.head(output)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def loss_terms(task: str, pred, labels, weights):
    """Weighted sums over the batch: ``(loss, correct, count)``; ``correct`` is 0 for
    regression. Per-step labels equal to ``IGNORE_INDEX`` (padding) count for nothing."""
    pred = _at_least_float32(pred)
    if task == "regression":
        per = (pred - labels.to(pred.dtype)) ** 2
        return (per * weights).sum(), torch.zeros_like(weights.sum()), weights.sum()
    if task == "classification":
        per = F.cross_entropy(pred, labels, reduction="none")
        hit = (pred.argmax(-1) == labels).to(weights)
        return (per * weights).sum(), (hit * weights).sum(), weights.sum()
    valid = labels != IGNORE_INDEX
    per = F.cross_entropy(pred.transpose(1, 2), labels, reduction="none", ignore_index=IGNORE_INDEX)
    w = weights[:, None] * valid.to(weights)
    hit = (pred.argmax(-1) == labels).to(weights)
    return (per * w).sum(), (hit * w).sum(), w.sum()


def collate_weighted(items):
    """Collate ``(Sample, weight)`` pairs from a :class:`WeightedDataset`."""
    samples, weights = zip(*items)
    return collate(list(samples)), torch.tensor(weights, dtype=torch.float32)


def make_loader(
    dataset,
    batch_size: int,
    ctx: Context,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader of ``(Batch, weights)`` over this rank's share of each global batch.

    The loader's own generator (seeded by ``seed``) seeds worker processes; the shuffle
    order comes from :class:`ShardedBatchSampler` (seeded by ``seed`` and the epoch).
    """
    sampler = ShardedBatchSampler(
        len(dataset),
        batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        shuffle=shuffle,
        seed=seed,
    )
    return DataLoader(
        WeightedDataset(dataset),
        batch_sampler=sampler,
        collate_fn=collate_weighted,
        num_workers=num_workers,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )


def _step_sums(task, net, batch, weights, device):
    batch = batch.to(device, non_blocking=True)
    weights = weights.to(device, non_blocking=True)
    pred = net(batch.values, batch.times, batch.mask)
    return loss_terms(task, pred, batch.labels, weights), pred, batch


def train_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    task: str,
    ctx: Context,
    clip_grad_norm: float | None = None,
    bar=None,
) -> tuple[float, float | None]:
    """One pass over ``loader``: returns ``(mean loss, accuracy)`` over every process's
    samples (accuracy None for regression). The loss of a step is the mean over the global
    batch, so the averaged DistributedDataParallel gradient is the single-process one."""
    net.train()
    totals = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    params = [p for p in net.parameters() if p.requires_grad]
    for batch, weights in loader:
        (loss_sum, correct, count), _, _ = _step_sums(task, net, batch, weights, ctx.device)
        global_count = ctx.all_sum(count.detach()).clamp_min(1)
        loss = loss_sum * ctx.world_size / global_count
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        optimizer.step()
        totals += torch.stack([loss_sum.detach(), correct.detach(), count.detach()]).double()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
    return _means(task, ctx.all_sum(totals))


def _means(task: str, totals: torch.Tensor) -> tuple[float, float | None]:
    loss_sum, correct, count = totals.tolist()
    if count == 0:
        return math.nan, None if task == "regression" else math.nan
    return loss_sum / count, None if task == "regression" else correct / count


@torch.no_grad()
def evaluate_loader(
    net: nn.Module, loader: DataLoader, *, task: str, ctx: Context, collect: bool = False
):
    """``(mean loss, accuracy)`` over ``loader`` in eval mode, reduced over processes. With
    ``collect`` also this process's ``(predictions, labels)`` of the real (weight 1) samples:
    logits for classification, values for regression, logits ``(steps, K)`` of every real
    time step for sequence tasks."""
    net.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    preds, labels = [], []
    for batch, weights in loader:
        (loss_sum, correct, count), pred, batch = _step_sums(task, net, batch, weights, ctx.device)
        totals += torch.stack([loss_sum, correct, count]).double()
        if collect:
            keep = weights.to(device=pred.device, dtype=torch.bool)
            pred, target = pred[keep], batch.labels[keep]
            if task == "sequence":  # every real time step, flattened
                valid = target != IGNORE_INDEX
                pred, target = pred[valid], target[valid]
            preds.append(pred.cpu())
            labels.append(target.cpu())
    means = _means(task, ctx.all_sum(totals))
    if not collect:
        return means
    return means, (torch.cat(preds), torch.cat(labels))
