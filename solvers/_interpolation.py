"""Control paths built from observations, for controlled differential equations.

A path ``X`` interpolates a batch of series ``values`` of shape ``(batch, T, channels)``
observed at ``times`` (``(T,)`` shared by the batch, or ``(batch, T)`` per sample). Every
path here is a piecewise cubic polynomial in time; it is evaluated at a ``(batch,)`` tensor
of times, each sample at its own time, in ``O(batch · channels)`` work per call.

Missing entries are NaN. Each channel of each sample is filled from that channel's own
observed points before the path is built (see :func:`interpolate`).
"""

from __future__ import annotations

import abc
import copy

import torch

__all__ = [
    "AbstractPath",
    "AbstractPiecewiseCubicPath",
    "HermiteCubicPath",
    "LinearPath",
    "NaturalCubicPath",
    "RectilinearPath",
    "interpolate",
]


class AbstractPath(abc.ABC):
    """A control path ``X: [t0, t1] -> R^channels`` for a batch of samples.

    Concrete paths provide ``evaluate(t)``, ``derivative(t)``, ``interval`` and
    ``tensors()``. ``t`` is a number or a tensor of shape ``()`` (one time for the whole
    batch) or ``(batch,)`` (each sample at its own time); both return ``(batch, channels)``.
    """

    @property
    @abc.abstractmethod
    def interval(self) -> torch.Tensor:
        """``[start, end]``: shape ``(2,)`` for shared times, ``(batch, 2)`` per sample."""

    @abc.abstractmethod
    def evaluate(self, t) -> torch.Tensor:
        """``X(t)``, shape ``(batch, channels)``."""

    @abc.abstractmethod
    def derivative(self, t) -> torch.Tensor:
        """``dX/dt(t)``, shape ``(batch, channels)``."""

    @abc.abstractmethod
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors the path is computed from at evaluation time; the continuous adjoint
        differentiates with respect to those that require grad."""

    def with_tensors(self, replace: dict) -> AbstractPath:
        """A copy computed from other tensors: each of :meth:`tensors` whose ``id`` is a key
        of ``replace`` is replaced by its value (the continuous adjoint differentiates with
        respect to leaf copies of a path's computed tensors)."""
        if any(id(x) in replace for x in self.tensors()):
            raise NotImplementedError(
                f"{type(self).__name__} does not say how to rebuild itself from other tensors"
            )
        return self

    @property
    def jump_times(self) -> torch.Tensor | None:
        """Times where the path is not smooth (``(J,)`` or ``(batch, J)``, sorted); adaptive
        solves of a CDE driven by the path step onto them. ``None`` (the default): a path
        smooth on its whole interval."""
        return None


class AbstractPiecewiseCubicPath(AbstractPath):
    """A path that is a cubic polynomial on each piece between consecutive knots.

    On piece ``i``, with ``s = t - knots[i]``,
    ``X(t) = a + b s + c s² + d s³`` where ``coefficients[:, i] = (a, b, c, d)`` along the
    last dimension. Subclasses only compute ``knots`` and ``coefficients``.

    Conventions shared by every kind:

    - **Pieces are right-continuous.** At a knot, ``derivative`` returns the derivative of
      the piece that starts there (except at the last knot, which belongs to the last piece).
      A solver step starting at a knot therefore evaluates the piece it lies in. This only
      matters where the derivative jumps (``linear``, ``rectilinear``).
    - **Outside the interval** the end pieces are extrapolated; there is no error.

    Attributes:
        values: the filled observations, ``(batch, T, channels)``, no NaN.
        times: the observation times, ``(T,)`` or ``(batch, T)``.
        knots: the piece boundaries, ``(P + 1,)`` or ``(batch, P + 1)``.
        coefficients: ``(batch, P, channels, 4)``.
    """

    values: torch.Tensor
    times: torch.Tensor
    knots: torch.Tensor
    coefficients: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.coefficients.shape[0]

    @property
    def channels(self) -> int:
        return self.coefficients.shape[2]

    @property
    def interval(self) -> torch.Tensor:
        return torch.stack([self.knots[..., 0], self.knots[..., -1]], dim=-1)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.coefficients, self.knots)

    def with_tensors(self, replace):
        out = copy.copy(self)
        out.coefficients = replace.get(id(self.coefficients), self.coefficients)
        out.knots = replace.get(id(self.knots), self.knots)
        return out

    @property
    def jump_times(self) -> torch.Tensor:
        """The knots: a higher derivative of every kind jumps there (the first of
        ``linear`` and ``rectilinear``, the second of ``hermite``, the third of
        ``natural_cubic``)."""
        return self.knots

    def evaluate(self, t) -> torch.Tensor:
        s, (a, b, c, d) = self._locate(t)
        return a + s * (b + s * (c + s * d))

    def derivative(self, t) -> torch.Tensor:
        s, (_, b, c, d) = self._locate(t)
        return b + s * (2 * c + 3 * s * d)

    def second_derivative(self, t) -> torch.Tensor:
        """``d²X/dt²(t)``, shape ``(batch, channels)``."""
        s, (_, _, c, d) = self._locate(t)
        return 2 * c + 6 * s * d

    def _locate(self, t):
        """The local coordinate ``s`` (``(batch, 1)``) and the piece's four coefficients
        (each ``(batch, channels)``) at each sample's time."""
        B = self.batch_size
        coeffs, knots = self.coefficients, self.knots
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=coeffs.dtype, device=coeffs.device)
        if t.ndim == 0 or t.shape == (1,):
            t = t.reshape(()).expand(B)
        elif t.shape != (B,):
            raise ValueError(
                f"{type(self).__name__}: t must be a scalar or a (batch,) tensor with batch "
                f"{B}, got shape {tuple(t.shape)}"
            )
        t = t.to(coeffs.dtype)
        pieces = coeffs.shape[1]
        kd = knots.detach()
        td = t.detach().contiguous()
        if kd.ndim == 1:
            idx = torch.searchsorted(kd, td, right=True) - 1
            idx = idx.clamp(0, pieces - 1)
            start = knots[idx]
        else:
            idx = torch.searchsorted(kd, td[:, None], right=True)[:, 0] - 1
            idx = idx.clamp(0, pieces - 1)
            start = knots.gather(1, idx[:, None])[:, 0]
        rows = torch.arange(B, device=coeffs.device)
        piece = coeffs[rows, idx]  # (batch, channels, 4)
        s = (t - start)[:, None]
        return s, piece.unbind(-1)

    def __repr__(self):
        shared = "shared" if self.times.ndim == 1 else "per-sample"
        B, T, C = self.values.shape
        return f"{type(self).__name__}(batch={B}, T={T}, channels={C}, {shared} times)"


class LinearPath(AbstractPiecewiseCubicPath):
    """Piecewise-linear interpolation of the observations.

    Continuous; its derivative is constant on each interval and jumps at the knots. Missing
    entries are filled by linear interpolation in time between the neighbouring observations
    of the same channel (see :func:`interpolate`).

    Args:
        values: ``(batch, T, channels)``, NaN where missing.
        times: ``(T,)`` or ``(batch, T)``, strictly increasing.
        fill_value: constant for channels with no observation in a sample (default: error).
    """

    def __init__(
        self, values: torch.Tensor, times: torch.Tensor, *, fill_value: float | None = None
    ):
        self.values, self.times = _prepare(type(self).__name__, values, times, fill_value)
        self.knots = self.times
        x, h = _pieces(self.values, self.times)
        slope = (x[:, 1:] - x[:, :-1]) / h
        zero = torch.zeros_like(slope)
        self.coefficients = torch.stack([x[:, :-1], slope, zero, zero], dim=-1)


class RectilinearPath(AbstractPiecewiseCubicPath):
    """Rectilinear interpolation: a causal path that moves in time first, then in value.

    Each interval ``[t_i, t_{i+1}]`` is split at its midpoint. On the first half, the
    channel ``time_channel`` (if any) moves linearly from ``x_i`` to ``x_{i+1}`` while every
    other channel holds ``x_i``; on the second half, ``time_channel`` holds and the others move
    linearly to ``x_{i+1}``. The trace of the path in ``R^channels`` is the rectilinear
    interpolation of Morrill et al., "Neural controlled differential equations for online
    prediction tasks" (2021) — as torchcde's ``linear_interpolation_coeffs(rectilinear=...)``
    — reparametrised so that the path equals ``x_i`` at ``t_i``. Without a time channel the
    first half is a pause (``dX = 0``), and a CDE then gives the same values at the knots as
    with :class:`LinearPath` (a CDE is invariant under reparametrisation of its path).

    Missing entries are filled causally: each channel holds its last observed value (before
    its first observation, the first observed value, which is not causal).

    Args:
        values: ``(batch, T, channels)``, NaN where missing.
        times: ``(T,)`` or ``(batch, T)``, strictly increasing.
        time_channel: index of the channel that holds time, or ``None``.
        fill_value: constant for channels with no observation in a sample (default: error).
    """

    def __init__(
        self,
        values: torch.Tensor,
        times: torch.Tensor,
        *,
        time_channel: int | None = None,
        fill_value: float | None = None,
    ):
        name = type(self).__name__
        self.values, self.times = _prepare(name, values, times, fill_value, forward_fill=True)
        C = self.values.shape[2]
        if time_channel is not None and (
            isinstance(time_channel, bool)
            or not isinstance(time_channel, int)
            or not -C <= time_channel < C
        ):
            raise ValueError(
                f"{name}: time_channel must be an integer channel index in [0, {C}), "
                f"got {time_channel!r}"
            )
        self.time_channel = None if time_channel is None else time_channel % C
        t = self.times
        mid = 0.5 * (t[..., 1:] + t[..., :-1])
        # knots t_0, m_0, t_1, m_1, ..., t_{T-1}
        self.knots = torch.stack([t[..., :-1], mid], dim=-1).flatten(-2)
        self.knots = torch.cat([self.knots, t[..., -1:]], dim=-1)
        x, h = _pieces(self.values, self.times)
        x0, x1 = x[:, :-1], x[:, 1:]
        slope = 2 * (x1 - x0) / h
        first_moves = torch.zeros(C, dtype=torch.bool, device=x.device)
        if self.time_channel is not None:
            first_moves[self.time_channel] = True
        zero = torch.zeros_like(slope)
        first = torch.stack(
            [x0, torch.where(first_moves, slope, zero), zero, zero], dim=-1
        )  # (B, T-1, C, 4)
        second = torch.stack(
            [torch.where(first_moves, x1, x0), torch.where(first_moves, zero, slope), zero, zero],
            dim=-1,
        )
        B, P = first.shape[:2]
        self.coefficients = torch.stack([first, second], dim=2).reshape(B, 2 * P, C, 4)


class HermiteCubicPath(AbstractPiecewiseCubicPath):
    """Cubic Hermite interpolation with backward differences (Morrill et al., 2021).

    The derivative at knot ``i`` is the backward difference
    ``(x_i - x_{i-1}) / (t_i - t_{i-1})`` (at the first knot, the first forward difference);
    on each interval the path is the cubic with those end values and end derivatives. The
    path is C¹, and it is as causal as a smooth interpolation can be: the path before
    ``t_{i-1}`` does not depend on ``x_i`` or later observations. Same definition as torchcde's
    ``hermite_cubic_coefficients_with_backward_differences``. Missing entries are filled
    linearly in time, as :class:`LinearPath` does.

    Args:
        values: ``(batch, T, channels)``, NaN where missing.
        times: ``(T,)`` or ``(batch, T)``, strictly increasing.
        fill_value: constant for channels with no observation in a sample (default: error).
    """

    def __init__(
        self, values: torch.Tensor, times: torch.Tensor, *, fill_value: float | None = None
    ):
        self.values, self.times = _prepare(type(self).__name__, values, times, fill_value)
        self.knots = self.times
        x, h = _pieces(self.values, self.times)
        slope = (x[:, 1:] - x[:, :-1]) / h
        m0 = torch.cat([slope[:, :1], slope[:, :-1]], dim=1)  # backward difference at t_i
        c = 2 * (slope - m0) / h
        d = (m0 - slope) / (h * h)
        self.coefficients = torch.stack([x[:, :-1], m0, c, d], dim=-1)


class NaturalCubicPath(AbstractPiecewiseCubicPath):
    """The natural cubic spline through the observations.

    C² with zero second derivative at both ends. Not causal: every observation affects the
    whole path, so it suits offline tasks (classification of complete series). The
    tridiagonal system for the knot curvatures is solved by the Thomas algorithm, batched
    over samples and channels, when the path is built. Missing entries are first filled
    linearly in time, as :class:`LinearPath` does (torchcde instead fits a separate spline
    through each channel's observed points).

    Args:
        values: ``(batch, T, channels)``, NaN where missing.
        times: ``(T,)`` or ``(batch, T)``, strictly increasing.
        fill_value: constant for channels with no observation in a sample (default: error).
    """

    def __init__(
        self, values: torch.Tensor, times: torch.Tensor, *, fill_value: float | None = None
    ):
        self.values, self.times = _prepare(type(self).__name__, values, times, fill_value)
        self.knots = self.times
        x, h = _pieces(self.values, self.times)
        slope = (x[:, 1:] - x[:, :-1]) / h
        M = _natural_curvatures(h, slope)  # (B, T, C): second derivatives at the knots
        b = slope - h * (2 * M[:, :-1] + M[:, 1:]) / 6
        c = M[:, :-1] / 2
        d = (M[:, 1:] - M[:, :-1]) / (6 * h)
        self.coefficients = torch.stack([x[:, :-1], b, c, d], dim=-1)


_KINDS = {
    "linear": LinearPath,
    "rectilinear": RectilinearPath,
    "hermite": HermiteCubicPath,
    "natural_cubic": NaturalCubicPath,
}


def interpolate(
    values: torch.Tensor,
    times: torch.Tensor,
    kind: str = "hermite",
    fill_value: float | None = None,
    *,
    time_channel: int | None = None,
) -> AbstractPiecewiseCubicPath:
    """Build a control path from (possibly irregular, partly missing) observations.

    Args:
        values: ``(batch, T, channels)``, floating point, NaN where an entry is missing. A
            time channel is not added: include time as a channel yourself when the model
            should see it (the neural CDE paper does; Kidger et al., 2020).
        times: ``(T,)`` shared by the batch or ``(batch, T)`` per sample, finite and strictly
            increasing, ``T >= 2``. Series of different lengths: pad the values with NaN (the
            last observation is then held) and continue the times increasing.
        kind: ``"linear"`` (:class:`LinearPath`), ``"rectilinear"``
            (:class:`RectilinearPath`), ``"hermite"`` (:class:`HermiteCubicPath`, cubic
            Hermite with backward differences) or ``"natural_cubic"``
            (:class:`NaturalCubicPath`).
        fill_value: constant for a channel that has no observation at all in a sample.
            Without it such a channel is an error.
        time_channel: for ``kind="rectilinear"`` only: the channel that holds time.

    Missing entries are filled per (sample, channel) from that channel's observed points,
    vectorised over the batch and the channels: between two observations by linear
    interpolation in time (for ``rectilinear``: the earlier observation is held); before the
    first observation the first observed value is held, after the last the last one.

    Returns:
        The path; ``evaluate(t)``, ``derivative(t)`` and ``interval`` as in
        :class:`AbstractPath`.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid kinds are: {', '.join(_KINDS)}")
    if kind == "rectilinear":
        return RectilinearPath(values, times, time_channel=time_channel, fill_value=fill_value)
    if time_channel is not None:
        raise ValueError(
            f"time_channel applies to kind='rectilinear' only, got kind={kind!r}; "
            "include time as an ordinary channel of values instead"
        )
    return _KINDS[kind](values, times, fill_value=fill_value)


# ---------------------------------------------------------------------------------------------
# Construction helpers


def _prepare(name, values, times, fill_value, forward_fill: bool = False):
    """Validate ``values`` and ``times``; return the filled values and the times."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(
            f"{name}: values must be a tensor of shape (batch, T, channels), "
            f"got {type(values).__name__}"
        )
    if values.ndim != 3:
        raise ValueError(
            f"{name}: values must have shape (batch, T, channels), got shape "
            f"{tuple(values.shape)}; add a batch dimension with values[None] or a channel "
            "dimension with values[..., None]"
        )
    if not values.is_floating_point():
        raise ValueError(f"{name}: values must be floating point, got dtype {values.dtype}")
    B, T, _ = values.shape
    if T < 2:
        raise ValueError(f"{name}: values must hold at least 2 observation times, got T={T}")
    if not isinstance(times, torch.Tensor):
        times = torch.as_tensor(times, dtype=values.dtype, device=values.device)
    if times.shape != (T,) and times.shape != (B, T):
        raise ValueError(
            f"{name}: times must have shape (T,) = ({T},) or (batch, T) = ({B}, {T}) to match "
            f"values of shape {tuple(values.shape)}; got shape {tuple(times.shape)}"
        )
    if times.device != values.device:
        raise ValueError(f"{name}: times are on {times.device} but values are on {values.device}")
    times = times.to(values.dtype)
    td = times.detach()
    if not bool(torch.isfinite(td).all()):
        bad = torch.nonzero(~torch.isfinite(td))[0].tolist()
        raise ValueError(f"{name}: times must be finite; times{bad} = {td[tuple(bad)].item()}")
    steps = td.diff(dim=-1)
    if not bool((steps > 0).all()):
        prev = torch.nonzero(steps <= 0)[0].tolist()
        cur = [*prev[:-1], prev[-1] + 1]
        raise ValueError(
            f"{name}: times must be strictly increasing; times{cur} = {td[tuple(cur)].item()} "
            f"is not greater than times{prev} = {td[tuple(prev)].item()}"
        )
    if fill_value is not None and not isinstance(fill_value, (int, float)):
        raise ValueError(f"{name}: fill_value must be a number or None, got {fill_value!r}")
    return _fill_missing(name, values, times, fill_value, forward_fill), times


def _fill_missing(name, values, times, fill_value, forward_fill):
    """Fill NaN entries per (sample, channel), vectorised over both.

    For every entry, the index of the previous observation of its channel is a running
    maximum of ``where(observed, index, -1)`` along time; the next one is the same on the
    reversed sequence. No loop over samples or channels.
    """
    observed = ~torch.isnan(values.detach())
    if bool(observed.all()):
        return values
    B, T, C = values.shape
    k = torch.arange(T, device=values.device).view(1, T, 1)
    prev = torch.where(observed, k, -1).cummax(dim=1).values
    rev = torch.where(observed, (T - 1) - k, -1).flip(1).cummax(dim=1).values.flip(1)
    nxt = (T - 1) - rev  # T where there is no later observation
    empty = prev[:, -1] < 0  # (B, C)
    if fill_value is None and bool(empty.any()):
        where = torch.nonzero(empty)
        b, c = where[0].tolist()
        more = f" ({len(where)} (sample, channel) pairs in all)" if len(where) > 1 else ""
        raise ValueError(
            f"{name}: sample {b}, channel {c} has no observation{more}; pass fill_value=... "
            "to fill such channels with a constant"
        )
    has_prev, has_next = prev >= 0, nxt <= T - 1
    pi, ni = prev.clamp(0, T - 1), nxt.clamp(0, T - 1)
    safe = torch.where(observed, values, torch.zeros_like(values))
    vp, vn = safe.gather(1, pi), safe.gather(1, ni)
    if forward_fill:
        filled = torch.where(has_prev, vp, vn)
    else:
        tt = (times[None, :, None] if times.ndim == 1 else times[:, :, None]).expand(B, T, C)
        tp, tn = tt.gather(1, pi), tt.gather(1, ni)
        between = has_prev & has_next & (ni > pi)
        w = (tt - tp) / torch.where(between, tn - tp, torch.ones_like(tn))
        w = torch.where(between, w, torch.zeros_like(w))
        filled = torch.where(has_prev, vp + w * (vn - vp), vn)
    if fill_value is not None:
        filled = torch.where(empty[:, None, :], torch.full_like(filled, fill_value), filled)
    return torch.where(observed, values, filled)


def _pieces(values, times):
    """The values and the interval lengths ``(batch or 1, T - 1, 1)``."""
    h = times.diff(dim=-1)
    h = h[None, :, None] if h.ndim == 1 else h[:, :, None]
    return values, h


def _natural_curvatures(h, slope):
    """Second derivatives ``M`` at the knots of the natural cubic spline.

    Solves, for the interior knots ``i = 1 .. n-1`` (``n = T - 1`` intervals),
    ``h_{i-1} M_{i-1} + 2 (h_{i-1} + h_i) M_i + h_i M_{i+1} = 6 (slope_i - slope_{i-1})``
    with ``M_0 = M_n = 0``, by the Thomas algorithm (the matrix is diagonally dominant, so
    no pivoting is needed). The loop runs over knots only, batched over samples and channels.
    """
    n = slope.shape[1]
    zero = torch.zeros_like(slope[:, 0])
    if n == 1:
        return torch.stack([zero, zero], dim=1)
    hs = h.expand(-1, -1, 1).unbind(1)  # n entries of (B or 1, 1)
    rhs = (6 * (slope[:, 1:] - slope[:, :-1])).unbind(1)  # n - 1 entries of (B, C)
    cp, rp = [], []
    for i in range(1, n):
        lower, diag, upper = hs[i - 1], 2 * (hs[i - 1] + hs[i]), hs[i]
        if i == 1:
            m = diag
            r = rhs[0] / m
        else:
            m = diag - lower * cp[-1]
            r = (rhs[i - 1] - lower * rp[-1]) / m
        cp.append(upper / m)
        rp.append(r)
    M = [rp[-1]]
    for i in range(n - 3, -1, -1):
        M.append(rp[i] - cp[i] * M[-1])
    M.reverse()
    return torch.stack([zero, *[m.expand_as(zero) for m in M], zero], dim=1)
