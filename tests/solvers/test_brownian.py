"""BrownianPath: statistics of its increments, determinism under re-query, errors."""

from __future__ import annotations

import pytest
import torch

from solvers import BrownianPath
from solvers._brownian import step_tree

F64 = torch.float64


def test_increment_statistics():
    bm = BrownianPath(0.0, 2.0, (4000, 2), seed=7, dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.75, 1.6, 2.0], dtype=F64)[:, None]
    dw = bm.values(t).diff(dim=0)  # (4, 4000, 2)
    dt = t.diff(dim=0)[:, 0]
    n = dw[0].numel()
    for k in range(4):
        x = dw[k].flatten()
        assert abs(float(x.mean())) < 4 * (float(dt[k]) / n) ** 0.5
        assert float(x.var()) == pytest.approx(float(dt[k]), rel=0.06)
        # fourth moment of a normal: 3 Δt²
        assert float((x**4).mean()) == pytest.approx(3 * float(dt[k]) ** 2, rel=0.2)
    # disjoint increments and distinct channels are uncorrelated
    z = (dw / dt.sqrt()[:, None, None]).reshape(4, -1)
    corr = torch.corrcoef(z)
    assert (corr - torch.eye(4, dtype=F64)).abs().max() < 0.05
    c = torch.corrcoef(dw[1].T)
    assert abs(float(c[0, 1])) < 0.05


def test_starts_at_zero_and_has_the_variance_of_brownian_motion():
    bm = BrownianPath(1.0, 3.0, (20000,), seed=1, dtype=F64)
    assert torch.equal(bm.evaluate(1.0), torch.zeros(20000, dtype=F64))
    for s in (1.37, 2.0, 3.0):
        assert float(bm.evaluate(s).var()) == pytest.approx(s - 1.0, rel=0.04)


def test_requery_is_identical_in_any_order():
    bm = BrownianPath(0.0, 1.0, (8, 3), seed=3, dtype=F64)
    times = torch.rand(50, dtype=F64, generator=torch.Generator().manual_seed(0))
    first = [bm.evaluate(float(s)) for s in times]
    again = [bm.evaluate(float(s)) for s in times.flip(0)][::-1]
    batched = bm.values(times[:, None])
    for a, b, c in zip(first, again, batched):
        assert torch.equal(a, b)
        assert torch.equal(a, c)
    # a fresh object with the same arguments is the same path
    other = BrownianPath(0.0, 1.0, (8, 3), seed=3, dtype=F64)
    assert torch.equal(other.increment(0.2, 0.9), bm.increment(0.2, 0.9))


def test_per_sample_times_and_batch_size_independence():
    bm = BrownianPath(0.0, 1.0, (5, 2), seed=11, dtype=F64)
    ts = torch.tensor([0.1, 0.5, 0.25, 0.9, 1.0], dtype=F64)
    w = bm.evaluate(ts)
    for i in range(5):
        assert torch.equal(w[i], bm.evaluate(float(ts[i]))[i])
    # sample i's path does not depend on the batch size
    small = BrownianPath(0.0, 1.0, (2, 2), seed=11, dtype=F64)
    assert torch.equal(small.evaluate(0.3), bm.evaluate(0.3)[:2])


def test_seeds_give_different_paths_and_telescoping_increments():
    a = BrownianPath(0.0, 1.0, (100,), seed=0, dtype=F64)
    b = BrownianPath(0.0, 1.0, (100,), seed=1, dtype=F64)
    assert not torch.allclose(a.evaluate(1.0), b.evaluate(1.0))
    total = a.increment(0.0, 0.4) + a.increment(0.4, 0.7) + a.increment(0.7, 1.0)
    torch.testing.assert_close(total, a.evaluate(1.0), rtol=0, atol=1e-14)
    assert a(0.2, 0.6).shape == (100,)
    assert torch.equal(a(0.6), a.evaluate(0.6))


def test_bridge_between_grid_points_is_linear_below_the_depth():
    bm = BrownianPath(0.0, 1.0, (4,), seed=2, dtype=F64, depth=3)
    w0, w1, wm = bm.evaluate(0.25), bm.evaluate(0.375), bm.evaluate(0.3125)
    torch.testing.assert_close(wm, 0.5 * (w0 + w1))


def test_float32_values():
    bm = BrownianPath(0.0, 1.0, (3, 2), seed=0, dtype=torch.float32)
    assert bm.increment(0.0, 0.5).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(t0=1.0, t1=1.0, shape=(2,)), "t0 < t1"),
        (dict(t0=0.0, t1=1.0, shape=(0,)), "positive sizes"),
        (dict(t0=0.0, t1=1.0, shape=(2,), depth=0), "depth"),
        (dict(t0=0.0, t1=1.0, shape=(2,), dtype=torch.int64), "floating point"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BrownianPath(**kwargs)


def test_seed_must_be_an_integer():
    with pytest.raises(TypeError, match="seed must be an integer"):
        BrownianPath(0.0, 1.0, (2,), seed=1.5)


def test_query_errors():
    bm = BrownianPath(0.0, 1.0, (3, 2), seed=0, dtype=F64)
    with pytest.raises(ValueError, match=r"lie in \[t0, t1\]"):
        bm.increment(0.5, 1.5)
    with pytest.raises(ValueError, match="batch 3"):
        bm.evaluate(torch.zeros(4, dtype=F64))


# ---------------------------------------------------------------------------------------------
# Reading a level's cells top-down, and the tree over a solve's own steps


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few cells, so that small tests cross many block boundaries."""
    from solvers import _brownian

    monkeypatch.setattr(_brownian, "_BLOCK_ELEMENTS", 64)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_cells_are_the_differences_of_values(dtype, small_blocks):
    bm = BrownianPath(0.5, 2.5, (6, 3), seed=4, dtype=dtype, depth=12)
    cells = bm.cells(7)
    assert cells.block < 2**7  # several blocks
    times = torch.linspace(0.5, 2.5, 2**7 + 1, dtype=F64)[:, None]
    expected = bm.values(times).diff(dim=0)
    got = cells(0, 2**7)
    assert got.dtype == dtype and got.shape == (2**7, 6, 3)
    tol = 1e-14 if dtype == F64 else 1e-6
    torch.testing.assert_close(got, expected, rtol=0, atol=tol)
    # any ranges, in any order, give the same values bit for bit
    pieces = [cells(a, min(a + 5, 2**7)) for a in reversed(range(0, 2**7, 5))][::-1]
    assert torch.equal(torch.cat(pieces), got)
    fresh = BrownianPath(0.5, 2.5, (6, 3), seed=4, dtype=dtype, depth=12).cells(7)
    assert torch.equal(fresh(40, 90), got[40:90])


def test_cells_have_the_statistics_of_brownian_increments():
    bm = BrownianPath(0.0, 3.0, (4000,), seed=8, dtype=F64)
    level = 6
    x = bm.cells(level)(0, 2**level)  # (64, 4000), each cell of length 3/64
    h = 3.0 / 2**level
    assert float(x.var()) == pytest.approx(h, rel=0.02)
    assert abs(float(x.mean())) < 4 * (h / x.numel()) ** 0.5
    assert float((x**4).mean()) == pytest.approx(3 * h**2, rel=0.05)
    corr = torch.corrcoef(x)  # across cells
    assert (corr - torch.eye(2**level, dtype=F64)).abs().max() < 0.08


def test_cells_level_must_be_within_the_depth():
    bm = BrownianPath(0.0, 1.0, (2,), depth=5)
    with pytest.raises(ValueError, match=r"level must be an integer in \[0, depth=5\], got 6"):
        bm.cells(6)


def test_seed_must_fit_in_64_bits():
    with pytest.raises(ValueError, match="seed must fit in 64 bits"):
        BrownianPath(0.0, 1.0, (2,), seed=1 << 64)
    # the top half of the unsigned range is accepted (as the int64 with the same bits)
    a = BrownianPath(0.0, 1.0, (2,), seed=(1 << 64) - 1, dtype=F64)
    b = BrownianPath(0.0, 1.0, (2,), seed=-1, dtype=F64)
    assert torch.equal(a.evaluate(0.3), b.evaluate(0.3))


def test_step_tree_is_exactly_brownian_on_irregular_times(small_blocks):
    """The increments over arbitrary increasing times, one set per lane, are independent
    normals of variance equal to each step's length."""
    gen = torch.Generator().manual_seed(0)
    lanes, per_lane, levels = 50, 40, 5
    gaps = torch.rand(2**levels, lanes, generator=gen, dtype=F64) ** 3 + 1e-4
    times = torch.cat([torch.zeros(1, lanes, dtype=F64), gaps.cumsum(0)]) + 1.7
    last = torch.full((lanes,), 2**levels)
    cells = step_tree(times, last, 0.1, levels, (lanes, per_lane), seed=3, dtype=F64)
    dw = cells(0, 2**levels)  # (32, lanes, per_lane)
    z = dw / gaps.sqrt()[..., None]
    assert float(z.var()) == pytest.approx(1.0, rel=0.03)
    assert abs(float(z.mean())) < 4 / z.numel() ** 0.5
    assert float((z**4).mean()) == pytest.approx(3.0, rel=0.08)
    lag = (z[1:] * z[:-1]).mean()
    assert abs(float(lag)) < 4 / z[1:].numel() ** 0.5
    # W at the last time is the sum of the cells: the root, whose variance is the span
    total = dw.sum(0) / (times[-1] - times[0]).sqrt()[:, None]
    assert float(total.var()) == pytest.approx(1.0, rel=0.06)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_step_tree_on_a_uniform_grid_is_the_brownian_path(dtype):
    """On the grid t0 + k·s the tree over the steps is the BrownianPath over the same span,
    read at the grid's level: the same path, to round-off."""
    t0, s, levels = 0.25, 0.1, 6
    times = (t0 + s * torch.arange(2**levels + 1, dtype=F64))[:, None]
    cells = step_tree(times.to(dtype), torch.tensor([2**levels]), s, levels, (5, 2), 12, dtype)
    bm = BrownianPath(t0, t0 + s * 2**levels, (5, 2), seed=12, dtype=dtype, depth=levels)
    tol = 1e-13 if dtype == F64 else 2e-6
    torch.testing.assert_close(
        cells(0, 2**levels), bm.cells(levels)(0, 2**levels), rtol=0, atol=tol
    )
    torch.testing.assert_close(cells(0, 2**levels), bm.values(times).diff(dim=0), rtol=0, atol=tol)


def test_step_tree_pads_with_steps_of_dt():
    """A lane that ends early continues with steps of dt: the same path as if its times went
    on with them."""
    times = torch.tensor([[0.0, 0.0], [0.3, 0.3], [0.5, 0.4], [0.5, 0.5]], dtype=F64)
    short = step_tree(times, torch.tensor([2, 3]), 0.25, 3, (2, 2), seed=1, dtype=F64)
    full = torch.tensor([0.0, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0], dtype=F64)
    whole = step_tree(full[:, None], torch.tensor([8]), 9.0, 3, (2, 2), seed=1, dtype=F64)
    torch.testing.assert_close(short(0, 8)[:, 0], whole(0, 8)[:, 0], rtol=0, atol=1e-15)


def test_step_tree_needs_enough_levels():
    times = torch.arange(6, dtype=F64)[:, None]
    with pytest.raises(ValueError, match=r"2\*\*levels >= the last index 5, got 2"):
        step_tree(times, torch.tensor([5]), 1.0, 2, (1, 1), seed=0, dtype=F64)
