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
