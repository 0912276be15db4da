"""Truncated BPTT (docs/derivation.md, section 11): equal to BPTT when nothing is truncated, and
equal to finite differences of its own truncated objective (eq. 24) when something is."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnlab import RNNSpec, activations, losses, tbptt
from rnnlab import network as net
from rnnlab.diagnostics import finite_difference, relative_error

from conftest import ACTS, LOSSES, SETUPS, problem

SETUP_IDS = ["-".join(s.values()) for s in SETUPS]
B, T, D, H, O = 3, 7, 2, 3, 3


def _steps(spec: RNNSpec) -> int | None:
    return T if spec.setup == "one_to_many" else None


def _assert_same(a: tuple, b: tuple, tol: float) -> None:
    (va, ga, oa), (vb, gb, ob) = a, b
    assert abs(va - vb) <= tol * abs(va)
    for k in ga.params:
        assert relative_error(ga.params[k], gb.params[k]) < tol, k
    assert relative_error(ga.h0, gb.h0) < tol
    if ga.X is None:
        assert gb.X is None
    else:
        assert relative_error(ga.X, gb.X) < tol
    for f in ("y", "logits", "h_n"):
        assert relative_error(getattr(oa, f), getattr(ob, f)) < tol, f


# ----------------------------------------------------------------------------- equal to BPTT


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=SETUP_IDS)
def test_untruncated_equals_bptt(act: str, setup: int) -> None:
    """k1 = k2 = T is BPTT; so is any k1 with k2 >= T (every window reaches step 0)."""
    for i, (layers, masked) in enumerate(itertools.product((1, 2, 3), (False, True))):
        spec = RNNSpec(D, H, O, num_layers=layers, nonlinearity=act, loss=LOSSES[i % 4],
                       reduction="sum" if layers == 2 else "mean", **SETUPS[setup])
        params, X, Y, mask, h0 = problem(spec, i, B, T, masked)
        ref = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=_steps(spec))
        for k1, k2 in [(T, T), (T + 3, T + 3), (1, T), (2, T), (3, T + 5)]:
            got = tbptt.value_and_grad(params, X, Y, spec, k1=k1, k2=k2, h0=h0, mask=mask,
                                       steps=_steps(spec))
            _assert_same(ref, got, 1e-10)


@pytest.mark.parametrize("setup", ["many_to_one", "many_to_many"])
def test_index_inputs_untruncated(setup: str) -> None:
    spec = RNNSpec(5, H, O, num_layers=2, setup=setup, input_kind="index")
    params, X, Y, mask, h0 = problem(spec, 3, B, T, True)
    ref = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    got = tbptt.value_and_grad(params, X, Y, spec, k1=T, k2=T, h0=h0, mask=mask)
    _assert_same(ref, got, 1e-10)


def test_lengths_and_default_h0() -> None:
    spec = RNNSpec(D, H, O, setup="many_to_many")
    params, X, Y, _, _ = problem(spec, 4, B, T, False)
    lengths = np.array([T, 2, 5])
    ref = net.value_and_grad(params, X, Y, spec, lengths=lengths)
    _assert_same(ref, tbptt.value_and_grad(params, X, Y, spec, k1=T, k2=T, lengths=lengths),
                 1e-10)


# ------------------------------------------------------------------------- the truncated objective


def _expand(spec: RNNSpec, X: np.ndarray) -> np.ndarray:
    """The time-first input sequence (T, B, D) or ids (T, B), one-to-many expanded."""
    if spec.setup != "one_to_many":
        return np.swapaxes(X, 0, 1)
    seq = np.zeros((T,) + X.shape, dtype=X.dtype)
    if spec.feed == "every":
        seq[:] = X
    else:
        seq[0] = X
    return seq


def truncated_objective(params, spec, X, Y, mask, h0, frozen, k1, k2, signs):
    """Eq. (24) written out plainly: each window's loss, run from its start state; the start
    states of windows after step 0 are the constants ``frozen[l][s]`` (= H_{s-1} at the point of
    linearisation), a window starting at 0 reads ``h0`` itself.  ``signs`` collects the side of
    0 every pre-activation and logit lies on (for the ReLU kinks)."""
    f = activations.get(spec.nonlinearity).f
    x = _expand(spec, X)
    per_step = spec.per_step_output
    y = np.asarray(Y)
    if spec.setup == "many_to_one" and per_step:
        y = np.broadcast_to(y[:, None], (B, T) + y.shape[1:])
    m = np.ones((B, T), dtype=bool) if mask is None else mask
    total = 0.0
    for start, score, stop in tbptt.windows(T, k1, k2):
        if not per_step and stop < T:
            continue
        h = [(h0[layer] if start == 0 else frozen[layer][start]).copy()
             for layer in range(spec.num_layers)]
        for t in range(start, stop):
            inp = x[t]
            for layer in range(spec.num_layers):
                p = f"l{layer}"
                a = params[f"{p}.W_xh"][inp] if inp.ndim == 1 else inp @ params[f"{p}.W_xh"]
                z = a + h[layer] @ params[f"{p}.W_hh"] + params[f"{p}.b_h"]
                signs.append((z[m[:, t]] > 0).tobytes())
                h[layer] = np.where(m[:, t, None], f(z), h[layer])
                inp = h[layer]
            if per_step and t >= score and m[:, t].any():
                zt = inp @ params["W_hy"] + params["b_y"]
                signs.append((zt > 0).tobytes())
                total += losses.loss_and_grad(spec.loss, zt[m[:, t]], y[:, t][m[:, t]],
                                              "sum").value
        if not per_step:
            zt = h[-1] @ params["W_hy"] + params["b_y"]
            signs.append((zt > 0).tobytes())
            total += losses.loss_and_grad(spec.loss, zt, y, "sum").value
    n = (int(m.sum()) if per_step else B) * (1 if spec.loss == "softmax_ce" else O)
    return total / (n if spec.reduction == "mean" else 1.0)


def _fd_check(spec: RNNSpec, masked: bool, k1: int, k2: int) -> None:
    for seed in range(20):
        params, X, Y, mask, h0 = problem(spec, seed, B, T, masked)
        if spec.input_kind != "index":
            X = np.asarray(X, dtype=np.float64)
        _, cache = net.forward(params, X, spec, h0=h0, mask=mask, steps=_steps(spec))
        frozen = [hb.copy() for hb in cache.hbufs]        # frozen[l][s] = H_{s-1}
        base: list[bytes] = []
        truncated_objective(params, spec, X, Y, mask, h0, frozen, k1, k2, base)
        crossed = False

        def f() -> float:
            nonlocal crossed
            signs: list[bytes] = []
            v = truncated_objective(params, spec, X, Y, mask, h0, frozen, k1, k2, signs)  # noqa: B023
            crossed |= signs != base  # noqa: B023
            return v

        val, g, _ = tbptt.value_and_grad(params, X, Y, spec, k1=k1, k2=k2, h0=h0, mask=mask,
                                         steps=_steps(spec))
        fd = {k: finite_difference(f, p) for k, p in params.items()}
        fd_h0 = finite_difference(f, h0)
        fd_X = None if spec.input_kind == "index" else finite_difference(f, X)
        if crossed:
            continue
        ref = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=_steps(spec))[0]
        assert abs(val - ref) < 1e-12 * abs(ref)          # the loss is the network's, untruncated
        for k in params:
            assert relative_error(g.params[k], fd[k], 1e-5) < 1e-6, (k, seed)
        assert relative_error(g.h0, fd_h0, 1e-5) < 1e-6
        if fd_X is not None:
            assert g.X is not None and relative_error(g.X, fd_X, 1e-5) < 1e-6
        return
    pytest.fail("every seed moved a ReLU pre-activation across 0")


KS = [(1, 1), (2, 2), (2, 3), (2, 5), (3, 4)]


@pytest.mark.parametrize("k1,k2", KS)
@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=SETUP_IDS)
def test_truncated_gradient_matches_finite_differences(setup: int, k1: int, k2: int) -> None:
    """T = 7 is not a multiple of k1, so the last window is short; k2 > k1 overlaps windows."""
    for i, layers in enumerate((1, 2, 3)):
        act = ACTS[(setup + layers + k2) % 4]
        spec = RNNSpec(D, H, O, num_layers=layers, nonlinearity=act, loss=LOSSES[(i + k1) % 4],
                       reduction="sum" if i == 1 else "mean", **SETUPS[setup])
        _fd_check(spec, masked=(i + k2) % 2 == 0, k1=k1, k2=k2)


def test_many_to_one_short_k2_and_index_inputs() -> None:
    """Many-to-one scores only the final state, so k2 < k1 is allowed there."""
    _fd_check(RNNSpec(D, H, O, num_layers=2), masked=True, k1=4, k2=2)
    _fd_check(RNNSpec(5, H, O, num_layers=2, setup="many_to_many", input_kind="index"),
              masked=True, k1=2, k2=3)


def test_truncation_changes_the_gradient() -> None:
    spec = RNNSpec(D, H, O, setup="many_to_many")
    params, X, Y, _, h0 = problem(spec, 0, B, T, False)
    _, g_full, _ = net.value_and_grad(params, X, Y, spec, h0=h0)
    _, g_tr, _ = tbptt.value_and_grad(params, X, Y, spec, k1=2, k2=2, h0=h0)
    assert relative_error(g_full.params["l0.W_hh"], g_tr.params["l0.W_hh"]) > 1e-3
    assert relative_error(g_full.params["W_hy"], g_tr.params["W_hy"]) < 1e-12   # head: exact


# ----------------------------------------------------------------------------- stateful streams


def test_stateful_chunks_equal_one_call() -> None:
    """Two minibatches with the state carried equal one call when the cut is a window edge."""
    spec = RNNSpec(D, H, O, num_layers=2, setup="many_to_many", reduction="sum")
    params, X, Y, _, h0 = problem(spec, 5, B, 8, False)
    v, g, out = tbptt.value_and_grad(params, X, Y, spec, k1=2, k2=2, h0=h0)
    v1, g1, o1 = tbptt.value_and_grad(params, X[:, :4], Y[:, :4], spec, k1=2, k2=2, h0=h0)
    v2, g2, o2 = tbptt.value_and_grad(params, X[:, 4:], Y[:, 4:], spec, k1=2, k2=2,
                                      h0=tbptt.carry(o1.h_n))
    assert abs(v - (v1 + v2)) < 1e-12 * abs(v)
    for k in params:
        assert relative_error(g.params[k], g1.params[k] + g2.params[k]) < 1e-12
    assert relative_error(out.h_n, o2.h_n) < 1e-14


def test_carry_resets_rows_and_copies() -> None:
    h = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4) + 1
    c = tbptt.carry(h, reset=np.array([False, True, False]))
    assert np.all(c[:, 1] == 0) and np.array_equal(c[:, [0, 2]], h[:, [0, 2]])
    assert not np.shares_memory(c, h) and h.min() == 1
    with pytest.raises(ValueError, match=r"reset must be a \(3,\) bool"):
        tbptt.carry(h, reset=np.array([0, 1, 0]))


def test_windows() -> None:
    assert tbptt.windows(7, 3, 5) == [(0, 0, 3), (1, 3, 6), (2, 6, 7)]
    assert tbptt.windows(4, 2, 2) == [(0, 0, 2), (2, 2, 4)]


# ----------------------------------------------------------------------------- errors


def test_errors() -> None:
    spec = RNNSpec(D, H, O, setup="many_to_many")
    params, X, Y, _, _ = problem(spec, 0, B, T, False)
    with pytest.raises(ValueError, match=r"k1 must be >= 1; got 0"):
        tbptt.value_and_grad(params, X, Y, spec, k1=0, k2=2)
    with pytest.raises(ValueError, match=r"k2 must be >= 1; got -1"):
        tbptt.value_and_grad(params, X, Y, spec, k1=2, k2=-1)
    with pytest.raises(TypeError, match=r"k1 must be an int"):
        tbptt.value_and_grad(params, X, Y, spec, k1=2.0, k2=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"k2 \(=2\) must be >= k1 \(=3\).*never reach"):
        tbptt.value_and_grad(params, X, Y, spec, k1=3, k2=2)
    bi = RNNSpec(D, H, O, setup="many_to_many", bidirectional=True)
    pb, Xb, Yb, _, _ = problem(bi, 0, B, T, False)
    with pytest.raises(ValueError, match=r"truncated BPTT needs a unidirectional network"):
        tbptt.value_and_grad(pb, Xb, Yb, bi, k1=2, k2=2)
    with pytest.raises(ValueError, match=r"h0 must be \(num_layers \* num_directions, B, H\)"):
        tbptt.value_and_grad(params, X, Y, spec, k1=2, k2=2, h0=np.zeros((1, B, H + 1)))
    with pytest.raises(ValueError, match=r"X must be \(B, T, 2\)"):
        tbptt.value_and_grad(params, X[:, :, :1], Y, spec, k1=2, k2=2)
    with pytest.raises(ValueError, match=r"class labels must have shape"):
        tbptt.value_and_grad(params, X, Y[:, :-1], spec, k1=2, k2=2)
