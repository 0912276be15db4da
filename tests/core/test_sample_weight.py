"""Weighted losses (docs/derivation.md, eq. 15w): finite differences on every gradient, PyTorch's
weighted cross-entropy and MSE, the fast engine against the reference, and the edge cases
(all-one weights, zero weights, scaling, bad weights)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import Reference, RNNSpec, Workspace
from rnnlab import network as net
from rnnlab.core import losses
from rnnlab.diagnostics import finite_difference, relative_error

from conftest import LOSSES, SETUPS, assert_close, assert_grads_close, problem

B, T, D, H, O = 4, 4, 2, 3, 3
TOL = 1e-6
FLOOR = 1e-5


def weights(spec: RNNSpec, rng: np.random.Generator, per_step: bool) -> np.ndarray:
    shape = (B, T) if per_step else (B,)
    w = rng.uniform(0.2, 3.0, size=shape)
    w.flat[1] = 0.0                                 # one weight 0: that row is not learnt from
    return w


CASES = [(loss, i, per_step, masked, red)
         for loss in LOSSES for i in range(len(SETUPS)) for per_step in (False, True)
         for masked in (False, True) for red in ("mean", "sum")
         if not (per_step and SETUPS[i]["setup"] == "many_to_one"
                 and SETUPS[i].get("label_steps", "last") == "last")
         and not (masked and SETUPS[i]["setup"] == "one_to_many")]


@pytest.mark.parametrize("loss,setup,per_step,masked,reduction", CASES)
def test_weighted_loss_gradients_match_finite_differences(loss, setup, per_step, masked,
                                                          reduction):
    spec = RNNSpec(D, H, O, loss=loss, reduction=reduction, **SETUPS[setup])
    if per_step and not spec.per_step_output:
        pytest.skip("(B, T) weights need a per-step output")
    params, X, Y, mask, h0 = problem(spec, 7, B, T, masked)
    w = weights(spec, np.random.default_rng(3), per_step)
    steps = T if spec.setup == "one_to_many" else None

    def value() -> float:
        o, _ = net.forward(params, X, spec, h0=h0, mask=mask, steps=steps)
        return net.loss_and_grad(spec, o, Y, mask=mask, sample_weight=w).value

    out, cache = net.forward(params, X, spec, h0=h0, mask=mask, steps=steps)
    res = net.loss_and_grad(spec, out, Y, mask=mask, sample_weight=w)
    g = net.backward(params, res.dz, cache)
    for k, p in params.items():
        err = relative_error(g.params[k], finite_difference(value, p, 1e-3), FLOOR)
        assert err < TOL, (k, err)
    assert relative_error(g.X, finite_difference(value, X, 1e-3), FLOOR) < TOL
    assert relative_error(g.h0, finite_difference(value, h0, 1e-3), FLOOR) < TOL
    # the weighted loss is what eq. (15w) says, from the unreduced per-entry losses
    if spec.per_step_output:
        m = np.ones((B, T), bool) if mask is None else mask
        W = np.broadcast_to(w[:, None], (B, T)) if w.ndim == 1 else w
        y = Y if spec.setup != "many_to_one" else np.broadcast_to(
            Y[:, None], (B, T) + Y.shape[1:])
        per = losses.row_losses(loss, out.logits.reshape(B * T, O),
                                y.reshape((B * T,) + y.shape[2:]))[0].reshape(B, T)
        total, wsum = float((W * per)[m].sum()), float(W[m].sum())
    else:
        per = losses.row_losses(loss, out.logits, Y)[0]
        total, wsum = float((w * per).sum()), float(w.sum())
    k = 1 if loss == "softmax_ce" else O
    expected = total if reduction == "sum" else total / (k * wsum)
    assert res.value == pytest.approx(expected, rel=1e-12)
    # unweighted, the same formula with w = 1 is eq. (15)
    plain = net.loss_and_grad(spec, out, Y, mask=mask).value
    n = int(m.sum()) if spec.per_step_output else B
    per_sum = float(per[m].sum()) if spec.per_step_output else float(per.sum())
    assert plain == pytest.approx(per_sum if reduction == "sum" else per_sum / (k * n), rel=1e-12)


def test_torch_weighted_cross_entropy_and_mse():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    # class weights: PyTorch's cross_entropy(weight=) is our sample_weight = class_weight[y]
    spec = RNNSpec(D, H, O)
    params, X, Y, _, h0 = problem(spec, 1, 6, T, False)
    cw = np.array([0.5, 2.0, 1.25])
    out, _ = net.forward(params, X, spec, h0=h0)
    res = net.loss_and_grad(spec, out, Y, sample_weight=cw[Y])
    z = torch.tensor(out.logits, requires_grad=True)
    ref = F.cross_entropy(z, torch.tensor(Y), weight=torch.tensor(cw))
    ref.backward()
    assert res.value == pytest.approx(ref.item(), rel=1e-13)
    np.testing.assert_allclose(res.dz, z.grad.numpy(), rtol=1e-12, atol=1e-15)
    # per-step labels with a mask and per-sequence weights: the weighted mean over real steps
    spec = RNNSpec(D, H, O, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 2, B, T, True)
    w = rng.uniform(0.1, 2.0, B)
    out, _ = net.forward(params, X, spec, h0=h0, mask=mask)
    res = net.loss_and_grad(spec, out, Y, mask=mask, sample_weight=w)
    z = torch.tensor(out.logits, requires_grad=True)
    per = F.cross_entropy(z[torch.tensor(mask)], torch.tensor(Y)[torch.tensor(mask)],
                          reduction="none")
    ww = torch.tensor(np.broadcast_to(w[:, None], (B, T))[mask])
    ref = (ww * per).sum() / ww.sum()
    ref.backward()
    assert res.value == pytest.approx(ref.item(), rel=1e-13)
    np.testing.assert_allclose(res.dz, z.grad.numpy(), rtol=1e-12, atol=1e-15)
    # MSE: mean over rows x outputs, weighted by rows
    spec = RNNSpec(D, H, O, loss="identity_mse")
    params, X, Y, _, h0 = problem(spec, 3, B, T, False)
    out, _ = net.forward(params, X, spec, h0=h0)
    res = net.loss_and_grad(spec, out, Y, sample_weight=w)
    z = torch.tensor(out.logits, requires_grad=True)
    per = F.mse_loss(z, torch.tensor(Y), reduction="none").sum(dim=1)
    ref = (torch.tensor(w) * per).sum() / (O * torch.tensor(w).sum())
    ref.backward()
    assert res.value == pytest.approx(ref.item(), rel=1e-13)
    np.testing.assert_allclose(res.dz, z.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("loss", LOSSES)
def test_ones_zeros_and_scaling(loss):
    spec = RNNSpec(D, H, O, loss=loss, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 4, B, T, True)
    out, _ = net.forward(params, X, spec, h0=h0, mask=mask)
    plain = net.loss_and_grad(spec, out, Y, mask=mask)
    ones = net.loss_and_grad(spec, out, Y, mask=mask, sample_weight=np.ones(B))
    assert ones.value == pytest.approx(plain.value, rel=1e-14)
    assert np.array_equal(ones.dz, plain.dz)                 # w = 1 multiplies by exactly 1
    w = np.random.default_rng(5).uniform(0.5, 2.0, B)
    a = net.loss_and_grad(spec, out, Y, mask=mask, sample_weight=w)
    b = net.loss_and_grad(spec, out, Y, mask=mask, sample_weight=7.0 * w)
    assert b.value == pytest.approx(a.value, rel=1e-13)     # the weighted mean ignores scale
    np.testing.assert_allclose(b.dz, a.dz, rtol=1e-12)
    # a zero weight is the same as leaving the sequence out
    w0 = w.copy()
    w0[2] = 0.0
    keep = np.arange(B) != 2
    z = net.loss_and_grad(spec, out, Y, mask=mask, sample_weight=w0)
    sub = net.Output(out.y[keep], out.logits[keep], out.h_n[:, keep])
    s = net.loss_and_grad(spec, sub, Y[keep], mask=mask[keep], sample_weight=w[keep])
    assert z.value == pytest.approx(s.value, rel=1e-13)
    assert np.all(z.dz[2] == 0.0)
    np.testing.assert_allclose(z.dz[keep], s.dz, rtol=1e-12)
    # every weight 0: nothing is scored
    nothing = net.loss_and_grad(spec, out, Y, mask=mask, sample_weight=np.zeros(B))
    assert nothing.value == 0.0 and not nothing.dz.any()


def test_loss_module_weighted_rows_match_unreduced_rows():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 3))
    y = rng.integers(0, 3, 6)
    w = rng.uniform(0, 2, 6)
    per, _ = losses.row_losses("softmax_ce", z, y)
    res = losses.loss_and_grad("softmax_ce", z, y, "mean", w)
    assert res.value == pytest.approx(float((w * per).sum() / w.sum()), rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("spec", [
    RNNSpec(D, H, O),
    RNNSpec(D, H, O, setup="many_to_many", num_layers=2, bidirectional=True),
    RNNSpec(D, H, O, loss="identity_mse", label_steps="all"),
    RNNSpec(D, H, O, loss="sigmoid_bce", setup="one_to_many"),
], ids=["m2o", "m2m-2l-bi", "mse-every-step", "bce-o2m"])
def test_fast_engine_matches_the_reference_with_weights(spec, dtype):
    params, X, Y, mask, h0 = problem(spec, 8, B, T, spec.setup != "one_to_many")
    params = {k: v.astype(dtype) for k, v in params.items()}
    steps = T if spec.setup == "one_to_many" else None
    rng = np.random.default_rng(9)
    for w in (rng.uniform(0, 2, B), rng.uniform(0, 2, (B, T)) if spec.per_step_output else None):
        if w is None:
            continue
        ref_loss, ref = Reference(spec).value_and_grad(params, X, Y, h0=h0, mask=mask,
                                                       steps=steps, sample_weight=w)
        got_loss, got = Workspace(spec, threads=1).value_and_grad(
            params, X, Y, h0=h0, mask=mask, steps=steps, sample_weight=w)
        f64 = {k: v.astype(np.float64) for k, v in Reference(spec).value_and_grad(
            {k: v.astype(np.float64) for k, v in params.items()}, X, Y, h0=h0, mask=mask,
            steps=steps, sample_weight=w)[1].items()}
        assert got_loss == pytest.approx(ref_loss, rel=1e-5 if dtype == np.float32 else 1e-12)
        assert_grads_close(got, f64, dtype)
        assert_close(ref["W_hy"].astype(np.float64), f64["W_hy"],
                     1e-11 if dtype == np.float64 else 2e-5)


@pytest.mark.parametrize("w,err,match", [
    (np.ones(B - 1), ValueError, r"sample_weight must have shape \(4,\)"),
    (-np.ones(B), ValueError, r"sample_weight must be >= 0"),
    (np.full(B, np.nan), ValueError, r"sample_weight contains NaN or inf"),
    (np.array(["a"] * B), TypeError, r"sample_weight must be a real numeric array"),
    (np.ones((B, T)), ValueError,
     r"must have shape \(4,\) \(one weight per sequence\); got \(4, 4"),
])
def test_bad_weights_are_refused_by_both_engines(w, err, match):
    spec = RNNSpec(D, H, O)
    params, X, Y, _, h0 = problem(spec, 1, B, T, False)
    out, _ = net.forward(params, X, spec)
    with pytest.raises(err, match=match):
        net.loss_and_grad(spec, out, Y, sample_weight=w)
    with pytest.raises(err, match=match):
        Workspace(spec, threads=1).value_and_grad(params, X, Y, sample_weight=w)
