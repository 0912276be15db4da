"""Keras 3 as a peer (issue 19): rnnlab's weights loaded into ``SimpleRNN`` + ``Dense`` give the
same logits, and one optimizer step from the same weights on the same batch gives the same
weights, so the "same weights and config" rows of docs/results.md compare like with like.

Needs the ``bench`` extra (Keras 3 on JAX); skipped without it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
pytest.importorskip("jax")
keras = pytest.importorskip("keras")

from rnnlab import RNNSpec, init_params  # noqa: E402
from rnnlab import network as net  # noqa: E402
from rnnlab.optim import make  # noqa: E402

if keras.backend.backend() != "jax":   # pragma: no cover - another test imported Keras first
    pytest.skip(f"Keras runs on {keras.backend.backend()!r} here; this test wants JAX",
                allow_module_level=True)

B, T, D, H, C = 5, 7, 3, 6, 4


def keras_twin(spec: RNNSpec, params: dict[str, np.ndarray]):
    rnn = keras.layers.SimpleRNN(spec.hidden_size, activation=spec.nonlinearity)
    head = keras.layers.Dense(spec.output_size)                      # logits
    model = keras.Sequential([keras.Input((T, spec.input_size)), rnn, head])
    rnn.set_weights([params["l0.W_xh"], params["l0.W_hh"], params["l0.b_h"]])  # eq. (5) layout
    head.set_weights([params["W_hy"], params["b_y"]])
    return model, rnn, head


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_keras_with_rnnlab_weights_gives_the_same_logits(act: str) -> None:
    spec = RNNSpec(D, H, C, nonlinearity=act)
    params = init_params(spec, np.random.default_rng(0))
    X = np.random.default_rng(1).standard_normal((B, T, D)).astype(np.float32)
    model, _, _ = keras_twin(spec, params)
    out, _ = net.forward(params, X, spec)
    z = np.asarray(model.predict(X, verbose=0))
    np.testing.assert_allclose(z, out.logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_one_step_from_the_same_weights_lands_on_the_same_weights(opt: str) -> None:
    spec = RNNSpec(D, H, C)
    params = init_params(spec, np.random.default_rng(2))
    rng = np.random.default_rng(3)
    X = rng.standard_normal((B, T, D)).astype(np.float32)
    y = rng.integers(0, C, B)
    model, rnn, head = keras_twin(spec, params)
    lr = 0.05
    k_opt = (keras.optimizers.SGD(learning_rate=lr) if opt == "sgd" else
             keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8))
    model.compile(optimizer=k_opt,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    k_loss = float(model.train_on_batch(X, y))

    out, cache = net.forward(params, X, spec)
    res = net.loss_and_grad(spec, out, y)
    g = net.backward(params, res.dz, cache)
    o = make(opt, lr=lr, **({"eps": 1e-8} if opt == "adam" else {}))
    state = o.init(params)
    o.update_(params, g.params, state)

    assert k_loss == pytest.approx(res.value, rel=1e-5)
    mine = [params["l0.W_xh"], params["l0.W_hh"], params["l0.b_h"], params["W_hy"], params["b_y"]]
    theirs = [*rnn.get_weights(), *head.get_weights()]
    # Adam's first step is lr g / (|g| + eps), about lr sign(g): where a gradient entry is near 0
    # it magnifies float32 rounding, so its tolerance is a fraction of the step
    atol = 1e-5 if opt == "sgd" else 2e-3 * lr
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(np.asarray(b), a, rtol=1e-4, atol=atol)


# ----------------------------------------------------------------------------- the results
# harness's Keras rows (benchmarks.results_run.keras_model): every set-up of the suite

rr = pytest.importorskip("benchmarks.results_run")

SUITE_SETUPS = {
    # name: (RNNSpec fields, masked)
    "many-to-one softmax (MNIST-1D, Fashion rows)": (dict(setup="many_to_one"), False),
    "many-to-one MSE (adding)": (dict(setup="many_to_one", loss="identity_mse",
                                      output_size=1, nonlinearity="relu"), False),
    "many-to-many softmax (XOR)": (dict(setup="many_to_many"), False),
    "many-to-many softmax, padded (Reber)": (dict(setup="many_to_many"), True),
    "many-to-many softmax, ids (character model)": (dict(setup="many_to_many",
                                                         input_kind="index"), False),
    "many-to-many sigmoid BCE": (dict(setup="many_to_many", loss="sigmoid_bce"), False),
}


def _suite_problem(name: str, seed: int = 0):
    fields, masked = SUITE_SETUPS[name]
    fields = {"input_size": D, "hidden_size": H, "output_size": C, **fields}
    spec = RNNSpec(**fields)
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng, scheme="pytorch")     # non-zero biases: a generic point
    if spec.input_kind == "index":
        X = rng.integers(0, D, (B, T))
    else:
        X = rng.standard_normal((B, T, D)).astype(np.float32)
    mask = None
    if masked:                                  # prefix masks of lengths T, T-1, ..., like Reber
        lengths = np.array([T, T - 1, 3, T - 2, 1])
        mask = np.arange(T)[None, :] < lengths[:, None]
        X = np.where(mask[..., None], X, 1.0).astype(np.float32)   # padding that is not zero
    per_step = spec.setup == "many_to_many"
    if spec.loss == "softmax_ce":
        y = rng.integers(0, C, (B, T) if per_step else B)
    elif spec.loss == "sigmoid_bce":
        y = rng.integers(0, 2, (B, T, C)).astype(np.float32)
    else:
        y = rng.random((B, 1)).astype(np.float32)
    return spec, params, X, y, mask


@pytest.mark.parametrize("name", list(SUITE_SETUPS))
def test_suite_keras_model_with_rnnlab_weights_gives_the_same_outputs(name: str) -> None:
    """The Keras model the results harness trains, loaded with rnnlab's weights, gives rnnlab's
    logits (and, with the task's head, its probabilities) on every step that counts; its
    weights come back unchanged."""
    spec, params, X, y, mask = _suite_problem(name)
    out, _ = net.forward(params, X, spec, mask=mask)
    keep = np.ones((B, T), bool) if mask is None else mask
    for logits in (True, False):
        model, rnn, head = rr.keras_model(spec, T, logits=logits, masked=mask is not None)
        rr.keras_load(rnn, head, params)
        z = np.asarray(model.predict(rr.keras_inputs(spec, X, mask), verbose=0), np.float64)
        want = out.logits if logits else out.y
        assert z.shape == want.shape
        if z.ndim == 3:
            z, want = z[keep], want[keep]
        np.testing.assert_allclose(z, want, rtol=2e-5, atol=2e-6)
        back = rr.keras_params(rnn, head)
        for k, v in params.items():
            np.testing.assert_array_equal(back[k], v.astype(np.float32))


@pytest.mark.parametrize("name", list(SUITE_SETUPS))
def test_suite_keras_loss_and_cross_check_match_rnnlab(name: str) -> None:
    """Keras' compiled loss (the one its ``fit`` minimises, padded steps masked) and the
    harness's NumPy cross-check of Keras' predictions equal rnnlab's loss and accuracy for the
    same weights."""
    from rnnlab.train.metrics import evaluate

    spec, params, X, y, mask = _suite_problem(name, seed=4)
    ref = evaluate(params, spec, X, y, mask)
    model, rnn, head = rr.keras_model(spec, T, logits=False, masked=mask is not None)
    rr.keras_load(rnn, head, params)
    model.compile(loss=rr.KERAS_LOSSES[spec.loss][0])
    Xk = rr.keras_inputs(spec, X, mask)
    k_loss = float(model.evaluate(Xk, y, batch_size=B, verbose=0))
    own = rr.peer_metrics(spec, model.predict(Xk, verbose=0), y, mask, logits=False)
    if spec.loss == "softmax_ce":
        assert k_loss == pytest.approx(ref["loss"], rel=1e-5)
        assert own["loss"] == pytest.approx(ref["loss"], rel=1e-5)
        assert own["accuracy"] == pytest.approx(ref["accuracy"])
    elif spec.loss == "identity_mse":
        assert k_loss == pytest.approx(own["mse"], rel=1e-5)
        z, _ = net.forward(params, X, spec)
        assert own["mse"] == pytest.approx(float(np.mean((z.y - y) ** 2)), rel=1e-5)
    else:       # Keras clips probabilities at 1e-7; rnnlab's BCE is exact: close, not equal
        assert k_loss == pytest.approx(own["bce"], rel=1e-4)
        z, _ = net.forward(params, X, spec)
        p = np.asarray(z.y, np.float64)
        want = float(np.mean(-(y * np.log(p) + (1 - y) * np.log1p(-p))))
        assert own["bce"] == pytest.approx(want, rel=1e-5)


def test_suite_keras_refuses_what_it_cannot_build() -> None:
    with pytest.raises(ValueError, match="label at every step"):
        rr.keras_model(RNNSpec(D, H, C, label_steps="all"), T, logits=True)
    with pytest.raises(ValueError, match="one-layer"):
        rr.keras_model(RNNSpec(D, H, C, num_layers=2), T, logits=True)


@pytest.mark.parametrize("kw", [{"schedule": "cosine"},
                                {"schedule": "cosine", "schedule_kwargs": {"min_lr": 1e-4}},
                                {"schedule": "constant"}])
def test_keras_rate_follows_rnnlabs_schedule_at_every_update(kw) -> None:
    """The identical-config rows' Keras learning rate equals rnnlab's at every update count,
    over the run's length (rnnlab.fit's default) and after it."""
    from rnnlab import TrainConfig

    cfg = TrainConfig(epochs=3, batch_size=16, lr=2e-3, **kw)
    n = 70                                          # 5 minibatches an epoch, the last of 6
    rate = rr.keras_rate(cfg, n)
    ours = cfg.make_schedule().with_length(3 * 5)
    for step in range(18):
        want = ours(step)
        got = float(rate(step)) if callable(rate) else float(rate)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-9), step
    if kw["schedule"] == "cosine":
        assert float(rate(15)) == pytest.approx(kw.get("schedule_kwargs", {}).get("min_lr", 0.0),
                                                abs=1e-9)


def test_keras_rate_refuses_a_warmup() -> None:
    from rnnlab import TrainConfig

    cfg = TrainConfig(schedule="cosine", schedule_kwargs={"warmup_steps": 3})
    with pytest.raises(ValueError, match="without warm-up"):
        rr.keras_rate(cfg, 100)
