"""The training step on the fast path (issue 18): one optimizer update over flat parameters,
state and gradients (:class:`rnnlab.train.optim.FlatUpdate`) gives the per-parameter update's
numbers bit for bit; fit's fast step (flat gradient clipped in place, flat update, validation on
the workspace) follows the per-parameter step's trajectory bit for bit; truncated BPTT through
fit on the fast engine follows the reference engine; a run whose batches are cut over threads
resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNN, RNNSpec, TrainConfig, fit, init_params
from rnnlab.train import loop as train_loop
from rnnlab.train import optim

OPTIMIZERS = [
    ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("adam", dict(amsgrad=True, weight_decay=1e-3)),
    ("adam", {}),
    ("adamw", {}),
    ("adagrad", dict(lr_decay=1e-2)),
    ("rmsprop", dict(centered=True, momentum=0.5, weight_decay=1e-3)),
    ("rmsprop", {}),
]


def _tree(rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
    return {"W_xh": rng.standard_normal((3, 5)).astype(dtype),
            "W_hh": rng.standard_normal((5, 5)).astype(dtype),
            "b_h": rng.standard_normal(5).astype(dtype),
            "W_hy": rng.standard_normal((5, 2)).astype(dtype)}


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in
                                                       enumerate(OPTIMIZERS)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_flat_update_is_the_per_parameter_update_bit_for_bit(name: str, kw: dict,
                                                               dtype: type) -> None:
    rng = np.random.default_rng(0)
    opt = optim.make(name, lr=1e-2, **kw)
    ref = _tree(rng, dtype)
    ref_state = opt.init(ref)
    params = {k: v.copy() for k, v in ref.items()}
    state = opt.init(params)
    order = ["W_hh", "b_h", "W_xh", "W_hy"]                 # not the parameters' key order
    flat = optim.FlatUpdate(opt, order)
    for step in range(6):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in ref.items()}
        lr = 1e-2 / (1 + step)
        opt.update_(ref, grads, ref_state, lr=lr)
        assert flat.step(params, state, np.concatenate([grads[k].ravel() for k in order]), lr)
        assert state["step"] == ref_state["step"] == step + 1
        for k in ref:
            assert params[k].tobytes() == ref[k].tobytes(), (step, k)
            for slot in opt.slots():
                assert state[slot][k].tobytes() == ref_state[slot][k].tobytes(), (slot, k)
    # an update that would make a parameter non-finite is not applied: nothing changes
    before = {k: v.copy() for k, v in params.items()}
    slots = {s: {k: v.copy() for k, v in state[s].items()} for s in opt.slots()}
    bad = np.concatenate([np.full(params[k].size, np.inf, dtype) for k in order])
    with np.errstate(invalid="ignore", over="ignore"):
        assert not flat.step(params, state, bad, 1e-2)
    assert state["step"] == 6
    for k in params:
        assert params[k].tobytes() == before[k].tobytes()
        for s in opt.slots():
            assert state[s][k].tobytes() == slots[s][k].tobytes()
    # arrays replaced from outside (a checkpoint, the best weights) are bound again
    params["W_hh"] = params["W_hh"].copy()
    grads = {k: np.ones_like(v) for k, v in ref.items()}
    opt.update_(ref, grads, ref_state, lr=1e-3)
    assert flat.step(params, state, np.concatenate([grads[k].ravel() for k in order]), 1e-3)
    for k in ref:
        assert params[k].tobytes() == ref[k].tobytes(), k
    with pytest.raises(ValueError, match="the flat layout has"):
        optim.FlatUpdate(opt, order[:3]).bind(params, state)


class _NotFast:
    """Stands in for FastStep in the trainer's isinstance checks: the per-parameter step and
    the reference forward pass run on the same engine."""


@pytest.mark.parametrize("name,kw", [("adam", {}), ("adamw", {}),
                                     ("rmsprop", dict(momentum=0.5)), ("sgd", dict(momentum=0.9))])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_fast_step_follows_the_per_parameter_step_bit_for_bit(
        monkeypatch: pytest.MonkeyPatch, name: str, kw: dict, dtype: str) -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 6, 3))
    y = rng.integers(0, 3, (40, 6))
    Xv = rng.standard_normal((12, 6, 3))
    yv = rng.integers(0, 3, (12, 6))
    spec = RNNSpec(3, 8, 3, setup="many_to_many", num_layers=2)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=2e-2, optimizer=name, optimizer_kwargs=kw,
                      clip_norm=0.5, progress="off", health=False)
    out = {}
    for path in ("fast", "per-parameter"):
        with monkeypatch.context() as m:
            if path != "fast":
                m.setattr(train_loop, "FastStep", _NotFast)
            params = init_params(spec, np.random.default_rng(1), dtype=np.dtype(dtype))
            h = fit(params, spec, (X, y), cfg, val=(Xv, yv))
        out[path] = (params, h)
    (pf, hf), (pr, hr) = out["fast"], out["per-parameter"]
    assert hf.step_losses == hr.step_losses
    for k in pf:
        assert pf[k].tobytes() == pr[k].tobytes(), k
    tol = 1e-12 if dtype == "float64" else 1e-5
    for a, b in zip(hf.epochs, hr.epochs, strict=True):   # validation on the workspace
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=tol)
        assert a["val_accuracy"] == b["val_accuracy"]


@pytest.mark.parametrize("setup", ["many_to_many", "many_to_one"])
def test_fit_truncated_bptt_on_the_fast_engine_follows_the_reference(setup: str) -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((32, 9, 3))
    y = rng.integers(0, 3, (32, 9) if setup == "many_to_many" else 32)
    spec = RNNSpec(3, 8, 3, setup=setup)
    losses = {}
    for engine in ("reference", "fast"):
        params = init_params(spec, np.random.default_rng(1), dtype=np.float64)
        cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-2, algorithm="tbptt", k1=3, k2=4,
                          engine=engine, clip_norm=1.0, progress="off", health=False)
        h = fit(params, spec, (X, y), cfg)
        losses[engine] = np.array(h.step_losses)
    np.testing.assert_allclose(losses["fast"], losses["reference"], rtol=1e-10)


def test_a_run_cut_over_threads_resumes_bit_for_bit(tmp_path) -> None:
    """Batches large enough to be cut into pieces over two threads (B=32, H=128): the pieces
    are fixed when the run starts, so the straight run and the resumed one agree bit for bit
    whichever way the tuner runs them."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((96, 5, 4)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    # a constant rate: the 2-epoch run is extended to 4 (a decay over the run would stretch)
    kw = dict(batch_size=32, lr=1e-3, schedule="constant", clip_norm=1.0, progress="off",
              health=False)
    straight = RNN(4, 128, output_size=3, seed=0)
    straight.fit((X, y), TrainConfig(epochs=4, checkpoint_dir=str(tmp_path / "a"), **kw))
    first = RNN(4, 128, output_size=3, seed=0)
    first.fit((X, y), TrainConfig(epochs=2, checkpoint_dir=str(tmp_path / "b"), **kw))
    second = RNN(4, 128, output_size=3, seed=0)
    second.fit((X, y), TrainConfig(epochs=4, checkpoint_dir=str(tmp_path / "b"), **kw),
               resume=True)
    for k in straight.params:
        assert straight.params[k].tobytes() == second.params[k].tobytes(), k
