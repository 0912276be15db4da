"""Keras-style callbacks that stop training, ReduceLROnPlateau (as a callback and as the
"plateau" schedule, resumed exactly), schedules that take their length from the run, sample
weights and optimizer state through fit, and honest progress rates."""

from __future__ import annotations

import io
import re
import sys
import time

import numpy as np
import pytest

from rnnlab import RNN, TrainConfig, fit
from rnnlab.train import steps as train_steps
from rnnlab.train.callbacks import (
    Callback,
    EarlyStopping,
    LambdaCallback,
    ReduceLROnPlateau,
    StopTraining,
)


def sign_task(seed: int, n: int, T: int = 6, D: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, D))
    return X, (X[:, :3, 0].sum(axis=1) > 0).astype(np.int64)


def model(seed: int = 1, dtype: str = "float32") -> RNN:
    return RNN(3, 8, output_size=2, seed=seed, dtype=dtype)


def cfg(**kw) -> TrainConfig:
    # a constant rate unless a test names a schedule: these tests read the rate callbacks set
    base = dict(epochs=10, batch_size=8, lr=1e-2, schedule="constant", progress="off")
    base.update(kw)
    return TrainConfig(**base)


DATA = sign_task(0, 40)
VAL = sign_task(1, 20)


# ----------------------------------------------------------------------------- stopping


class StopAfter(Callback):
    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[int] = []

    def on_epoch_end(self, epoch, logs):
        self.seen.append(epoch)
        assert logs["epoch"] == epoch and "train_loss" in logs
        return epoch >= self.n


def test_a_callback_returning_true_stops_training(tmp_path):
    cb = StopAfter(3)
    h = model().fit(DATA, cfg(checkpoint_dir=str(tmp_path)), callbacks=[cb])
    assert cb.seen == [1, 2, 3] and h.epoch == 3 and len(h.epochs) == 3
    assert h.status == "early_stopped"
    assert h.message == "stopped by StopAfter (after epoch 3)"
    # the checkpoint knows the run finished: resuming does not train again
    again = model()
    h2 = again.fit(DATA, cfg(checkpoint_dir=str(tmp_path)), resume=True)
    assert h2.status == "early_stopped" and h2.step_losses == []


def test_the_function_callback_can_stop_too():
    seen = []
    h = model().fit(DATA, cfg(), callback=lambda rec: seen.append(rec["epoch"]) or
                    rec["epoch"] == 2)
    assert seen == [1, 2] and h.epoch == 2 and h.status == "early_stopped"


def test_stop_training_raised_or_set_from_any_hook():
    class Raise(Callback):
        def on_train_batch_end(self, step, logs):
            assert set(logs) == {"loss", "lr", "epoch", "batch"}
            if step == 7:                           # in epoch 2 (5 batches per epoch)
                raise StopTraining("loss is good enough")

    h = model().fit(DATA, cfg(), callbacks=[Raise()])
    assert h.epoch == 2 and h.step == 10                    # the epoch in flight finishes
    assert h.message == "stopped by Raise: loss is good enough (after epoch 2)"

    class Flag(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 4:
                self.trainer.stop_training = True   # Keras's model.stop_training

    h = model().fit(DATA, cfg(), callbacks=[Flag()])
    assert h.epoch == 4 and h.status == "early_stopped"


def test_hooks_run_in_order_and_lambda_callback():
    calls = []
    cb = LambdaCallback(on_train_begin=lambda logs: calls.append(("begin", logs["epoch"])),
                        on_epoch_begin=lambda e, logs: calls.append(("epoch", e)),
                        on_epoch_end=lambda e, logs: calls.append(("end", e)),
                        on_train_end=lambda logs: calls.append(("done", logs["status"])))
    model().fit(DATA, cfg(epochs=2), callbacks=[cb])
    assert calls == [("begin", 0), ("epoch", 1), ("end", 1), ("epoch", 2), ("end", 2),
                     ("done", "completed")]
    with pytest.raises(TypeError, match=r"callbacks must be rnnlab.train.callbacks.Callback "
                                        r"objects; got function"):
        model().fit(DATA, cfg(), callbacks=[lambda e, logs: None])


def test_early_stopping_callback_restores_the_best_weights():
    m = model()
    es = EarlyStopping("val_loss", patience=2, min_delta=100.0, restore_best_weights=True)
    best = {}

    class Keep(Callback):                           # the parameters after epoch 1 (the best:
        def on_epoch_end(self, epoch, logs):        # no loss can fall by min_delta=100 later)
            if epoch == 1:
                best.update({k: v.copy() for k, v in self.trainer.params.items()})

    h = m.fit(DATA, cfg(), val=VAL, callbacks=[Keep(), es])
    assert h.epoch == 3 and es.stopped_epoch == 3 and es.tracker.best_epoch == 1
    assert "stopped by EarlyStopping: val_loss did not improve for 2 evaluation(s)" in h.message
    assert all(np.array_equal(m.params[k], best[k]) for k in best)
    with pytest.raises(ValueError, match=r"EarlyStopping monitors 'val_loss', which this run "
                                         r"does not compute; available: \['train_loss', "
                                         r"'train_accuracy'\]"):
        model().fit(DATA, cfg(), callbacks=[EarlyStopping("val_loss")])


# ----------------------------------------------------------------------------- learning rate


def test_reduce_lr_on_plateau_lowers_the_rate_after_patience():
    # min_delta=100: no epoch after the first improves, whatever the trajectory
    rl = ReduceLROnPlateau("val_loss", min_delta=100.0, factor=0.5, patience=2, min_lr=2.6e-3)
    h = model().fit(DATA, cfg(epochs=8), val=VAL, callbacks=[rl])
    lrs = [r["lr"] for r in h.epochs]
    assert lrs[:3] == [1e-2] * 3
    assert lrs[3:5] == pytest.approx([5e-3] * 2) and lrs[5:7] == pytest.approx([2.6e-3] * 2)
    assert lrs[7] == pytest.approx(2.6e-3)                   # min_lr bounds it
    assert [e for e, _ in rl.reductions] == [3, 5] and h.lr_scale == pytest.approx(0.26)
    with pytest.raises(ValueError, match=r"factor must be a finite number in \[1e-12, 1\)"):
        ReduceLROnPlateau(factor=1.5)


def test_plateau_schedule_runs_the_callback_and_resumes_exactly(tmp_path):
    kw = dict(epochs=8, schedule="plateau", batch_size=8,
              schedule_kwargs={"monitor": "val_loss", "min_delta": 100.0, "factor": 0.5,
                               "patience": 2})
    straight = model(1, "float64")
    h = straight.fit(DATA, cfg(**kw, checkpoint_dir=str(tmp_path / "a")), val=VAL)
    assert [r["lr"] for r in h.epochs][2:4] == pytest.approx([1e-2, 5e-3])
    first = model(1, "float64")
    first.fit(DATA, cfg(**{**kw, "epochs": 4}, checkpoint_dir=str(tmp_path / "b")), val=VAL)
    second = model(1, "float64")
    h2 = second.fit(DATA, cfg(**kw, checkpoint_dir=str(tmp_path / "b")), val=VAL, resume=True)
    assert [r["lr"] for r in h2.epochs] == [r["lr"] for r in h.epochs]
    for k in straight.params:
        assert straight.params[k].tobytes() == second.params[k].tobytes(), k


def test_cosine_without_total_steps_spans_the_run():
    h = model().fit(DATA, cfg(epochs=4, schedule="cosine"))          # 5 batches x 4 epochs
    lrs = [r["lr"] for r in h.epochs]                                 # lr of each epoch's last
    expected = [0.005 * (1 + np.cos(np.pi * (5 * e - 1) / 20)) for e in (1, 2, 3, 4)]
    assert lrs == pytest.approx(expected)
    assert lrs[-1] < 1e-4


@pytest.mark.parametrize("every, updates", [(1, 6), (4, 2), (6, 1)])
def test_cosine_without_total_steps_spans_an_online_rules_run(every, updates):
    """An online rule updates once per block of ``every`` steps (T = 6, a label at every step):
    the default length counts those updates, so the cosine ends at the end of the run, not
    after a fraction ``1 / updates`` of it."""
    X, y = DATA
    Y = np.repeat(y[:, None], X.shape[1], axis=1)                     # (N, T): every step
    net = RNN(3, 8, output_size=2, setup="many_to_many", seed=1, dtype="float64")
    c = cfg(epochs=3, schedule="cosine", algorithm="rtrl_online",
            algorithm_kwargs={"every": every})
    h = net.fit((X, Y), c)
    total = 3 * 5 * updates                                           # epochs x batches x blocks
    lrs = [r["lr"] for r in h.epochs]     # the lr of each epoch's last minibatch, read before it
    expected = [0.005 * (1 + np.cos(np.pi * (5 * e - 1) * updates / total)) for e in (1, 2, 3)]
    assert lrs == pytest.approx(expected)
    assert lrs[0] > 1e-3 and lrs[-1] < 1e-3


# ----------------------------------------------------------------------------- weights, state


def test_sample_weight_all_ones_is_no_weight_and_weights_steer_training():
    a, b = model(), model()
    ha = a.fit(DATA, cfg(epochs=2))
    hb = b.fit(DATA, cfg(epochs=2), sample_weight=np.ones(len(DATA[1])))
    for k in a.params:
        assert a.params[k].tobytes() == b.params[k].tobytes(), k     # same gradients, bit for bit
    assert hb.step_losses == pytest.approx(ha.step_losses, rel=1e-6)
    # all the weight on class 0: the network learns to say 0
    w = np.where(DATA[1] == 0, 1.0, 1e-4)
    c = model()
    c.fit(DATA, cfg(epochs=10), sample_weight=w)
    assert np.mean(c.predict(VAL[0]) == 0) > 0.9
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(40,\)"):
        model().fit(DATA, cfg(), sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"sample_weight is 0 for every training sequence"):
        model().fit(DATA, cfg(), sample_weight=np.zeros(40))
    with pytest.raises(ValueError, match=r"sample_weight needs algorithm='bptt'"):
        model().fit(DATA, cfg(algorithm="rtrl"), sample_weight=np.ones(40))


def test_sample_weight_trains_the_same_on_both_engines():
    w = np.random.default_rng(0).uniform(0, 2, 40)
    a, b = model(3, "float64"), model(3, "float64")
    a.fit(DATA, cfg(epochs=3), sample_weight=w)
    b.fit(DATA, cfg(epochs=3, engine="reference"), sample_weight=w)
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-9, atol=1e-12)


def test_opt_state_continues_the_optimizer():
    m = model()
    h1 = m.fit(DATA, cfg(epochs=1))
    assert h1.opt_state["step"] == 5 and set(h1.opt_state) == {"step", "m", "v"}
    cont = m.fit(DATA, cfg(epochs=1, seed=1), opt_state=h1.opt_state)
    assert cont.opt_state["step"] == 10
    fresh = model()
    fresh.fit(DATA, cfg(epochs=1))
    fresh.fit(DATA, cfg(epochs=1, seed=1))                   # Adam starts again: other numbers
    assert not np.array_equal(fresh.params["W_hy"], m.params["W_hy"])
    with pytest.raises(ValueError, match=r"opt_state must hold \['m', 'step', 'v'\]"):
        model().fit(DATA, cfg(), opt_state={"step": 0})


# ----------------------------------------------------------------------------- progress


def test_start_up_is_not_counted_in_the_first_epochs_rate(monkeypatch):
    real = train_steps.ENGINES["fast"]

    def slow(spec):                                   # an engine that takes 0.4 s to build
        time.sleep(0.4)
        return real(spec)

    monkeypatch.setitem(train_steps.ENGINES, "fast", slow)
    h = model().fit(DATA, cfg(epochs=1))
    assert h.startup_s >= 0.4 and h.epochs[0]["time"] < 0.4


def test_rates_are_never_absurd(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)          # the plain line shows every update
    buf = io.StringIO()
    model().fit(DATA, cfg(epochs=1, batch_size=4, progress="on"), stream=buf)
    rates = [float(r) for r in re.findall(r"seq/s ([0-9.]+)", buf.getvalue())]
    assert rates and max(rates) < 1e7, rates


def test_why_the_fast_path_is_off_is_reported():
    from rnnlab.fast import kernels

    h = model(dtype="float64").fit(DATA, cfg(epochs=1))
    if kernels.available():
        assert "the parameters are float64 (the kernels are float32)" in h.fast_path
        assert model().fit(DATA, cfg(epochs=1)).fast_path is None
    else:
        assert "pip install 'rnnlab[fast]'" in h.fast_path
    assert "engine 'reference' was asked for" in \
        model().fit(DATA, cfg(epochs=1, engine="reference")).fast_path
    assert fit(model().params, model().spec, DATA, cfg(epochs=1, algorithm="rtrl")).fast_path \
        .startswith("algorithm 'rtrl' runs on the fast path's buffers")
