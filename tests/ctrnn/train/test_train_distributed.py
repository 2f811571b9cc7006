"""Multi-process training: the sharded loss equals the single-process loss, and two processes
under torchrun reproduce a single-process run."""

import os
import subprocess
import sys

import pytest
import torch

import ctrnn.models
from ctrnn.data import load_dataset
from ctrnn.train import TrainConfig, read_metrics, train
from ctrnn.train._distributed import Context, ShardedBatchSampler, WeightedDataset
from ctrnn.train._loop import Predictor, collate_weighted, loss_terms

SPIRALS = dict(dataset="spirals", dataset_options={"n": 80, "min_length": 8, "max_length": 16})


def _gradient(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("world", [2, 3, 5])
def test_averaged_rank_gradients_equal_the_global_batch_gradient(world):
    # what DistributedDataParallel computes, without processes: the mean over ranks of each
    # rank's gradient of  sum(weight * loss) * world / global count
    torch.manual_seed(0)
    data = load_dataset("spirals", n=40, min_length=4, max_length=9).train
    model = ctrnn.models.create("gru", input_size=3, hidden_size=5, num_classes=2).double()
    net = Predictor(model, "classification")
    weighted = WeightedDataset(data)
    global_batch = next(iter(ShardedBatchSampler(len(data), 7, shuffle=True, seed=1)))
    for step_batch in (global_batch, global_batch[:3]):  # a full batch and a short last one
        batch, weights = collate_weighted([weighted[i] for i in step_batch])
        pred = net(batch.values.double(), batch.times.double(), batch.mask)
        loss, _, count = loss_terms("classification", pred, batch.labels, weights.double())
        reference = _gradient(model, loss / count)
        per_rank = []
        for rank in range(world):
            share = step_batch[rank::world] or [len(data) + step_batch[0]]
            batch, weights = collate_weighted([weighted[i] for i in share])
            pred = net(batch.values.double(), batch.times.double(), batch.mask)
            loss, _, _ = loss_terms("classification", pred, batch.labels, weights.double())
            per_rank.append(_gradient(model, loss * world / len(step_batch)))
        torch.testing.assert_close(torch.stack(per_rank).mean(0), reference, rtol=1e-10, atol=1e-12)


def test_single_process_context_needs_no_process_group():
    ctx = Context(rank=0, world_size=1, device=torch.device("cpu"))
    t = torch.tensor([1.0, 2.0])
    assert ctx.all_sum(t) is t and not ctx.distributed and ctx.is_main
    ctx.barrier()


@pytest.mark.slow
def test_two_processes_under_torchrun_match_one_process(tmp_path):
    config = TrainConfig(
        **SPIRALS,
        model="gru_d",
        hidden_size=8,
        epochs=3,
        batch_size=15,  # 56 training series: shares of 8/7 and a last global batch of 11
        lr=0.02,
        schedule="cosine",
        clip_grad_norm=1.0,
    )
    single = train(config, tmp_path / "single")
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "ctrnn", "train", "--config", str(path), "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    epoch_lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 3  # only rank 0 prints
    rows = read_metrics(tmp_path / "ddp/metrics.csv")
    assert len(rows) == 3
    for mine, theirs in zip(rows, single.history):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key
    a = torch.load(tmp_path / "single/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ddp/last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
