"""The fast paths of issue 6 compute what the public functions compute (docs/performance.md).

``rnnlab.workspace.Workspace`` (preallocated buffers, thread options, subnormals flushed), the
in-place and blocked variants of ``cell.forward``/``cell.backward``, the sorted scatter-add of
index inputs and the buffered softmax cross-entropy are checked against the public path, bit for
bit where the operations are the same.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnlab import RNNSpec, activations, cell, init_params, losses, parallel
from rnnlab import network as net

from conftest import SETUPS as GRID
from conftest import problem

SETUPS = GRID + [dict(setup="many_to_many", input_kind="index"),
                 dict(setup="many_to_one", input_kind="index")]
ALL_OPTIONS = [net.ThreadOption(1, 1), net.ThreadOption(1, 2), net.ThreadOption(2, 2),
               net.ThreadOption(2, 1), net.ThreadOption(1, 1, 2), net.ThreadOption(1, 1, 3)]


def _spec(setup: dict, **kw) -> RNNSpec:
    D = 7 if setup.get("input_kind") == "index" else 3
    return RNNSpec(D, 5, 4, **setup, **kw)


def _assert_same(ws_grads: dict, g: net.Gradients) -> None:
    assert list(ws_grads) == list(g.params)
    for k, v in g.params.items():
        assert ws_grads[k].dtype == v.dtype and ws_grads[k].shape == v.shape
        np.testing.assert_array_equal(ws_grads[k], v, err_msg=k)


@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid", "identity"])
def test_workspace_equals_public_path(setup: int, act: str) -> None:
    """Same gradients bit for bit, dL/dh0 too, for every set-up, layers, directions, masks."""
    for layers, bidir, masked, dtype in itertools.product(
            (1, 2), (False, True), (False, True), (np.float64, np.float32)):
        spec = _spec(SETUPS[setup], num_layers=layers, bidirectional=bidir, nonlinearity=act,
                     loss="softmax_ce" if act != "identity" else "identity_mse")
        B, T = 5, 6
        params, X, Y, mask, h0 = problem(spec, layers + 2 * bidir, B, T, masked)
        params = {k: v.astype(dtype) for k, v in params.items()}
        steps = T if spec.setup == "one_to_many" else None
        loss, g, out = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps)
        ws = net.Workspace(spec, input_grad=True, kernels=False)
        for _ in range(3):                       # buffers reused: same answer every time
            wl, wg = ws.value_and_grad(params, X, Y, h0=h0, mask=mask, steps=steps)
            _assert_same(wg, g)
            assert wl == pytest.approx(loss, rel=1e-6 if dtype == np.float32 else 1e-13)
            np.testing.assert_array_equal(ws.h0_grad, g.h0)
            if g.X is None:
                assert ws.input_grad is None
            else:
                np.testing.assert_array_equal(ws.input_grad, g.X)
            valid = (slice(None),) if mask is None or not spec.per_step_output else (mask,)
            np.testing.assert_array_equal(ws.logits[valid], out.logits[valid])


@pytest.mark.parametrize("option", ALL_OPTIONS, ids=str)
def test_every_thread_option_gives_the_same_numbers(option: net.ThreadOption) -> None:
    spec = RNNSpec(3, 6, 4, num_layers=2, bidirectional=True, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 9, 7, 5, True)
    _, g, _ = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    ws = net.Workspace(spec, threads=None, kernels=False)
    ws._thread_option = lambda: option                          # type: ignore[method-assign]
    _, wg = ws.value_and_grad(params, X, Y, h0=h0, mask=mask)
    _assert_same(wg, g)
    np.testing.assert_array_equal(ws.h0_grad, g.h0)


def test_workspace_auto_threads_restores_the_blas_thread_count() -> None:
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_limits

    spec = RNNSpec(3, 8, 2)
    params, X, Y, _, _ = problem(spec, 0, 6, 5, False)
    with threadpool_limits(2, user_api="blas"):
        before = parallel._BLAS.get()
        ws = net.Workspace(spec)
        for _ in range(12):
            ws.value_and_grad(params, X, Y)
        assert parallel._BLAS.get() == before
        assert ws.thread_choice in ws._tuner.options
        with parallel._BLAS.limit(1):
            assert parallel._BLAS.get() == 1
        assert parallel._BLAS.get() == before


def test_workspace_results_are_overwritten_and_shapes_change() -> None:
    spec = RNNSpec(3, 4, 2)
    params = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    rng = np.random.default_rng(1)
    ws = net.Workspace(spec)
    X1, Y1 = rng.standard_normal((4, 5, 3)), rng.integers(0, 2, 4)
    _, g1 = ws.value_and_grad(params, X1, Y1)
    kept = {k: v.copy() for k, v in g1.items()}
    X2, Y2 = rng.standard_normal((4, 5, 3)), rng.integers(0, 2, 4)
    _, g2 = ws.value_and_grad(params, X2, Y2)
    assert g1["l0.W_hh"] is g2["l0.W_hh"]                      # the same buffer, new numbers
    assert not np.array_equal(kept["l0.W_hh"], g2["l0.W_hh"])
    X3, Y3 = rng.standard_normal((2, 3, 3)), rng.integers(0, 2, 2)   # new shape: new buffers
    _, g3 = ws.value_and_grad(params, X3, Y3)
    _, ref, _ = net.value_and_grad(params, X3, Y3, spec)
    _assert_same(g3, ref)


def test_workspace_validates_like_the_public_functions() -> None:
    spec = RNNSpec(3, 4, 5)
    params = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    ws = net.Workspace(spec)
    X = np.zeros((2, 6, 3))
    with pytest.raises(ValueError, match=r"X must be \(B, T, 3\); got shape \(2, 6, 4\)"):
        ws.value_and_grad(params, np.zeros((2, 6, 4)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        ws.value_and_grad(params, np.full((2, 6, 3), np.nan), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="contains NaN or inf"):
        ws.value_and_grad({**params, "l0.b_h": np.full(4, np.inf)}, X, np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 5\)"):
        ws.value_and_grad(params, X, np.array([0, 5]))
    with pytest.raises(ValueError, match="threads must be"):
        net.Workspace(spec, threads=0)
    with pytest.raises(TypeError, match="spec must be an RNNSpec"):
        net.Workspace("spec")                                   # type: ignore[arg-type]


# ----------------------------------------------------------------------------- subnormals


def _vanishing_problem() -> tuple[RNNSpec, dict, np.ndarray, np.ndarray]:
    """A long float32 sequence whose gradient underflows through the subnormal range."""
    spec = RNNSpec(1, 16, 3)
    rng = np.random.default_rng(0)
    params = init_params(spec, rng, dtype=np.float32)
    params["l0.W_hh"] *= np.float32(0.3)
    X = rng.random((8, 300, 1), dtype=np.float32)
    Y = rng.integers(0, 3, 8)
    return spec, params, X, Y


def test_flushing_subnormals_changes_only_subnormal_numbers() -> None:
    spec, params, X, Y = _vanishing_problem()
    _, g, _ = net.value_and_grad(params, X, Y, spec)
    ieee = net.Workspace(spec, flush_denormals=False, kernels=False)
    _, gi = ieee.value_and_grad(params, X, Y)
    _assert_same(gi, g)                                         # not flushed: identical
    dZ_ieee = ieee._bufs.dZ.copy()
    tiny = np.finfo(np.float32).tiny
    assert np.any((dZ_ieee != 0) & (np.abs(dZ_ieee) < tiny))   # the problem does reach them
    ws = net.Workspace(spec, kernels=False)
    _, gw = ws.value_and_grad(params, X, Y)
    dZ = ws._bufs.dZ
    if not parallel._FlushDenormals._probe():
        pytest.skip("no FTZ/DAZ on this platform")
    assert not np.any((dZ != 0) & (np.abs(dZ) < tiny))         # flushed: no subnormal left
    # numbers far from the subnormal range are untouched; near it they move by a few tiny
    big = np.abs(dZ_ieee) > 1e-30
    np.testing.assert_array_equal(dZ[big], dZ_ieee[big])
    np.testing.assert_allclose(dZ, dZ_ieee, rtol=0, atol=100 * tiny)
    for k in g.params:                                          # the sums may lose ~1e-38 terms
        np.testing.assert_allclose(gw[k], g.params[k], rtol=1e-6, atol=1e-30)
    # the control register is restored: subnormal arithmetic works again after the call
    assert np.float32(1e-39) * np.float32(1.0) != 0.0


def test_flush_context_restores_the_environment() -> None:
    f = parallel._FlushDenormals()
    if not f.ok:
        pytest.skip("no FTZ/DAZ on this platform")
    with f:
        assert np.float32(1e-39) * np.float32(1.0) == 0.0
    assert np.float32(1e-39) * np.float32(1.0) != 0.0
    with pytest.raises(RuntimeError), f:
        raise RuntimeError
    assert np.float32(1e-39) * np.float32(1.0) != 0.0


# ----------------------------------------------------------------------------- the cell


def _cell_problem(seed: int = 0, B: int = 4, T: int = 9, H: int = 5):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((T, B, H))
    W = rng.standard_normal((H, H)) * 0.5
    h0 = rng.standard_normal((B, H))
    dH = rng.standard_normal((T, B, H))
    mask = rng.random((T, B)) > 0.3
    mask[0] = True
    return A, W, h0, dH, mask


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid", "identity"])
@pytest.mark.parametrize("block", [1, 3, 1 << 16])
def test_cell_in_place_and_blocked_variants(reverse: bool, masked: bool, act: str,
                                            block: int) -> None:
    """The projection in the state slots, dZ into a given buffer and f' computed a block of
    steps at a time give the numbers of the plain loops."""
    a = activations.get(act)
    A, W, h0, dH, mask = _cell_problem()
    m = mask if masked else None
    ref = cell.forward(A, W, a, h0, reverse=reverse, mask=m)          # separate A
    buf = np.empty_like(ref)
    cell.outputs(buf, reverse)[...] = A                               # A in the state slots
    got = cell.forward(cell.outputs(buf, reverse), W, a, h0, reverse=reverse, mask=m, out=buf)
    assert got is buf
    np.testing.assert_array_equal(got, ref)
    # the definition, step by step (eqs. 16-18), with f' from the states
    Hs, Hp = cell.outputs(ref, reverse), cell.previous(ref, reverse)
    dnext, dZ_def = np.zeros_like(h0), np.zeros_like(A)
    for t in (range(A.shape[0]) if reverse else range(A.shape[0] - 1, -1, -1)):
        g = dH[t] + dnext
        d = g * a.grad_from_output(Hs[t])
        if m is not None:
            d[~m[t]] = 0.0
        dZ_def[t] = d
        dnext = d @ W.T + (np.where(~m[t][:, None], g, 0.0) if m is not None else 0.0)
    assert Hp.shape == Hs.shape
    cell._FPRIME_BLOCK, saved = block * A.shape[1] * A.shape[2], cell._FPRIME_BLOCK
    try:
        out = np.empty_like(A)
        dZ, dh0 = cell.backward(dH, got, W, a, reverse=reverse, mask=m, out=out)
    finally:
        cell._FPRIME_BLOCK = saved
    assert dZ is out
    np.testing.assert_allclose(dZ, dZ_def, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dh0, dnext, rtol=1e-13, atol=1e-15)


def test_step_accepts_the_projection_in_its_output() -> None:
    a = activations.get("tanh")
    A, W, h0, _, _ = _cell_problem()
    ref = cell.step(A[0], h0, W, a, out=np.empty_like(h0))
    z = A[0].copy()
    assert cell.step(z, h0, W, a, out=z) is z
    np.testing.assert_array_equal(z, ref)


@pytest.mark.parametrize("reverse", [False, True])
def test_backward_stops_exactly_where_the_gradient_is_zero(reverse: bool) -> None:
    a = activations.get("tanh")
    A, W, h0, _, mask = _cell_problem(T=40)
    Hbuf = cell.forward(A, W, a, h0, reverse=reverse, mask=mask)
    dZ, dh0 = cell.backward(None, Hbuf, W, a, reverse=reverse, mask=mask)
    assert not dZ.any() and not dh0.any()                      # nothing arrives: all zero
    dl = np.random.default_rng(3).standard_normal(h0.shape)
    W0 = np.zeros_like(W)                                       # dnext = dZ W^T = 0 after 1 step
    Hz = cell.forward(A, W0, a, h0, reverse=reverse)
    cell._FPRIME_BLOCK, saved = 4 * 5, cell._FPRIME_BLOCK      # one step per block
    try:
        dZ, dh0 = cell.backward(None, Hz, W0, a, reverse=reverse, dh_last=dl)
    finally:
        cell._FPRIME_BLOCK = saved
    last = 0 if reverse else -1
    np.testing.assert_array_equal(dZ[last], dl * (1 - cell.outputs(Hz, reverse)[last] ** 2))
    rest = dZ[1:] if reverse else dZ[:-1]
    assert not rest.any() and not dh0.any()


# ----------------------------------------------------------------------------- index inputs, loss


@pytest.mark.parametrize("V,n", [(5, 400), (300, 200), (1, 7)])
def test_sorted_scatter_add_is_np_add_at(V: int, n: int) -> None:
    rng = np.random.default_rng(V)
    ids = rng.integers(0, V, n).astype(np.intp)
    rows = rng.standard_normal((n, 6)).astype(np.float32)
    ref = np.zeros((V, 6), np.float32)
    np.add.at(ref, ids, rows)
    got = net._scatter_rows(ids, rows, np.full((V, 6), np.nan, np.float32))
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_buffered_softmax_ce_is_the_formula(reduction: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((50, 7)) * 4).astype(dtype)
    y = rng.integers(0, 7, 50)
    logp = losses.log_softmax(z)                   # the definition, eqs. (8)-(10) and (15)
    dz = np.exp(logp)
    dz[np.arange(50), y] -= 1.0
    value = -float(logp[np.arange(50), y].sum())
    denom = 50.0 if reduction == "mean" else 1.0
    res = losses.loss_and_grad("softmax_ce", z, y, reduction)
    np.testing.assert_array_equal(res.dz, dz / denom if denom != 1.0 else dz)
    assert res.value == value / denom


@pytest.mark.parametrize("split", [2, 3])
@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
def test_split_over_threads_gives_the_same_gradients(setup: int, split: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every loop and product cut into pieces (thresholds lowered so that small problems are
    cut too).  The recurrence of each batch row is unchanged; a product's pieces may take other
    BLAS kernels than the whole (tiny pieces do), so the sums agree to rounding, not bit for bit
    (docs/performance.md)."""
    from rnnlab import parallel

    monkeypatch.setattr(parallel, "_MIN_LOOP_ROWS", 1)
    monkeypatch.setattr(parallel, "_MIN_PIECE_FLOP", 1.0)
    monkeypatch.setattr(parallel, "_ROW_ALIGN", 1)
    calls: list[int] = []
    real_map = parallel.Runner._map

    def counting_map(self, fn, pieces, contexts):             # type: ignore[no-untyped-def]
        calls.append(len(pieces))
        return real_map(self, fn, pieces, contexts)

    monkeypatch.setattr(parallel.Runner, "_map", counting_map)
    for bidir, masked, dtype in itertools.product((False, True), (False, True),
                                                  (np.float64, np.float32)):
        spec = _spec(SETUPS[setup], num_layers=2, bidirectional=bidir)
        params, X, Y, mask, h0 = problem(spec, 3 + bidir, 7, 5, masked)
        params = {k: v.astype(dtype) for k, v in params.items()}
        steps = 5 if spec.setup == "one_to_many" else None
        _, g, _ = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps)
        ws = net.Workspace(spec, threads=None, input_grad=True, kernels=False)
        ws._thread_option = lambda: net.ThreadOption(1, 1, split)  # type: ignore[method-assign]
        calls.clear()
        _, wg = ws.value_and_grad(params, X, Y, h0=h0, mask=mask, steps=steps)
        assert calls and all(n == split for n in calls)        # it was cut, into `split` pieces
        tol = dict(rtol=1e-12, atol=1e-15) if dtype == np.float64 else dict(rtol=2e-5, atol=1e-7)
        assert list(wg) == list(g.params)
        for k, v in g.params.items():
            np.testing.assert_allclose(wg[k], v, **tol, err_msg=k)
        np.testing.assert_allclose(ws.h0_grad, g.h0, **tol)
        if g.X is not None:
            np.testing.assert_allclose(ws.input_grad, g.X, **tol)


def test_split_recurrence_changes_no_bit_of_the_states() -> None:
    """The rows of a batch never interact: the loops cut by rows give the same states and dZ
    (bit for bit with NumPy's OpenBLAS at these shapes)."""
    from rnnlab.parallel import Runner

    rng = np.random.default_rng(5)
    T, B, H = 6, 40, 32
    act = activations.get("tanh")
    W = rng.standard_normal((H, H)) / np.sqrt(H)
    A = rng.standard_normal((T, B, H))
    h0 = rng.standard_normal((B, H))
    whole = cell.forward(A, W, act, h0)
    pieces = np.empty_like(whole)
    Runner(None, split=2).recurrence(B, lambda lo, hi: cell.forward(
        A[:, lo:hi], W, act, h0[lo:hi], out=pieces[:, lo:hi]))
    np.testing.assert_array_equal(pieces, whole)
    dH = rng.standard_normal((T, B, H))
    dZ, dh0 = cell.backward(dH, whole, W, act)
    dZp, dh0p = np.empty_like(dZ), np.empty_like(dh0)

    def back(lo: int, hi: int) -> None:
        _, dh0p[lo:hi] = cell.backward(dH[:, lo:hi], whole[:, lo:hi], W, act,
                                       out=dZp[:, lo:hi])

    Runner(None, split=2).recurrence(B, back)
    np.testing.assert_array_equal(dZp, dZ)
    np.testing.assert_array_equal(dh0p, dh0)


