"""Training health (rnnlab.train.health) and restoring the best weights
(TrainConfig.restore_best)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from rnnlab import RNN, TrainConfig
from rnnlab.train import loop as train_mod
from rnnlab.train.health import Health, HealthWarning


def sign_task(seed: int, n: int, T: int = 6, D: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, D))
    return X, (X[:, :3, 0].sum(axis=1) > 0).astype(np.int64)


def quiet(**kw) -> TrainConfig:
    return TrainConfig(progress="off", **kw)


# ----------------------------------------------------------------------------- best weights


@pytest.mark.parametrize("restore", [True, False])
def test_the_run_ends_with_the_best_epochs_weights(monkeypatch, restore):
    values = iter([3.0, 2.0, 1.0, 2.0, 3.0])                    # best at epoch 3
    seen: dict[int, dict[str, np.ndarray]] = {}
    real = train_mod._Loop._evaluate

    def fake_evaluate(self, d):
        out = real(self, d)
        if d is self.val:
            out["loss"] = next(values)
        return out

    monkeypatch.setattr(train_mod._Loop, "_evaluate", fake_evaluate)
    X, y = sign_task(0, 40)
    m = RNN(3, 8, output_size=2, seed=1)

    def keep(rec):
        seen[rec["epoch"]] = {k: v.copy() for k, v in m.params.items()}

    h = m.fit((X, y), quiet(epochs=5, batch_size=8, restore_best=restore), val=(X[:8], y[:8]),
              test=(X[8:], y[8:]), callback=keep)
    want = 3 if restore else 5
    assert h.best_epoch == 3 and h.weights == ("best" if restore else "last")
    assert h.weights_epoch == want
    for k, v in seen[want].items():
        np.testing.assert_array_equal(m.params[k], v, err_msg=k)
    # the test metrics are those of the weights the run ends with
    assert h.test["test_loss"] == pytest.approx(m.evaluate(X[8:], y[8:])["loss"], rel=1e-6)


def test_restoring_after_a_resume_reads_best_npz(monkeypatch, tmp_path):
    """A run stopped after epoch 3 (best at 2) and resumed to 5 ends with epoch 2's weights."""
    X, y = sign_task(0, 40)
    cfg = quiet(epochs=3, batch_size=8, checkpoint_dir=str(tmp_path), restore_best=False)
    values = iter([2.0, 1.0, 2.0, 3.0, 4.0])
    real = train_mod._Loop._evaluate

    def fake_evaluate(self, d):
        out = real(self, d)
        if d is self.val:
            out["loss"] = next(values)
        return out

    monkeypatch.setattr(train_mod._Loop, "_evaluate", fake_evaluate)
    m = RNN(3, 8, output_size=2, seed=1)
    seen = {}
    m.fit((X, y), cfg, val=(X[:8], y[:8]),
          callback=lambda r: seen.__setitem__(r["epoch"], {k: v.copy()
                                                           for k, v in m.params.items()}))
    h = m.fit((X, y), cfg.replace(epochs=5, restore_best=True), val=(X[:8], y[:8]), resume=True)
    assert h.best_epoch == 2 and h.weights == "best" and h.weights_epoch == 2
    for k, v in seen[2].items():
        np.testing.assert_array_equal(m.params[k], v, err_msg=k)


def test_without_a_validation_split_the_last_weights_stay():
    X, y = sign_task(0, 40)
    m = RNN(3, 8, output_size=2, seed=1)
    h = m.fit((X, y), quiet(epochs=2, batch_size=8))
    assert h.weights == "last" and h.weights_epoch == 2 and h.best_epoch is None


# ----------------------------------------------------------------------------- health


def test_a_loss_spike_is_reported_once_and_recorded():
    hl = Health(chance=None)
    with pytest.warns(HealthWarning, match=r"loss spike at step 21 \(epoch 1\): 500, 1000x"):
        for s in range(1, 21):
            hl.step(0.5, 1, s)
        hl.step(500.0, 1, 21)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hl.step(600.0, 1, 22)                       # the same epoch: no second warning
    assert hl.end_epoch(0.5, 1, 22) == ["loss_spike"]
    assert [e["kind"] for e in hl.events] == ["loss_spike"] and hl.events[0]["step"] == 21
    for s in range(23, 40):
        hl.step(0.5, 2, s)
    assert hl.end_epoch(0.5, 2, 40) == []


def test_no_spike_below_the_factor():
    hl = Health(chance=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in range(1, 30):
            hl.step(1.0 + 0.5 * (s % 3), 1, s)
        hl.step(90.0, 1, 31)                        # 90x the median 1.5: under 100x
    assert hl.events == []


def test_stuck_at_chance_after_three_epochs():
    hl = Health(chance=math.log(10))
    kinds = []
    with pytest.warns(HealthWarning, match=r"stayed at the chance level ln C = 2.303 for 3"):
        for e in range(1, 5):
            kinds.append(hl.end_epoch(2.30, e, 10 * e))
    assert kinds == [[], [], ["stuck_at_chance"], ["stuck_at_chance"]]
    assert len(hl.events) == 1
    assert hl.end_epoch(1.2, 5, 50) == []                       # learning again


@pytest.mark.parametrize("first,kind", [(1e-9, "vanishing_gradient"), (1e9, "exploding_gradient")])
def test_gradient_through_time(first, kind):
    hl = Health(chance=None)
    norms = np.geomspace(first, 1.0, 12)
    with pytest.warns(HealthWarning, match=kind.split("_")[0].replace("ing", "")):
        hl.gradients(norms, 1, 5)
    assert hl.end_epoch(None, 1, 5) == [kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hl.gradients(np.ones(12), 2, 9)                 # healthy: nothing
    assert hl.end_epoch(None, 2, 9) == []


def test_fit_records_a_stalled_run_and_its_vanishing_gradient():
    """A network with zero recurrent and input weights learns nothing from X: its loss stays at
    ln 2 and the gradient reaching early steps is exactly zero (a ratio of 0)."""
    X, y = sign_task(0, 64, T=12)
    y = np.arange(64) % 2                                 # labels unrelated to X
    m = RNN(3, 8, output_size=2, seed=1)
    for k in ("l0.W_hh", "l0.W_xh"):
        m.params[k][...] = 0.0
    with pytest.warns(HealthWarning) as rec:
        h = m.fit((X, y), quiet(epochs=4, batch_size=64, lr=1e-9), val=(X, y))
    kinds = {e["kind"] for e in h.health}
    assert {"stuck_at_chance", "vanishing_gradient"} <= kinds, h.health
    assert any("stuck_at_chance" in r["health"] for r in h.epochs)
    assert len(rec) >= 2


def test_health_off_records_nothing():
    X, y = sign_task(0, 32)
    m = RNN(3, 8, output_size=2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = m.fit((X, y), quiet(epochs=2, batch_size=32, lr=1e-9, health=False))
    assert h.health == [] and all("health" not in r for r in h.epochs)
