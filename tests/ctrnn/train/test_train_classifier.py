"""TimeSeriesClassifier: aeon/sktime layouts, labels, the scikit-learn parameter protocol."""

import random

import numpy as np
import pytest
import torch

from ctrnn.train import TimeSeriesClassifier


def two_class_data(n=60, channels=2, length=12, seed=0, ragged=False):
    """Class "up": channel 0 rises; class "down": it falls (the other channels are noise).
    In aeon's layout: (n_cases, n_channels, n_timepoints), or a list of (n_channels, T_i)."""
    rng = np.random.default_rng(seed)
    y = np.array(["up", "down"])[rng.integers(0, 2, n)]
    X = []
    for label in y:
        T = int(rng.integers(length // 2, length + 1)) if ragged else length
        x = rng.normal(0, 0.1, (channels, T)).astype(np.float32)
        x[0] += np.linspace(-1, 1, T) * (1 if label == "up" else -1)
        X.append(x)
    return (X if ragged else np.stack(X)), y


def test_fit_predict_on_a_3d_array():
    X, y = two_class_data()
    clf = TimeSeriesClassifier("gru", hidden_size=8, epochs=15, lr=0.02, seed=0)
    assert clf.fit(X, y) is clf
    assert list(clf.classes_) == ["down", "up"] and clf.n_channels_ == 2
    X_test, y_test = two_class_data(n=40, seed=1)
    proba = clf.predict_proba(X_test)
    assert proba.shape == (40, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    predicted = clf.predict(X_test)
    assert predicted.dtype == clf.classes_.dtype
    np.testing.assert_array_equal(predicted, clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X_test, y_test) == np.mean(predicted == y_test)
    assert clf.score(X_test, y_test) >= 0.9  # a separable task
    assert len(clf.history_) == 15 and not clf.model_.training


def test_variable_length_lists_missing_values_and_integer_labels():
    X, y = two_class_data(n=40, ragged=True)
    X[0][1, 2] = np.nan  # a missing value
    y_int = np.where(y == "up", 7, 3)
    clf = TimeSeriesClassifier("gru_d", hidden_size=8, epochs=2).fit(X, y_int)
    assert list(clf.classes_) == [3, 7]
    assert set(clf.predict(X).tolist()) <= {3, 7}
    # one-channel series as 1-D arrays
    one = [x[0] for x in X]
    clf = TimeSeriesClassifier("gru", hidden_size=4, epochs=1).fit(one, y)
    assert clf.n_channels_ == 1 and clf.predict_proba(one[:3]).shape == (3, 2)


def test_fit_is_seeded_and_leaves_global_random_state_alone():
    X, y = two_class_data(n=30)
    torch.manual_seed(123)
    np.random.seed(5)  # noqa: NPY002
    random.seed(9)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002
    a = TimeSeriesClassifier("gru", hidden_size=4, epochs=2, seed=1).fit(X, y)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert (np.random.get_state()[1] == before[1]).all() and random.getstate() == before[2]  # noqa: NPY002
    b = TimeSeriesClassifier("gru", hidden_size=4, epochs=2, seed=1).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_validation_split_early_stopping_and_best_model():
    X, y = two_class_data(n=60)
    clf = TimeSeriesClassifier(
        "gru", hidden_size=4, epochs=6, lr=1e-12, validation_fraction=0.25, patience=2
    ).fit(X, y)
    # nothing changes at this learning rate: the first epoch stays best, stop after 2 more
    assert len(clf.history_) == 3 and clf.best_epoch_ == 1
    assert {"val_loss", "val_acc"} <= set(clf.history_[0])


def test_get_and_set_params_follow_scikit_learn():
    clf = TimeSeriesClassifier("tau_gru", hidden_size=16, model_options={"delay": 3.0})
    params = clf.get_params()
    assert params["model"] == "tau_gru" and params["hidden_size"] == 16
    assert params["model_options"] is clf.model_options  # kept as given, not copied
    clone = TimeSeriesClassifier(**params)
    assert clone.get_params() == params
    assert clf.set_params(epochs=3, lr=0.1) is clf and (clf.epochs, clf.lr) == (3, 0.1)
    with pytest.raises(ValueError, match="invalid parameter 'depth'; valid parameters: model,"):
        clf.set_params(depth=2)
    assert repr(TimeSeriesClassifier()) == "TimeSeriesClassifier()"
    assert repr(clf) == (
        "TimeSeriesClassifier(model='tau_gru', hidden_size=16, epochs=3, lr=0.1, "
        "model_options={'delay': 3.0})"
    )


def test_with_scikit_learn_if_installed():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import cross_val_score

    X, y = two_class_data(n=40)
    clf = TimeSeriesClassifier("gru", hidden_size=4, epochs=2)
    assert is_classifier(clf) and clone(clf).get_params() == clf.get_params()
    scores = cross_val_score(clf, X, y, cv=2)
    assert scores.shape == (2,), sklearn.__version__


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dict(model="bert"), "unknown model 'bert'"),
        (dict(hidden_size=0), "hidden_size must be an integer >= 1, got 0"),
        (dict(lr=-1), "lr must be a finite number > 0, got -1"),
        (dict(schedule="plateau"), "schedule must be 'none' or 'cosine', got 'plateau'"),
        (dict(validation_fraction=1.0), r"validation_fraction must be in \[0, 1\), got 1.0"),
        (dict(patience=3), "patience=3 needs a validation set; set validation_fraction"),
        (dict(validation_fraction=0.01), "leaves an empty part"),
        (dict(model="gru_d", solver={"method": "rk4"}), "model 'gru_d' takes no solver options"),
    ],
)
def test_bad_parameters_fail_at_fit(params, message):
    X, y = two_class_data(n=20)
    clf = TimeSeriesClassifier(**{"epochs": 1, **params})  # __init__ only stores
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


def test_bad_inputs():
    X, y = two_class_data(n=20)
    clf = TimeSeriesClassifier("gru", hidden_size=4, epochs=1)
    with pytest.raises(ValueError, match="not fitted yet; call fit"):
        clf.predict(X)
    with pytest.raises(ValueError, match=r"X has shape \(20, 12\); expected \(n_cases, n_channels"):
        clf.fit(X[:, 0, :], y)
    with pytest.raises(ValueError, match="got an array of shape"):
        clf.fit(X[None], y)
    with pytest.raises(TypeError, match="got str"):
        clf.fit("data", y)
    with pytest.raises(ValueError, match="X holds no series"):
        clf.fit([], [])
    with pytest.raises(TypeError, match="series 0 of X is not numeric"):
        clf.fit([[["a", "b"]]], ["x"])
    with pytest.raises(ValueError, match=r"series 1 of X must be \(n_channels, n_timepoints\)"):
        clf.fit([np.zeros((2, 3)), np.zeros((2, 3, 1))], ["a", "b"])
    with pytest.raises(ValueError, match=r"y must be \(n_cases,\) = \(20,\), got shape \(19,\)"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(X, np.full(20, "up"))
    clf.fit(X, y)
    with pytest.raises(ValueError, match="X has 1 channels, the classifier was fitted on 2"):
        clf.predict(X[:, :1])
    with pytest.raises(ValueError, match=r"y must be \(20,\), got shape \(3,\)"):
        clf.score(X, y[:3])
