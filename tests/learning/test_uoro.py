"""UORO (docs/derivation.md, eqs. 45-47): Tallec and Ollivier's Algorithm 1 step for step, and
unbiased: the mean of n estimates converges to RTRL's gradient at the rate its variance
predicts."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNNSpec, optim
from rnnlab.learning import rtrl, uoro

from .online_reference import (
    Walk,
    convergence,
    draws_of,
    flat,
    flat_params,
    rec_keys,
    unflat,
    uoro_reference,
)
from conftest import problem

H = 3


NS = (8, 32, 128, 512)


@pytest.mark.parametrize("act,layers,setup,masked", [
    ("tanh", 1, "many_to_many", True),
    ("relu", 2, "many_to_one", False),
    ("sigmoid", 1, "many_to_one", True),
    ("identity", 2, "many_to_many", False),
])
def test_unbiased_at_the_predicted_rate(act, layers, setup, masked):
    spec = RNNSpec(2, H, 2, num_layers=layers, nonlinearity=act, setup=setup)
    params, X, Y, mask, h0 = problem(spec, 3, 2, 5, masked)
    _, g, _ = rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    exact = flat(g.params, spec)
    draws = draws_of(uoro, params, X, Y, spec, mask, h0, NS[-1], seed=7)
    ratio = convergence(draws, exact, NS)
    # the error of the mean shrinks like 1/sqrt(n): ratio ~ 1 at every n (fixed seeds)
    assert np.all((ratio > 0.2) & (ratio < 2.5)), ratio
    err = [np.linalg.norm(draws[:n].mean(axis=0) - exact) for n in NS]
    slope = np.polyfit(np.log(NS), np.log(err), 1)[0]
    assert -0.75 < slope < -0.25, slope
    # the same statistic detects a bias of 30 % of the gradient: its ratio grows with n
    biased = convergence(draws, exact * 1.3, NS)
    assert biased[-1] > 4 and biased[-1] > 2 * biased[0], biased


@pytest.mark.parametrize("act,layers,setup,masked", [
    ("tanh", 1, "many_to_many", True),
    ("sigmoid", 2, "many_to_one", False),
    ("relu", 3, "many_to_many", True),
    ("identity", 1, "one_to_many", False),
])
def test_algorithm_1_step_for_step(act, layers, setup, masked):
    """The batched estimate equals a per-sequence Algorithm 1 with autograd's Jacobians and the
    same random signs."""
    spec = RNNSpec(2, H, 2, num_layers=layers, nonlinearity=act, setup=setup,
                   reduction="sum" if layers == 2 else "mean")
    T = 4
    params, X, Y, mask, h0 = problem(spec, layers, 3, T, masked)
    steps = T if setup == "one_to_many" else None
    _, g, _ = uoro.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps,
                                  rng=np.random.default_rng(11))
    ref = unflat(uoro_reference(Walk(params, spec, X, Y, mask, h0, steps),
                                np.random.default_rng(11)), params, spec)
    for k in rec_keys(spec):
        np.testing.assert_allclose(g.params[k], ref[k], rtol=1e-10, atol=1e-12, err_msg=k)
    _, gb, _ = rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps)
    for k in ("W_hy", "b_y"):                                  # the head is exact
        np.testing.assert_allclose(g.params[k], gb.params[k], rtol=1e-12, atol=1e-14)


def test_scale_folding(monkeypatch):
    """θ̃ is kept as c Θ; folding c back into Θ at every step changes nothing but rounding."""
    spec = RNNSpec(2, H, 2, num_layers=2, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 8, 3, 6, True)
    _, g, _ = uoro.value_and_grad(params, X, Y, spec, h0=h0, mask=mask,
                                  rng=np.random.default_rng(2))
    monkeypatch.setattr(uoro, "FOLD", 1.0)
    _, g1, _ = uoro.value_and_grad(params, X, Y, spec, h0=h0, mask=mask,
                                   rng=np.random.default_rng(2))
    for k in params:
        np.testing.assert_allclose(g1.params[k], g.params[k], rtol=1e-11, atol=1e-14)
    long_T = 400
    params, X, Y, _, h0 = problem(spec, 9, 2, long_T, False)
    _, gl, _ = uoro.value_and_grad(params, X, Y, spec, h0=h0, rng=np.random.default_rng(3))
    assert all(np.isfinite(a).all() for a in gl.params.values())


def test_one_unit_one_step_is_exact():
    """With H = 1 and T = 1, ν ν M̄ = M̄ (ν² = 1) and the ρ's cancel: the estimate is RTRL's."""
    spec = RNNSpec(3, 1, 2, setup="many_to_many")
    params, X, Y, _, h0 = problem(spec, 0, 4, 1, False)
    _, g, _ = uoro.value_and_grad(params, X, Y, spec, h0=h0, rng=np.random.default_rng(0))
    _, ge, _ = rtrl.value_and_grad(params, X, Y, spec, h0=h0)
    for k in params:
        np.testing.assert_allclose(g.params[k], ge.params[k], rtol=1e-12, atol=1e-15)


def test_loss_outputs_and_index_inputs_float32():
    spec = RNNSpec(5, H, 2, num_layers=2, setup="many_to_many", input_kind="index")
    params, X, Y, mask, h0 = problem(spec, 1, 3, 6, True)
    v, _, o = rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    v2, g2, o2 = uoro.value_and_grad(params, X, Y, spec, h0=h0, mask=mask,
                                     rng=np.random.default_rng(0))
    assert v2 == pytest.approx(v, rel=1e-12)
    np.testing.assert_allclose(o2.logits, o.logits, rtol=1e-12)
    np.testing.assert_allclose(o2.h_n, o.h_n, rtol=1e-12)
    assert g2.X is None and np.all(g2.h0 == 0) and list(g2.params) == list(params)
    ref = unflat(uoro_reference(Walk(params, spec, X, Y, mask, h0), np.random.default_rng(0)),
                 params, spec)
    for k in rec_keys(spec):
        np.testing.assert_allclose(g2.params[k], ref[k], rtol=1e-10, atol=1e-12, err_msg=k)
    p32 = {k: a.astype(np.float32) for k, a in params.items()}
    _, g32, o32 = uoro.value_and_grad(p32, X, Y, spec, h0=h0, mask=mask,
                                      rng=np.random.default_rng(0))
    assert all(a.dtype == np.float32 for a in g32.params.values())
    for k in params:
        np.testing.assert_allclose(g32.params[k], g2.params[k], rtol=1e-3, atol=1e-4, err_msg=k)


def test_batch_rows_are_independent_draws():
    """B copies of one sequence: the batch's estimate is the mean of B independent ones, so its
    spread shrinks like 1/sqrt(B)."""
    spec = RNNSpec(2, H, 2, setup="many_to_many")
    params, X, Y, _, _ = problem(spec, 2, 1, 5, False)
    _, g, _ = rtrl.value_and_grad(params, X, Y, spec)
    exact = flat(g.params, spec)
    rng = np.random.default_rng(3)
    single = np.stack([flat(uoro.value_and_grad(params, X, Y, spec, rng=rng)[1].params, spec)
                       for _ in range(400)])
    many = np.stack([flat(uoro.value_and_grad(params, np.repeat(X, 64, 0), np.repeat(Y, 64, 0),
                                              spec, rng=rng)[1].params, spec)
                     for _ in range(100)])
    spread1 = np.sqrt(((single - exact) ** 2).sum(axis=1).mean())
    spread64 = np.sqrt(((many - exact) ** 2).sum(axis=1).mean())
    assert 0.7 / 8 < spread64 / spread1 < 1.4 / 8


def test_online_every_T_is_one_batch_update():
    spec = RNNSpec(2, H, 2, num_layers=2, setup="many_to_many")
    params, X, Y, _, h0 = problem(spec, 4, 3, 6, False)
    opt = optim.SGD(lr=0.1)
    p1 = {k: v.copy() for k, v in params.items()}
    st = opt.init(p1)
    uoro.online_update(p1, X, Y, spec, opt=opt, opt_state=st, h0=h0, every=6,
                       rng=np.random.default_rng(5))
    _, g, _ = uoro.value_and_grad(params, X, Y, spec, h0=h0, rng=np.random.default_rng(5))
    for k in params:
        np.testing.assert_allclose(p1[k], params[k] - 0.1 * g.params[k], rtol=1e-12, atol=1e-14)
    assert st["step"] == 1
    p2 = {k: v.copy() for k, v in params.items()}
    st2 = opt.init(p2)
    loss, out = uoro.online_update(p2, X, Y, spec, opt=opt, opt_state=st2, h0=h0, every=2,
                                   rng=np.random.default_rng(5))
    assert st2["step"] == 3 and np.isfinite(loss) and out.logits.shape == (3, 6, 2)


def test_refusals():
    spec = RNNSpec(2, H, 2)
    params, X, Y, _, _ = problem(spec, 0, 2, 3, False)
    with pytest.raises(TypeError, match="needs rng="):
        uoro.value_and_grad(params, X, Y, spec)
    with pytest.raises(TypeError, match="needs rng="):
        uoro.value_and_grad(params, X, Y, spec, rng=0)
    with pytest.raises(ValueError, match="unidirectional"):
        bi = RNNSpec(2, H, 2, bidirectional=True)
        pb, Xb, Yb, _, _ = problem(bi, 0, 2, 3, False)
        uoro.value_and_grad(pb, Xb, Yb, bi, rng=np.random.default_rng(0))
    opt = optim.SGD(lr=0.1)
    with pytest.raises(ValueError, match="every must be"):
        uoro.online_update(dict(params), X, Y, spec, opt=opt, opt_state=opt.init(params),
                           every=0, rng=np.random.default_rng(0))
    assert flat_params(params, spec).size == (H + 2 + 1) * H
