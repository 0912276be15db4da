"""The Add and Mimic tasks (rnnlab.data.online_tasks): the defining formulas, streams cut into
consecutive windows, the analytic baselines checked on generated data, the teacher checked
against rnnlab's own network, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNNSpec
from rnnlab import network as net
from rnnlab.data import registry
from rnnlab.data.online_tasks import (
    add_task_baselines,
    binary_entropy,
    make_add_task,
    make_mimic,
    mimic_teacher,
)


def test_add_task_formula_and_stream():
    s = make_add_task(30, 10, np.random.default_rng(0), t1=2, t2=5)
    x = s.X[..., 0].ravel().astype(np.float64)           # the stream, windows in order
    p = s.y[..., 0].ravel().astype(np.float64)
    assert s.X.shape == (30, 10, 1) and s.y.shape == (30, 10, 1) and s.y.dtype == np.float32
    assert set(np.unique(x)) == {0.0, 1.0}
    lag = np.concatenate([np.zeros(5), x])
    np.testing.assert_allclose(p, 0.5 + 0.5 * lag[3:3 + x.size] - 0.25 * lag[:x.size],
                               atol=1e-7)


def test_add_task_tau_and_samples():
    s = make_add_task(20, 12, np.random.default_rng(1), t1=1, t2=2, tau_task=3)
    x = s.X[..., 0].ravel()
    p = s.y[..., 0].ravel()
    assert np.all(x.reshape(-1, 3) == x.reshape(-1, 3)[:, :1])     # held for 3 steps
    coins = x[::3].astype(np.float64)
    lag = np.concatenate([np.zeros(2), coins])
    np.testing.assert_allclose(p[::3], 0.5 + 0.5 * lag[1:1 + coins.size] - 0.25 *
                               lag[:coins.size], atol=1e-7)
    big = make_add_task(400, 50, np.random.default_rng(2), targets="sample")
    probs = make_add_task(400, 50, np.random.default_rng(2)).y[..., 0]
    assert big.y.dtype == np.int64 and big.y.shape == (400, 50)
    assert abs(big.y.mean() - probs.mean()) < 0.01                 # E[y] = p
    for v in (0.25, 0.5, 0.75, 1.0):
        assert abs(big.y[probs == v].mean() - v) < 0.02


def test_add_task_baselines_on_data():
    """The three predictors' cross-entropy on a long stream equals the analytic numbers."""
    base = add_task_baselines()
    assert base["ce_mean"] == pytest.approx(0.6616, abs=1e-4)
    assert base["ce_first_lag"] == pytest.approx(0.5192, abs=1e-4)
    assert base["ce_optimal"] == pytest.approx(0.4545, abs=1e-4)
    s = make_add_task(2000, 50, np.random.default_rng(3), t1=3, t2=8)
    x = s.X[..., 0].ravel().astype(np.float64)[8:]
    p = s.y[..., 0].ravel().astype(np.float64)[8:]
    stream = s.X[..., 0].ravel().astype(np.float64)
    a = stream[5:-3]                                                # x_{t-3}

    def ce(q):
        return float(np.mean(-(p * np.log(q) + (1 - p) * np.log(1 - q))))
    assert ce(np.full_like(p, 0.625)) == pytest.approx(base["ce_mean"], abs=3e-3)
    assert ce(np.where(a == 1, 0.875, 0.375)) == pytest.approx(base["ce_first_lag"], abs=3e-3)
    assert ce(np.clip(p, 1e-12, 1 - 1e-12)) == pytest.approx(base["ce_optimal"], abs=3e-3)
    assert x.size == p.size
    np.testing.assert_allclose(binary_entropy(np.array([0.0, 0.5, 1.0])), [0, np.log(2), 0])


def test_add_task_dataset():
    ds = registry.load("add-task", steps=20, seed=4, n_train=30, n_test=10)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 3, 10)
    assert ds.task == "step_regression" and ds.loss == "sigmoid_bce" and ds.output_size == 1
    assert ds.meta["stream"] and ds.baselines == add_task_baselines()
    again = registry.load("add_task", steps=20, seed=4, n_train=30, n_test=10)
    np.testing.assert_array_equal(again.train.X, ds.train.X)
    assert not np.array_equal(ds.train.X, ds.test.X[:10].repeat(3, axis=0))
    lab = registry.load("add-task", steps=20, targets="sample")
    assert lab.task == "step_classification" and lab.output_size == 2
    for kw, match in (({"t1": 5, "t2": 5}, "t1 < t2"), ({"targets": "soft"}, "targets must be"),
                      ({"tau_task": 0}, "tau_task")):
        with pytest.raises(ValueError, match=match):
            registry.load("add-task", **kw)


def test_mimic_targets_are_the_teachers_outputs():
    """Running rnnlab's network with the teacher's weights over the whole stream gives the
    targets (identity: the logits; sigmoid: their probabilities)."""
    teacher = mimic_teacher(np.random.default_rng(5), inputs=3, hidden=7, outputs=2,
                            radius=0.8, gain=1.5)
    spec = RNNSpec(3, 7, 2, setup="many_to_many", loss="identity_mse")
    for output in ("identity", "sigmoid"):
        s = make_mimic(6, 5, np.random.default_rng(6), teacher, tau_task=2, output=output)
        X = s.X.reshape(1, 30, 3).astype(np.float64)
        out, _ = net.forward(teacher, X, spec)
        want = out.logits[0] if output == "identity" else 1 / (1 + np.exp(-out.logits[0]))
        np.testing.assert_allclose(s.y.reshape(30, 2), want, rtol=2e-6, atol=2e-6)
        assert np.all(s.X.reshape(15, 2, 3)[:, 0] == s.X.reshape(15, 2, 3)[:, 1])
    eig = np.abs(np.linalg.eigvals(teacher["l0.W_hh"]))
    np.testing.assert_allclose(eig, 0.8, rtol=1e-10)


def test_mimic_dataset_and_baselines():
    ds = registry.load("mimic", steps=25, seed=1, n_train=40, n_test=40)
    assert ds.task == "step_regression" and ds.loss == "identity_mse" and ds.input_size == 2
    b = ds.baselines
    assert 0.0 == b["mse_optimal"] < b["mse_memoryless"] < b["mse_mean"]
    Y = ds.test.y.reshape(-1, 2).astype(np.float64)
    assert b["mse_mean"] == pytest.approx(float(Y.var(axis=0).mean()), rel=1e-6)
    soft = registry.load("mimic", steps=25, seed=1, n_train=40, n_test=40, output="sigmoid")
    assert soft.loss == "sigmoid_bce"
    sb = soft.baselines
    assert sb["bce_optimal"] < sb["bce_memoryless"] < sb["bce_mean"]
    # the teacher is shared by the splits and fixed by the seed; the streams differ
    again = registry.load("mimic", steps=25, seed=1, n_train=40, n_test=40)
    np.testing.assert_array_equal(again.test.y, ds.test.y)
    assert not np.array_equal(ds.train.X[:40], ds.test.X)
    with pytest.raises(ValueError, match="radius must be in"):
        registry.load("mimic", radius=1.0)
    with pytest.raises(ValueError, match="output must be"):
        registry.load("mimic", output="softmax")
