"""rnnlab.fast.kernels: the compiled loops compute what the fast engine's NumPy loops
(rnnlab.fast.loops) compute."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnlab import RNNSpec, activations, cell
from rnnlab import network as net
from rnnlab.fast import kernels, loops
from rnnlab.fast.tuner import ThreadOption
from rnnlab.fast.workspace import Workspace

from conftest import assert_grads_close, problem

pytestmark = pytest.mark.skipif(not kernels.available(),
                                reason=f"compiled kernels unavailable: "
                                       f"{kernels.why_unavailable()}")


def _tanh32(x: np.ndarray) -> np.ndarray:
    """The kernel's tanh: one step with W_hh = 0 and h0 = 0 leaves H_1 = tanh(A_1)."""
    n = x.size
    Hb = np.zeros((2, 1, n), np.float32)
    Hb[1, 0] = x
    kernels.forward(Hb, np.zeros((n, n), np.float32), "tanh", False)
    return Hb[1, 0].copy()


def test_tanh_is_within_a_few_ulp_odd_and_bounded() -> None:
    """Eq. (38) on a dense grid of [-10, 10] and on tiny values."""
    x = np.concatenate([np.linspace(-10, 10, 400_001, dtype=np.float32),
                        np.float32([0.0, 1e-30, -1e-30, 1e-7, 3e-4, 8.9, 9.0, 9.5, 50.0])])
    h = np.concatenate([_tanh32(c) for c in np.array_split(x, 8)])
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    err = np.abs(h - exact) / ulp
    assert err.max() <= 8, float(err.max())
    assert np.abs(h).max() <= 1.0
    np.testing.assert_array_equal(np.concatenate([_tanh32(c) for c in np.array_split(-x, 8)]),
                                  -h)


def _loops(act: str, reverse: bool, with_dH: bool, rows: slice, compiled: bool,
           states: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    T, B, H = 7, 20, 24
    a = activations.get(act)
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    A = rng.standard_normal((T, B, H)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    dH = rng.standard_normal((T, B, H)).astype(np.float32) if with_dH else None
    dlast = rng.standard_normal((B, H)).astype(np.float32)
    Hb = np.empty((T + 1, B, H), np.float32)
    view = Hb[:, rows]
    cell.outputs(view, reverse)[:] = A[:, rows]
    loops.forward_into(view, W, a, h0[rows], reverse=reverse, compiled=compiled)
    if states is not None:                                      # backward on given states
        view[:] = states
    dZ = np.full((T, B, H), np.nan, np.float32)
    dZv, dh0 = loops.backward_into(None if dH is None else dH[:, rows], view, W, a,
                                   reverse=reverse, dh_last=dlast[rows], out=dZ[:, rows],
                                   compiled=compiled)
    return view.copy(), dZv.copy(), dh0.copy()


@pytest.mark.parametrize("act", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("reverse,with_dH,rows", list(itertools.product(
    (False, True), (False, True), (slice(None), slice(5, 13)))), ids=str)
def test_loops_equal_the_numpy_loops(act: str, reverse: bool, with_dH: bool,
                                     rows: slice) -> None:
    """relu and identity: the same numbers, bit for bit; tanh: the states within a few ulp, and
    backward on the same states bit for bit.  On whole buffers and on blocks of batch rows."""
    Hn, dZn, dh0n = _loops(act, reverse, with_dH, rows, compiled=False)
    Hk, dZk, dh0k = _loops(act, reverse, with_dH, rows, compiled=True)
    if act == "tanh":
        np.testing.assert_allclose(Hk, Hn, rtol=0, atol=1e-6)
        Hn, dZn, dh0n = _loops(act, reverse, with_dH, rows, compiled=False, states=Hk)
    np.testing.assert_array_equal(Hk, Hn)
    np.testing.assert_array_equal(dZk, dZn)
    np.testing.assert_array_equal(dh0k, dh0n)


@pytest.mark.parametrize("reverse", [False, True])
def test_backward_stops_at_an_exactly_zero_gradient(reverse: bool) -> None:
    rng = np.random.default_rng(2)
    T, B, H = 6, 4, 8
    a = activations.get("tanh")
    W = (rng.standard_normal((H, H)) / 3).astype(np.float32)
    Hb = np.tanh(rng.standard_normal((T + 1, B, H))).astype(np.float32)
    dZ = np.full((T, B, H), np.nan, np.float32)
    _, dh0 = loops.backward_into(None, Hb, W, a, reverse=reverse,
                                 dh_last=np.zeros((B, H), np.float32), out=dZ, compiled=True)
    assert not dZ.any() and not dh0.any() and not np.isnan(dZ).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scatter_adds_in_the_order_of_np_add_at(dtype: type) -> None:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 11, 500)
    rows = rng.standard_normal((500, 7)).astype(dtype)
    want = np.zeros((11, 7), dtype)
    np.add.at(want, ids, rows)
    got = kernels.scatter_rows(ids, rows, np.full((11, 7), np.nan, dtype))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("act", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("setup", [dict(setup="many_to_one"), dict(setup="many_to_many"),
                                   dict(setup="many_to_many", input_kind="index")], ids=str)
def test_workspace_with_kernels(act: str, setup: dict) -> None:
    """float32, split over threads (compiled jobs): the gradients are within float32 rounding
    of the float64 gradients (the split sums the bias gradient, and cuts long products, in
    other orders; a tanh state is eq. 38).  float64 does not use the kernels."""
    D = 9 if setup.get("input_kind") == "index" else 5
    for layers, bidir in itertools.product((1, 2), (False, True)):
        spec = RNNSpec(D, 32, 4, num_layers=layers, bidirectional=bidir, nonlinearity=act,
                       loss="softmax_ce", **setup)
        params, X, Y, _, h0 = problem(spec, 5, 40, 6, False)
        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        ws = Workspace(spec, threads=None, kernels=True)
        assert ws.compiled
        ws._thread_option = lambda: ThreadOption(1, 1, 2)     # type: ignore[method-assign]
        _, wg = ws.value_and_grad(p32, X, Y, h0=h0)
        _, g64, _ = net.value_and_grad(params, X, Y, spec, h0=h0)
        assert_grads_close(wg, g64.params, np.float32, str(spec))
        ws64 = Workspace(spec, threads=None, kernels=True)
        _, wg64 = ws64.value_and_grad(params, X, Y, h0=h0)
        assert_grads_close(wg64, g64.params, np.float64, str(spec))


def test_kernels_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = RNNSpec(3, 8, 2)
    assert Workspace(spec).compiled
    assert not Workspace(spec, kernels=False).compiled
    with pytest.raises(ValueError, match="kernels must be"):
        Workspace(spec, kernels="yes")
    monkeypatch.setattr(kernels, "available", lambda: False)
    monkeypatch.setattr(kernels, "why_unavailable", lambda: "ImportError: no numba")
    assert not Workspace(spec).compiled                    # "auto": the NumPy loops
    with pytest.raises(RuntimeError, match="rnnlab\\[fast\\].*no numba"):
        Workspace(spec, kernels=True)


# ----------------------------------------------------------------------------- jobs


def test_jobs_run_the_loops_bit_for_bit() -> None:
    """forward_job and backward_job run the kernels of forward and backward on a block of rows,
    with and without flushing (no subnormal occurs here, so the same numbers)."""
    rng = np.random.default_rng(4)
    T, B, H = 5, 12, 16
    W = (rng.standard_normal((H, H)) / 4).astype(np.float32)
    A = rng.standard_normal((T, B, H)).astype(np.float32)
    dH = rng.standard_normal((T, B, H)).astype(np.float32)
    for reverse, flush in itertools.product((False, True), (False, True)):
        ref = np.zeros((T + 1, B, H), np.float32)
        cell.outputs(ref, reverse)[:] = A
        kernels.forward(ref[:, 3:9], W, "tanh", reverse)
        Hb = np.zeros((T + 1, B, H), np.float32)
        cell.outputs(Hb, reverse)[:] = A
        kernels.run(kernels.forward_job(Hb[:, 3:9], W, "tanh", reverse, flush))
        np.testing.assert_array_equal(Hb, ref)
        WT = np.ascontiguousarray(W.T)
        out = []
        for via_job in (False, True):
            dZ = np.full((T, B, H), np.nan, np.float32)
            dnext = np.ones((6, H), np.float32)
            if via_job:
                kernels.run(kernels.backward_job(Hb[:, 3:9], dZ[:, 3:9], dH[:, 3:9], WT, dnext,
                                                 "tanh", reverse, flush))
            else:
                kernels.backward(Hb[:, 3:9], dZ[:, 3:9], dH[:, 3:9], WT, dnext, "tanh", reverse)
            out.append((dZ, dnext))
        np.testing.assert_array_equal(out[0][0], out[1][0])
        np.testing.assert_array_equal(out[0][1], out[1][1])
        assert np.isnan(out[1][0][:, :3]).all() and not np.isnan(out[1][0][:, 3:9]).any()


def test_a_flushing_job_flushes_subnormals_and_restores_the_mode() -> None:
    """identity, W = 0.5 I: H_1 = h0 W + A_1 is subnormal unless flushed."""
    H = 4
    W = np.eye(H, dtype=np.float32) * np.float32(0.5)
    results = []
    for flush in (False, True):
        Hb = np.zeros((2, 1, H), np.float32)
        Hb[0] = np.float32(1e-38)                   # h0 (normal); 0.5e-38 is subnormal
        kernels.run(kernels.forward_job(Hb, W, "identity", False, flush))
        results.append(Hb[1, 0].copy())
    assert (results[0] == np.float32(1e-38) * np.float32(0.5)).all() and results[0][0] != 0
    assert not results[1].any()
    again = np.zeros((2, 1, H), np.float32)
    again[0] = np.float32(1e-38)
    kernels.run(kernels.forward_job(again, W, "identity", False, False))
    np.testing.assert_array_equal(again[1, 0], results[0])      # the mode was restored


@pytest.mark.parametrize("ta,tb", list(itertools.product((False, True), (False, True))))
def test_gemm_job_computes_the_product_of_any_blas_layout(ta: bool, tb: bool) -> None:
    rng = np.random.default_rng(5)
    M, K, N = 19, 23, 17
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    a, b = (a.T if ta else a), (b.T if tb else b)
    big = np.full((M, N + 5), np.nan, np.float32)
    out = big[:, 2:2 + N]                                       # rows with a leading dimension
    job = kernels.gemm_job(a, b, out)
    assert job is not None
    kernels.run(job)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-5,
                               atol=1e-5)
    assert np.isnan(big[:, :2]).all() and np.isnan(big[:, 2 + N:]).all()


def test_gemm_job_declines_what_the_blas_cannot_read() -> None:
    a = np.ones((8, 6), np.float32)
    out = np.empty((8, 8), np.float32)
    assert kernels.gemm_job(a[:, ::2], np.ones((3, 8), np.float32), out) is None   # strided
    assert kernels.gemm_job(a, np.ones((6, 8), np.float64), out) is None           # float64
    assert kernels.gemm_job(a, np.ones((6, 8), np.float32), out.T) is None         # out^T
    assert kernels.gemm_job(a, np.ones((6, 8), np.float32), out) is not None


def test_column_blocks_compute_the_same_loops_and_the_choice_is_a_divisor() -> None:
    rng = np.random.default_rng(6)
    T, n, H = 4, 8, 64
    W = (rng.standard_normal((H, H)) / 8).astype(np.float32)
    A = rng.standard_normal((T, n, H)).astype(np.float32)
    dH = rng.standard_normal((T, n, H)).astype(np.float32)
    results = []
    for cb in (H, 32, 16, 48):                                  # 48: a ragged last block
        Hb = np.zeros((T + 1, n, H), np.float32)
        Hb[1:] = A
        kernels.run(kernels.forward_job(Hb, W, "tanh", False, False, cb))
        dZ = np.empty((T, n, H), np.float32)
        dnext = np.ones((n, H), np.float32)
        WT = np.ascontiguousarray(W.T)         # a job's operands must outlive it
        kernels.run(kernels.backward_job(Hb, dZ, dH, WT, dnext, "tanh",
                                         False, False, cb))
        results.append((Hb, dZ, dnext))
    for got in results[1:]:
        for a, b in zip(got, results[0], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for shape in ((16, 256), (3, 40)):
        cb = kernels.column_block(*shape)
        assert shape[1] % cb == 0 and cb == kernels.column_block(*shape)   # cached


@pytest.mark.parametrize("reverse", [False, True])
def test_a_zero_h0_skips_the_first_product_with_the_same_numbers(reverse: bool) -> None:
    """h0 = 0: the first step's product is exactly zero and is skipped (relu: bit for bit)."""
    rng = np.random.default_rng(7)
    T, B, H = 5, 6, 16
    a = activations.get("relu")
    W = rng.standard_normal((H, H)).astype(np.float32)
    A = rng.standard_normal((T, B, H)).astype(np.float32)
    out = []
    for compiled in (False, True):
        Hb = np.empty((T + 1, B, H), np.float32)
        cell.outputs(Hb, reverse)[:] = A
        loops.forward_into(Hb, W, a, np.zeros((B, H), np.float32), reverse=reverse,
                           compiled=compiled)
        out.append(Hb)
    np.testing.assert_array_equal(out[1], out[0])
    assert out[1][2 if not reverse else T - 2].any()


@pytest.mark.parametrize("threads,masked,input_grad", [
    ("split", False, False), ("split", True, True), (1, False, True), (1, True, False)],
    ids=str)
def test_the_joint_buffer_gives_the_gradients(threads: object, masked: bool,
                                              input_grad: bool) -> None:
    """The first layer of a one-direction dense float32 network runs on its joint buffer
    ([H_{t-1} | x_t | 1] rows): one product per step, one for [dW_hh; dW_xh; db_h].  Split or
    whole, and masked (NumPy loops on the strided views): every gradient, dX, the cache's
    input and h_n against the float64 public path."""
    spec = RNNSpec(5, 32, 4, num_layers=2, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 9, 40, 7, masked)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    ws = Workspace(spec, threads=1 if threads == 1 else None, kernels=True,
                   input_grad=input_grad)
    if threads == "split":
        ws._thread_option = lambda: ThreadOption(1, 1, 2)   # type: ignore[method-assign]
    for h in (h0, None):                                        # h0 = 0: the first product
        _, wg = ws.value_and_grad(p32, X, Y, h0=h, mask=mask)   # skips its h0 part
        assert ws._bufs is not None and ws._bufs.joint is not None
        _, g64, out64 = net.value_and_grad(params, X, Y, spec, h0=h, mask=mask)
        assert_grads_close(wg, g64.params, np.float32)
        np.testing.assert_array_equal(ws.cache.inputs[0], np.asarray(X, np.float32)
                                      .transpose(1, 0, 2))
        np.testing.assert_allclose(ws.h_n(), out64.h_n, rtol=0, atol=1e-5)
        if input_grad:
            assert np.abs(ws.input_grad - g64.X).max() <= 2e-5 * np.abs(g64.X).max()


PREFETCH_CHILD = r"""
import sys, threading
import numpy as np
from rnnlab.fast import kernels
mode = sys.argv[1]
if mode == "fail":
    calls = []
    def broken():
        calls.append(threading.current_thread().name)
        raise RuntimeError("broken build")
    kernels._build = broken
kernels.prefetch()
kernels.prefetch()                                   # idempotent: one thread
threads = [t for t in threading.enumerate() if t.name == "rnnlab-kernels-prefetch"]
assert len(threads) <= 1, threads
from rnnlab import RNNSpec, Workspace
if mode == "fail":
    for t in threads:
        t.join()
    kernels.compile()                                # not tried again: the failure is kept
    print("calls:", calls, "available:", kernels.available(), "why:", kernels.why_unavailable())
    try:
        Workspace(RNNSpec(5, 8, 3), kernels=True)
    except RuntimeError as exc:
        print("raised:", exc)
    sys.exit(0)
from rnnlab.core.params import init_params
spec = RNNSpec(5, 8, 3)
params = init_params(spec, np.random.default_rng(0))
ws = Workspace(spec)                                 # waits for the prefetch, compiles nothing
loss, _ = ws.value_and_grad(params, np.zeros((4, 6, 5), np.float32), np.zeros(4, np.int64))
print("ok", ws.compiled, kernels._compiled, np.isfinite(loss))
"""


@pytest.mark.parametrize("mode", ["ok", "fail"])
def test_prefetch_loads_on_a_thread_and_failures_surface_where_used(mode):
    """kernels.prefetch() loads the kernels on a background thread that the first Workspace
    waits for; a failure there is not swallowed: a RuntimeWarning names it, why_unavailable()
    keeps it (the build is not tried again), and a workspace that asks for the kernels raises
    it."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", PREFETCH_CHILD, mode], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    if mode == "ok":
        assert res.stdout.split() == ["ok", "True", "True", "True"], res.stdout
    else:
        assert "calls: ['rnnlab-kernels-prefetch'] available: False why: RuntimeError: broken " \
               "build" in res.stdout, res.stdout
        assert "raised: kernels=True needs the compiled kernels" in res.stdout, res.stdout
        assert "broken build" in res.stdout.splitlines()[-1], res.stdout
        assert "RuntimeWarning: rnnlab: the compiled kernels are not available" in res.stderr, \
            res.stderr
