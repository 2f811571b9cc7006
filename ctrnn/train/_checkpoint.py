"""Atomic file writes, checked checkpoint reads, the run-directory lock, and
random-number-generator states as plain tensors.

Everything a checkpoint holds is a tensor, a number, a string, or a list/dict of those, so
``torch.load(path, weights_only=True)`` reads it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import secrets
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "RunDirectoryBusy",
    "RunDirectoryLock",
    "RunWriteError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "get_rng_state",
    "load",
    "remove_stale_temporaries",
    "save",
    "set_rng_state",
]

_TMP_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, empty, not a checkpoint, or missing
    what a run needs. The message names the file."""


class RunWriteError(OSError):
    """A run file could not be written (full disk, read-only directory, ...); the previous
    version of the file is intact. The message names the file."""


class RunDirectoryBusy(RuntimeError):
    """Another process is training into the same run directory."""


def _temporary_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path``, created with mode 0666 less the umask (as
    ``open`` does; ``tempfile.mkstemp`` would make it 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename it over
    ``path``: a reader (or a run killed mid-write) sees the old file or the new one. On a
    failure (full disk, no permission) the temporary file is removed, ``path`` is left as it
    was, and a :class:`RunWriteError` names it."""
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        reason = e.strerror or str(e)
        fix = "choose a writable run directory (--out)"
        if e.errno == errno.ENOSPC:
            reason, fix = "no space left on the device", "free some space, or " + fix
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        raise RunWriteError(
            e.errno, f"could not write {str(path)!r}: {reason} ({kept}); {fix}"
        ) from None
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save(obj, path: str | Path) -> None:
    """``torch.save`` atomically (see :func:`_atomic`). The checkpoint is serialised in
    memory first, so that a write error is an ``OSError`` naming the file rather than an
    error from inside torch's writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic(Path(path), buffer.getvalue())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporary files that runs killed during a write left in ``directory``
    (``.<name>.<pid>.<random>.tmp``); call it while holding the directory's lock. Returns the
    removed paths."""
    removed = []
    for tmp in Path(directory).glob(f".*{_TMP_SUFFIX}"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def load(path: str | Path, *, required=()) -> dict:
    """Read a checkpoint written by :func:`save` (``weights_only``); a file that is empty,
    truncated, not a checkpoint, or lacks one of ``required`` keys is a
    :class:`CheckpointError` naming the file."""
    path = Path(path)
    advice = "delete it (and train again into a new directory)"
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty; {advice}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds of error on a damaged file
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} is damaged or not a ctrnn checkpoint ({first}); {advice}"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a ctrnn "
            f"checkpoint; {advice}"
        )
    missing = [k for k in required if k not in checkpoint]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} lacks {', '.join(map(repr, missing))}: it is damaged or "
            f"from another program; {advice}"
        )
    return checkpoint


class RunDirectoryLock:
    """An exclusive lock on a run directory: ``flock`` on ``<dir>/.lock``. The kernel drops it
    when the process ends, however it ends, so a killed run leaves no stale lock. Where
    ``fcntl`` does not exist (Windows), no lock is taken."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / ".lock"
        self._file = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX
            return
        f = open(self.path, "a+")  # held open for the lock's lifetime
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise RunDirectoryBusy(
                f"another ctrnn train{who} is training into {str(self.path.parent)!r}; wait "
                "for it to finish or choose another run directory (--out)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None

    def __enter__(self) -> RunDirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def get_rng_state() -> dict:
    """torch (CPU and every CUDA device), NumPy and Python generator states, as tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global one)
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (restoring the global generator)
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss"]))
