"""Butcher tableaus: validation, the registry, FSAL flags and the classical order conditions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import solvers
from solvers import ButcherTableau

_ODE = solvers.ODE(lambda t, y: y)


def runge_kutta(method):
    """The Runge–Kutta stepper a registered method uses on an ODE (``heun`` is one name for
    an ODE tableau and a Stratonovich SDE scheme), or None."""
    return method.for_terms(_ODE.terms()) if method.accepts(_ODE) else None


ALL = [
    n
    for n, m in solvers.methods().items()
    if isinstance(runge_kutta(m), solvers.ExplicitRungeKutta)
]
EXPECTED_ORDERS = {
    "euler": (1, None),
    "midpoint": (2, None),
    "heun": (2, None),
    "rk4": (4, None),
    "bosh3": (3, 2),
    "dopri5": (5, 4),
    "tsit5": (5, 4),
}


def test_registry_holds_the_expected_runge_kutta_methods():
    assert set(ALL) == set(EXPECTED_ORDERS)


@pytest.mark.parametrize("name", ALL)
def test_registered_tableau_is_valid_and_documented(name):
    method = runge_kutta(solvers.methods()[name])
    tab = method.tableau
    assert isinstance(tab, ButcherTableau)
    assert tab.name == name == method.name
    order, error_order = EXPECTED_ORDERS[name]
    assert tab.order == method.order == order
    assert tab.error_order == error_order
    assert method.adaptive == tab.adaptive == (error_order is not None)
    assert isinstance(tab.reference, str) and len(tab.reference) > 10
    # Building it again from its fields validates it again and gives an equal tableau.
    assert dataclasses.replace(tab) == tab
    s = tab.stages
    assert len(tab.b) == s and len(tab.c) == s - 1 and len(tab.a) == s - 1
    assert all(len(row) == i + 1 for i, row in enumerate(tab.a))
    if tab.adaptive:
        assert len(tab.b_error) == s
        assert abs(sum(tab.b_error)) < 1e-12
        assert tab.interpolant is not None and len(tab.interpolant) == s


@pytest.mark.parametrize("name", ALL)
def test_fsal_flag(name):
    assert runge_kutta(solvers.methods()[name]).tableau.fsal == (
        name in {"bosh3", "dopri5", "tsit5"}
    )


def test_tableau_is_frozen():
    tab = solvers.methods()["rk4"].tableau
    with pytest.raises(dataclasses.FrozenInstanceError):
        tab.order = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        tab.b = (1.0, 0.0, 0.0, 0.0)


def test_coefficients_are_stored_as_tuples_of_floats():
    tab = ButcherTableau(name="lists", a=[[0.5]], b=[0, 1], c=[0.5], order=2)
    assert tab.a == ((0.5,),) and tab.b == (0.0, 1.0) and tab.c == (0.5,)
    assert all(isinstance(v, float) for v in tab.b)
    assert tab == ButcherTableau(name="lists", a=((0.5,),), b=(0.0, 1.0), c=(0.5,), order=2)


# ---------------------------------------------------------------------------------------------
# Validation errors name the tableau and the offending value


def test_row_sum_differing_from_node_raises():
    with pytest.raises(ValueError, match="'bad_row'") as info:
        ButcherTableau(
            name="bad_row", a=((0.5,), (0.1, 0.3)), b=(0.2, 0.3, 0.5), c=(0.5, 0.75), order=1
        )
    msg = str(info.value)
    assert "row" in msg
    assert "0.75" in msg  # the node
    assert "0.4" in msg  # what the row sums to


def test_weights_not_summing_to_one_raise():
    with pytest.raises(ValueError, match="'bad_b'") as info:
        ButcherTableau(name="bad_b", a=((0.5,),), b=(0.25, 0.5), c=(0.5,), order=1)
    msg = str(info.value)
    assert "0.75" in msg
    assert "1" in msg


def test_error_weights_not_summing_to_zero_raise():
    with pytest.raises(ValueError, match="'bad_err'") as info:
        ButcherTableau(
            name="bad_err",
            a=((1.0,),),
            b=(0.5, 0.5),
            c=(1.0,),
            order=2,
            b_error=(0.5, -0.25),
            error_order=1,
        )
    msg = str(info.value)
    assert "error" in msg
    assert "0.25" in msg


def test_wrong_number_of_rows_raises():
    with pytest.raises(ValueError, match="'bad_rows'") as info:
        ButcherTableau(name="bad_rows", a=((0.5,),), b=(0.2, 0.3, 0.5), c=(0.5, 1.0), order=1)
    msg = str(info.value)
    assert "rows" in msg
    assert "1" in msg and "2" in msg


def test_ragged_row_raises():
    with pytest.raises(ValueError, match="'ragged'") as info:
        ButcherTableau(name="ragged", a=((0.5,), (1.0,)), b=(0.2, 0.3, 0.5), c=(0.5, 1.0), order=1)
    assert "row 2" in str(info.value)


def test_wrong_number_of_error_weights_raises():
    with pytest.raises(ValueError, match="'short_err'") as info:
        ButcherTableau(
            name="short_err",
            a=((1.0,),),
            b=(0.5, 0.5),
            c=(1.0,),
            order=2,
            b_error=(0.0,),
            error_order=1,
        )
    assert "b_error" in str(info.value)


def test_error_weights_without_error_order_raise():
    with pytest.raises(ValueError, match="'no_order'") as info:
        ButcherTableau(
            name="no_order", a=((1.0,),), b=(0.5, 0.5), c=(1.0,), order=2, b_error=(0.5, -0.5)
        )
    assert "error_order" in str(info.value)


def test_interpolant_not_matching_weights_raises():
    with pytest.raises(ValueError, match="'bad_dense'") as info:
        ButcherTableau(
            name="bad_dense",
            a=((1.0,),),
            b=(0.5, 0.5),
            c=(1.0,),
            order=2,
            interpolant=((1.0, -0.5), (0.0, 0.4)),
        )
    assert "interpolant" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Classical order conditions, Σ_i b_i Φ_i(t) = 1/γ(t) for every rooted tree t up to order 5


def _conditions(A: np.ndarray, c: np.ndarray):
    """``(order, label, Φ vector, 1/γ)`` for the 17 rooted trees of order ≤ 5."""
    one = np.ones_like(c)
    Ac = A @ c
    return [
        (1, "1", one, 1.0),
        (2, "c", c, 1 / 2),
        (3, "c^2", c**2, 1 / 3),
        (3, "Ac", Ac, 1 / 6),
        (4, "c^3", c**3, 1 / 4),
        (4, "c·Ac", c * Ac, 1 / 8),
        (4, "Ac^2", A @ c**2, 1 / 12),
        (4, "AAc", A @ Ac, 1 / 24),
        (5, "c^4", c**4, 1 / 5),
        (5, "c^2·Ac", c**2 * Ac, 1 / 10),
        (5, "c·Ac^2", c * (A @ c**2), 1 / 15),
        (5, "c·AAc", c * (A @ Ac), 1 / 30),
        (5, "(Ac)^2", Ac**2, 1 / 20),
        (5, "Ac^3", A @ c**3, 1 / 20),
        (5, "A(c·Ac)", A @ (c * Ac), 1 / 40),
        (5, "AAc^2", A @ (A @ c**2), 1 / 60),
        (5, "AAAc", A @ (A @ Ac), 1 / 120),
    ]


def full_matrices(tab: ButcherTableau) -> tuple[np.ndarray, np.ndarray]:
    """The full ``(s, s)`` matrix A and the nodes c with the leading 0."""
    s = tab.stages
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i + 1, : i + 1] = row
    c = np.array((0.0, *tab.c))
    return A, c


def residuals(tab: ButcherTableau, b, max_order: int) -> dict[str, float]:
    A, c = full_matrices(tab)
    b = np.asarray(b, dtype=np.float64)
    return {
        label: float(b @ phi - value)
        for order, label, phi, value in _conditions(A, c)
        if order <= max_order
    }


@pytest.mark.parametrize("name", ALL)
def test_order_conditions_hold_up_to_the_order(name):
    tab = runge_kutta(solvers.methods()[name]).tableau
    res = residuals(tab, tab.b, tab.order)
    assert max(abs(r) for r in res.values()) < 1e-12, res


@pytest.mark.parametrize("name", ["bosh3", "dopri5", "tsit5"])
def test_embedded_weights_satisfy_the_error_order_conditions(name):
    tab = runge_kutta(solvers.methods()[name]).tableau
    b_hat = np.asarray(tab.b) - np.asarray(tab.b_error)
    res = residuals(tab, b_hat, tab.error_order)
    assert max(abs(r) for r in res.values()) < 1e-12, res
    # ... and not all of the next order: the estimate b - b_hat is really of lower order.
    nxt = residuals(tab, b_hat, tab.error_order + 1)
    assert max(abs(r) for r in nxt.values()) > 1e-6, nxt


@pytest.mark.parametrize("name", [n for n in ALL if EXPECTED_ORDERS[n][0] < 5])
def test_declared_order_is_exact(name):
    """Some condition of order p + 1 fails (checked where p + 1 ≤ 5)."""
    tab = runge_kutta(solvers.methods()[name]).tableau
    res = residuals(tab, tab.b, tab.order + 1)
    assert max(abs(r) for r in res.values()) > 1e-6, res


@pytest.mark.parametrize("name", ALL)
def test_row_sums_equal_nodes(name):
    A, c = full_matrices(runge_kutta(solvers.methods()[name]).tableau)
    np.testing.assert_allclose(A.sum(axis=1), c, rtol=0, atol=1e-12)
    assert np.allclose(np.triu(A), 0.0)  # explicit
