"""The reference cell (rnnlab.core.cell) is eqs. (5)-(7) and (16)-(18), step by step."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import activations, cell

from conftest import cell_problem as _problem

ACTS = ["tanh", "relu", "sigmoid", "identity"]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("act", ACTS)
def test_forward_is_the_recurrence(reverse: bool, masked: bool, act: str) -> None:
    """H_t = f(A_t + H_{t-1} W_hh), in reading order, padded steps carrying the state."""
    a = activations.get(act)
    A, W, h0, _, mask = _problem()
    m = mask if masked else None
    Hbuf = cell.forward(A, W, a, h0, reverse=reverse, mask=m)
    T = A.shape[0]
    h = h0.copy()
    states = np.empty_like(A)
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        new = a.f(A[t] + h @ W)
        if m is not None:
            new = np.where(m[t][:, None], new, h)
        states[t] = h = new
    np.testing.assert_allclose(cell.outputs(Hbuf, reverse), states, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(cell.initial(Hbuf, reverse), h0)
    np.testing.assert_array_equal(cell.final(Hbuf, reverse), h)
    np.testing.assert_array_equal(cell.previous(Hbuf, reverse)[0 if not reverse else T - 1], h0)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("act", ACTS)
def test_backward_is_the_chain_rule(reverse: bool, masked: bool, act: str) -> None:
    """dZ and dL/dh0 against the gradient of L = sum(dH * H) + dh_last . H_final, taken by
    differentiating the unrolled recurrence with central differences."""
    a = activations.get(act)
    A, W, h0, dH, mask = _problem(B=2, T=4, H=3)
    m = mask if masked else None
    dl = np.random.default_rng(2).standard_normal(h0.shape)

    def loss(A_: np.ndarray, h0_: np.ndarray) -> float:
        Hb = cell.forward(A_, W, a, h0_, reverse=reverse, mask=m)
        return float((cell.outputs(Hb, reverse) * dH).sum() + (cell.final(Hb, reverse) * dl).sum())

    Hbuf = cell.forward(A, W, a, h0, reverse=reverse, mask=m)
    dZ, dh0 = cell.backward(dH, Hbuf, W, a, reverse=reverse, dh_last=dl, mask=m)
    eps = 1e-6
    num_dA = np.zeros_like(A)
    for idx in np.ndindex(A.shape):
        Ap, Am = A.copy(), A.copy()
        Ap[idx] += eps
        Am[idx] -= eps
        num_dA[idx] = (loss(Ap, h0) - loss(Am, h0)) / (2 * eps)
    num_dh0 = np.zeros_like(h0)
    for idx in np.ndindex(h0.shape):
        hp, hm = h0.copy(), h0.copy()
        hp[idx] += eps
        hm[idx] -= eps
        num_dh0[idx] = (loss(A, hp) - loss(A, hm)) / (2 * eps)
    # dL/dA_t = dL/dZ_t (eq. 5), zero at padded steps (they never read A_t)
    np.testing.assert_allclose(dZ, num_dA, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dh0, num_dh0, rtol=1e-6, atol=1e-8)


def test_step_is_eqs_5_and_6() -> None:
    a = activations.get("tanh")
    A, W, h0, _, _ = _problem()
    np.testing.assert_array_equal(cell.step(A[0], h0, W, a), np.tanh(A[0] + h0 @ W))
