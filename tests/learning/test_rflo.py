"""RFLO (docs/derivation.md, eqs. 52-53): its closed form on small cases, truncated BPTT(1; 1)
and e-prop at alpha = 1, and the exact gradient of the leaky network where its approximation
drops nothing (W_hh = 0)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNNSpec, optim
from rnnlab.diagnostics import finite_difference
from rnnlab.learning import eprop, rflo, tbptt
from rnnlab.learning.walk import random_feedback

from .leaky_reference import closed_form
from conftest import ACTS, LOSSES, SETUPS, problem

H = 4


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("alpha", [1.0, 0.6, 0.15])
def test_closed_form(act, alpha):
    spec = RNNSpec(2, H, 3, nonlinearity=act, setup="many_to_many", loss="identity_mse")
    params, X, Y, _, _ = problem(spec, 1, 3, 6, False, with_h0=False)
    F = random_feedback(spec, np.random.default_rng(8))
    v, g, o = rflo.value_and_grad(params, X, Y, spec, alpha=alpha, feedback=F)
    v_ref, g_ref = closed_form(params, spec, X, Y, F, alpha=alpha)
    assert v == pytest.approx(v_ref, rel=1e-12)
    for k in params:
        np.testing.assert_allclose(g.params[k], g_ref[k], rtol=1e-11, atol=1e-14, err_msg=k)
    # "random" draws the same matrix from default_rng(feedback_seed), at every call
    _, g2, _ = rflo.value_and_grad(params, X, Y, spec, alpha=alpha, feedback="random",
                                   feedback_seed=8)
    for k in params:
        np.testing.assert_array_equal(g2.params[k], g.params[k])


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
def test_vanilla_symmetric_is_truncated_bptt_1_1(loss, setup):
    """With alpha = 1 the trace is u_t ⊗ f'_t: one step of backpropagation, every step."""
    for act in ACTS:
        spec = RNNSpec(2, H, 3, nonlinearity=act, loss=loss, **SETUPS[setup])
        params, X, Y, _, h0 = problem(spec, 2, 3, 5, False)
        steps = 5 if spec.setup == "one_to_many" else None
        _, gt, _ = tbptt.value_and_grad(params, X, Y, spec, h0=h0, steps=steps, k1=1, k2=1)
        v, g, o = rflo.value_and_grad(params, X, Y, spec, h0=h0, steps=steps,
                                      feedback="symmetric")
        for k in params:
            np.testing.assert_allclose(g.params[k], gt.params[k], rtol=1e-11, atol=1e-14,
                                       err_msg=f"{act} {k}")


@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
def test_vanilla_rflo_is_eprop(setup):
    spec = RNNSpec(3, H, 2, **SETUPS[setup])
    params, X, Y, mask, h0 = problem(spec, 3, 4, 6, True)
    steps = 6 if spec.setup == "one_to_many" else None
    for fb in ("symmetric", "random"):
        v1, g1, o1 = rflo.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps,
                                         feedback=fb, feedback_seed=3)
        v2, g2, o2 = eprop.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps,
                                          feedback=fb, feedback_seed=3)
        assert v1 == v2
        for k in params:
            np.testing.assert_allclose(g1.params[k], g2.params[k], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "identity"])
def test_exact_for_the_leaky_network_without_recurrence(act):
    """With W_hh = 0 the Jacobian is exactly the leak (1 - alpha) I: RFLO with symmetric
    feedback is the gradient of the leaky network's loss (every parameter, W_hh included)."""
    spec = RNNSpec(2, 3, 2, nonlinearity=act, setup="many_to_many", loss="softmax_ce")
    params, X, Y, _, _ = problem(spec, 4, 2, 5, False, with_h0=False)
    params["l0.W_hh"][...] = 0.0
    _, g, _ = rflo.value_and_grad(params, X, Y, spec, alpha=0.3, feedback="symmetric")
    for k in params:
        fd = finite_difference(
            lambda: rflo.value_and_grad(params, X, Y, spec, alpha=0.3,
                                        feedback="symmetric")[0], params[k])
        np.testing.assert_allclose(g.params[k], fd, rtol=1e-7, atol=1e-10, err_msg=k)


def test_padding_carries_the_trace():
    """A padded tail changes nothing: the estimate equals that of the truncated sequences."""
    spec = RNNSpec(2, H, 2, setup="many_to_one")
    params, X, Y, _, h0 = problem(spec, 5, 3, 6, False)
    lengths = np.array([6, 4, 2])
    _, g, _ = rflo.value_and_grad(params, X, Y, spec, h0=h0, lengths=lengths, alpha=0.5)
    for b, n in enumerate(lengths):
        _, gb, _ = rflo.value_and_grad(params, X[b:b + 1, :n], Y[b:b + 1], spec,
                                       h0=h0[:, b:b + 1], alpha=0.5)
        if b == 0:
            total = {k: v / 3 for k, v in gb.params.items()}
        else:
            for k in total:
                total[k] += gb.params[k] / 3
    for k in params:
        np.testing.assert_allclose(g.params[k], total[k], rtol=1e-12, atol=1e-15)


def test_online_every_T_is_one_batch_update():
    spec = RNNSpec(2, H, 2, setup="many_to_many")
    params, X, Y, _, h0 = problem(spec, 4, 3, 6, False)
    opt = optim.SGD(lr=0.05)
    p1 = {k: v.copy() for k, v in params.items()}
    rflo.online_update(p1, X, Y, spec, opt=opt, opt_state=opt.init(p1), h0=h0, every=6)
    _, g, _ = rflo.value_and_grad(params, X, Y, spec, h0=h0)
    for k in params:
        np.testing.assert_allclose(p1[k], params[k] - 0.05 * g.params[k], rtol=1e-12,
                                   atol=1e-14)


def test_refusals():
    spec = RNNSpec(2, H, 2)
    params, X, Y, _, _ = problem(spec, 0, 2, 3, False)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            rflo.value_and_grad(params, X, Y, spec, alpha=bad)
    with pytest.raises(ValueError, match=r"\(O, H\) = \(2, 4\)"):
        rflo.value_and_grad(params, X, Y, spec, feedback=np.ones((4, 2)))
    with pytest.raises(ValueError, match="feedback must be"):
        rflo.value_and_grad(params, X, Y, spec, feedback="transpose")
    stacked = RNNSpec(2, H, 2, num_layers=2)
    ps, Xs, Ys, _, _ = problem(stacked, 0, 2, 3, False)
    with pytest.raises(ValueError, match="one recurrent layer"):
        rflo.value_and_grad(ps, Xs, Ys, stacked)
