"""SnAp-n (docs/derivation.md, eqs. 50-51): equal to RTRL where its pattern covers the whole
influence matrix, and to a direct construction (the full influence matrix from autograd's
Jacobians, cut to the pattern after every step) where it does not."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from rnnlab import RNNSpec, optim
from rnnlab.learning import rtrl, snap
from rnnlab.learning.rtrl import SensitivityMemoryError

from .online_reference import Walk, exact_reference, rec_keys, unflat
from conftest import ACTS, SETUPS, problem

H = 4


def reach(conn: np.ndarray, n: int) -> np.ndarray:
    """Breadth-first search: ``P[j, k]`` if unit k is at most ``n - 1`` connections from j."""
    H = conn.shape[0]
    P = np.zeros((H, H), bool)
    for j in range(H):
        seen = {j: 0}
        todo = deque([j])
        while todo:
            m = todo.popleft()
            if seen[m] == n - 1:
                continue
            for k in np.flatnonzero(conn[m]):
                if k not in seen:
                    seen[k] = seen[m] + 1
                    todo.append(k)
        P[j, list(seen)] = True
    return P


def keep_of(P: np.ndarray, n_in: int) -> np.ndarray:
    """The pattern on the flat influence matrix: row (i, j) keeps the units P[j]."""
    return np.repeat(P[None], n_in, axis=0).reshape(n_in * P.shape[0], P.shape[0])


def sparse(params: dict, conn: np.ndarray) -> dict:
    out = dict(params)
    out["l0.W_hh"] = params["l0.W_hh"] * conn
    return out


CHAIN = np.zeros((H, H), bool)                         # 0 -> 1 -> 2 -> 3, 3 -> 3
CHAIN[0, 1] = CHAIN[1, 2] = CHAIN[2, 3] = CHAIN[3, 3] = True


def test_pattern_is_reachability():
    rng = np.random.default_rng(0)
    for _ in range(20):
        conn = rng.random((6, 6)) < 0.25
        for n in range(1, 6):
            np.testing.assert_array_equal(snap.pattern(conn, n), reach(conn, n))
    np.testing.assert_array_equal(snap.pattern(np.ones((3, 3), bool), 1), np.eye(3, dtype=bool))
    assert snap.pattern(np.ones((3, 3), bool), 2).all()


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
def test_dense_snap2_is_rtrl(act, setup):
    for n, masked in ((2, True), (3, False)):
        spec = RNNSpec(2, H, 3, nonlinearity=act, **SETUPS[setup])
        params, X, Y, mask, h0 = problem(spec, n, 3, 5, masked)
        steps = 5 if spec.setup == "one_to_many" else None
        v, g, o = rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps)
        v2, g2, o2 = snap.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps, n=n)
        assert v2 == pytest.approx(v, rel=1e-13)
        np.testing.assert_allclose(o2.logits, o.logits, rtol=1e-13)
        for k in params:
            np.testing.assert_allclose(g2.params[k], g.params[k], rtol=1e-11, atol=1e-14,
                                       err_msg=k)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("setup,masked", [("many_to_many", True), ("many_to_one", False),
                                          ("one_to_many", False)])
def test_snap1_is_the_diagonal_construction(act, setup, masked):
    spec = RNNSpec(2, H, 2, nonlinearity=act, setup=setup)
    params, X, Y, mask, h0 = problem(spec, 1, 3, 5, masked)
    steps = 5 if setup == "one_to_many" else None
    _, g, _ = snap.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps, n=1)
    keep = keep_of(np.eye(H, dtype=bool), H + 2 + 1)
    ref = unflat(exact_reference(Walk(params, spec, X, Y, mask, h0, steps), keep), params, spec)
    for k in rec_keys(spec):
        np.testing.assert_allclose(g.params[k], ref[k], rtol=1e-10, atol=1e-13, err_msg=k)
    _, ge, _ = rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps)
    assert not np.allclose(g.params["l0.W_hh"], ge.params["l0.W_hh"])   # an approximation


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_sparse_snap_n_is_the_direct_construction(n, act):
    """A chain 0 -> 1 -> 2 -> 3: the pattern grows by one unit per n until it is full (n = 4),
    where SnAp-n is RTRL on the existing connections."""
    spec = RNNSpec(3, H, 2, nonlinearity=act, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 2, 3, 6, True)
    params = sparse(params, CHAIN)
    _, g, _ = snap.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, n=n, connectivity=CHAIN)
    P = reach(CHAIN, n)
    ref = unflat(exact_reference(Walk(params, spec, X, Y, mask, h0), keep_of(P, H + 3 + 1)),
                 params, spec)
    ref["l0.W_hh"] *= CHAIN                                  # absent connections: no gradient
    for k in rec_keys(spec):
        np.testing.assert_allclose(g.params[k], ref[k], rtol=1e-10, atol=1e-13, err_msg=k)
    _, ge, _ = rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    full = n >= 4
    if act == "tanh":                                        # (ReLU may silence the long paths)
        assert np.allclose(g.params["l0.W_xh"], ge.params["l0.W_xh"], rtol=1e-10) == full
    if full:
        np.testing.assert_allclose(g.params["l0.W_hh"], ge.params["l0.W_hh"] * CHAIN,
                                   rtol=1e-10, atol=1e-14)
    # "nonzero" reads the same connectivity from W_hh
    _, g2, _ = snap.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, n=n,
                                   connectivity="nonzero")
    for k in params:
        np.testing.assert_array_equal(g2.params[k], g.params[k])


def test_random_sparse_network():
    rng = np.random.default_rng(3)
    Hs = 7
    conn = rng.random((Hs, Hs)) < 0.3
    spec = RNNSpec(2, Hs, 2, setup="many_to_many", nonlinearity="sigmoid")
    params, X, Y, _, h0 = problem(spec, 4, 2, 5, False)
    params = sparse(params, conn)
    for n in (1, 2, 3):
        _, g, _ = snap.value_and_grad(params, X, Y, spec, h0=h0, n=n, connectivity=conn)
        ref = unflat(exact_reference(Walk(params, spec, X, Y, None, h0),
                                     keep_of(reach(conn, n), Hs + 2 + 1)), params, spec)
        ref["l0.W_hh"] *= conn
        for k in rec_keys(spec):
            np.testing.assert_allclose(g.params[k], ref[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_online_snap2_is_online_rtrl():
    spec = RNNSpec(2, H, 2, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 5, 3, 7, True)
    opt = optim.Adam(lr=0.01)
    for every in (1, 3):
        p1 = {k: v.copy() for k, v in params.items()}
        p2 = {k: v.copy() for k, v in params.items()}
        l1, o1 = rtrl.online_update(p1, X, Y, spec, opt=opt, opt_state=opt.init(p1), h0=h0,
                                    mask=mask, every=every)
        l2, o2 = snap.online_update(p2, X, Y, spec, opt=opt, opt_state=opt.init(p2), h0=h0,
                                    mask=mask, every=every, n=2)
        assert l2 == pytest.approx(l1, rel=1e-12)
        np.testing.assert_allclose(o2.logits, o1.logits, rtol=1e-10)
        for k in params:
            np.testing.assert_allclose(p2[k], p1[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_absent_connections_stay_absent():
    spec = RNNSpec(2, H, 2, setup="many_to_many")
    params, X, Y, _, _ = problem(spec, 6, 4, 6, False)
    p = sparse(params, CHAIN)
    opt = optim.Adam(lr=0.05)
    st = opt.init(p)
    for _ in range(3):
        snap.online_update(p, X, Y, spec, opt=opt, opt_state=st, n=2, connectivity=CHAIN)
    assert np.all(p["l0.W_hh"][~CHAIN] == 0)
    assert not np.allclose(p["l0.W_hh"][CHAIN], params["l0.W_hh"][CHAIN])


def test_refusals():
    spec = RNNSpec(2, H, 2)
    params, X, Y, _, _ = problem(spec, 0, 2, 3, False)
    with pytest.raises(ValueError, match="nonzero entries where connectivity is False"):
        snap.value_and_grad(params, X, Y, spec, connectivity=CHAIN)
    with pytest.raises(ValueError, match="bool \\(H, H\\)"):
        snap.value_and_grad(params, X, Y, spec, connectivity=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="connectivity must be None"):
        snap.value_and_grad(params, X, Y, spec, connectivity="dense")
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        snap.value_and_grad(params, X, Y, spec, n=0)
    with pytest.raises(SensitivityMemoryError, match="SnAp-2 needs"):
        snap.value_and_grad(params, X, Y, spec, n=2, max_bytes=1000)
    stacked = RNNSpec(2, H, 2, num_layers=2)
    ps, Xs, Ys, _, _ = problem(stacked, 0, 2, 3, False)
    with pytest.raises(ValueError, match="one recurrent layer"):
        snap.value_and_grad(ps, Xs, Ys, stacked)
    assert snap.snap_bytes(spec, 2, 1) == 2 * 2 * H * (H + 2 + 1) * 8
