"""Brownian motion as an object: seeded, queryable at any time, the same path every time.

The path is a *virtual Brownian tree* (Gaines & Lyons, "Variable step size control in the
numerical solution of stochastic differential equations", SIAM J. Appl. Math. 1997; Li et
al., "Scalable gradients for stochastic differential equations", AISTATS 2020): the value at
the midpoint of every dyadic interval of ``[t0, t1]`` is drawn from the Brownian bridge
between its ends, with a normal variate that is a pure function of ``(seed, node, element)``.
Nothing is stored, so the forward pass, a checkpoint recomputation and a backward solve all
see the same path, whatever order they query it in. The normal variates come from a
counter-based generator written in tensor operations (the splitmix64 hash of the node and
the element, then Box–Muller, which turns one 64-bit hash into two normals: the two sibling
nodes of a parent share a hash), so a query works for a different time per sample and never
synchronises with the host.

Two ways to read a tree:

* :meth:`BrownianPath.values` descends from the root to every queried time: ``depth`` levels
  per query, any times.
* :class:`DyadicCells` generates the increments over consecutive cells of one level top-down,
  a block of cells at a time: about one normal per cell instead of ``depth`` per time. The
  solvers use it whenever the steps are cells of a level: for a :class:`BrownianPath` whose
  dyadic grid holds the steps (:meth:`BrownianPath.cells`), and for the path that a solve
  draws on its own steps (:func:`step_tree`), a tree over the step indices whose bridges use
  the steps' times.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["BrownianPath", "DyadicCells", "step_tree"]

_INT64 = 1 << 64


def _signed(x: int) -> int:
    """An unsigned 64-bit constant as the int64 that has its bits."""
    return x - _INT64 if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
_STREAM = _signed(0xD1342543DE82EF95)
_LOW32 = (1 << 32) - 1
# Target number of elements of the cell increments generated in one block: large enough that
# the per-operation overhead is small, small enough to stay near the cache.
_BLOCK_ELEMENTS = 1 << 19


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on int64 is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """Steele, Lea & Flood's splitmix64 finaliser; int64 arithmetic wraps modulo 2**64."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def _normal_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision the normals are drawn in: float64 for float64 paths, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _polar(z: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Box–Muller's radius and angle, in ``dtype``, from ``splitmix64(key)`` of int64 keys
    ``z``: its low 32 bits make the radius, its high 32 bits the angle.

    ``z`` is overwritten: the hash runs in place, with one scratch tensor, so that a large
    block of keys costs a dozen passes over memory and no temporaries."""
    tmp = torch.empty_like(z)
    z.add_(_GOLDEN)
    for shift, mult in ((30, _MIX1), (27, _MIX2), (31, None)):
        torch.bitwise_right_shift(z, shift, out=tmp)
        tmp.bitwise_and_((1 << (64 - shift)) - 1)
        z.bitwise_xor_(tmp)
        if mult is not None:
            z.mul_(mult)
    torch.bitwise_right_shift(z, 32, out=tmp)
    tmp.bitwise_and_(_LOW32)
    z.bitwise_and_(_LOW32)
    # u1 in (0, 1]: never 0, so the logarithm is finite; the largest radius is about 6.8
    radius = z.to(dtype).add_(0.5).mul_(2.0**-32).log_().mul_(-2.0).sqrt_()
    angle = tmp.to(dtype).mul_(2.0 * math.pi * 2.0**-32)
    return radius, angle


def _gaussian_pairs(z: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent standard normals per int64 key (overwritten), in ``dtype``: the
    cosine and the sine branch of Box–Muller."""
    radius, angle = _polar(z, dtype)
    return torch.cos(angle).mul_(radius), angle.sin_().mul_(radius)


def _pair_keys(streams: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The int64 keys of hash pairs ``pairs`` (any shape ``lead``) for every element:
    ``(*lead, *streams.shape)``; splitmix64's own counter scheme, stream plus counter times
    the golden gamma."""
    lead = pairs.reshape(pairs.shape + (1,) * streams.ndim)
    return streams + lead * _GOLDEN


# Node numbering: heap order, the root is 1 and node n has children 2n and 2n + 1. The root
# carries W(t1) and every node n at a level above the last is split at its midpoint. Hash pair
# q gives two normals: pair 0 gives W(t1)'s (cosine) and the root's split (sine); pair q ≥ 1
# gives the splits of the siblings 2q (cosine) and 2q + 1 (sine).


def _root_normal(streams: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    pairs = torch.zeros((), dtype=torch.long, device=streams.device)
    return _gaussian_pairs(_pair_keys(streams, pairs), dtype)[0]


def _split_normals(
    streams: torch.Tensor, level: int, j0: int, j1: int, dtype: torch.dtype
) -> torch.Tensor:
    """The normals that split nodes ``j0 … j1-1`` of ``level``: ``(j1 - j0, *streams.shape)``."""
    n0, n1 = (1 << level) + j0, (1 << level) + j1  # heap numbers [n0, n1)
    q0, q1 = n0 >> 1, ((n1 - 1) >> 1) + 1
    pairs = torch.arange(q0, q1, dtype=torch.long, device=streams.device)
    cos, sin = _gaussian_pairs(_pair_keys(streams, pairs), dtype)
    z = torch.stack((cos, sin), 1).flatten(0, 1)  # rows: heap numbers 2q0 … 2q1 - 1
    return z[n0 - 2 * q0 : n1 - 2 * q0]


def _streams(shape: tuple[int, ...], seed, device: torch.device) -> torch.Tensor:
    """One int64 stream per element, decorrelated from the node counter by a hash of the
    seed; element ``i`` of a flattened ``shape`` gets the same stream whatever the shape's
    other sizes, so sample ``i``'s path does not depend on the batch size. ``seed`` is a
    checked int, or a 0-dim int64 tensor holding one (read on the device, not the host)."""
    n = math.prod(shape)
    elements = torch.arange(n, dtype=torch.long, device=device).reshape(shape)
    if isinstance(seed, torch.Tensor):
        return _splitmix64(elements * _STREAM + seed.to(device))
    return _splitmix64(elements * _STREAM + _signed(seed))


def _check_seed(seed, where: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{where}: seed must be an integer, got {type(seed).__name__}")
    if not -(1 << 63) <= seed < 1 << 64:
        raise ValueError(f"{where}: seed must fit in 64 bits, got {seed}")
    return _signed(seed) if seed >= 1 << 63 else seed


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
    at the default depth 32). The normal variates are drawn in float64 for a float64 path
    and in float32 otherwise; the bridge arithmetic of :meth:`values` is float64.

    Cost: a query descends ``depth`` levels, a few dozen elementwise operations per level.
    A fixed-step solve whose steps are consecutive cells of one level ``L ≤ depth`` of this
    tree (for example ``t0 = 0``, ``t1 = 1`` and ``dt = 2**-L`` with output times on that
    grid) does not descend: it generates that level's increments top-down
    (:meth:`cells`), about one normal per step, and gets the same path to round-off.

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
        key = _check_seed(seed, "BrownianPath")
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 60:
            raise ValueError(f"BrownianPath: depth must be an integer in [1, 60], got {depth!r}")
        dtype = dtype or torch.get_default_dtype()
        if not dtype.is_floating_point:
            raise ValueError(f"BrownianPath: dtype must be floating point, got {dtype}")
        self.t0, self.t1, self.shape, self.seed, self.depth = t0, t1, shape, seed, depth
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._streams = _streams(shape, key, self.device)

    def __repr__(self):
        return (
            f"BrownianPath(t0={self.t0}, t1={self.t1}, shape={self.shape}, seed={self.seed}, "
            f"dtype={self.dtype}, depth={self.depth})"
        )

    def _split_noise(self, node: torch.Tensor) -> torch.Tensor:
        """The normal that splits heap node ``node`` (broadcasting against ``shape``), in
        float64."""
        keys = self._streams + (node >> 1) * _GOLDEN
        radius, angle = _polar(keys, _normal_dtype(self.dtype))
        # the sine branch for odd nodes, as cos(angle - π/2): equal to round-off
        angle = angle.sub_((node & 1).to(angle.dtype) * (0.5 * math.pi)).cos_()
        return angle.mul_(radius).to(torch.float64)

    def values(self, t: torch.Tensor) -> torch.Tensor:
        """``W(t)`` without checks, for times of shape ``(*lead, L)`` where ``L`` is 1 or
        ``shape[0]`` (a time per sample); returns ``(*lead, *shape)``.

        Times are assumed to lie in ``[t0, t1]``; :meth:`evaluate` checks.
        """
        t = t.detach().to(device=self.device, dtype=torch.float64)
        t = t.reshape(t.shape + (1,) * (len(self.shape) - 1))
        full = torch.broadcast_shapes(t.shape[: -len(self.shape)] + self.shape, t.shape)
        a = torch.full_like(t, self.t0)
        b = torch.full_like(t, self.t1)
        node = torch.ones(t.shape, dtype=torch.long, device=self.device)  # heap numbering
        root = _root_normal(self._streams, _normal_dtype(self.dtype)).to(torch.float64)
        wb = (math.sqrt(self.t1 - self.t0) * root).expand(full)
        wa = torch.zeros(full, dtype=torch.float64, device=self.device)
        for _ in range(self.depth):
            mid = 0.5 * (a + b)
            wm = 0.5 * (wa + wb) + 0.5 * torch.sqrt(b - a) * self._split_noise(node)
            right = t >= mid
            node = 2 * node + right
            wa = torch.where(right, wm, wa)
            wb = torch.where(right, wb, wm)
            a = torch.where(right, mid, a)
            b = torch.where(right, b, mid)
        w = wa + (t - a) / (b - a) * (wb - wa)
        return w.to(self.dtype)

    def cells(self, level: int) -> DyadicCells:
        """The increments over the ``2**level`` cells of ``level`` (``0 ≤ level ≤ depth``):
        cell ``k`` is ``W(t0 + (k+1)·s) - W(t0 + k·s)`` with ``s = (t1 - t0) / 2**level``,
        generated top-down; equal to the differences of :meth:`values` to round-off."""
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= self.depth:
            raise ValueError(
                f"BrownianPath.cells: level must be an integer in [0, depth={self.depth}], "
                f"got {level!r}"
            )
        span = self.t1 - self.t0

        def bridge(lev, j0, j1):
            return 0.5, 0.5 * math.sqrt(span * 2.0**-lev)

        return DyadicCells(self._streams, level, math.sqrt(span), bridge, self.dtype)

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


# (level, j0, j1) -> (r, sd) for the splits of nodes j0 … j1-1 of level: the left half of a
# node's increment D is r·D + sd·Z. Floats, or tensors (j1 - j0, lanes, 1, …) broadcasting
# against (j1 - j0, *shape).
Bridge = Callable[[int, int, int], tuple]


class DyadicCells:
    """The increments of a dyadic Brownian tree over the ``2**levels`` cells of its last
    level, generated top-down a block of cells at a time.

    Each node's increment ``D`` (its value at the right end minus the left) is split into
    ``r·D + sd·Z`` and the rest, ``Z`` being the node's normal, so the increments keep their
    own scale at every level (no cancellation, also in float32). A block of ``K`` cells is
    the subtree of one node of level ``levels - log2 K``; the nodes above are computed once
    and remembered one per level, so a sequential pass in either direction draws about one
    normal per cell. A block is computed the same way whatever range is asked for, so every
    query returns the same values bit for bit; the last two blocks are kept.

    Args:
        streams: the per-element int64 streams, of the path's shape.
        levels: the level of the cells.
        root_sd: standard deviation of the whole tree's increment: a float, or a tensor
            broadcasting against the path's shape (one per lane).
        bridge: ``bridge(level, j0, j1) -> (r, sd)`` (see ``Bridge`` above).
        dtype: dtype of the increments.
    """

    def __init__(self, streams, levels: int, root_sd, bridge: Bridge, dtype: torch.dtype):
        self.streams, self.levels, self.bridge, self.dtype = streams, levels, bridge, dtype
        self._ndtype = _normal_dtype(dtype)
        per_block = max(1, _BLOCK_ELEMENTS // max(1, streams.numel()))
        self.block_levels = min(levels, max(0, round(math.log2(per_block))))
        self.block = 1 << self.block_levels
        self.top = levels - self.block_levels  # the level of the blocks' roots
        root = _root_normal(streams, self._ndtype)
        if isinstance(root_sd, torch.Tensor):
            root_sd = root_sd.to(self._ndtype)
        self._root = (root * root_sd)[None]
        self._spine: dict[int, tuple[int, torch.Tensor]] = {}
        self._blocks: dict[int, torch.Tensor] = {}

    def _split(self, level: int, j0: int, j1: int, d: torch.Tensor) -> torch.Tensor:
        """Children of nodes ``j0 … j1-1`` of ``level`` from their increments ``d``."""
        z = _split_normals(self.streams, level, j0, j1, self._ndtype)
        r, sd = self.bridge(level, j0, j1)
        if isinstance(r, torch.Tensor):
            left = torch.addcmul(d * r, sd, z)
        else:
            left = torch.add(d * r, z, alpha=sd)
        return torch.stack((left, d - left), 1).flatten(0, 1)

    def _node(self, level: int, j: int) -> torch.Tensor:
        """Increment of node ``j`` of ``level``, ``(1, *shape)``."""
        if level == 0:
            return self._root
        parent = j >> 1
        hit = self._spine.get(level)
        if hit is None or hit[0] != parent:
            pair = self._split(level - 1, parent, parent + 1, self._node(level - 1, parent))
            hit = self._spine[level] = (parent, pair)
        return hit[1][j & 1 : (j & 1) + 1]

    def _block(self, b: int) -> torch.Tensor:
        if b not in self._blocks:
            d = self._node(self.top, b)
            for level in range(self.top, self.levels):
                width = 1 << (level - self.top)
                d = self._split(level, b * width, (b + 1) * width, d)
            if len(self._blocks) == 2:
                del self._blocks[next(iter(self._blocks))]
            self._blocks[b] = d.to(self.dtype)
        return self._blocks[b]

    def __call__(self, c0: int, c1: int) -> torch.Tensor:
        """Increments over cells ``c0 … c1-1``: ``(c1 - c0, *shape)``, no gradient."""
        k = self.block_levels
        parts = []
        with torch.no_grad():
            for b in range(c0 >> k, ((c1 - 1) >> k) + 1):
                lo = max(c0 - (b << k), 0)
                hi = min(c1 - (b << k), self.block)
                parts.append(self._block(b)[lo:hi])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def step_tree(
    times: torch.Tensor,
    last: torch.Tensor,
    dt: float,
    levels: int,
    shape: tuple[int, ...],
    seed,
    dtype: torch.dtype,
    *,
    check: bool = True,
) -> DyadicCells:
    """A Brownian path drawn on given times, exactly Brownian at each of them.

    ``times`` is ``(n + 1, lanes)``, one column per lane (``lanes`` is 1 or ``shape[0]``);
    lane ``i`` uses ``times[0 … last[i], i]``, strictly increasing, then continues with
    steps of ``dt``: ``v_k = times[last[i], i] + (k - last[i])·dt`` for ``k > last[i]``, up
    to ``k = 2**levels ≥ max(last)``. The tree is dyadic in the *index*: the root spans
    ``v_0 … v_{2**levels}`` and node ``[a, b]`` is split at index ``c = (a + b) / 2`` by the
    Brownian bridge between its ends at time ``v_c``: the left half of the node's increment
    ``D`` is ``r·D + sqrt(r (v_b - v_c))·Z`` with ``r = (v_c - v_a) / (v_b - v_a)``. Cell
    ``k`` is ``W(v_{k+1}) - W(v_k)``. On a uniform grid it is the :class:`BrownianPath` over
    ``[v_0, v_{2**levels}]`` with the same seed and shape, read at level ``levels`` (to
    round-off), so halving the spacing over the same span refines the same path. The bridge
    coefficients are computed for the nodes that a query visits, from ``times``.

    ``seed`` is an int, or a 0-dim int64 tensor (then nothing here reads the device:
    ``check=False`` also skips the check of ``levels`` against ``last``, which the caller
    made when it planned them).
    """
    if check and (not 0 <= levels <= 60 or int(last.max()) > 1 << levels):
        raise ValueError(
            f"step_tree: levels must be in [0, 60] with 2**levels >= the last index "
            f"{int(last.max())}, got {levels}"
        )
    ndtype = _normal_dtype(dtype)
    v = times.detach().to(torch.float64)
    n = v.shape[0] - 1
    last = last.reshape(1, -1)
    end = v.gather(0, last)
    tail = (1,) * (len(shape) - 1)

    def at(k: torch.Tensor) -> torch.Tensor:
        """``v_k`` for indices ``k`` of shape ``(count, 1)``: ``(count, lanes)``."""
        inside = v.index_select(0, k.clamp(max=n)[:, 0])
        return torch.where(k <= last, inside, end + (k - last).to(v.dtype) * dt)

    def bridge(level, j0, j1):
        width = 1 << (levels - level)
        k = torch.arange(j0, j1, device=v.device)[:, None] * width
        a, c, b = at(k), at(k + width // 2), at(k + width)
        length, left, right = b - a, c - a, b - c
        ok = length > 0
        safe = torch.where(ok, length, torch.ones_like(length))
        r = torch.where(ok, left / safe, torch.full_like(length, 0.5))
        sd = torch.where(ok, (left * right / safe).clamp_min(0).sqrt(), torch.zeros_like(length))
        return r.to(ndtype).reshape(r.shape + tail), sd.to(ndtype).reshape(sd.shape + tail)

    k_end = torch.full((1, 1), 1 << levels, device=v.device)
    root_sd = (at(k_end) - v[:1]).clamp_min(0).sqrt().reshape((-1, *tail))
    if not isinstance(seed, torch.Tensor):
        seed = _check_seed(seed, "step_tree")
    streams = _streams(shape, seed, times.device)
    return DyadicCells(streams, levels, root_sd, bridge, dtype)
