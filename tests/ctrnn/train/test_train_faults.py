"""The pipeline's faults under bad inputs: a busy run directory, damaged checkpoints, failed
writes, relative paths, infinities, stale temporary files, file modes, malformed configs.
Each ends in a clean error (exit status 2 from the command line) that names the file or value."""

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ctrnn.cli import main
from ctrnn.data import TimeSeriesDataset, from_arrays, read_ts
from ctrnn.train import TimeSeriesClassifier, TrainConfig, _checkpoint, train
from ctrnn.train._checkpoint import RunDirectoryBusy, RunDirectoryLock

SMALL = [
    "--model",
    "gru",
    "--dataset",
    "spirals",
    "--dataset-option",
    "n=60",
    "--dataset-option",
    "min_length=6",
    "--dataset-option",
    "max_length=10",
    "--hidden-size",
    "4",
    "--batch-size",
    "16",
]


def cli_train(run_dir, *extra):
    return main(["train", *SMALL, "--epochs", "1", *extra, "--out", str(run_dir)])


def clean_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("ctrnn "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def finished(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli_train(run_dir) == 0
    capsys.readouterr()
    return run_dir


# -- the run-directory lock ----------------------------------------------------------------------


def test_a_second_run_into_a_busy_directory_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunDirectoryLock(run_dir):
        assert cli_train(run_dir) == 2
        clean_error(capsys, "another ctrnn train", f"(pid {os.getpid()})", str(run_dir), "--out")
        with pytest.raises(RunDirectoryBusy, match="is training into"):
            train(TrainConfig(model="gru", dataset="spirals", epochs=1), run_dir)
    assert not (run_dir / "metrics.csv").exists()
    assert cli_train(run_dir) == 0  # released


def test_a_killed_run_leaves_no_stale_lock(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from ctrnn.train._checkpoint import RunDirectoryLock
                lock = RunDirectoryLock({str(run_dir)!r})
                lock.acquire()
                print("locked", flush=True)
                time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli_train(run_dir) == 2
        clean_error(capsys, "another ctrnn train")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert (run_dir / ".lock").exists()  # the file stays; the lock went with the process
    assert cli_train(run_dir) == 0


def test_a_failed_start_leaves_no_directory_behind(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli_train(run_dir, "--model-option", "depth=2") == 2
    capsys.readouterr()
    assert not run_dir.exists()


# -- damaged checkpoints ---------------------------------------------------------------------------


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"not a checkpoint at all\n" * 50)
    elif how == "missing keys":
        torch.save({"config": {}, "epoch": 1}, path)
    elif how == "wrong shapes":
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["model"] = {k: torch.zeros(3) for k in checkpoint["model"]}
        torch.save(checkpoint, path)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "missing keys", "wrong shapes"])
def test_resuming_from_a_damaged_checkpoint_names_the_file(finished, capsys, how):
    last = finished / "last.pt"
    _damage(last, how)
    assert cli_train(finished, "--resume", "--epochs", "2") == 2
    err = clean_error(capsys, str(last), "delete it")
    assert {"empty": "is empty", "missing keys": "lacks 'model'"}.get(how, "damaged") in err


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "missing keys", "wrong shapes"])
def test_evaluating_a_damaged_checkpoint_names_the_file(finished, capsys, how):
    _damage(finished / "best.pt", how)
    assert main(["evaluate", str(finished)]) == 2
    clean_error(capsys, str(finished / "best.pt"))


# -- failed writes ------------------------------------------------------------------------------


def _failing_writer(monkeypatch, code, only=None):
    real = _checkpoint._write_file

    def write(path, data):
        if only is None or path.name.startswith(f".{only}."):
            raise OSError(code, os.strerror(code))
        return real(path, data)

    monkeypatch.setattr(_checkpoint, "_write_file", write)


def test_a_full_disk_keeps_the_previous_checkpoint(finished, capsys, monkeypatch):
    before = (finished / "last.pt").read_bytes()
    _failing_writer(monkeypatch, errno.ENOSPC, only="last.pt")
    assert cli_train(finished, "--resume", "--epochs", "2") == 2
    clean_error(capsys, str(finished / "last.pt"), "no space left", "the previous version is kept")
    assert (finished / "last.pt").read_bytes() == before
    assert torch.load(finished / "last.pt", weights_only=True)["epoch"] == 1
    assert not list(finished.glob(".*.tmp"))


def test_a_read_only_run_directory_is_a_clean_error(tmp_path, capsys, monkeypatch):
    _failing_writer(monkeypatch, errno.EROFS)
    assert cli_train(tmp_path / "run") == 2
    clean_error(capsys, "could not write", "config.json", "Read-only file system", "--out")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only dirs"
)
def test_an_unwritable_directory_is_a_clean_error(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert cli_train(parent / "run") == 2
        clean_error(capsys, "cannot write to the run directory", "--out")
    finally:
        parent.chmod(0o700)


def test_a_file_as_the_run_directory_is_a_clean_error(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    assert cli_train(target) == 2
    clean_error(capsys, str(target), "is a file", "--out")
    assert target.read_text() == "keep me\n"


# -- stale temporaries and file modes --------------------------------------------------------------


def test_stale_temporary_files_are_removed_on_the_next_start(finished, capsys):
    stale = [finished / ".last.pt.4242.0badf00d.tmp", finished / ".metrics.csv.17.12345678.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    assert cli_train(finished, "--resume", "--epochs", "2") == 0
    assert not any(p.exists() for p in stale)


def test_run_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run_dir = tmp_path / "run"
        assert cli_train(run_dir) == 0
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.csv", "last.pt", "best.pt", "result.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name


# -- configuration and data ------------------------------------------------------------------------


def test_a_relative_data_root_is_stored_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data_root="archive")
    assert config.data_root == str(tmp_path / "archive")
    assert TrainConfig.from_dict(config.to_dict()).data_root == str(tmp_path / "archive")


def test_a_yaml_solver_list_names_the_key_and_the_type(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: neural_cde\nsolver: [rk4]\n")
    assert cli_train(tmp_path / "run", "--config", str(config)) == 2
    clean_error(capsys, str(config), "solver must be a mapping", "{method: rk4", "list ['rk4']")
    with pytest.raises(ValueError, match="solver must be a SolverOptions or a mapping"):
        TrainConfig(solver=["rk4"])


def test_infinite_values_are_refused_in_the_data_layer(tmp_path):
    values = np.zeros((3, 5, 2), dtype=np.float32)
    values[1, 3, 1] = np.inf
    with pytest.raises(ValueError, match=r"series 1 holds inf at time step 3, channel 1"):
        TimeSeriesDataset(values, [0, 1, 0])
    values[1, 3, 1] = -np.inf
    with pytest.raises(ValueError, match=r"holds -inf .*replace infinities with NaN"):
        from_arrays(values, ["a", "b", "a"])
    values[1, 3, 1] = np.nan  # NaN is a missing value
    assert from_arrays(values, ["a", "b", "a"]).num_channels == 2
    path = tmp_path / "x.ts"
    path.write_text("@problemName x\n@classLabel true a b\n@data\n1,2,inf:a\n1,2,3:b\n")
    with pytest.raises(ValueError, match=r"line 4: infinite value 'inf' at position 2"):
        read_ts(path)


def test_infinite_values_are_refused_by_the_classifier():
    X = np.zeros((6, 1, 8))
    X[2, 0, 5] = np.inf
    with pytest.raises(ValueError, match=r"fit: series 2 of X holds inf at time step 5"):
        TimeSeriesClassifier("gru", hidden_size=4, epochs=1).fit(X, [0, 1] * 3)
