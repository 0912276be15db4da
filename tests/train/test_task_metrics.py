"""The tasks' own metrics (Dataset.scorer, rnnlab.train.metrics.task_metrics), reported by fit
and `rnnlab evaluate`."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNN, TrainConfig, data
from rnnlab.data.reber import strict_accuracy
from rnnlab.data.tasks import xor_position_error
from rnnlab.train.metrics import predict, task_metrics


def _probs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    p = rng.random(shape)
    return p / p.sum(-1, keepdims=True)


def test_xor_scores_the_error_by_position():
    ds = data.load("xor", steps=12, n_train=20, n_test=30)
    y = ds.test.y
    perfect = np.eye(2)[y]                                  # (N, T, 2) one-hot of the truth
    assert ds.task_metrics("test", perfect) == {"error_a": 0.0, "error_b": 0.0, "error_xor": 0.0}
    flipped = np.eye(2)[1 - y]
    assert ds.task_metrics("test", flipped) == {"error_a": 1.0, "error_b": 1.0, "error_xor": 1.0}
    rng = np.random.default_rng(0)
    p = _probs(rng, y.shape + (2,))
    want = xor_position_error(p.argmax(-1), y)
    got = ds.task_metrics("test", p)
    np.testing.assert_allclose([got["error_a"], got["error_b"], got["error_xor"]], want)


def test_reber_scores_strict_success():
    ds = data.load("reber", n_train=20, n_test=25)
    allowed, mask = ds.meta["allowed"]["test"], ds.test.mask
    rng = np.random.default_rng(1)
    p = _probs(rng, allowed.shape)
    got = ds.task_metrics("test", p)
    assert got["strict_accuracy"] == strict_accuracy(p, allowed, mask)
    assert got["strict_accuracy_argmax"] == strict_accuracy(p, allowed, mask, "argmax")
    oracle = allowed / allowed.sum(-1, keepdims=True).clip(1)     # every allowed symbol above
    assert ds.task_metrics("test", oracle)["strict_accuracy"] == 1.0


def test_regression_scores_mse_against_the_baseline():
    ds = data.load("adding", steps=10, n_train=20, n_test=40)
    ones = np.ones_like(ds.test.y)
    got = ds.task_metrics("test", ones)
    want = float(np.mean((1.0 - ds.test.y) ** 2))
    assert got["mse"] == pytest.approx(want) and got["mse_ratio"] == pytest.approx(want * 6)
    assert ds.task_metrics("test", ds.test.y)["mse"] == 0.0


def test_copy_scores_recall():
    ds = data.load("copy", steps=5, n_train=10, n_test=12)
    y = ds.test.y
    got = ds.task_metrics("test", np.eye(ds.output_size)[y])
    assert got == {"recall_accuracy": 1.0, "recall_exact": 1.0}
    wrong = y.copy()
    wrong[0, -1] = (wrong[0, -1] % 8) + 1                       # one recalled symbol off
    got = ds.task_metrics("test", np.eye(ds.output_size)[wrong])
    assert got["recall_exact"] == pytest.approx(11 / 12)
    assert got["recall_accuracy"] == pytest.approx(1 - 1 / (12 * 10))


def test_a_task_without_a_scorer_and_bad_arguments():
    ds = data.load("parity", steps=6, n_train=10, n_test=10)
    assert ds.task_metrics("test", np.zeros((10, 2))) == {}
    xor = data.load("xor", steps=6, n_train=10, n_test=10)
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test'; got 'dev'"):
        xor.task_metrics("dev", np.zeros((10, 6, 2)))
    with pytest.raises(ValueError, match=r"y_pred must hold the 10 sequences of the test split"):
        xor.task_metrics("test", np.zeros((9, 6, 2)))


def test_fit_reports_the_task_metrics_of_the_weights_it_ends_with():
    ds = data.load("xor", steps=12, n_train=64, n_test=32)
    m = RNN.for_dataset(ds, 8, seed=0)
    h = m.fit(ds, TrainConfig(epochs=2, batch_size=16, progress="off", health=False))
    want = task_metrics(m.params, m.spec, ds, "test")
    assert {f"test_{k}" for k in want} <= set(h.test)
    for k, v in want.items():
        assert h.test[f"test_{k}"] == pytest.approx(v)
    y = predict(m.params, m.spec, ds.test.X, batch_size=5)
    assert y.shape == (32, 12, 2)
    np.testing.assert_allclose(y, m.forward(ds.test.X).y, rtol=1e-6)
