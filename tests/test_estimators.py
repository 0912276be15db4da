"""RNNClassifier / RNNRegressor: scikit-learn conventions without scikit-learn."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from rnnlab import NotFittedError, RNNClassifier, RNNRegressor
from rnnlab.model import RNN

FAST = {"hidden_size": 8, "epochs": 12, "batch_size": 16, "lr": 2e-2}


def sign_data(seed: int, n: int = 160, T: int = 6):
    """(N, T) sequences, one feature per step; the label is the sign of the first 3 steps."""
    X = np.random.default_rng(seed).standard_normal((n, T))
    return X, np.where(X[:, :3].sum(axis=1) > 0, "pos", "neg")


@pytest.mark.parametrize("cls", [RNNClassifier, RNNRegressor])
def test_init_only_stores_and_get_params_round_trips(cls):
    est = cls(hidden_size=5, epochs=3, optimizer_kwargs={"betas": (0.8, 0.9)}, random_state=4)
    params = est.get_params()
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert sorted(params) == sorted(names) and vars(est) == params       # nothing else stored
    assert params["hidden_size"] == 5 and params["optimizer_kwargs"] == {"betas": (0.8, 0.9)}
    clone = cls(**est.get_params())
    assert clone.get_params() == params and clone is not est
    assert est.set_params(epochs=7, lr=0.5) is est and est.epochs == 7 and est.lr == 0.5
    with pytest.raises(ValueError, match=r"invalid parameter 'hidden' for estimator "
                                         rf"{cls.__name__}; valid parameters are \["):
        est.set_params(hidden=3)
    assert repr(cls(epochs=3)) == f"{cls.__name__}(epochs=3)"
    # __init__ validates nothing: bad values surface at fit
    cls(lr=-1, optimizer="nope")


def test_sklearn_clone_and_cross_validation_work():
    pytest.importorskip("sklearn")
    from sklearn.base import clone, is_classifier, is_regressor
    from sklearn.model_selection import cross_val_score

    est = RNNClassifier(**FAST, random_state=0)
    assert clone(est).get_params() == est.get_params()
    assert is_classifier(est) and is_regressor(RNNRegressor())
    X, y = sign_data(0, 90)
    scores = cross_val_score(est, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.7


@pytest.mark.parametrize("cls", [RNNClassifier, RNNRegressor])
def test_predict_before_fit_raises_not_fitted(cls):
    with pytest.raises(NotFittedError, match=rf"This {cls.__name__} instance is not fitted yet"):
        cls().predict(np.zeros((2, 3)))
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_classifier_learns_with_string_labels():
    X, y = sign_data(0)
    Xt, yt = sign_data(1, 200)
    clf = RNNClassifier(**FAST, random_state=0)
    assert clf.fit(X, y) is clf
    assert list(clf.classes_) == ["neg", "pos"] and clf.n_features_in_ == 1
    assert isinstance(clf.model_, RNN) and clf.n_iter_ == FAST["epochs"]
    assert clf.history_.status == "completed"
    learned = set(vars(clf)) - set(clf.get_params())
    assert learned and all(a.endswith("_") for a in learned), learned
    proba = clf.predict_proba(Xt)
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    pred = clf.predict(Xt)
    assert pred.dtype == y.dtype and set(pred) <= {"neg", "pos"}
    assert np.array_equal(pred, clf.classes_[proba.argmax(1)])
    assert clf.score(Xt, yt) == np.mean(pred == yt) > 0.85            # chance: 0.5
    # 3-D input with D = 1 is the same thing
    assert np.array_equal(clf.predict(Xt[:, :, None]), pred)


def test_random_state_makes_fits_reproducible():
    X, y = sign_data(0, 64)
    a = RNNClassifier(**FAST, random_state=3).fit(X, y)
    b = RNNClassifier(**FAST, random_state=3).fit(X, y)
    assert a.predict_proba(X).tobytes() == b.predict_proba(X).tobytes()
    c = RNNClassifier(**FAST, random_state=np.random.default_rng(3)).fit(X, y)
    assert c.predict_proba(X).shape == (64, 2)


def test_per_step_labels_and_masks():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 5, 2))
    y = (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int) + 10          # labels 10, 11
    mask = np.ones((80, 5), dtype=bool)
    mask[::4, 3:] = False
    clf = RNNClassifier(**FAST, random_state=0).fit(X, y, mask=mask)
    assert list(clf.classes_) == [10, 11] and clf.model_.spec.setup == "many_to_many"
    assert clf.predict(X).shape == (80, 5) and clf.predict_proba(X).shape == (80, 5, 2)
    assert clf.score(X, y, mask=mask) == np.mean((clf.predict(X, mask) == y)[mask])
    assert clf.score(X, y, mask=mask) > 0.8


def test_regressor_learns_and_scores_r2():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (200, 6, 2))
    y = X[:, :, 0].mean(axis=1) - 0.5 * X[:, -1, 1]
    reg = RNNRegressor(**FAST, random_state=0).fit(X[:150], y[:150])
    pred = reg.predict(X[150:])
    assert pred.shape == (50,) and reg.n_outputs_ == 1 and reg.n_features_in_ == 2
    r2 = reg.score(X[150:], y[150:])
    manual = 1 - np.sum((y[150:] - pred) ** 2) / np.sum((y[150:] - y[150:].mean()) ** 2)
    assert r2 == pytest.approx(manual, rel=1e-6) and r2 > 0.8
    try:
        from sklearn.metrics import r2_score
    except ImportError:
        pass
    else:
        assert r2 == pytest.approx(r2_score(y[150:], pred), rel=1e-6)
    learned = set(vars(reg)) - set(reg.get_params())
    assert all(a.endswith("_") for a in learned), learned
    # multi-output and per-step targets keep their shapes
    Y2 = np.stack([y, -y], axis=1)
    assert RNNRegressor(**{**FAST, "epochs": 1}).fit(X, Y2).predict(X).shape == (200, 2)
    Y3 = np.cumsum(X[:, :, :1], axis=1)
    step = RNNRegressor(**{**FAST, "epochs": 1}).fit(X, Y3)
    assert step.model_.spec.setup == "many_to_many" and step.predict(X).shape == (200, 6, 1)


def test_validation_fraction_and_patience():
    X, y = sign_data(0, 100)
    clf = RNNClassifier(**{**FAST, "epochs": 50}, validation_fraction=0.2, patience=2,
                        random_state=0).fit(X, y)
    h = clf.history_
    assert "val_loss" in h.epochs[0] and h.monitor == "val_loss"
    assert h.status in ("early_stopped", "completed") and clf.n_iter_ == len(h.epochs)
    assert h.status == "early_stopped" and clf.n_iter_ < 50


@pytest.mark.parametrize("X,y,err,match", [
    (np.zeros((5, 4)), np.array([0, 1, 0, 1]), ValueError,
     r"X and y have different numbers of sequences: X has 5, y has 4"),
    (np.zeros((5, 4)), np.zeros(5), ValueError, r"y needs at least 2 classes; got 1"),
    (np.zeros((5, 4, 2, 1)), np.arange(5) % 2, ValueError, r"X must be \(N, T, D\) sequences"),
    (np.full((4, 3), np.nan), np.arange(4) % 2, ValueError, r"X contains NaN or inf"),
    (np.array([["a", "b"]] * 4), np.arange(4) % 2, TypeError, r"X must be a numeric array"),
    (np.zeros((4, 3)), np.zeros((4, 2)), ValueError, r"per-step labels y must be \(N, T\)"),
])
def test_classifier_bad_input(X, y, err, match):
    with pytest.raises(err, match=match):
        RNNClassifier(epochs=1).fit(X, y)


def test_bad_hyperparameters_and_feature_mismatch():
    X, y = sign_data(0, 20)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0; got -1.0"):
        RNNClassifier(lr=-1).fit(X, y)
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1; got 0"):
        RNNClassifier(batch_size=0).fit(X, y)
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamx'"):
        RNNClassifier(optimizer="adamx").fit(X, y)
    with pytest.raises(ValueError, match=r"validation_fraction must be None or a number in"):
        RNNClassifier(validation_fraction=1.5).fit(X, y)
    clf = RNNClassifier(**{**FAST, "epochs": 1}).fit(X, y)
    with pytest.raises(ValueError, match=r"X has 3 features per step, but RNNClassifier was "
                                         r"fitted with 1"):
        clf.predict(np.zeros((2, 6, 3)))
    with pytest.raises(ValueError, match=r"y must have shape \(20,\); got \(19,\)"):
        clf.score(X, y[:-1])
    with pytest.raises(ValueError, match=r"X and y have different numbers of sequences"):
        RNNRegressor().fit(X, np.zeros(3))
    with pytest.raises(TypeError, match=r"y must hold real numbers"):
        RNNRegressor().fit(X, y)
