"""Behaviour of the network beyond gradient exactness: batching, masks, dtypes, purity."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNNSpec, init_params
from rnnlab import network as net

from conftest import make_inputs, make_targets, problem

SPECS = [
    RNNSpec(3, 4, 3, setup="many_to_one"),
    RNNSpec(3, 4, 3, setup="many_to_many", num_layers=2, bidirectional=True),
    RNNSpec(3, 4, 2, setup="one_to_many", loss="identity_mse", feed="first"),
    RNNSpec(3, 4, 2, setup="many_to_one", label_steps="all", loss="sigmoid_bce"),
    RNNSpec(6, 4, 3, setup="many_to_many", input_kind="index", nonlinearity="relu"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.setup}-{s.loss}")
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("masked", [False, True])
def test_batch_equals_single_sequences_combined(spec, reduction, masked):
    """A batch of B sequences gives the gradients of B single runs combined by the reduction."""
    spec = RNNSpec(**{**spec.to_dict(), "reduction": reduction})
    B, T = 5, 6
    params, X, Y, mask, h0 = problem(spec, 3, B, T, masked)
    steps = T if spec.setup == "one_to_many" else None
    loss, g, _ = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps)
    # how many scored elements each single run divides by under "mean"
    per_step = spec.per_step_output
    counts = (mask.sum(axis=1) if mask is not None else np.full(B, T)) if per_step else np.ones(B)
    total_loss, total = 0.0, {k: np.zeros_like(v) for k, v in params.items()}
    for b in range(B):
        mb = None if mask is None else mask[b:b + 1]
        lb, gb, _ = net.value_and_grad(params, X[b:b + 1], Y[b:b + 1], spec, h0=h0[:, b:b + 1],
                                       mask=mb, steps=steps)
        w = counts[b] / counts.sum() if reduction == "mean" else 1.0
        total_loss += w * lb
        for k in total:
            total[k] += w * gb.params[k]
        if g.X is not None:
            np.testing.assert_allclose(g.X[b:b + 1] / w, gb.X, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(g.h0[:, b:b + 1] / w, gb.h0, rtol=1e-10, atol=1e-14)
    assert loss == pytest.approx(total_loss, rel=1e-12)
    for k in total:
        np.testing.assert_allclose(g.params[k], total[k], rtol=1e-10, atol=1e-14)


def test_padded_steps_change_nothing():
    """Whatever sits in padded steps, outputs at real steps and all gradients are the same."""
    spec = RNNSpec(3, 4, 3, setup="many_to_many", num_layers=2, bidirectional=True)
    rng = np.random.default_rng(0)
    params = init_params(spec, rng, dtype=np.float64)
    X = rng.standard_normal((3, 5, 3))
    Y = rng.integers(0, 3, (3, 5))
    lengths = np.array([5, 3, 1])
    m = np.arange(5)[None] < lengths[:, None]
    l1, g1, o1 = net.value_and_grad(params, X, Y, spec, lengths=lengths)
    X2, Y2 = X.copy(), Y.copy()
    X2[~m] = 1e3 * rng.standard_normal(X2[~m].shape)
    Y2[~m] = 0
    l2, g2, o2 = net.value_and_grad(params, X2, Y2, spec, lengths=lengths)
    assert l1 == l2
    np.testing.assert_array_equal(o1.logits[m], o2.logits[m])
    np.testing.assert_array_equal(o1.h_n, o2.h_n)
    for k in params:
        np.testing.assert_array_equal(g1.params[k], g2.params[k])


def test_many_to_one_reads_last_real_step():
    spec = RNNSpec(2, 3, 2)
    rng = np.random.default_rng(1)
    params = init_params(spec, rng, dtype=np.float64)
    X = rng.standard_normal((2, 4, 2))
    full, _ = net.forward(params, X[:, :2], spec)
    padded, _ = net.forward(params, X, spec, lengths=np.array([2, 2]))
    np.testing.assert_allclose(padded.logits, full.logits, rtol=1e-14)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.setup}-{s.loss}")
def test_float32_follows_params_and_matches_float64(spec):
    rng = np.random.default_rng(2)
    p64 = init_params(spec, rng, dtype=np.float64)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    X = make_inputs(spec, rng, 3, 5)
    Y = make_targets(spec, rng, 3, 5)
    steps = 5 if spec.setup == "one_to_many" else None
    l64, g64, o64 = net.value_and_grad(p64, X, Y, spec, steps=steps)
    l32, g32, o32 = net.value_and_grad(p32, X, Y, spec, steps=steps)
    assert o32.y.dtype == np.float32 and o32.h_n.dtype == np.float32
    assert l32 == pytest.approx(l64, rel=1e-5)
    for k in p64:
        assert g32.params[k].dtype == np.float32
        np.testing.assert_allclose(g32.params[k], g64.params[k], rtol=2e-3, atol=1e-5)


def test_forward_and_backward_mutate_nothing():
    spec = SPECS[1]
    params, X, Y, mask, h0 = problem(spec, 0, 3, 4, True)
    before = {k: v.copy() for k, v in params.items()}
    X0, h00 = X.copy(), h0.copy()
    out, cache = net.forward(params, X, spec, h0=h0, mask=mask)
    snap = [a.copy() for a in cache.hbufs]
    res = net.loss_and_grad(spec, out, Y, mask=mask)
    dz0 = res.dz.copy()
    net.backward(params, res.dz, cache)
    net.backward(params, res.dz, cache)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(h0, h00)
    np.testing.assert_array_equal(res.dz, dz0)
    for a, b in zip(cache.hbufs, snap, strict=True):
        np.testing.assert_array_equal(a, b)


def test_final_state_gradient_dh_n():
    """backward's dh_n is the gradient of a loss term on out.h_n (used by truncated BPTT)."""
    from rnnlab.diagnostics import finite_difference, relative_error

    spec = RNNSpec(2, 3, 2, num_layers=2, bidirectional=True)
    params, X, Y, _, h0 = problem(spec, 4, 2, 3, False)
    w = np.random.default_rng(5).standard_normal((4, 2, 3))

    def loss() -> float:
        o, _ = net.forward(params, X, spec, h0=h0)
        return net.loss_and_grad(spec, o, Y).value + float((w * o.h_n).sum())

    out, cache = net.forward(params, X, spec, h0=h0)
    g = net.backward(params, net.loss_and_grad(spec, out, Y).dz, cache, dh_n=w)
    for k, p in params.items():
        assert relative_error(g.params[k], finite_difference(loss, p), 1e-5) < 1e-6


def test_seed000_loss_is_mean_over_n_and_t():
    """label_steps='all' with mean reduction is eq. (1) of seed 000: 1/(NT) sum_n sum_t E_t^n."""
    spec = RNNSpec(2, 3, 4, label_steps="all")
    rng = np.random.default_rng(6)
    params = init_params(spec, rng, dtype=np.float64)
    X, Y = rng.standard_normal((3, 5, 2)), rng.integers(0, 4, 3)
    out, _ = net.forward(params, X, spec)
    assert out.y.shape == (3, 5, 4)
    expected = -np.mean(np.log(out.y[np.arange(3)[:, None], np.arange(5)[None], Y[:, None]]))
    assert net.loss_and_grad(spec, out, Y).value == pytest.approx(expected, rel=1e-12)
