"""A reader for the ``.ts`` format of the UEA & UCR time series classification archives."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np

from ._dataset import TimeSeriesDataset

__all__ = ["read_ts"]

_BOOL_TAGS = ("timestamps", "missing", "univariate", "equallength", "targetlabel")
_TAGS = ("problemname", *_BOOL_TAGS, "dimensions", "serieslength", "classlabel", "data")


def _open_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: not a valid gzip file ({e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    return text.splitlines()


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        self.header: dict[str, object] = {}

    def error(self, lineno: int, message: str) -> ValueError:
        return ValueError(f"{self.path}, line {lineno}: {message}")

    def tag(self, lineno: int, line: str) -> None:
        parts = line[1:].split(None, 1)
        tag = parts[0].lower() if parts else ""
        rest = parts[1].strip() if len(parts) > 1 else ""
        if tag not in _TAGS:
            raise self.error(
                lineno, f"unknown header tag {line.split()[0]!r}; known: @{', @'.join(_TAGS)}"
            )
        if tag == "problemname":
            self.header[tag] = rest
        elif tag in _BOOL_TAGS:
            self.header[tag] = self.boolean(lineno, tag, rest)
        elif tag in ("dimensions", "serieslength"):
            if not rest.isdigit() or int(rest) < 1:
                raise self.error(lineno, f"@{tag} must be a positive integer, got {rest!r}")
            self.header[tag] = int(rest)
        elif tag == "classlabel":
            words = rest.split()
            flag = self.boolean(lineno, tag, words[0] if words else "")
            labels = words[1:]
            if flag and not labels:
                raise self.error(lineno, "@classLabel true must list the class labels")
            if len(set(labels)) != len(labels):
                raise self.error(lineno, f"@classLabel lists a label twice: {labels}")
            self.header[tag] = labels if flag else None

    def boolean(self, lineno: int, tag: str, word: str) -> bool:
        if word.lower() not in ("true", "false"):
            raise self.error(lineno, f"@{tag} must be true or false, got {word!r}")
        return word.lower() == "true"

    def numbers(self, lineno: int, dim: int, text: str) -> np.ndarray:
        tokens = [tok.strip() for tok in text.split(",")]
        cleaned = ["nan" if tok == "?" else tok for tok in tokens]
        try:
            out = np.asarray(cleaned, dtype=np.float64)
        except ValueError:
            bad = next(tok for tok in cleaned if not _is_float(tok))
            raise self.error(lineno, f"non-numeric value {bad!r} in dimension {dim + 1}") from None
        if np.isinf(out).any():
            pos = int(np.flatnonzero(np.isinf(out))[0])
            raise self.error(
                lineno,
                f"infinite value {tokens[pos]!r} at position {pos} of dimension {dim + 1}; mark "
                "a missing value with '?' or NaN",
            )
        return out

    def series(self, lineno: int, line: str, dims_expected: int | None):
        if "(" in line:
            raise self.error(
                lineno,
                "timestamped '(t, v)' data is not supported; convert the series to arrays and "
                "use ctrnn.data.from_arrays(values, labels, times)",
            )
        fields = line.split(":")
        if len(fields) < 2:
            raise self.error(
                lineno, f"expected dimensions separated by ':' and a label last, got {line[:60]!r}"
            )
        *dims, label = fields
        if dims_expected is not None and len(dims) != dims_expected:
            raise self.error(
                lineno, f"{len(dims)} dimensions, expected {dims_expected} ({self.dims_source})"
            )
        arrays = [self.numbers(lineno, d, text) for d, text in enumerate(dims)]
        return arrays, label.strip()


def read_ts(path: str | os.PathLike) -> TimeSeriesDataset:
    """Read a ``.ts`` file of the UEA & UCR archives (plain or gzip-compressed).

    The header tags ``@problemName``, ``@timeStamps``, ``@missing``, ``@univariate``,
    ``@dimensions``, ``@equalLength``, ``@seriesLength``, ``@classLabel`` (or
    ``@targetLabel true`` for regression) and ``@data`` are read, case-insensitively; lines
    starting with ``#`` or ``%`` are comments. Each data line holds one series: its dimensions
    separated by ``:``, the values of a dimension by ``,``, and the label last; ``?`` or
    ``NaN`` is a missing value. With ``@equalLength false`` the series may differ in length, and
    a dimension shorter than the others of its series is padded with NaN at the end.

    Returns a :class:`TimeSeriesDataset` named after ``@problemName``, with times ``0, 1, …``,
    class names from ``@classLabel`` in their declared order, or float targets
    (``task == "regression"``) with ``@targetLabel true``.

    Raises:
        ValueError: naming the file, the line and the offending value, for a malformed file:
            ragged dimensions when ``@equalLength true``, non-numeric values, a label not
            declared in ``@classLabel``, the wrong number of dimensions, an unknown tag,
            a series length different from ``@seriesLength``, or timestamped data (not
            supported).
    """
    path = Path(path)
    lines = _open_lines(path)
    reader = _Reader(path)
    values, labels = [], []
    dims_expected = None
    first_length = None
    in_data = False
    data_line = 0
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(("#", "%")):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise reader.error(
                    lineno, f"expected a header tag or a '#' or '%' comment, got {line[:60]!r}"
                )
            reader.tag(lineno, line)
            if line[1:].split()[0].lower() == "data":
                in_data, data_line = True, lineno
                dims_expected = _check_header(reader, lineno)
            continue
        arrays, label = reader.series(lineno, line, dims_expected)
        if dims_expected is None:
            dims_expected = len(arrays)
            reader.dims_source = f"the first series, line {lineno}, has {dims_expected}"
        lens = [len(a) for a in arrays]
        equal = reader.header.get("equallength")
        if len(set(lens)) > 1:
            if equal:
                raise reader.error(
                    lineno,
                    f"dimensions of different lengths {lens} but the header says @equalLength true",
                )
            T = max(lens)
            arrays = [np.concatenate([a, np.full(T - len(a), math.nan)]) for a in arrays]
        T = len(arrays[0])
        declared = reader.header.get("serieslength")
        if declared is not None and equal is not False and T != declared:
            raise reader.error(lineno, f"series of length {T}, but @seriesLength is {declared}")
        if equal and first_length is not None and T != first_length:
            raise reader.error(
                lineno,
                f"series of length {T}, the first series has {first_length}, but the header "
                "says @equalLength true",
            )
        first_length = first_length or T
        values.append(np.stack(arrays, axis=1).astype(np.float32))
        labels.append(_label(reader, lineno, label))
    if not in_data:
        raise ValueError(f"{path}: no @data line")
    if not values:
        raise ValueError(f"{path}, line {data_line}: no series after @data")
    name = str(reader.header.get("problemname") or path.name.split(".")[0])
    classes = reader.header.get("classlabel")
    if classes is None:
        return TimeSeriesDataset(values, np.asarray(labels, dtype=np.float32), name=name)
    return TimeSeriesDataset(values, np.asarray(labels, dtype=np.int64), classes=classes, name=name)


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _check_header(reader: _Reader, lineno: int) -> int | None:
    header = reader.header
    if header.get("timestamps"):
        raise reader.error(
            lineno,
            "@timeStamps true: timestamped '(t, v)' data is not supported; convert the series to "
            "arrays and use ctrnn.data.from_arrays(values, labels, times)",
        )
    has_classes = header.get("classlabel") is not None
    if has_classes and header.get("targetlabel"):
        raise reader.error(lineno, "both @classLabel true and @targetLabel true")
    if not has_classes and not header.get("targetlabel"):
        raise reader.error(
            lineno,
            "the series have no labels (@classLabel true <labels…> or @targetLabel true is needed)",
        )
    if "dimensions" in header:
        if header.get("univariate") and header["dimensions"] != 1:
            raise reader.error(lineno, f"@univariate true but @dimensions {header['dimensions']}")
        reader.dims_source = f"@dimensions {header['dimensions']}"
        return int(header["dimensions"])
    if header.get("univariate"):
        reader.dims_source = "@univariate true"
        return 1
    return None


def _label(reader: _Reader, lineno: int, label: str):
    classes = reader.header.get("classlabel")
    if classes is not None:
        if label not in classes:
            raise reader.error(
                lineno, f"class label {label!r} is not declared in @classLabel {' '.join(classes)}"
            )
        return classes.index(label)
    try:
        return float(label)
    except ValueError:
        raise reader.error(lineno, f"regression target {label!r} is not a number") from None
