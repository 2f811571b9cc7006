"""Brownian motion as an object: seeded, queryable at any time, the same path every time.

The path is a *virtual Brownian tree* (Gaines & Lyons, "Variable step size control in the
numerical solution of stochastic differential equations", SIAM J. Appl. Math. 1997; Li et
al., "Scalable gradients for stochastic differential equations", AISTATS 2020): the value at
the midpoint of every dyadic interval of ``[t0, t1]`` is drawn from the Brownian bridge
between its ends, with a normal variate that is a pure function of ``(seed, node, element)``.
Nothing is stored, so the forward pass, a checkpoint recomputation and a backward solve all
see the same path, whatever order they query it in. The normal variates come from a
counter-based generator (the splitmix64 hash and Box–Muller) written in tensor operations:
a query is a fixed number of elementwise operations, works for a different time per
sample, and never synchronises with the host.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BrownianPath"]

_INT64 = 1 << 64


def _signed(x: int) -> int:
    """An unsigned 64-bit constant as the int64 that has its bits."""
    return x - _INT64 if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
_LOW32 = (1 << 32) - 1


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on int64 is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """Steele, Lea & Flood's splitmix64 finaliser; int64 arithmetic wraps modulo 2**64."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def _normal(key: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A standard normal variate per int64 key (Box–Muller on the hash's two 32-bit halves)."""
    h = _splitmix64(key)
    u1 = ((h & _LOW32).to(torch.float64) + 0.5) * 2.0**-32  # in (0, 1)
    u2 = _shr(h, 32).to(torch.float64) * 2.0**-32
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)


class BrownianPath:
    """A seeded ``shape``-valued Brownian motion on ``[t0, t1]`` with ``W(t0) = 0``.

    Every element of ``shape`` is an independent standard Brownian motion. ``W(t)`` is a
    deterministic function of the seed, the span and ``t``: querying it again (in the
    backward pass, in another order, one sample at a time or all at once) returns the same
    values bit for bit on one device.

    Precision: the path is exactly Brownian at the points of the dyadic grid of spacing
    ``(t1 - t0) / 2**depth`` and linear between them (the mean of the Brownian bridge). So
    ``Var[W(tb) - W(ta)] = tb - ta`` exactly for times on that grid and to within the grid
    spacing otherwise, and each value differs from an exactly Brownian path by a normal error
    of standard deviation at most ``½·sqrt((t1 - t0) / 2**depth)`` (``8e-6·sqrt(t1 - t0)``
    at the default depth 32). A query costs ``depth`` levels of a few elementwise operations.

    Args:
        t0: start of the span.
        t1: end of the span, greater than ``t0``.
        shape: shape of ``W(t)``, typically ``(batch, noise_channels)``.
        seed: integer seed; different seeds give independent paths.
        dtype: floating dtype of the values (default ``torch.get_default_dtype()``).
        device: device of the values.
        depth: levels of the dyadic tree (default 32).
    """

    def __init__(
        self,
        t0: float,
        t1: float,
        shape: tuple[int, ...] | torch.Size,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        depth: int = 32,
    ):
        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise ValueError(f"BrownianPath: need finite t0 < t1, got t0={t0!r}, t1={t1!r}")
        shape = tuple(int(s) for s in shape)
        if any(s < 1 for s in shape):
            raise ValueError(f"BrownianPath: shape must hold positive sizes, got {shape}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"BrownianPath: seed must be an integer, got {type(seed).__name__}")
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 60:
            raise ValueError(f"BrownianPath: depth must be an integer in [1, 60], got {depth!r}")
        dtype = dtype or torch.get_default_dtype()
        if not dtype.is_floating_point:
            raise ValueError(f"BrownianPath: dtype must be floating point, got {dtype}")
        self.t0, self.t1, self.shape, self.seed, self.depth = t0, t1, shape, seed, depth
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        n = math.prod(shape)
        elements = torch.arange(n, dtype=torch.long, device=self.device).reshape(shape)
        # One stream per element, decorrelated from the node counter by a hash of the seed.
        self._streams = _splitmix64(elements * _signed(0xD1342543DE82EF95) + _signed(seed))

    def __repr__(self):
        return (
            f"BrownianPath(t0={self.t0}, t1={self.t1}, shape={self.shape}, seed={self.seed}, "
            f"dtype={self.dtype}, depth={self.depth})"
        )

    def _noise(self, node: torch.Tensor) -> torch.Tensor:
        # splitmix64's own counter scheme: stream offset plus node times the golden gamma.
        return _normal(self._streams + node * _GOLDEN, torch.float64)

    def values(self, t: torch.Tensor) -> torch.Tensor:
        """``W(t)`` without checks, for times of shape ``(*lead, L)`` where ``L`` is 1 or
        ``shape[0]`` (a time per sample); returns ``(*lead, *shape)``.

        Times are assumed to lie in ``[t0, t1]``; :meth:`evaluate` checks.
        """
        out_dtype = self.dtype
        t = t.detach().to(device=self.device, dtype=torch.float64)
        t = t.reshape(t.shape + (1,) * (len(self.shape) - 1))
        full = torch.broadcast_shapes(t.shape[: -len(self.shape)] + self.shape, t.shape)
        a = torch.full_like(t, self.t0)
        b = torch.full_like(t, self.t1)
        node = torch.ones(t.shape, dtype=torch.long, device=self.device)  # heap numbering
        wa = torch.zeros(full, dtype=torch.float64, device=self.device)
        wb = math.sqrt(self.t1 - self.t0) * self._noise(node)
        for _ in range(self.depth):
            mid = 0.5 * (a + b)
            wm = 0.5 * (wa + wb) + 0.5 * torch.sqrt(b - a) * self._noise(2 * node)
            right = t >= mid
            node = 2 * node + right
            wa = torch.where(right, wm, wa)
            wb = torch.where(right, wb, wm)
            a = torch.where(right, mid, a)
            b = torch.where(right, b, mid)
        w = wa + (t - a) / (b - a) * (wb - wa)
        return w.to(out_dtype)

    def _as_times(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=self.device)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, self.shape[0])):
            raise ValueError(
                f"BrownianPath: times must be a scalar or a (batch,) tensor with batch "
                f"{self.shape[0]}, got shape {tuple(t.shape)}"
            )
        td = t.detach()
        lo, hi = float(td.min()), float(td.max())
        if lo < self.t0 or hi > self.t1:
            raise ValueError(
                f"BrownianPath: times must lie in [t0, t1] = [{self.t0}, {self.t1}], "
                f"got times in [{lo}, {hi}]"
            )
        return t.reshape(-1)

    def evaluate(self, t) -> torch.Tensor:
        """``W(t)`` of shape ``shape``, for a scalar time or a ``(batch,)`` tensor of times
        (one per sample, i.e. per index of ``shape[0]``)."""
        return self.values(self._as_times(t))

    def increment(self, ta, tb) -> torch.Tensor:
        """``W(tb) - W(ta)`` of shape ``shape``, for scalar or ``(batch,)`` times."""
        return self.evaluate(tb) - self.evaluate(ta)

    def __call__(self, ta, tb=None) -> torch.Tensor:
        """``W(ta)``, or ``W(tb) - W(ta)`` when ``tb`` is given."""
        return self.evaluate(ta) if tb is None else self.increment(ta, tb)
