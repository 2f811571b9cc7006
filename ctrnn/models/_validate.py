"""The checks that every model module makes on its arguments, written once."""

from __future__ import annotations

import math

__all__ = ["finite_number", "nonnegative_number", "positive_int", "positive_number"]


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def positive_int(owner: str, name: str, value) -> int:
    """``value`` if it is an integer ``≥ 1``; a ValueError naming ``owner``, ``name`` and the
    value otherwise (``True`` is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


def positive_number(owner: str, name: str, value) -> float:
    """``float(value)`` if it is a finite number ``> 0``."""
    if not _is_number(value) or not math.isfinite(value) or not value > 0:
        raise ValueError(f"{owner}: {name} must be positive, got {value!r}")
    return float(value)


def nonnegative_number(owner: str, name: str, value) -> float:
    """``float(value)`` if it is a finite number ``≥ 0``."""
    if not _is_number(value) or not math.isfinite(value) or not value >= 0:
        raise ValueError(f"{owner}: {name} must be a non-negative number, got {value!r}")
    return float(value)


def finite_number(owner: str, name: str, value) -> float:
    """``float(value)`` if it is a finite number."""
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return float(value)
