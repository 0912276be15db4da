"""KF-RTRL (docs/derivation.md, eqs. 48-49): the Kronecker structure of the immediate influence
(checked against autograd), Mujika et al.'s update step for step, unbiased at the rate its
variance predicts, exact after one step, and with a smaller variance than UORO's."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNNSpec, optim
from rnnlab.learning import kf_rtrl, rtrl, uoro

from .online_reference import Walk, convergence, draws_of, flat, kf_reference, rec_keys, unflat
from conftest import ACTS, problem

H = 3
NS = (8, 32, 128, 512)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("setup,masked", [("many_to_many", True), ("many_to_one", False)])
def test_unbiased_at_the_predicted_rate(act, setup, masked):
    spec = RNNSpec(2, H, 2, nonlinearity=act, setup=setup)
    params, X, Y, mask, h0 = problem(spec, 6, 2, 6, masked)     # (seed 5: every ReLU dead)
    _, g, _ = rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    exact = flat(g.params, spec)
    assert np.abs(exact).max() > 1e-2
    draws = draws_of(kf_rtrl, params, X, Y, spec, mask, h0, NS[-1], seed=9)
    ratio = convergence(draws, exact, NS)
    assert np.all((ratio > 0.2) & (ratio < 2.5)), ratio
    biased = convergence(draws, exact * 1.3, NS)
    assert biased[-1] > 4 and biased[-1] > 2 * biased[0], biased


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("setup,masked", [("many_to_many", True), ("one_to_many", False),
                                          ("many_to_one", True)])
def test_mujika_step_for_step(act, setup, masked):
    """The batched estimate equals a per-sequence KF-RTRL with autograd's Jacobian, and the
    immediate influence autograd finds is the Kronecker product of eq. (40)."""
    spec = RNNSpec(2, H, 2, nonlinearity=act, setup=setup)
    T = 5
    params, X, Y, mask, h0 = problem(spec, 2, 3, T, masked)
    steps = T if setup == "one_to_many" else None
    _, g, _ = kf_rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps,
                                     rng=np.random.default_rng(4))
    ref = unflat(kf_reference(Walk(params, spec, X, Y, mask, h0, steps),
                              np.random.default_rng(4)), params, spec)
    for k in rec_keys(spec):
        np.testing.assert_allclose(g.params[k], ref[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_one_step_is_exact():
    """After one step the two Kronecker terms are ũ ⊗ Ã = 0 and u ⊗ diag f': the estimate is
    c2² u ⊗ diag f' = RTRL's influence, whatever the signs."""
    spec = RNNSpec(4, H, 2, setup="many_to_many", nonlinearity="sigmoid")
    params, X, Y, _, h0 = problem(spec, 0, 5, 1, False)
    _, ge, _ = rtrl.value_and_grad(params, X, Y, spec, h0=h0)
    for seed in range(3):
        _, g, _ = kf_rtrl.value_and_grad(params, X, Y, spec, h0=h0,
                                         rng=np.random.default_rng(seed))
        for k in params:
            np.testing.assert_allclose(g.params[k], ge.params[k], rtol=1e-12, atol=1e-15)


def test_variance_below_uoros():
    """Mujika et al.'s claim, on one small problem: KF-RTRL's estimate is less noisy."""
    spec = RNNSpec(2, 8, 2, setup="many_to_many")
    params, X, Y, _, h0 = problem(spec, 1, 1, 10, False)
    var_kf = draws_of(kf_rtrl, params, X, Y, spec, None, h0, 200, seed=1, copies=1).var(
        axis=0).sum()
    var_uoro = draws_of(uoro, params, X, Y, spec, None, h0, 200, seed=1, copies=1).var(
        axis=0).sum()
    assert var_kf < var_uoro / 3


def test_index_inputs_float32_and_outputs():
    spec = RNNSpec(6, H, 3, setup="many_to_many", input_kind="index")
    params, X, Y, mask, h0 = problem(spec, 3, 4, 5, True)
    v, _, o = rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    v2, g2, o2 = kf_rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask,
                                        rng=np.random.default_rng(1))
    assert v2 == pytest.approx(v, rel=1e-12)
    np.testing.assert_allclose(o2.y, o.y, rtol=1e-12)
    ref = unflat(kf_reference(Walk(params, spec, X, Y, mask, h0), np.random.default_rng(1)),
                 params, spec)
    for k in rec_keys(spec):
        np.testing.assert_allclose(g2.params[k], ref[k], rtol=1e-10, atol=1e-12, err_msg=k)
    p32 = {k: a.astype(np.float32) for k, a in params.items()}
    _, g32, _ = kf_rtrl.value_and_grad(p32, X, Y, spec, h0=h0, mask=mask,
                                       rng=np.random.default_rng(1))
    for k in params:
        assert g32.params[k].dtype == np.float32
        np.testing.assert_allclose(g32.params[k], g2.params[k], rtol=1e-3, atol=1e-4, err_msg=k)


def test_online_every_T_is_one_batch_update():
    spec = RNNSpec(2, H, 2, setup="many_to_many")
    params, X, Y, _, h0 = problem(spec, 4, 3, 6, False)
    opt = optim.SGD(lr=0.05)
    p1 = {k: v.copy() for k, v in params.items()}
    kf_rtrl.online_update(p1, X, Y, spec, opt=opt, opt_state=opt.init(p1), h0=h0, every=10,
                          rng=np.random.default_rng(2))
    _, g, _ = kf_rtrl.value_and_grad(params, X, Y, spec, h0=h0, rng=np.random.default_rng(2))
    for k in params:
        np.testing.assert_allclose(p1[k], params[k] - 0.05 * g.params[k], rtol=1e-12,
                                   atol=1e-14)


def test_refusals():
    stacked = RNNSpec(2, H, 2, num_layers=2)
    params, X, Y, _, _ = problem(stacked, 0, 2, 3, False)
    with pytest.raises(ValueError, match="one recurrent layer.*num_layers=2.*uoro"):
        kf_rtrl.value_and_grad(params, X, Y, stacked, rng=np.random.default_rng(0))
    spec = RNNSpec(2, H, 2)
    params, X, Y, _, _ = problem(spec, 0, 2, 3, False)
    with pytest.raises(TypeError, match="needs rng="):
        kf_rtrl.value_and_grad(params, X, Y, spec, rng=np.random.RandomState(0))
