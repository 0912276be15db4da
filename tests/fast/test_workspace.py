"""The fast engine computes what the reference engine computes (docs/architecture.md).

:class:`rnnlab.fast.workspace.Workspace` (preallocated buffers, thread options, subnormals
flushed), the sorted scatter-add of index inputs and the buffered softmax cross-entropy, against
the public functions on the shared grid.  (The fast loops against the reference cell:
``test_loops.py``.)
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnlab import RNNSpec, init_params, losses
from rnnlab import network as net
from rnnlab.fast import cpu, pool
from rnnlab.fast import network as fast_network
from rnnlab.fast.tuner import ThreadOption
from rnnlab.fast.workspace import Workspace

from conftest import SETUPS as GRID
from conftest import assert_close, assert_grads_close, problem

SETUPS = GRID + [dict(setup="many_to_many", input_kind="index"),
                 dict(setup="many_to_one", input_kind="index")]
ALL_OPTIONS = [ThreadOption(1, 1), ThreadOption(1, 2), ThreadOption(2, 2),
               ThreadOption(2, 1), ThreadOption(1, 1, 2), ThreadOption(1, 1, 3)]


def _spec(setup: dict, **kw) -> RNNSpec:
    D = 7 if setup.get("input_kind") == "index" else 3
    return RNNSpec(D, 5, 4, **setup, **kw)


@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid", "identity"])
def test_workspace_equals_public_path(setup: int, act: str) -> None:
    """The same gradients to rounding, dL/dh0, dL/dX and the logits too, for every set-up,
    layers, directions, masks, in float64 and float32 (without the compiled kernels: with them,
    test_kernels.py)."""
    for layers, bidir, masked, dtype in itertools.product(
            (1, 2), (False, True), (False, True), (np.float64, np.float32)):
        spec = _spec(SETUPS[setup], num_layers=layers, bidirectional=bidir, nonlinearity=act,
                     loss="softmax_ce" if act != "identity" else "identity_mse")
        B, T = 5, 6
        params, X, Y, mask, h0 = problem(spec, layers + 2 * bidir, B, T, masked)
        params = {k: v.astype(dtype) for k, v in params.items()}
        steps = T if spec.setup == "one_to_many" else None
        loss, g, out = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps)
        ws = Workspace(spec, input_grad=True, kernels=False)
        tol = 1e-11 if dtype == np.float64 else 2e-5
        first = None
        for _ in range(3):                       # buffers reused: same answer every time
            wl, wg = ws.value_and_grad(params, X, Y, h0=h0, mask=mask, steps=steps)
            assert_grads_close(wg, g.params, dtype, str(spec))
            assert wl == pytest.approx(loss, rel=1e-6 if dtype == np.float32 else 1e-13)
            assert_close(ws.h0_grad, g.h0, tol, "dh0")
            if g.X is None:
                assert ws.input_grad is None
            else:
                assert_close(ws.input_grad, g.X, tol, "dX")
            valid = (slice(None),) if mask is None or not spec.per_step_output else (mask,)
            assert_close(ws.logits[valid], out.logits[valid], tol, "logits")
            if first is None:
                first = {k: v.copy() for k, v in wg.items()}
            else:
                for k, v in first.items():
                    np.testing.assert_array_equal(wg[k], v, err_msg=k)


@pytest.mark.parametrize("option", ALL_OPTIONS, ids=str)
def test_every_thread_option_gives_the_same_numbers(option: ThreadOption) -> None:
    spec = RNNSpec(3, 6, 4, num_layers=2, bidirectional=True, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 9, 7, 5, True)
    _, g, _ = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    ws = Workspace(spec, threads=None, kernels=False)
    ws._thread_option = lambda: option                          # type: ignore[method-assign]
    _, wg = ws.value_and_grad(params, X, Y, h0=h0, mask=mask)
    assert_grads_close(wg, g.params, np.float64)
    assert_close(ws.h0_grad, g.h0, 1e-11)


def test_workspace_auto_threads_restores_the_blas_thread_count() -> None:
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_limits

    spec = RNNSpec(3, 8, 2)
    params, X, Y, _, _ = problem(spec, 0, 6, 5, False)
    with threadpool_limits(2, user_api="blas"):
        before = cpu.BLAS.get()
        ws = Workspace(spec)
        for _ in range(12):
            ws.value_and_grad(params, X, Y)
        assert cpu.BLAS.get() == before
        assert ws.thread_choice in ws._tuner.options
        with cpu.BLAS.limit(1):
            assert cpu.BLAS.get() == 1
        assert cpu.BLAS.get() == before


def test_workspace_results_are_overwritten_and_shapes_change() -> None:
    spec = RNNSpec(3, 4, 2)
    params = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    rng = np.random.default_rng(1)
    ws = Workspace(spec)
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
    assert_grads_close(g3, ref.params, np.float64)


def test_workspace_validates_like_the_public_functions() -> None:
    spec = RNNSpec(3, 4, 5)
    params = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    ws = Workspace(spec)
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
        Workspace(spec, threads=0)
    with pytest.raises(TypeError, match="spec must be an RNNSpec"):
        Workspace("spec")                                   # type: ignore[arg-type]


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
    ieee = Workspace(spec, flush_denormals=False, kernels=False)
    _, gi = ieee.value_and_grad(params, X, Y)
    assert_grads_close(gi, g.params, np.float32)                # not flushed
    dZ_ieee = ieee._bufs.dZ.copy()
    tiny = np.finfo(np.float32).tiny
    assert np.any((dZ_ieee != 0) & (np.abs(dZ_ieee) < tiny))   # the problem does reach them
    ws = Workspace(spec, kernels=False)
    _, gw = ws.value_and_grad(params, X, Y)
    dZ = ws._bufs.dZ
    if not cpu.FlushDenormals.usable():
        pytest.skip("no FTZ/DAZ on this platform")
    assert not np.any((dZ != 0) & (np.abs(dZ) < tiny))         # flushed: no subnormal left
    # numbers far from the subnormal range are untouched; near it they move by a few tiny
    big = np.abs(dZ_ieee) > 1e-30
    np.testing.assert_array_equal(dZ[big], dZ_ieee[big])
    np.testing.assert_allclose(dZ, dZ_ieee, rtol=0, atol=100 * tiny)
    for k in g.params:                                          # the sums may lose ~1e-38 terms
        np.testing.assert_allclose(gw[k], gi[k], rtol=1e-6, atol=1e-30)
    # the control register is restored: subnormal arithmetic works again after the call
    assert np.float32(1e-39) * np.float32(1.0) != 0.0


def test_flush_context_restores_the_environment() -> None:
    f = cpu.FlushDenormals()
    if not f.ok:
        pytest.skip("no FTZ/DAZ on this platform")
    with f:
        assert np.float32(1e-39) * np.float32(1.0) == 0.0
    assert np.float32(1e-39) * np.float32(1.0) != 0.0
    with pytest.raises(RuntimeError), f:
        raise RuntimeError
    assert np.float32(1e-39) * np.float32(1.0) != 0.0


# ----------------------------------------------------------------------------- index inputs, loss


@pytest.mark.parametrize("V,n", [(5, 400), (300, 200), (1, 7)])
def test_sorted_scatter_add_is_np_add_at(V: int, n: int) -> None:
    rng = np.random.default_rng(V)
    ids = rng.integers(0, V, n).astype(np.intp)
    rows = rng.standard_normal((n, 6)).astype(np.float32)
    ref = np.zeros((V, 6), np.float32)
    np.add.at(ref, ids, rows)
    got = fast_network.scatter_rows(ids, rows, np.full((V, 6), np.nan, np.float32))
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
    monkeypatch.setattr(pool, "MIN_LOOP_ROWS", 1)
    monkeypatch.setattr(pool, "MIN_PIECE_FLOP", 1.0)
    monkeypatch.setattr(pool, "ROW_ALIGN", 1)
    calls: list[int] = []
    real_map = pool.Runner._map

    def counting_map(self, fn, pieces, contexts):             # type: ignore[no-untyped-def]
        calls.append(len(pieces))
        return real_map(self, fn, pieces, contexts)

    monkeypatch.setattr(pool.Runner, "_map", counting_map)
    for bidir, masked, dtype in itertools.product((False, True), (False, True),
                                                  (np.float64, np.float32)):
        spec = _spec(SETUPS[setup], num_layers=2, bidirectional=bidir)
        params, X, Y, mask, h0 = problem(spec, 3 + bidir, 7, 5, masked)
        params = {k: v.astype(dtype) for k, v in params.items()}
        steps = 5 if spec.setup == "one_to_many" else None
        _, g, _ = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps)
        ws = Workspace(spec, threads=None, input_grad=True, kernels=False)
        ws._thread_option = lambda: ThreadOption(1, 1, split)  # type: ignore[method-assign]
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


@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
def test_forward_loss_is_the_loss_and_its_logit_gradient(setup: int) -> None:
    """Workspace.forward_loss: value_and_grad's loss, the states of its forward pass and the
    reference dL/dz (time first), with no backward pass (no gradient buffers)."""
    for layers, masked, dtype in itertools.product((1, 2), (False, True),
                                                   (np.float64, np.float32)):
        spec = _spec(SETUPS[setup], num_layers=layers)
        B, T = 4, 5
        params, X, Y, mask, h0 = problem(spec, 3 + layers, B, T, masked)
        params = {k: v.astype(dtype) for k, v in params.items()}
        steps = T if spec.setup == "one_to_many" else None
        out, cache = net.forward(params, X, spec, h0=h0, mask=mask, steps=steps)
        ref = net.loss_and_grad(spec, out, Y, mask=mask)
        ws = Workspace(spec, kernels=False)
        loss, dz = ws.forward_loss(params, X, Y, h0=h0, mask=mask, steps=steps)
        tol = 1e-11 if dtype == np.float64 else 2e-5
        assert loss == pytest.approx(ref.value, rel=1e-13 if dtype == np.float64 else 1e-6)
        want = ref.dz if dz.ndim == 2 else np.swapaxes(ref.dz, 0, 1)
        assert_close(dz, want, tol, "dL/dz")
        for mine, theirs in zip(ws.cache.hbufs, cache.hbufs, strict=True):
            assert_close(mine, theirs, tol, "states")
        assert ws.flat_grad is None and ws.grad_order is None
        wl, _ = ws.value_and_grad(params, X, Y, h0=h0, mask=mask, steps=steps)
        assert wl == pytest.approx(loss, rel=1e-12 if dtype == np.float64 else 1e-6)
        assert ws.flat_grad is not None


def _layouts(p):
    """The same parameters as Fortran-ordered arrays, transposed views and strided views."""
    return {
        "fortran": {k: np.asfortranarray(v) for k, v in p.items()},
        "transposed view": {k: np.ascontiguousarray(v.T).T if v.ndim == 2 else v
                            for k, v in p.items()},
        "strided view": {k: np.repeat(v, 2, axis=-1)[..., ::2] if v.ndim == 2 else v
                         for k, v in p.items()},
    }


@pytest.mark.parametrize("spec", [
    RNNSpec(5, 8, 3),
    RNNSpec(5, 8, 3, num_layers=2, bidirectional=True),
    RNNSpec(7, 8, 7, setup="many_to_many", input_kind="index"),
    RNNSpec(5, 8, 2, setup="one_to_many", loss="identity_mse"),
], ids=["dense", "stacked-bidirectional", "index", "one-to-many"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_any_parameter_layout(spec, dtype):
    """Parameters need not be C-contiguous (weights loaded from PyTorch or Keras are often
    transposed views or Fortran-ordered): the workspace gives the reference's loss, gradients
    and logits for every layout (a float32 first layer on the joint buffer once refused them)."""
    rng = np.random.default_rng(0)
    p = init_params(spec, rng, dtype=dtype, scheme="pytorch")
    if spec.input_kind == "index":
        X, Y = rng.integers(0, 7, (6, 9)), rng.integers(0, 7, (6, 9))
    elif spec.setup == "one_to_many":
        X = rng.standard_normal((6, 5)).astype(dtype)
        Y = rng.standard_normal((6, 9, 2)).astype(dtype)
    else:
        X, Y = rng.standard_normal((6, 9, 5)).astype(dtype), rng.integers(0, 3, 6)
    steps = 9 if spec.setup == "one_to_many" else None
    loss0, g0 = net.value_and_grad(p, X, Y, spec, steps=steps)[:2]
    z0 = net.forward(p, X, spec, steps=steps)[0].logits
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for name, q in _layouts(p).items():
        ws = Workspace(spec)
        loss, g = ws.value_and_grad(q, X, Y, steps=steps)
        assert loss == pytest.approx(loss0, rel=tol), name
        for k in p:
            scale = np.abs(g0.params[k]).max() + 1e-30
            assert np.abs(g[k] - g0.params[k]).max() / scale < tol, (name, k)
        z = ws.forward(q, X, steps=steps)
        np.testing.assert_allclose(z, z0, rtol=tol, atol=tol, err_msg=name)
