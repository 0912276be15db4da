"""e-prop (docs/derivation.md, eqs. 54-55): its closed form on small cases, symmetric and random
feedback, and the exact gradient of the leaky-membrane network where its approximation drops
nothing (W_hh = 0)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import RNNSpec, losses, optim
from rnnlab.diagnostics import finite_difference
from rnnlab.learning import eprop
from rnnlab.learning.walk import random_feedback

from .leaky_reference import closed_form, leaky_forward
from conftest import ACTS, problem

H = 4


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("feedback", ["symmetric", "random"])
def test_closed_form(act, decay, feedback):
    spec = RNNSpec(2, H, 3, nonlinearity=act, setup="many_to_many", loss="sigmoid_bce")
    params, X, Y, _, _ = problem(spec, 2, 3, 6, False, with_h0=False)
    F = (params["W_hy"].T if feedback == "symmetric"
         else random_feedback(spec, np.random.default_rng(4)))
    v, g, o = eprop.value_and_grad(params, X, Y, spec, decay=decay, feedback=feedback,
                                   feedback_seed=4)
    v_ref, g_ref = closed_form(params, spec, X, Y, F, decay=decay)
    assert v == pytest.approx(v_ref, rel=1e-12)
    for k in params:
        np.testing.assert_allclose(g.params[k], g_ref[k], rtol=1e-11, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "identity"])
def test_exact_for_the_leaky_membrane_without_recurrence(act):
    """With W_hh = 0 only the membrane's own decay carries the past: e-prop with symmetric
    feedback is the gradient of the network's loss (every parameter, W_hh included)."""
    spec = RNNSpec(2, 3, 2, nonlinearity=act, setup="many_to_many", loss="softmax_ce")
    params, X, Y, _, _ = problem(spec, 5, 2, 5, False, with_h0=False)
    params["l0.W_hh"][...] = 0.0
    _, g, _ = eprop.value_and_grad(params, X, Y, spec, decay=0.7)
    for k in params:
        fd = finite_difference(
            lambda: eprop.value_and_grad(params, X, Y, spec, decay=0.7)[0], params[k])
        np.testing.assert_allclose(g.params[k], fd, rtol=1e-7, atol=1e-10, err_msg=k)


def test_many_to_one_and_index_inputs():
    """The closed form where only the last step is scored, and with one-hot inputs."""
    spec = RNNSpec(5, H, 2, setup="many_to_one", input_kind="index")
    params, X, Y, _, _ = problem(spec, 6, 3, 7, False, with_h0=False)
    v, g, _ = eprop.value_and_grad(params, X, Y, spec, decay=0.4)
    v_ref, g_ref = closed_form_last(params, spec, np.eye(5)[X], Y, decay=0.4)
    assert v == pytest.approx(v_ref, rel=1e-12)
    for k in params:
        np.testing.assert_allclose(g.params[k], g_ref[k], rtol=1e-11, atol=1e-14, err_msg=k)


def closed_form_last(params, spec, X, Y, decay):
    """e-prop's sum for a loss at the last step only: ε_{T-1} ⊗ (G ⊙ f'_{T-1})."""
    Hs, U, FP = leaky_forward(params, spec, X, decay=decay)
    T = U.shape[0]
    z = Hs[-1] @ params["W_hy"] + params["b_y"]
    res = losses.loss_and_grad("softmax_ce", z, Y, "mean")
    G = res.dz @ params["W_hy"].T
    eps = sum(decay ** (T - 1 - s) * U[s] for s in range(T))
    g = eps.T @ (G * FP[-1])
    Hn = spec.hidden_size
    return res.value, {"l0.W_hh": g[:Hn], "l0.W_xh": g[Hn:-1], "l0.b_h": g[-1],
                       "W_hy": Hs[-1].T @ res.dz, "b_y": res.dz.sum(axis=0)}


def test_online_every_T_is_one_batch_update():
    spec = RNNSpec(2, H, 2, setup="many_to_many")
    params, X, Y, _, h0 = problem(spec, 4, 3, 6, False)
    opt = optim.SGD(lr=0.05)
    p1 = {k: v.copy() for k, v in params.items()}
    eprop.online_update(p1, X, Y, spec, opt=opt, opt_state=opt.init(p1), h0=h0, every=7,
                        decay=0.3)
    _, g, _ = eprop.value_and_grad(params, X, Y, spec, h0=h0, decay=0.3)
    for k in params:
        np.testing.assert_allclose(p1[k], params[k] - 0.05 * g.params[k], rtol=1e-12,
                                   atol=1e-14)


def test_refusals():
    spec = RNNSpec(2, H, 2)
    params, X, Y, _, _ = problem(spec, 0, 2, 3, False)
    for bad in (-0.1, 1.0, float("inf")):
        with pytest.raises(ValueError, match="decay"):
            eprop.value_and_grad(params, X, Y, spec, decay=bad)
    with pytest.raises(TypeError, match="feedback_seed must be an int"):
        eprop.value_and_grad(params, X, Y, spec, feedback="random", feedback_seed=1.5)
    stacked = RNNSpec(2, H, 2, num_layers=3)
    ps, Xs, Ys, _, _ = problem(stacked, 0, 2, 3, False)
    with pytest.raises(ValueError, match="one recurrent layer.*num_layers=3"):
        eprop.value_and_grad(ps, Xs, Ys, stacked)
