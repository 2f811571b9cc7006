"""Butcher tableaus of explicit Runge–Kutta methods, validated when built."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ButcherTableau", "hermite_interpolant"]

_TOL = 1e-12


def _as_rows(rows) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in rows)


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method.

    Args:
        name: the method's registry name.
        a: strictly lower-triangular coefficients, row ``i`` holding ``a[i+1][0..i]``
            (stage 1 has no row).
        b: solution weights, one per stage.
        c: nodes of stages 2..s (stage 1 is at 0).
        order: the order of the solution ``b``.
        b_error: ``b - b_hat`` for an embedded error estimate, or ``None``.
        error_order: the order of the embedded solution ``b_hat``.
        interpolant: dense-output coefficients ``B`` of shape ``(stages, degree)``; the
            solution at ``t0 + θh`` is ``y0 + h Σ_i (Σ_k B[i, k] θ^(k+1)) k_i``.
        reference: where the method comes from.

    Raises:
        ValueError: when a row sum differs from its node, the weights do not sum to 1,
            the error weights do not sum to 0, or shapes disagree.
    """

    name: str
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int
    b_error: tuple[float, ...] | None = None
    error_order: int | None = None
    interpolant: tuple[tuple[float, ...], ...] | None = None
    reference: str = ""
    fsal: bool = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "a", _as_rows(self.a))
        object.__setattr__(self, "b", tuple(float(v) for v in self.b))
        object.__setattr__(self, "c", tuple(float(v) for v in self.c))
        if self.b_error is not None:
            object.__setattr__(self, "b_error", tuple(float(v) for v in self.b_error))
        if self.interpolant is not None:
            object.__setattr__(self, "interpolant", _as_rows(self.interpolant))
        s = len(self.b)
        if len(self.a) != s - 1 or len(self.c) != s - 1:
            raise ValueError(
                f"tableau {self.name!r}: {s} weights need {s - 1} rows of a and {s - 1} nodes c, "
                f"got {len(self.a)} rows and {len(self.c)} nodes"
            )
        for i, (row, ci) in enumerate(zip(self.a, self.c)):
            if len(row) != i + 1:
                raise ValueError(
                    f"tableau {self.name!r}: row {i + 1} of a must have {i + 1} entries, "
                    f"got {len(row)}"
                )
            if abs(sum(row) - ci) > _TOL:
                raise ValueError(
                    f"tableau {self.name!r}: row {i + 1} of a sums to {sum(row)!r}, "
                    f"but its node c is {ci!r}"
                )
        if abs(sum(self.b) - 1.0) > _TOL:
            raise ValueError(f"tableau {self.name!r}: weights b sum to {sum(self.b)!r}, not 1")
        if self.b_error is not None:
            if len(self.b_error) != s:
                raise ValueError(
                    f"tableau {self.name!r}: b_error has {len(self.b_error)} entries, expected {s}"
                )
            if abs(sum(self.b_error)) > _TOL:
                raise ValueError(
                    f"tableau {self.name!r}: error weights sum to {sum(self.b_error)!r}, not 0"
                )
            if self.error_order is None:
                raise ValueError(f"tableau {self.name!r}: b_error given without error_order")
        if self.interpolant is not None:
            rows = self.interpolant
            if len(rows) != s:
                raise ValueError(
                    f"tableau {self.name!r}: interpolant has {len(rows)} rows, expected {s}"
                )
            at_one = [sum(r) for r in rows]
            if max(abs(x - y) for x, y in zip(at_one, self.b)) > 1e-9:
                raise ValueError(
                    f"tableau {self.name!r}: interpolant at θ=1 gives {at_one}, not the weights b"
                )
        fsal = (
            s > 1
            and self.c[-1] == 1.0
            and max(abs(x - y) for x, y in zip(self.a[-1], self.b[:-1])) < _TOL
            and self.b[-1] == 0.0
        )
        object.__setattr__(self, "fsal", fsal)

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        """Whether the tableau carries an embedded error estimate."""
        return self.b_error is not None


def hermite_interpolant(
    b, *, first: int = 0, last: int | None = None, mid=None
) -> tuple[tuple[float, ...], ...]:
    """Dense-output coefficients of a Hermite interpolant built from one step's stages.

    The polynomial matches ``y0`` and ``f(t0, y0)`` (stage ``first``) at θ=0, ``y1`` and
    ``f(t1, y1)`` (stage ``last``, the FSAL stage) at θ=1: a cubic. With ``mid`` (the
    weights giving ``y(t0 + h/2)``) it also matches the midpoint: a quartic (Shampine's
    dense output for Dormand–Prince).
    """
    s = len(b)
    last = s - 1 if last is None else last
    e_first = np.eye(s)[first]
    e_last = np.eye(s)[last]
    b = np.asarray(b, dtype=np.float64)
    degree = 3 if mid is None else 4
    powers = np.arange(1, degree + 1)
    # Conditions on q(θ) = Σ_k c_k θ^k (q(0) = 0 holds by construction):
    rows = [powers * 0.0 + (powers == 1), np.ones(degree), powers.astype(np.float64)]
    data = [e_first, b, e_last]
    if mid is not None:
        rows.append(0.5**powers)
        data.append(np.asarray(mid, dtype=np.float64))
    coeffs = np.linalg.solve(np.stack(rows), np.stack(data))  # (degree, stages)
    return tuple(tuple(float(v) for v in row) for row in coeffs.T)
