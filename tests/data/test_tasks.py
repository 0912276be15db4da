"""Synthetic tasks: structure, determinism, and each analytic baseline checked numerically."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab import data
from rnnlab.data.tasks import (
    copy_baseline,
    make_adding,
    make_copy,
    make_parity,
    make_sine,
    make_xor,
    sine_baselines,
    xor_baselines,
    xor_position_error,
    xor_target_positions,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- XOR


def test_xor_stream_structure() -> None:
    s = make_xor(200, 31, rng())
    assert s.X.shape == (200, 31, 1) and s.y.shape == (200, 31) and s.y.dtype == np.int64
    bits = np.concatenate([s.X[:, :1, 0].astype(np.int64), s.y], axis=1)  # the stream s[0:T+1]
    np.testing.assert_array_equal(s.y[:, :-1], s.X[:, 1:, 0])
    triples = bits[:, : 30].reshape(200, 10, 3)
    np.testing.assert_array_equal(triples[..., 2], triples[..., 0] ^ triples[..., 1])
    assert set(np.unique(bits)) == {0, 1}
    assert abs(bits[:, ::3].mean() - 0.5) < 0.03


def test_xor_position_error_hand_made() -> None:
    targets = np.array([[1, 0, 0, 1, 1, 0]])  # target positions: b c a b c a
    np.testing.assert_array_equal(xor_target_positions(6), [1, 2, 0, 1, 2, 0])
    pred = np.array([[1, 1, 0, 0, 0, 0]])  # errors at t = 1 (c), 3 (b), 4 (c)
    np.testing.assert_allclose(xor_position_error(pred, targets), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(xor_position_error(pred[0], targets[0]), [0.0, 0.5, 1.0])
    short = xor_position_error(np.array([0]), np.array([1]))
    assert np.isnan(short[0]) and short[1] == 1.0 and np.isnan(short[2])
    with pytest.raises(ValueError, match=r"both be \(N, T\) or \(T,\)"):
        xor_position_error(pred, targets[:, :5])


def test_xor_optimal_predictor_matches_baseline() -> None:
    steps = 30
    s = make_xor(4000, steps, rng(1))
    x = s.X[..., 0].astype(np.int64)
    pos = xor_target_positions(steps)
    guesser = rng(2).integers(0, 2, size=s.y.shape)  # unpredictable bits: a coin
    pred = guesser.copy()
    t = np.flatnonzero(pos == 2)  # target a XOR b: both bits have been seen
    pred[:, t] = x[:, t - 1] ^ x[:, t]
    per_position = xor_position_error(pred, s.y)
    np.testing.assert_allclose(per_position, [0.5, 0.5, 0.0], atol=0.01)
    base = xor_baselines(steps)
    assert base["error_optimal"] == pytest.approx(1 / 3)
    assert np.mean(pred != s.y) == pytest.approx(base["error_optimal"], abs=0.01)
    assert base["ce_optimal"] == pytest.approx(2 / 3 * math.log(2))
    assert xor_baselines(31)["error_optimal"] == pytest.approx(0.5 * 21 / 31)


def test_xor_dataset() -> None:
    ds = data.load("xor", steps=12, seed=5, n_train=50, n_test=20)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50, 5, 20)
    assert ds.task == "step_classification" and ds.output_size == 2 and ds.train.mask is None
    assert ds.meta["position_error_optimal"] == (0.5, 0.5, 0.0)


# --------------------------------------------------------------------------- adding


def test_adding_structure() -> None:
    s = make_adding(500, 21, rng())
    assert s.X.shape == (500, 21, 2) and s.y.shape == (500, 1) and s.y.dtype == np.float32
    marker = s.X[..., 1]
    assert set(np.unique(marker)) == {0.0, 1.0}
    np.testing.assert_array_equal(marker[:, :10].sum(1), 1)
    np.testing.assert_array_equal(marker[:, 10:].sum(1), 1)
    np.testing.assert_allclose(s.y[:, 0], (s.X[..., 0] * marker).sum(1), rtol=1e-6)
    assert 0.0 <= s.X[..., 0].min() and s.X[..., 0].max() < 1.0


def test_adding_baseline_one_sixth() -> None:
    s = make_adding(200_000, 10, rng(3))
    mse = float(np.mean((s.y.astype(np.float64) - 1.0) ** 2))
    assert mse == pytest.approx(1 / 6, abs=0.003)
    ds = data.load("adding", steps=10, n_train=20, n_test=5)
    assert ds.baselines["mse_predict_1"] == pytest.approx(1 / 6)
    assert ds.loss == "identity_mse" and ds.task == "sequence_regression"
    with pytest.raises(ValueError, match="steps must be >= 2"):
        make_adding(3, 1, rng())


# --------------------------------------------------------------------------- copy memory


def test_copy_layout() -> None:
    inputs, targets = make_copy(300, 7, rng())
    assert inputs.shape == targets.shape == (300, 27)
    np.testing.assert_array_equal(targets[:, -10:], inputs[:, :10])
    assert inputs[:, :10].min() >= 1 and inputs[:, :10].max() <= 8
    assert np.all(inputs[:, 10:16] == 0) and np.all(inputs[:, 16] == 9)
    assert np.all(inputs[:, 17:] == 0)
    assert np.all(targets[:, :17] == 0)


@pytest.mark.parametrize("delay", [1, 10, 50])
def test_copy_baseline_equals_memoryless_ce_from_data(delay: int) -> None:
    _, targets = make_copy(40_000, delay, rng(delay))
    # the best memoryless predictor: each position's marginal target distribution
    ce = 0.0
    for t in range(targets.shape[1]):
        counts = np.bincount(targets[:, t], minlength=9)
        p = counts / counts.sum()
        ce -= float(np.mean(np.log(p[targets[:, t]])))
    ce /= targets.shape[1]
    assert ce == pytest.approx(copy_baseline(delay), abs=2e-3)
    assert copy_baseline(delay) == pytest.approx(10 * math.log(8) / (delay + 20))


def test_copy_dataset_dense_and_index() -> None:
    dense = data.load("copy", steps=5, n_train=30, n_test=10)
    assert dense.train.X.shape == (30, 25, 10) and dense.output_size == 9
    np.testing.assert_array_equal(dense.train.X.sum(-1), 1)
    index = data.load("copy", steps=5, n_train=30, n_test=10, input_kind="index")
    assert index.input_kind == "index" and index.train.X.shape == (30, 25)
    np.testing.assert_array_equal(dense.train.X.argmax(-1), index.train.X)
    assert dense.baselines["ce_memoryless"] == pytest.approx(10 * math.log(8) / 25)


# --------------------------------------------------------------------------- sine


def test_sine_structure_and_baselines() -> None:
    s = make_sine(20_000, 20, rng(4), 0.2, 0.9, amplitude=1.5, noise=0.1)
    assert s.X.shape == s.y.shape == (20_000, 20, 1)
    np.testing.assert_array_equal(s.X[:, 1:], s.y[:, :-1])
    b = sine_baselines(0.2, 0.9, 1.5, 0.1)
    x, y = s.X.astype(np.float64), s.y.astype(np.float64)
    assert float(np.mean(y**2)) == pytest.approx(b["mse_predict_0"], rel=0.01)
    assert float(np.mean((y - x) ** 2)) == pytest.approx(b["mse_persistence"], rel=0.01)
    assert b["mse_noise_floor"] == pytest.approx(0.01)
    clean = make_sine(3, 50, rng(5), 0.3, 0.3)
    w = 0.3  # a pure sinusoid obeys s[t+1] = 2 cos(w) s[t] - s[t-1]
    np.testing.assert_allclose(
        clean.y[:, 1:, 0], 2 * math.cos(w) * clean.X[:, 1:, 0] - clean.X[:, :-1, 0], atol=1e-5
    )
    ds = data.load("sine", steps=8, n_train=10, n_test=4, noise=0.05)
    assert ds.task == "step_regression" and ds.baselines["mse_noise_floor"] == pytest.approx(0.0025)
    with pytest.raises(ValueError, match="omega_min <= omega_max"):
        data.load("sine", omega_min=0.5, omega_max=0.1)


# --------------------------------------------------------------------------- parity


def test_parity() -> None:
    s = make_parity(5000, 9, rng(6))
    np.testing.assert_array_equal(s.y, s.X[..., 0].sum(1).astype(np.int64) % 2)
    assert abs(s.y.mean() - 0.5) < 0.03
    p = make_parity(10, 9, rng(6), per_step=True)
    np.testing.assert_array_equal(p.y, np.cumsum(p.X[..., 0], axis=1).astype(np.int64) % 2)
    ds = data.load("parity", steps=6, per_step=True, n_train=40, n_test=10)
    assert ds.task == "step_classification" and ds.train.y.shape == (40, 6)
    assert ds.baselines["ce_chance"] == pytest.approx(math.log(2))


# --------------------------------------------------------------------------- all tasks


@pytest.mark.parametrize("name", ["xor", "adding", "copy", "sine", "parity", "reber"])
def test_deterministic_and_global_rng_untouched(name: str) -> None:
    state = str(np.random.get_state(legacy=False))  # noqa: NPY002
    a = data.load(name, seed=11, n_train=30, n_test=10)
    b = data.load(name, seed=11, n_train=30, n_test=10)
    c = data.load(name, seed=12, n_train=30, n_test=10)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.splits[split].X, b.splits[split].X)
        np.testing.assert_array_equal(a.splits[split].y, b.splits[split].y)
    assert not np.array_equal(a.train.y, c.train.y) or not np.array_equal(a.train.X, c.train.X)
    assert not np.array_equal(a.train.X[:5], a.test.X[:5])  # independent split streams
    assert str(np.random.get_state(legacy=False)) == state  # noqa: NPY002
    assert a.baselines  # every task reports its baselines


@pytest.mark.parametrize("bad, match", [(dict(n_train=0), "n_train must be >= 1"),
                                        (dict(steps=0), "steps must be >= 1"),
                                        (dict(n_val=1.5), "n_val must be an int")])
def test_bad_sizes(bad: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        data.load("xor", **bad)
