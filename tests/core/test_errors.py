"""Bad input gets a ValueError/TypeError naming what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNNSpec, init_params
from rnnlab import network as net

SPEC = RNNSpec(3, 4, 5)
P = init_params(SPEC, np.random.default_rng(0), dtype=np.float64)
X = np.random.default_rng(1).standard_normal((2, 6, 3))


@pytest.mark.parametrize("X_bad,err,match", [
    (np.zeros((2, 6)), ValueError, r"X must be \(B, T, 3\); got shape \(2, 6\)"),
    (np.zeros((2, 6, 4)), ValueError, r"X must be \(B, T, 3\); got shape \(2, 6, 4\)"),
    (np.zeros((0, 6, 3)), ValueError, "empty batch"),
    (np.zeros((2, 0, 3)), ValueError, "T = 0"),
    (np.full((2, 6, 3), np.nan), ValueError, "X contains NaN or inf"),
    (np.full((2, 6, 3), np.inf), ValueError, "X contains NaN or inf"),
    (np.zeros((2, 6, 3), dtype=complex), TypeError, "real numeric"),
    (np.array([[["a"] * 3] * 6] * 2), TypeError, "real numeric"),
])
def test_bad_inputs(X_bad, err, match):
    with pytest.raises(err, match=match):
        net.forward(P, X_bad, SPEC)


def test_bad_params():
    shape_msg = r"params\['l0.W_hh'\] must have shape \(4, 4\); got \(4, 3\)"
    with pytest.raises(ValueError, match=shape_msg):
        net.forward({**P, "l0.W_hh": np.zeros((4, 3))}, X, SPEC)
    with pytest.raises(ValueError, match=r"missing \['b_y'\]"):
        net.forward({k: v for k, v in P.items() if k != "b_y"}, X, SPEC)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        net.forward({**P, "extra": np.zeros(1)}, X, SPEC)
    bad = {k: v.copy() for k, v in P.items()}
    bad["l0.b_h"][1] = np.nan
    with pytest.raises(ValueError, match=r"params\['l0.b_h'\] contains NaN or inf"):
        net.forward(bad, X, SPEC)
    with pytest.raises(TypeError, match="share one dtype"):
        net.forward({**P, "b_y": P["b_y"].astype(np.float32)}, X, SPEC)
    with pytest.raises(TypeError, match="float32 or float64; got int64"):
        net.forward({**P, "b_y": np.zeros(5, dtype=np.int64)}, X, SPEC)


def test_bad_targets():
    out, _ = net.forward(P, X, SPEC)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 5\).*\[0, 5\]"):
        net.loss_and_grad(SPEC, out, np.array([0, 5]))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 5\).*\[-1, 0\]"):
        net.loss_and_grad(SPEC, out, np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"class labels must have shape \(2,\); got \(3,\)"):
        net.loss_and_grad(SPEC, out, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \(2, 5\); got \(2, 4\)"):
        net.loss_and_grad(SPEC, out, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        net.loss_and_grad(SPEC, out, np.full((2, 5), 2.0))
    mse = RNNSpec(3, 4, 5, loss="identity_mse")
    p = init_params(mse, np.random.default_rng(0))
    o, _ = net.forward(p, X, mse)
    with pytest.raises(ValueError, match="targets contains NaN"):
        net.loss_and_grad(mse, o, np.full((2, 5), np.nan))


def test_bad_masks_and_lengths():
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 6\); got \(2, 5\)"):
        net.forward(P, X, SPEC, mask=np.ones((2, 5), dtype=bool))
    with pytest.raises(TypeError, match="mask must be a bool array"):
        net.forward(P, X, SPEC, mask=np.ones((2, 6)))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 6\]; got range \[0, 6\]"):
        net.forward(P, X, SPEC, lengths=np.array([0, 6]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\); got \(3,\)"):
        net.forward(P, X, SPEC, lengths=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"mask rows \[1\] are all False"):
        net.forward(P, X, SPEC, mask=np.array([[True] * 6, [False] * 6]))
    with pytest.raises(ValueError, match="either mask or lengths"):
        net.forward(P, X, SPEC, mask=np.ones((2, 6), bool), lengths=np.array([6, 6]))


def test_bad_h0_and_dlogits():
    with pytest.raises(ValueError, match=r"h0 must be .* = \(1, 2, 4\); got \(2, 4\)"):
        net.forward(P, X, SPEC, h0=np.zeros((2, 4)))
    out, cache = net.forward(P, X, SPEC)
    with pytest.raises(ValueError, match=r"dlogits must have shape \(2, 5\).*got \(2, 6, 5\)"):
        net.backward(P, np.zeros((2, 6, 5)), cache)
    # a gradient flowing backwards is a computed value: non-finite ones propagate (docs/
    # derivation.md, "Non-finite values"), as value_and_grad propagates an overflow
    g = net.backward(P, np.full((2, 5), np.nan), cache)
    assert np.isnan(g.params["W_hy"]).all() and np.isnan(g.h0).all()
    with pytest.raises(TypeError, match="dlogits must be a real numeric array"):
        net.backward(P, np.full((2, 5), "a"), cache)


def test_bad_spec():
    with pytest.raises(ValueError, match=r"unknown activation 'softsign'; expected one of"):
        RNNSpec(3, 4, 5, nonlinearity="softsign")
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; expected one of"):
        RNNSpec(3, 4, 5, loss="hinge")
    with pytest.raises(ValueError, match="unknown setup"):
        RNNSpec(3, 4, 5, setup="one_to_one")
    with pytest.raises(ValueError, match="hidden_size must be >= 1; got 0"):
        RNNSpec(3, 0, 5)
    with pytest.raises(TypeError, match="num_layers must be an int; got float"):
        RNNSpec(3, 4, 5, num_layers=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown RNNSpec keys \['hidden'\]"):
        RNNSpec.from_dict({"input_size": 1, "hidden": 2, "output_size": 3})
    with pytest.raises(ValueError, match="unknown initialiser"):
        init_params(SPEC, np.random.default_rng(0), scheme="xavier")
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        init_params(SPEC, 0)  # type: ignore[arg-type]


def test_index_and_one_to_many_inputs():
    spec = RNNSpec(4, 3, 2, input_kind="index")
    p = init_params(spec, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\).*\[0, 4\]"):
        net.forward(p, np.array([[0, 4]]), spec)
    with pytest.raises(TypeError, match="integer ids"):
        net.forward(p, np.zeros((1, 2)), spec)
    otm = RNNSpec(4, 3, 2, setup="one_to_many")
    p = init_params(otm, np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs steps=T"):
        net.forward(p, np.zeros((2, 4)), otm)
    with pytest.raises(ValueError, match=r"X must be \(B, 4\) for setup='one_to_many'"):
        net.forward(p, np.zeros((2, 3, 4)), otm, steps=3)
    with pytest.raises(ValueError, match="steps is only used with setup='one_to_many'"):
        net.forward(P, X, SPEC, steps=3)
