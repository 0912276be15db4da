"""RNNClassifier / RNNRegressor as scikit-learn estimators: check_estimator, Pipeline,
GridSearchCV and cross_val_score on 2-D data given the number of steps, sample and class
weights, partial_fit and warm_start, predict_log_proba, and the old behaviours."""

from __future__ import annotations

import inspect
import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.exceptions import DataConversionWarning  # noqa: E402
from sklearn.exceptions import NotFittedError as SkNotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from rnnlab import NotFittedError, RNNClassifier, RNNRegressor  # noqa: E402
from rnnlab.estimators import EXPECTED_FAILED_CHECKS  # noqa: E402
from rnnlab.model import RNN  # noqa: E402

FAST = {"hidden_size": 8, "epochs": 12, "batch_size": 16, "lr": 2e-2}


def sign_data(seed: int, n: int = 160, T: int = 6):
    """(N, T) sequences, one feature per step; the label is the sign of the first 3 steps."""
    X = np.random.default_rng(seed).standard_normal((n, T))
    return X, np.where(X[:, :3].sum(axis=1) > 0, "pos", "neg")


def digits_rows():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)               # (1797, 64): 8 rows of 8 pixels
    return X[:600], y[:600]


# ----------------------------------------------------------------------------- scikit-learn


@parametrize_with_checks([RNNClassifier(), RNNRegressor()],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_scikit_learn_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        check(estimator)


def test_real_scikit_learn_estimators():
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

    assert issubclass(RNNClassifier, BaseEstimator) and issubclass(RNNClassifier,
                                                                   ClassifierMixin)
    assert issubclass(RNNRegressor, RegressorMixin)
    assert is_classifier(RNNClassifier()) and is_regressor(RNNRegressor())
    assert NotFittedError is SkNotFittedError                # the old name still imports
    with pytest.raises(NotFittedError, match=r"This RNNClassifier instance is not fitted yet"):
        RNNClassifier().predict(np.zeros((2, 3)))
    for reason in EXPECTED_FAILED_CHECKS.values():
        assert len(reason) > 40


def test_pipeline_grid_search_and_cross_validation_on_2d_rows():
    X, y = digits_rows()
    pipe = make_pipeline(StandardScaler(), RNNClassifier(n_steps=8, hidden_size=32, epochs=15,
                                                         random_state=0))
    pipe.fit(X[:400], y[:400])
    clf = pipe[-1]
    assert clf.n_features_in_ == 64 and clf.n_steps_in_ == 8 and clf.n_features_per_step_ == 8
    assert clf.model_.spec.input_size == 8                   # 8 pixels per step, not 1
    assert pipe.score(X[400:], y[400:]) > 0.8                # chance: 0.1
    X = X / 16.0
    scores = cross_val_score(RNNClassifier(n_steps=8, **FAST, random_state=0), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6
    search = GridSearchCV(RNNClassifier(**FAST, random_state=0),
                          {"n_steps": [4, 8], "hidden_size": [8, 16]}, cv=2)
    search.fit(X[:300], y[:300])
    assert set(search.best_params_) == {"n_steps", "hidden_size"}
    assert search.best_estimator_.n_steps_in_ == search.best_params_["n_steps"]
    assert search.best_score_ > 0.5
    with pytest.raises(ValueError, match=r"n_steps=5 does not divide the 64 features of X"):
        RNNClassifier(n_steps=5).fit(X, y)


def test_init_only_stores_and_params_round_trip():
    for cls in (RNNClassifier, RNNRegressor):
        est = cls(hidden_size=5, epochs=3, optimizer_kwargs={"betas": (0.8, 0.9)},
                  random_state=4)
        params = est.get_params()
        names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        assert sorted(params) == sorted(names) and vars(est) == params
        assert clone(est).get_params() == params
        assert est.set_params(epochs=7, lr=0.5) is est and est.epochs == 7
        with pytest.raises(ValueError, match=r"Invalid parameter 'hidden' for estimator"):
            est.set_params(hidden=3)
        assert repr(cls(epochs=3)) == f"{cls.__name__}(epochs=3)"
        cls(lr=-1, optimizer="nope")                         # validation happens in fit


# ----------------------------------------------------------------------------- targets


def test_classifier_refuses_continuous_and_nan_targets():
    X = np.random.default_rng(0).standard_normal((30, 4))
    with pytest.raises(ValueError, match=r"Unknown label type: continuous"):
        RNNClassifier(epochs=1).fit(X, np.linspace(0, 1, 30))
    y = np.arange(30.0) % 2
    y[3] = np.nan
    with pytest.raises(ValueError, match=r"Input y contains NaN"):
        RNNClassifier(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match=r"Input y contains NaN"):
        RNNRegressor(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match=r"1 class"):
        RNNClassifier(epochs=1).fit(X, np.zeros(30))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        clf = RNNClassifier(epochs=1).fit(X, (np.arange(30) % 2)[:, None])
    assert any(issubclass(x.category, DataConversionWarning) for x in w)
    assert clf.predict(X).shape == (30,)


def test_classifier_learns_with_string_labels_and_3d_input():
    X, y = sign_data(0)
    Xt, yt = sign_data(1, 200)
    clf = RNNClassifier(**FAST, random_state=0)
    assert clf.fit(X, y) is clf
    assert list(clf.classes_) == ["neg", "pos"] and clf.n_features_in_ == 6
    assert isinstance(clf.model_, RNN) and clf.n_iter_ == FAST["epochs"]
    proba = clf.predict_proba(Xt)
    assert proba.shape == (200, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    pred = clf.predict(Xt)
    assert np.array_equal(pred, clf.classes_[proba.argmax(1)])
    assert clf.score(Xt, yt) == np.mean(pred == yt) > 0.85
    assert np.array_equal(clf.predict(Xt[:, :, None]), pred)            # (N, T, 1) is the same
    longer = np.concatenate([Xt, np.zeros((200, 3))], axis=1)[:, :, None]
    assert clf.predict(longer).shape == (200,)                          # any T in 3-D
    with pytest.raises(ValueError, match=r"X has 4 features, but RNNClassifier is expecting 6"):
        clf.predict(Xt[:, :4])
    with pytest.raises(ValueError, match=r"X has 2 features per step, but RNNClassifier is "
                                         r"expecting 1"):
        clf.predict(np.zeros((2, 6, 2)))
    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict_proba(Xt), proba)


def test_predict_log_proba_is_finite_where_the_probability_underflows():
    X, y = sign_data(0)
    clf = RNNClassifier(**FAST, random_state=0).fit(X, y)
    logp = clf.predict_log_proba(X)
    np.testing.assert_allclose(np.exp(logp), clf.predict_proba(X), rtol=1e-12)
    clf.model_.params["W_hy"] *= 1e4                     # saturate the softmax
    assert np.isfinite(clf.predict_log_proba(X)).all()
    assert (clf.predict_proba(X) == 0).any()


def test_per_step_labels_and_masks():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 5, 2))
    y = (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int) + 10
    mask = np.ones((80, 5), dtype=bool)
    mask[::4, 3:] = False
    clf = RNNClassifier(**FAST, random_state=0).fit(X, y, mask=mask)
    assert list(clf.classes_) == [10, 11] and clf.model_.spec.setup == "many_to_many"
    assert clf.predict(X).shape == (80, 5) and clf.predict_proba(X).shape == (80, 5, 2)
    assert clf.score(X, y, mask=mask) == np.mean((clf.predict(X, mask) == y)[mask]) > 0.8


def test_regressor_learns_and_scores_r2():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (200, 6, 2))
    y = X[:, :, 0].mean(axis=1) - 0.5 * X[:, -1, 1]
    reg = RNNRegressor(**FAST, random_state=0).fit(X[:150], y[:150])
    pred = reg.predict(X[150:])
    assert pred.shape == (50,) and reg.n_outputs_ == 1 and reg.n_features_per_step_ == 2
    r2 = reg.score(X[150:], y[150:])
    assert r2 == pytest.approx(r2_score(y[150:], pred)) and r2 > 0.8
    Y2 = np.stack([y, -y], axis=1)
    assert RNNRegressor(**{**FAST, "epochs": 1}).fit(X, Y2).predict(X).shape == (200, 2)
    step = RNNRegressor(**{**FAST, "epochs": 1}).fit(X, np.cumsum(X[:, :, :1], axis=1))
    assert step.model_.spec.setup == "many_to_many" and step.predict(X).shape == (200, 6, 1)


# ----------------------------------------------------------------------------- weights


def test_sample_weight_ones_zeros_and_effect():
    X, y = sign_data(0, 120)
    a = RNNClassifier(**FAST, random_state=0).fit(X, y)
    b = RNNClassifier(**FAST, random_state=0).fit(X, y, sample_weight=np.full(120, 3.0))
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))     # constant = no weight
    # zero-weight rows are not trained on: the same fit as without them
    noise = np.random.default_rng(9).standard_normal((40, 6))
    Xz = np.concatenate([X, noise])
    yz = np.concatenate([y, np.where(noise[:, 0] > 0, "neg", "pos")])
    c = RNNClassifier(**FAST, random_state=0).fit(
        Xz, yz, sample_weight=np.r_[np.ones(120), np.zeros(40)])
    assert np.array_equal(a.predict_proba(X), c.predict_proba(X))
    # weight on one class pulls the predictions to it
    w = np.where(y == "pos", 20.0, 1.0)
    d = RNNClassifier(**FAST, random_state=0).fit(X, y, sample_weight=w)
    assert np.mean(d.predict(X) == "pos") > np.mean(a.predict(X) == "pos")
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(3,\), expected \(120,\)"):
        RNNClassifier(epochs=1).fit(X, y, sample_weight=np.ones(3))


def test_class_weight_dict_and_balanced():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6))
    y = np.where(X[:, :3].sum(axis=1) > 1.2, "rare", "common")           # ~25 % rare
    plain = RNNClassifier(**FAST, random_state=0).fit(X, y)
    bal = RNNClassifier(**FAST, class_weight="balanced", random_state=0).fit(X, y)
    rare = y == "rare"
    # weighting the rare class up raises its predicted probability everywhere (the recall can
    # tie when both models separate the classes)
    p_rare = lambda clf: clf.predict_proba(X)[:, list(clf.classes_).index("rare")]  # noqa: E731
    assert p_rare(bal)[rare].mean() > p_rare(plain)[rare].mean()
    assert p_rare(bal).mean() > p_rare(plain).mean()
    recall = lambda clf: np.mean(clf.predict(X)[rare] == "rare")  # noqa: E731
    assert recall(bal) >= recall(plain)
    heavy = RNNClassifier(**FAST, class_weight={"rare": 100.0}, random_state=0).fit(X, y)
    assert np.mean(heavy.predict(X) == "rare") > 0.5 > np.mean(rare)


# ----------------------------------------------------------------------------- continuing


def test_partial_fit_continues_one_epoch_at_a_time():
    X, y = sign_data(0)
    Xt, yt = sign_data(1, 200)
    clf = RNNClassifier(**FAST, random_state=0)
    with pytest.raises(ValueError, match=r"classes must be passed on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:80], y[:80], classes=["neg", "pos"])
    model, first = clf.model_, clf.history_.opt_state["step"]
    for _ in range(11):
        clf.partial_fit(X, y)
    assert clf.model_ is model and clf.n_iter_ == 12
    assert clf.history_.opt_state["step"] == first + 11 * 10        # Adam's steps carried on
    assert clf.score(Xt, yt) > 0.85
    with pytest.raises(ValueError, match=r"y has classes \['maybe'\] that the fitted model "
                                         r"does not know"):
        clf.partial_fit(X[:4], np.array(["maybe"] * 4))
    with pytest.raises(ValueError, match=r"X has 5 features, but RNNClassifier is expecting 6"):
        clf.partial_fit(X[:, :5], y)
    reg = RNNRegressor(**FAST, random_state=0)
    reg.partial_fit(X, X[:, :3].sum(axis=1))
    reg.partial_fit(X, X[:, :3].sum(axis=1))
    assert reg.n_iter_ == 2


def test_warm_start_trains_on_from_the_fitted_model():
    X, y = sign_data(0)
    clf = RNNClassifier(**{**FAST, "epochs": 3}, warm_start=True, random_state=0).fit(X, y)
    model = clf.model_
    before = {k: v.copy() for k, v in model.params.items()}
    clf.fit(X, y)
    assert clf.model_ is model and clf.n_iter_ == 6
    assert not np.array_equal(before["W_hy"], model.params["W_hy"])
    cold = RNNClassifier(**{**FAST, "epochs": 3}, random_state=0).fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 3 and cold.model_ is not model


def test_bad_hyperparameters_surface_in_fit():
    X, y = sign_data(0, 20)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0; got -1.0"):
        RNNClassifier(lr=-1).fit(X, y)
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamx'"):
        RNNClassifier(optimizer="adamx").fit(X, y)
    with pytest.raises(ValueError, match=r"validation_fraction must be None or a number in"):
        RNNClassifier(validation_fraction=1.5).fit(X, y)
    with pytest.raises(ValueError, match=r"epochs must be an int >= 1; got 0"):
        RNNClassifier(epochs=0).fit(X, y)


def test_validation_fraction_and_patience():
    X, y = sign_data(0, 100)
    clf = RNNClassifier(**{**FAST, "epochs": 50}, validation_fraction=0.2, patience=2,
                        random_state=0).fit(X, y)
    h = clf.history_
    assert "val_loss" in h.epochs[0] and h.monitor == "val_loss"
    assert h.status == "early_stopped" and clf.n_iter_ == len(h.epochs) < 50


def test_import_rnnlab_needs_no_scikit_learn():
    import subprocess
    import sys

    code = ("import sys; sys.modules['sklearn'] = None; import rnnlab; "
            "assert issubclass(rnnlab.NotFittedError, ValueError)\n"
            "try:\n    rnnlab.RNNClassifier\nexcept ImportError as e:\n    print(e)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "pip install 'rnnlab[sklearn]'" in res.stdout
