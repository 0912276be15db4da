"""The training loop: config validation, learning, metrics, logs, progress, early stopping,
divergence, stateful training and the gradient-algorithm setting."""

from __future__ import annotations

import io
import json
import math
import sys

import numpy as np
import pytest

from rnnlab import RNN, DivergenceError, RNNSpec, TrainConfig, fit, init_params
from rnnlab import network as net
from rnnlab.fast.workspace import Workspace
from rnnlab.metrics import Accumulator, EarlyStopping, evaluate, metric_names
from rnnlab.train import loop as train_mod


def sign_task(seed: int, n: int, T: int = 6, D: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Label 1 when the first feature summed over the first 3 steps is positive."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, D))
    return X, (X[:, :3, 0].sum(axis=1) > 0).astype(np.int64)


def model(seed: int = 1, **kw) -> RNN:
    return RNN(3, 8, output_size=2, seed=seed, **kw)


def quiet(**kw) -> TrainConfig:
    return TrainConfig(progress="off", **kw)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw,err,match", [
    ({"epochs": 0}, ValueError, r"epochs must be an int >= 1; got 0"),
    ({"epochs": 2.5}, TypeError, r"epochs must be an int"),
    ({"batch_size": 0}, ValueError, r"batch_size must be an int >= 1; got 0"),
    ({"batch_size": -3}, ValueError, r"batch_size must be an int >= 1; got -3"),
    ({"lr": 0.0}, ValueError, r"lr must be a finite number > 0; got 0.0"),
    ({"lr": -1e-3}, ValueError, r"lr must be a finite number > 0"),
    ({"lr": math.nan}, ValueError, r"lr must be a finite number > 0; got nan"),
    ({"lr": "fast"}, TypeError, r"lr must be a number"),
    ({"optimizer": "adamm"}, ValueError, r"unknown optimizer 'adamm'; valid names are"),
    ({"optimizer_kwargs": {"bogus": 1}}, TypeError, r"optimizer_kwargs .* do not fit"),
    ({"optimizer_kwargs": {"lr": 1}}, ValueError, r"must not contain 'lr'"),
    ({"schedule": "cosin"}, ValueError, r"unknown schedule 'cosin'; valid names are"),
    ({"schedule": "step"}, TypeError, r"schedule_kwargs \{\} do not fit schedule 'step': "
     r"schedule 'step' takes \['step_size', 'gamma'\]"),
    ({"clip_norm": 0}, ValueError, r"clip_norm must be a finite number > 0"),
    ({"clip_norm": "always"}, ValueError, r"clip_norm must be a number > 0, None or 'auto'; "
     r"got 'always'"),
    ({"algorithm": "backprop"}, ValueError, r"unknown algorithm 'backprop'; expected one of"),
    ({"algorithm": "tbptt"}, ValueError, r"algorithm='tbptt' needs k1"),
    ({"k1": 5}, ValueError, r"k1/k2 are only used with algorithm='tbptt'"),
    ({"algorithm": "rtrl_online", "clip_norm": 1.0}, ValueError, r"clip_norm is not supported"),
    ({"on_nonfinite": "ignore"}, ValueError, r"unknown on_nonfinite 'ignore'"),
    ({"progress": "sometimes"}, ValueError, r"unknown progress 'sometimes'"),
    ({"monitor": "loss"}, ValueError, r"monitor must look like 'val_loss'"),
    ({"mode": "up"}, ValueError, r"unknown mode 'up'"),
    ({"patience": 0}, ValueError, r"patience must be an int >= 1; got 0"),
    ({"seed": -1}, ValueError, r"seed must be an int >= 0"),
    ({"eval_every": 0}, ValueError, r"eval_every must be an int >= 1"),
    ({"checkpoint_dir": 3}, TypeError, r"checkpoint_dir must be a path"),
])
def test_config_rejects_bad_values(kw, err, match):
    with pytest.raises(err, match=match):
        TrainConfig(**kw)


def test_clip_norm_auto_is_1_for_minibatch_algorithms_and_none_for_online_rules():
    """The default (benchmarks.defaults round 4) clips BPTT's gradient norm at 1.0; an online
    rule, which cannot clip, is not refused for it; "none" (a TOML file's None) is None."""
    assert TrainConfig().clip_norm == "auto" and TrainConfig().clip == 1.0
    assert TrainConfig(algorithm="tbptt", k1=3).clip == 1.0
    assert TrainConfig(algorithm="rtrl_online").clip is None
    assert TrainConfig(clip_norm="AUTO").clip_norm == "auto"
    assert TrainConfig(clip_norm="none").clip_norm is None and TrainConfig(clip_norm=None).clip \
        is None
    assert TrainConfig(clip_norm=3).clip == 3.0
    online = TrainConfig().replace(algorithm="uoro_online")      # "auto" follows the algorithm
    assert online.clip is None


def test_the_default_config_clips_as_clip_norm_1():
    """fit with the default config is fit with clip_norm=1.0, bit for bit, and differs from an
    unclipped run where the gradient norm exceeds 1."""
    X, _ = sign_task(0, 64)
    y = 20.0 * X[:, :3, :1].sum(axis=1)              # large regression targets: norms >> 1
    runs = {}
    for clip in ("auto", 1.0, None):
        m = RNN(3, 8, output_size=1, loss="identity_mse", seed=3)
        h = m.fit((X, y), quiet(epochs=2, lr=0.05, clip_norm=clip))
        runs[clip] = (m.params, h)
    assert max(r["train_grad_norm"] for r in runs[None][1].epochs) > 1.0
    for k in runs["auto"][0]:
        np.testing.assert_array_equal(runs["auto"][0][k], runs[1.0][0][k])
    assert any(not np.array_equal(runs["auto"][0][k], runs[None][0][k]) for k in runs[None][0])


def test_config_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig(epochs=3, optimizer="SGD", optimizer_kwargs={"momentum": 0.9}, lr=0.1,
                      schedule="cosine", schedule_kwargs={"total_steps": 100, "warmup_steps": 5},
                      algorithm="tbptt", k1=4, progress=False, checkpoint_dir="runs/x")
    d = cfg.to_dict()
    assert d["optimizer"] == "sgd" and d["progress"] == "off"
    assert json.loads(json.dumps(d)) == d                        # plain data
    assert TrainConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['epoch'\]; valid keys are "
                                         r"\[.*'batch_size'.*'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['learning_rate'\]"):
        cfg.replace(learning_rate=1.0)
    assert cfg.replace(epochs=7).epochs == 7
    with pytest.raises(ValueError, match="epochs must be"):
        cfg.replace(epochs=0)


# ----------------------------------------------------------------------------- learning


def test_learns_digits_well_above_chance(tmp_path):
    pytest.importorskip("sklearn")
    from rnnlab.data import registry

    ds = registry.load("digits", steps=8, seed=0)
    m = RNN.for_dataset(ds, 32, seed=0)
    h = m.fit(ds, quiet(epochs=6, batch_size=32, lr=1e-2, log_path=tmp_path / "log.jsonl"))
    assert h.status == "completed" and h.epoch == 6 and h.step == 6 * math.ceil(1294 / 32)
    assert h.test is not None and h.test["test_accuracy"] > 0.8          # chance: 0.1
    assert h["val_accuracy"][-1] > 0.8
    assert h["train_loss"][-1] < h["train_loss"][0]
    # the JSONL log: one parseable line per epoch, equal to the history's records
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == h.epochs
    for key in ("epoch", "step", "lr", "train_loss", "train_accuracy", "train_grad_norm",
                "train_skipped", "val_loss", "val_accuracy", "time", "seq_per_s"):
        assert key in h.epochs[0], key
    # the test metrics are those of metrics.evaluate
    ev = m.evaluate(ds)
    assert ev["accuracy"] == h.test["test_accuracy"]


def test_learns_a_synthetic_task_from_the_registry():
    from rnnlab.data import registry

    ds = registry.load("sine", steps=20, seed=0)
    m = RNN.for_dataset(ds, 16, seed=0)
    assert (m.spec.setup, m.spec.loss) == ("many_to_many", "identity_mse")
    h = m.fit(ds, quiet(epochs=8, batch_size=32, lr=2e-2))
    predict_zero = ds.baselines["mse_predict_0"]
    assert "val_mse" in h.epochs[-1] and h.test is not None
    assert h.test["test_mse"] < 0.5 * predict_zero, (h.test, ds.baselines)


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("spec", [
    RNNSpec(3, 5, 4),
    RNNSpec(3, 5, 4, setup="many_to_many"),
    RNNSpec(3, 5, 4, label_steps="all"),
    RNNSpec(3, 5, 2, setup="many_to_many", loss="sigmoid_bce"),
    RNNSpec(3, 5, 2, loss="identity_mse"),
    RNNSpec(3, 5, 2, setup="many_to_many", loss="relu_mse", reduction="sum"),
])
def test_metrics_match_the_loss_of_one_big_batch(spec):
    from conftest import make_inputs, make_targets, random_mask

    rng = np.random.default_rng(0)
    params = init_params(spec, rng, dtype=np.float64)
    X, Y = make_inputs(spec, rng, 23, 7), make_targets(spec, rng, 23, 7)
    mask = random_mask(rng, 23, 7)
    got = evaluate(params, spec, X, Y, mask, batch_size=5)
    out, _ = net.forward(params, X, spec, mask=mask)
    assert set(got) == set(metric_names(spec))
    assert got["loss"] == pytest.approx(net.loss_and_grad(spec, out, Y, mask=mask).value,
                                        rel=1e-12)
    # scored entries, by hand
    if spec.per_step_output:
        Yb = np.broadcast_to(Y[:, None], (23, 7) + Y.shape[1:]) if Y.ndim == 1 or (
            spec.setup == "many_to_one") else Y
        z, t = out.logits[mask], Yb[mask]
    else:
        z, t = out.logits, Y
    if spec.loss == "softmax_ce":
        assert got["accuracy"] == np.mean(z.argmax(-1) == t)
    if spec.loss == "sigmoid_bce":
        assert got["accuracy"] == np.mean((z > 0) == (t > 0.5))
    if "perplexity" in got:
        assert got["perplexity"] == pytest.approx(math.exp(got["loss"]), rel=1e-12)
    if "mse" in got:
        y_hat = z if spec.loss == "identity_mse" else np.maximum(z, 0)
        assert got["mse"] == pytest.approx(np.mean((y_hat - t) ** 2), rel=1e-12)


def test_accumulator_round_trips_its_state():
    spec = RNNSpec(3, 5, 4)
    acc = Accumulator(spec)
    acc.add(np.random.default_rng(0).standard_normal((6, 4)), np.arange(6) % 4)
    again = Accumulator.from_state(spec, json.loads(json.dumps(acc.state_dict())))
    assert again.result() == acc.result()


# ----------------------------------------------------------------------------- early stopping


def test_early_stopping_counts_evaluations_without_improvement():
    es = EarlyStopping("val_loss", "auto", patience=2, min_delta=0.01)
    seq = [1.0, 0.8, 0.795, 0.9, 0.5]      # 0.795 is within min_delta: no improvement
    stops = []
    for epoch, v in enumerate(seq, 1):
        es.update(v, epoch)
        stops.append(es.should_stop)
    assert stops == [False, False, False, True, False]
    assert (es.best, es.best_epoch) == (0.5, 5)
    acc = EarlyStopping("val_accuracy", patience=1)
    assert acc.mode == "max"
    acc.update(0.5, 1)
    acc.update(math.nan, 2)                 # NaN never improves
    assert acc.should_stop and acc.best == 0.5


@pytest.mark.parametrize("monitor,values,stop_epoch,best_epoch", [
    ("val_loss", [1.0, 0.7, 0.8, 0.75, 0.9, 0.1], 5, 2),
    ("val_accuracy", [0.5, 0.6, 0.6, 0.7, 0.69, 0.65, 0.7, 0.9], 7, 4),
])
def test_fit_stops_at_the_right_epoch(monkeypatch, tmp_path, monitor, values, stop_epoch,
                                      best_epoch):
    seq = iter(values)
    metric = monitor.split("_", 1)[1]

    def fake_evaluate(self, d):
        return {"loss": 0.0, "accuracy": 0.0, metric: next(seq)}

    monkeypatch.setattr(train_mod._Loop, "_evaluate", fake_evaluate)
    X, y = sign_task(0, 40)
    m = model()
    h = m.fit((X, y), quiet(epochs=20, batch_size=8, monitor=monitor, patience=3,
                            checkpoint_dir=tmp_path), val=(X[:8], y[:8]))
    assert h.status == "early_stopped" and h.stopped_early
    assert len(h.epochs) == stop_epoch and h.epoch == stop_epoch
    assert h.best_epoch == best_epoch and h.best_value == values[best_epoch - 1]
    assert "early stopping after epoch" in h.message
    from rnnlab.checkpoint import load

    assert load(tmp_path / "best.npz").epoch == best_epoch
    assert load(tmp_path / "last.npz").epoch == stop_epoch


def test_monitor_that_is_not_computed_is_an_error():
    X, y = sign_task(0, 20)
    with pytest.raises(ValueError, match=r"monitor 'val_loss' is not computed for this run "
                                         r"\(there is no validation split\); available: "
                                         r"\['train_loss', 'train_accuracy'\]"):
        model().fit((X, y), quiet(patience=2))
    with pytest.raises(ValueError, match=r"monitor 'val_mse' is not computed"):
        model().fit((X, y), quiet(patience=2, monitor="val_mse"), val=(X, y))


# ----------------------------------------------------------------------------- progress bar


def test_progress_writes_one_line_per_epoch_when_not_a_terminal(capsys):
    X, y = sign_task(0, 20)
    model().fit((X, y), TrainConfig(epochs=2, batch_size=8), val=(X, y))   # progress="auto"
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and "\r" not in captured.err       # no bar, no batch updates
    assert [ln.split("  ")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("train_loss" in ln and "val_loss" in ln and "seq/s" in ln for ln in lines)
    model().fit((X, y), TrainConfig(epochs=2, batch_size=8, progress="off"))
    assert capsys.readouterr() == ("", "")


def test_progress_on_writes_loss_accuracy_and_speed():
    X, y = sign_task(0, 20)
    buf = io.StringIO()
    model().fit((X, y), TrainConfig(epochs=2, batch_size=8, progress="on"), stream=buf)
    text = buf.getvalue()
    assert "epoch 2/2" in text and "train_loss" in text and "train_accuracy" in text
    assert "seq/s" in text or "seq_per_s" in text


def test_progress_falls_back_to_plain_text_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)          # import tqdm -> ImportError
    X, y = sign_task(0, 20)
    buf = io.StringIO()
    model().fit((X, y), TrainConfig(epochs=1, batch_size=8, progress=True), stream=buf)
    assert "\repoch 1/1 3/3 loss" in buf.getvalue() and "seq/s" in buf.getvalue()


# ----------------------------------------------------------------------------- divergence


def poisoned(monkeypatch, bad_steps: set[int], kind: str) -> list[int]:
    """Make the trainer's gradient (a Workspace's) a NaN loss or gradient at the given (1-based)
    calls."""
    real = Workspace.value_and_grad
    calls: list[int] = []

    def fake(self, params, X, Y, **kw):
        loss, grads = real(self, params, X, Y, **kw)
        calls.append(1)
        if len(calls) in bad_steps:
            if kind == "loss":
                loss = math.nan
            else:
                grads["l0.W_hh"][0, 0] = np.inf
        return loss, grads

    monkeypatch.setattr(Workspace, "value_and_grad", fake)
    return calls


@pytest.mark.parametrize("kind,what", [("loss", r"loss \(nan\)"),
                                       ("grad", r"gradient \(global norm inf\)")])
def test_divergence_stops_naming_step_and_last_checkpoint(monkeypatch, tmp_path, kind, what):
    X, y = sign_task(0, 40)                           # 5 batches of 8 per epoch
    poisoned(monkeypatch, {7}, kind)                  # epoch 2, batch 2
    m = model()
    before = {}

    def remember(rec):
        before.update({k: v.copy() for k, v in m.params.items()})

    with pytest.raises(DivergenceError, match=rf"non-finite {what} at step 7 \(epoch 2, batch 2 "
                                              r"of 5\); the update was not applied; last good "
                                              r"checkpoint: .*last.npz \(epoch 1, step 5\)") as ei:
        m.fit((X, y), quiet(epochs=3, batch_size=8, checkpoint_dir=tmp_path, shuffle=False),
              callback=remember)
    err = ei.value
    assert err.step == 7 and err.epoch == 2 and err.checkpoint == str(tmp_path / "last.npz")
    assert err.history.status == "diverged" and err.history.step == 6
    assert all(np.isfinite(v).all() for v in m.params.values())
    # step 6 was applied, step 7 was not: params differ from the end of epoch 1 only by step 6
    assert any(not np.array_equal(before[k], m.params[k]) for k in before)


def test_divergence_without_checkpoint_dir_says_so(monkeypatch):
    X, y = sign_task(0, 16)
    poisoned(monkeypatch, {1}, "loss")
    with pytest.raises(DivergenceError, match=r"at step 1 .*there is no checkpoint"):
        model().fit((X, y), quiet(epochs=1, batch_size=8))


def test_a_huge_learning_rate_is_caught_not_applied():
    X, y = sign_task(0, 32)
    m = model()
    with pytest.raises(DivergenceError, match=r"non-finite .* at step \d+"):
        m.fit((X, y), quiet(epochs=3, batch_size=8, optimizer="sgd", lr=1e38))
    assert all(np.isfinite(v).all() for v in m.params.values())


def test_skip_counts_bad_batches_and_keeps_going(monkeypatch):
    X, y = sign_task(0, 40)
    poisoned(monkeypatch, {2, 3, 9}, "grad")
    m = model()
    h = m.fit((X, y), quiet(epochs=2, batch_size=8, on_nonfinite="skip"))
    assert h.status == "completed" and h.skipped == 3
    assert h["train_skipped"] == [2, 1]
    assert len(h.step_losses) == 10 and all(np.isfinite(h.step_losses))
    assert all(np.isfinite(v).all() for v in m.params.values())


# ----------------------------------------------------------------------------- bad input


def test_bad_data_and_paths_give_clear_errors(tmp_path):
    X, y = sign_task(0, 20)
    m = model()
    with pytest.raises(ValueError, match=r"train: X and y must have the same number of "
                                         r"sequences .* got X \(20, 6, 3\) and y \(19,\)"):
        m.fit((X, y[:-1]), quiet())
    with pytest.raises(ValueError, match=r"val: X and y must have the same number"):
        m.fit((X, y), quiet(), val=(X[:5], y[:4]))
    with pytest.raises(ValueError, match=r"the train split does not fit the model .*"
                                         r"X must be \(B, T, 3\); got shape \(1, 6, 4\)"):
        m.fit((np.zeros((20, 6, 4)), y), quiet())
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 2\)"):
        m.fit((X, y + 1), quiet())
    with pytest.raises(TypeError, match=r"data must be|train must be a Dataset"):
        m.fit(X, quiet())
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"checkpoint_dir .* is not a directory"):
        m.fit((X, y), quiet(checkpoint_dir=afile))
    with pytest.raises(OSError, match=r"cannot create checkpoint_dir"):
        m.fit((X, y), quiet(checkpoint_dir=afile / "sub"))
    with pytest.raises(IsADirectoryError, match=r"log_path .* is a directory"):
        m.fit((X, y), quiet(log_path=tmp_path))
    with pytest.raises(ValueError, match=r"resume=True needs checkpoint_dir"):
        m.fit((X, y), quiet(), resume=True)
    with pytest.raises(TypeError, match=r"config must be a TrainConfig"):
        fit(m.params, m.spec, (X, y), {"epochs": 1})


def test_stateful_rejects_bidirectional_and_short_data():
    X, y = sign_task(0, 20)
    with pytest.raises(ValueError, match="cannot be used with a bidirectional network"):
        model(bidirectional=True).fit((X, y), quiet(stateful=True, batch_size=4))
    with pytest.raises(ValueError, match=r"batch_size=32 streams .* only 20 sequences"):
        model().fit((X, y), quiet(stateful=True, batch_size=32))


# ----------------------------------------------------------------------------- stateful


def test_stateful_training_carries_states_and_resets_each_epoch(monkeypatch):
    real = Workspace.value_and_grad
    seen: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []

    def spy(self, params, X, Y, **kw):
        loss, grads = real(self, params, X, Y, **kw)
        seen.append((X, kw["h0"], self.h_n()))
        return loss, grads

    monkeypatch.setattr(Workspace, "value_and_grad", spy)
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 5, size=12 * 6 + 1)
    X, y = stream[:-1].reshape(12, 6), stream[1:].reshape(12, 6)      # consecutive windows
    m = RNN(5, 4, output_size=5, setup="many_to_many", input_kind="index", seed=0)
    h = m.fit((X, y), quiet(epochs=2, batch_size=3, stateful=True), val=(X, y))
    assert len(seen) == 8                               # L = 12 // 3 = 4 chunks per epoch
    for k, (Xb, h0, _) in enumerate(seen):
        chunk = k % 4
        assert np.array_equal(Xb, X[np.arange(3) * 4 + chunk])   # row b continues row b
        if chunk == 0:
            assert h0 is None                            # reset at epoch start
        else:
            # the previous chunk's final states
            np.testing.assert_array_equal(h0, seen[k - 1][2])
    assert "val_perplexity" in h.epochs[-1]


# ----------------------------------------------------------------------------- algorithms


@pytest.mark.parametrize("algorithm,module,kw", [
    ("tbptt", "rnnlab.tbptt", {"k1": 3, "k2": 6}),
    ("rtrl", "rnnlab.rtrl", {}),
    ("rtrl_online", "rnnlab.rtrl", {}),
])
def test_other_gradient_algorithms_train(algorithm, module, kw):
    pytest.importorskip(module)
    X, y = sign_task(0, 32)
    ref = model(dtype="float64")
    ref.fit((X, y), quiet(epochs=2, batch_size=8))
    m = model(dtype="float64")
    h = m.fit((X, y), quiet(epochs=2, batch_size=8, algorithm=algorithm, **kw))
    assert h.status == "completed" and all(np.isfinite(h.step_losses))
    if algorithm != "rtrl_online":      # k2 >= T and RTRL give the exact BPTT gradient
        for k in ref.params:
            np.testing.assert_allclose(m.params[k], ref.params[k], rtol=1e-9, atol=1e-12)
