"""Control paths: interpolation of the knots, derivatives, smoothness, causality, missing data,
per-sample times and the errors a user can trigger."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import solvers
from solvers import HermiteCubicPath, LinearPath, NaturalCubicPath, RectilinearPath

F64 = torch.float64
KINDS = ["linear", "rectilinear", "hermite", "natural_cubic"]


def data(B=3, T=7, C=2, seed=0, per_sample=False):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(B, T, C, generator=g, dtype=F64)
    shape = (B, T) if per_sample else (T,)
    steps = 0.2 + torch.rand(shape, generator=g, dtype=F64)
    times = steps.cumsum(-1) - 0.5
    return values, times


def inside(times, n=5, seed=1):
    """``n`` times strictly inside each interval, shape (n * (T - 1), ...)."""
    g = torch.Generator().manual_seed(seed)
    frac = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)
    lo, hi = times[..., :-1], times[..., 1:]
    pts = lo[..., None] + frac * (hi - lo)[..., None]
    return pts.flatten(-2).movedim(-1, 0)  # (n*(T-1),) or (n*(T-1), B)


@pytest.mark.parametrize("kind", KINDS)
def test_path_interpolates_its_knots(kind):
    values, times = data()
    path = solvers.interpolate(values, times, kind=kind)
    for j in range(times.shape[0]):
        torch.testing.assert_close(path.evaluate(times[j]), values[:, j], rtol=0, atol=1e-12)
    torch.testing.assert_close(path.interval, torch.stack([times[0], times[-1]]))


@pytest.mark.parametrize("kind", KINDS)
def test_derivative_matches_finite_differences(kind):
    values, times = data()
    path = solvers.interpolate(values, times, kind=kind)
    eps = 1e-6
    for tq in inside(times):
        fd = (path.evaluate(tq + eps) - path.evaluate(tq - eps)) / (2 * eps)
        torch.testing.assert_close(path.derivative(tq), fd, rtol=1e-6, atol=1e-6)


def test_linear_derivative_is_the_constant_slope_of_each_interval():
    values, times = data()
    path = LinearPath(values, times)
    pts = inside(times, n=4)  # interval by interval
    for i in range(times.shape[0] - 1):
        slope = (values[:, i + 1] - values[:, i]) / (times[i + 1] - times[i])
        for tq in pts[i * 4 : (i + 1) * 4]:
            torch.testing.assert_close(path.derivative(tq), slope, rtol=1e-12, atol=1e-12)
        # right-continuous at the knot that starts the interval
        torch.testing.assert_close(path.derivative(times[i]), slope, rtol=1e-12, atol=1e-12)


def test_natural_cubic_is_c2_with_zero_second_derivative_at_the_ends():
    values, times = data(T=9)
    path = NaturalCubicPath(values, times)
    for j in (0, -1):
        torch.testing.assert_close(
            path.second_derivative(times[j]), torch.zeros_like(values[:, 0]), atol=1e-10, rtol=0
        )
    for j in range(1, times.shape[0] - 1):
        before = path.second_derivative(times[j] - 1e-9)
        at = path.second_derivative(times[j])
        torch.testing.assert_close(before, at, atol=1e-6, rtol=0)
        torch.testing.assert_close(path.derivative(times[j] - 1e-9), path.derivative(times[j]))


def test_natural_cubic_matches_scipy():
    interpolate_mod = pytest.importorskip("scipy.interpolate")
    values, times = data(B=2, T=8, C=3, per_sample=True)
    path = NaturalCubicPath(values, times)
    pts = inside(times)  # (n, B)
    for b in range(2):
        ref = interpolate_mod.CubicSpline(times[b].numpy(), values[b].numpy(), bc_type="natural")
        for tq in pts:
            got = path.evaluate(tq)[b]
            torch.testing.assert_close(got, torch.from_numpy(ref(tq[b].item())))
            torch.testing.assert_close(
                path.derivative(tq)[b], torch.from_numpy(ref(tq[b].item(), 1))
            )


def test_hermite_is_c1_with_backward_differences_at_the_knots():
    values, times = data(T=8)
    path = HermiteCubicPath(values, times)
    for j in range(1, times.shape[0]):
        backward = (values[:, j] - values[:, j - 1]) / (times[j] - times[j - 1])
        left = path.derivative(times[j] - 1e-10)
        torch.testing.assert_close(left, backward, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(path.derivative(times[j]), backward, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["hermite", "rectilinear"])
def test_hermite_and_rectilinear_are_causal(kind):
    values, times = data(T=8)
    k = 5
    changed = values.clone()
    changed[:, k] += 3.0
    a = solvers.interpolate(values, times, kind=kind)
    b = solvers.interpolate(changed, times, kind=kind)
    before = torch.linspace(times[0].item(), times[k - 1].item(), 50, dtype=F64)
    for tq in before:
        torch.testing.assert_close(a.evaluate(tq), b.evaluate(tq), rtol=0, atol=0)
        torch.testing.assert_close(a.derivative(tq), b.derivative(tq), rtol=0, atol=0)
    mid = 0.5 * (times[k - 1] + times[k])
    assert not torch.equal(a.evaluate(mid + 1e-3), b.evaluate(mid + 1e-3))


def test_natural_cubic_is_not_causal():
    values, times = data(T=8)
    changed = values.clone()
    changed[:, -1] += 3.0
    a, b = NaturalCubicPath(values, times), NaturalCubicPath(changed, times)
    assert not torch.equal(a.evaluate(times[1]), b.evaluate(times[1] + 0.01))


def test_rectilinear_moves_time_first_then_values():
    values, times = data(T=5, C=3)
    path = RectilinearPath(values, times, time_channel=0)
    for i in range(4):
        h = times[i + 1] - times[i]
        first, second = times[i] + 0.25 * h, times[i] + 0.75 * h
        d1, d2 = path.derivative(first), path.derivative(second)
        assert torch.all(d1[:, 1:] == 0) and torch.all(d2[:, 0] == 0)
        torch.testing.assert_close(d1[:, 0], 2 * (values[:, i + 1, 0] - values[:, i, 0]) / h)
        torch.testing.assert_close(d2[:, 1:], 2 * (values[:, i + 1, 1:] - values[:, i, 1:]) / h)
    plain = RectilinearPath(values, times)
    assert torch.all(plain.derivative(times[0] + 0.1 * (times[1] - times[0])) == 0)


def test_extrapolation_continues_the_end_pieces():
    values, times = data()
    path = LinearPath(values, times)
    slope0 = (values[:, 1] - values[:, 0]) / (times[1] - times[0])
    torch.testing.assert_close(path.evaluate(times[0] - 1.0), values[:, 0] - slope0)
    slope1 = (values[:, -1] - values[:, -2]) / (times[-1] - times[-2])
    torch.testing.assert_close(path.evaluate(times[-1] + 2.0), values[:, -1] + 2 * slope1)


# ---------------------------------------------------------------------------------------------
# Missing data


def drop(values, fraction, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(values.shape, generator=g) < fraction
    mask[:, 2] = False  # every (sample, channel) keeps an observation
    return values.masked_fill(mask, float("nan"))


def reference_fill(values, times, forward):
    """Slow per-(sample, channel) reference: numpy's interp holds the end values."""
    out = values.clone()
    B, T, C = values.shape
    for b in range(B):
        tb = (times if times.ndim == 1 else times[b]).numpy()
        for c in range(C):
            col = values[b, :, c].numpy()
            obs = ~np.isnan(col)
            if forward:
                filled = col.copy()
                first = np.flatnonzero(obs)[0]
                filled[:first] = col[first]
                for j in range(first + 1, T):
                    if not obs[j]:
                        filled[j] = filled[j - 1]
            else:
                filled = np.interp(tb, tb[obs], col[obs])
            out[b, :, c] = torch.from_numpy(filled)
    return out


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_missing_entries_are_filled_per_channel(kind, per_sample):
    values, times = data(B=5, T=12, C=3, per_sample=per_sample)
    missing = drop(values, 0.5, seed=3)
    path = solvers.interpolate(missing, times, kind=kind)
    expected = reference_fill(missing, times, forward=kind == "rectilinear")
    torch.testing.assert_close(path.values, expected, rtol=1e-12, atol=1e-12)
    assert not torch.isnan(path.coefficients).any()


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 4),
    T=st.integers(2, 9),
    C=st.integers(1, 3),
    fraction=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_fill_equals_the_per_sample_reference(B, T, C, fraction, seed):
    values, times = data(B, T, C, seed=seed, per_sample=seed % 2 == 1)
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(values.shape, generator=g) < fraction
    mask[:, seed % T] = False
    missing = values.masked_fill(mask, float("nan"))
    path = LinearPath(missing, times)
    torch.testing.assert_close(path.values, reference_fill(missing, times, forward=False))


def test_a_channel_with_no_observation_is_an_error_naming_it():
    values, times = data(B=5)
    values[3, :, 1] = float("nan")
    with pytest.raises(ValueError, match=r"sample 3, channel 1 has no observation.*fill_value"):
        solvers.interpolate(values, times)


def test_fill_value_fills_channels_with_no_observation():
    values, times = data(B=5)
    values[3, :, 1] = float("nan")
    values[0, 1:3, 0] = float("nan")
    path = solvers.interpolate(values, times, kind="linear", fill_value=-1.5)
    assert torch.all(path.values[3, :, 1] == -1.5)
    torch.testing.assert_close(path.values[0], reference_fill(values[:1], times, False)[0])


def test_gradient_flows_to_the_observed_values_only():
    values, times = data()
    missing = drop(values, 0.4, seed=1).requires_grad_(True)
    path = NaturalCubicPath(missing, times)
    (g,) = torch.autograd.grad(path.evaluate(inside(times)[3]).sum(), missing)
    assert torch.isfinite(g).all()
    assert torch.all(g[torch.isnan(missing.detach())] == 0)


def test_gradcheck_through_the_path():
    values, times = data(B=2, T=5, C=2)
    tq = inside(times)[4:6]

    for cls in (HermiteCubicPath, NaturalCubicPath):

        def fn(v, cls=cls):
            path = cls(v, times)
            return torch.stack([path.evaluate(t) for t in tq] + [path.derivative(t) for t in tq])

        assert torch.autograd.gradcheck(fn, (values.clone().requires_grad_(True),))


# ---------------------------------------------------------------------------------------------
# Per-sample times


@pytest.mark.parametrize("kind", KINDS)
def test_per_sample_times_equal_per_sample_paths(kind):
    values, times = data(B=4, T=6, C=2, per_sample=True)
    values = drop(values, 0.3, seed=2)
    path = solvers.interpolate(values, times, kind=kind)
    pts = inside(times)  # (n, B): each sample at its own time
    singles = [solvers.interpolate(values[b : b + 1], times[b], kind=kind) for b in range(4)]
    for tq in pts:
        for b, single in enumerate(singles):
            torch.testing.assert_close(path.evaluate(tq)[b], single.evaluate(tq[b])[0])
            torch.testing.assert_close(path.derivative(tq)[b], single.derivative(tq[b])[0])
    torch.testing.assert_close(path.interval, torch.stack([times[:, 0], times[:, -1]], dim=1))


def test_a_batch_of_times_evaluates_each_sample_at_its_own_time():
    values, times = data(B=3)
    path = HermiteCubicPath(values, times)
    tq = torch.stack([times[1], times[4], times[2] + 0.01])
    out = path.evaluate(tq)
    for b in range(3):
        torch.testing.assert_close(out[b], path.evaluate(tq[b])[b])


# ---------------------------------------------------------------------------------------------
# Errors


def test_values_must_be_3d():
    values, times = data()
    with pytest.raises(
        ValueError, match=r"values must have shape \(batch, T, channels\).*\(7, 2\)"
    ):
        solvers.interpolate(values[0], times)


def test_values_must_be_a_floating_tensor():
    values, times = data()
    with pytest.raises(TypeError, match="values must be a tensor"):
        solvers.interpolate(values.tolist(), times)
    with pytest.raises(ValueError, match="floating point"):
        solvers.interpolate(values.long(), times)


def test_times_must_match_values():
    values, times = data()
    with pytest.raises(
        ValueError, match=r"times must have shape \(T,\) = \(7,\).*got shape \(6,\)"
    ):
        solvers.interpolate(values, times[:6])
    with pytest.raises(ValueError, match=r"got shape \(2, 7\)"):
        solvers.interpolate(values, times.expand(2, 7))


def test_times_must_be_strictly_increasing_and_finite():
    values, times = data()
    bad = times.clone()
    bad[4] = bad[3]
    with pytest.raises(ValueError, match=r"strictly increasing; times\[4\]"):
        solvers.interpolate(values, bad)
    bad[4] = float("nan")
    with pytest.raises(ValueError, match=r"times must be finite; times\[4\]"):
        solvers.interpolate(values, bad)


def test_too_few_observations():
    values, times = data(T=1)
    with pytest.raises(ValueError, match="at least 2 observation times, got T=1"):
        solvers.interpolate(values, times)


def test_unknown_kind_lists_the_valid_ones():
    values, times = data()
    with pytest.raises(
        ValueError, match="unknown kind 'cubic'; valid kinds are: linear, rectilinear, hermite"
    ):
        solvers.interpolate(values, times, kind="cubic")


def test_time_channel_only_for_rectilinear_and_in_range():
    values, times = data()
    with pytest.raises(ValueError, match="time_channel applies to kind='rectilinear' only"):
        solvers.interpolate(values, times, kind="linear", time_channel=0)
    with pytest.raises(
        ValueError, match=r"time_channel must be an integer channel index in \[0, 2\)"
    ):
        solvers.interpolate(values, times, kind="rectilinear", time_channel=2)


def test_fill_value_must_be_a_number():
    values, times = data()
    with pytest.raises(ValueError, match="fill_value must be a number or None, got 'zero'"):
        solvers.interpolate(values, times, fill_value="zero")


def test_evaluation_time_of_the_wrong_shape():
    values, times = data(B=3)
    path = LinearPath(values, times)
    with pytest.raises(ValueError, match=r"t must be a scalar or a \(batch,\) tensor with batch 3"):
        path.evaluate(torch.zeros(2, dtype=F64))


def test_repr_names_the_kind_and_shapes():
    values, times = data()
    assert repr(LinearPath(values, times)) == "LinearPath(batch=3, T=7, channels=2, shared times)"
