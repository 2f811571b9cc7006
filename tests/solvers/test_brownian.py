"""BrownianPath: statistics of its increments, determinism under re-query, errors."""

from __future__ import annotations

import pytest
import torch

from solvers import BrownianPath

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
