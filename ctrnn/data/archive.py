"""Any UEA/UCR archive dataset by name or path: ``NAME_TRAIN.ts`` and ``NAME_TEST.ts`` found
under a directory the user names, or in the copies that an installed aeon or sktime ships.
Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ArchiveFiles", "archive_datasets", "find_archive", "installed_archive_dirs"]

#: packages whose installed copy ships archive ``.ts`` files under ``<package>/datasets/data``
ARCHIVE_PACKAGES = ("aeon", "sktime")

_TRAIN = re.compile(r"^(?P<name>.+)_TRAIN\.ts(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class ArchiveFiles:
    """Where an archive dataset's files are.

    Attributes:
        name: the dataset's name, as its file names spell it (``ArrowHead`` for
            ``ArrowHead_TRAIN.ts``).
        train: the ``_TRAIN.ts`` (or ``.ts.gz``) file.
        test: the ``_TEST.ts`` file beside it, or None where there is none.
        origin: where it was found: ``"root"`` (a directory or path the user gave), ``"aeon"``
            or ``"sktime"``.
    """

    name: str
    train: Path
    test: Path | None
    origin: str

    @property
    def folder(self) -> Path:
        return self.train.parent


def installed_archive_dirs() -> list[tuple[str, Path]]:
    """``(package, data directory)`` of every installed package in :data:`ARCHIVE_PACKAGES`,
    found without importing it (importing sktime or aeon takes seconds)."""
    out = []
    for package in ARCHIVE_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
        if data.is_dir():
            out.append((package, data))
    return out


def _test_beside(train: Path, name: str) -> Path | None:
    for ext in (".ts", ".ts.gz"):
        for part in ("TEST", "test", "Test"):
            candidate = train.parent / f"{name}_{part}{ext}"
            if candidate.is_file():
                return candidate
    return None


def _from_train_file(path: Path, origin: str) -> ArchiveFiles:
    match = _TRAIN.match(path.name)
    if match is None:
        raise ValueError(
            f"{str(path)!r} is not an archive training file; expected a file named "
            "NAME_TRAIN.ts (or NAME_TRAIN.ts.gz) beside NAME_TEST.ts"
        )
    name = match["name"]
    return ArchiveFiles(name, path, _test_beside(path, name), origin)


def _scan(directory: Path, origin: str) -> dict[str, ArchiveFiles]:
    """The archive sets in ``directory`` and in its immediate subdirectories."""
    found: dict[str, ArchiveFiles] = {}
    if not directory.is_dir():
        return found
    candidates = sorted(directory.glob("*_TRAIN.ts*")) + sorted(directory.glob("*/*_TRAIN.ts*"))
    for path in candidates:
        if path.is_file() and _TRAIN.match(path.name):
            files = _from_train_file(path, origin)
            found.setdefault(files.name, files)
    return found


def _search_dirs(root) -> list[tuple[str, Path]]:
    dirs = [] if root is None else [("root", Path(root).expanduser().resolve())]
    return dirs + installed_archive_dirs()


def archive_datasets(root: str | os.PathLike | None = None) -> dict[str, ArchiveFiles]:
    """Every archive dataset found: in ``root`` (and its subdirectories one level down), then
    in an installed aeon's and sktime's data directories; the first place that has a name
    wins. Keys are the names as the files spell them."""
    found: dict[str, ArchiveFiles] = {}
    for origin, directory in _search_dirs(root):
        for name, files in _scan(directory, origin).items():
            if name.lower() not in {k.lower() for k in found}:
                found[name] = files
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def looks_like_path(name: str) -> bool:
    """Whether a dataset argument is meant as a path rather than a name."""
    return (
        os.sep in name
        or (os.altsep is not None and os.altsep in name)
        or name.lower().endswith((".ts", ".ts.gz"))
        or name in (".", "..")
    )


def find_archive(name: str | os.PathLike, root: str | os.PathLike | None = None) -> ArchiveFiles:
    """The files of an archive dataset.

    Args:
        name: a dataset name (matched case-insensitively against ``NAME_TRAIN.ts`` files in
            ``root``, then in an installed aeon's and sktime's data directories), or a path:
            a ``NAME_TRAIN.ts`` file, or a directory holding exactly one such file (directly
            or in one subdirectory).
        root: a directory to search first (``NAME_TRAIN.ts`` in it or in ``root/NAME/``).

    Raises:
        FileNotFoundError: nothing found; the message says where it looked and what it found.
        ValueError: a path that is not a training file, or a directory with several.
    """
    text = os.fspath(name)
    path = Path(text).expanduser()
    if looks_like_path(text) or (root is None and path.exists()):
        if path.is_file():
            return _from_train_file(path.resolve(), "root")
        if path.is_dir():
            found = _scan(path.resolve(), "root")
            if len(found) == 1:
                return next(iter(found.values()))
            if not found:
                raise FileNotFoundError(
                    f"no archive dataset in {str(path)!r}: expected NAME_TRAIN.ts and "
                    "NAME_TEST.ts in it or in a subdirectory"
                )
            raise ValueError(
                f"{str(path)!r} holds several archive datasets ({', '.join(found)}); give one "
                "of their names with this directory as the data root (--data-root), or the "
                "path to its _TRAIN.ts file"
            )
        raise FileNotFoundError(f"dataset path {str(path)!r} does not exist")
    for origin, directory in _search_dirs(root):
        for files in _scan(directory, origin).values():
            if files.name.lower() == text.lower():
                return files
    places = [str(d) for _, d in _search_dirs(root)]
    where = (
        f"looked in {', '.join(places)}"
        if places
        else "no data root was given and neither aeon nor sktime is installed"
    )
    raise FileNotFoundError(
        f"archive dataset {text!r} not found ({where}). Pass --data-root DIR (root=) "
        f"for a directory holding {text}_TRAIN.ts and {text}_TEST.ts, or the path to the "
        "_TRAIN.ts file as the dataset"
    )
