"""Processes under ``torchrun``, and the batch sampler that splits a global batch among them.

One process (``WORLD_SIZE`` unset or 1) is the same code with a world of one. The global
order of an epoch is a permutation seeded by ``(seed, epoch)``, cut into global batches of
``batch_size`` consecutive indices; rank ``r`` of ``W`` takes positions ``r, r + W, …`` of each
global batch. A rank whose share is empty (a last batch smaller than ``W``) gets a copy of the
batch's first sample with weight 0. Losses are weighted so that the gradient averaged by
DistributedDataParallel equals the single-process gradient of the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

__all__ = ["Context", "ShardedBatchSampler", "WeightedDataset", "setup", "teardown"]


@dataclass
class Context:
    """Where this process stands: ``rank`` of ``world_size`` processes, its ``device``."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over processes (``tensor`` itself with one process)."""
        if self.distributed:
            tensor = tensor.clone()
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(device: str) -> Context:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    gloo on the CPU, NCCL on CUDA devices; under ``torchrun`` a ``"cuda"`` device is the
    process's ``LOCAL_RANK`` device.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was asked for but CUDA is not available; use device 'cpu'"
        )
    if world <= 1:
        return Context(rank=0, world_size=1, device=dev)
    rank = int(os.environ["RANK"])
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(rank=rank, world_size=world, device=dev, owns_group=owns)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class WeightedDataset(Dataset):
    """``dataset`` with a weight per item: index ``i < n`` is item ``i`` with weight 1, index
    ``n + i`` is item ``i`` with weight 0 (the padding a sharded batch may need)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.n = len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return self.dataset[index % self.n], float(index < self.n)


class ShardedBatchSampler(Sampler):
    """Batches of indices into a :class:`WeightedDataset` for one of ``world_size`` ranks.

    Args:
        n: dataset size.
        batch_size: the global batch size.
        rank, world_size: this process and how many there are.
        shuffle: permute each epoch with a generator seeded by ``seed`` and the epoch
            (:meth:`set_epoch`), so an epoch's order depends on nothing else (a resumed run
            sees the same batches).
        seed: the shuffle seed.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
    ):
        self.n, self.batch_size = n, batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=generator).tolist()

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = self.global_order()
        for start in range(0, self.n, self.batch_size):
            batch = order[start : start + self.batch_size]
            share = batch[self.rank :: self.world_size]
            yield share if share else [self.n + batch[0]]
