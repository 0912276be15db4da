"""Compiled recurrent loops for the fast path (optional: ``pip install 'rnnlab[fast]'``).

The loops of :func:`rnnlab.cell.forward` and :func:`rnnlab.cell.backward` (eqs. 5-6 and 16-17)
compiled with Numba: one call runs every step of a block of batch rows, calling NumPy's own BLAS
for the step product and doing the element-wise work in the same pass, without the interpreter
and without holding the GIL.  So a :class:`rnnlab.workspace.Workspace` can run the rows of a batch
on several threads at once (:class:`rnnlab.parallel.Runner`), which the NumPy loop cannot do
well: each of its per-step NumPy calls must take the GIL back.

What the kernels compute, against the NumPy loop:

* ``relu`` and ``identity``: the same operations in the same order, so the same numbers, bit for
  bit (tested).
* ``tanh``: the state is ``tanh`` by a rational approximation, eq. (38) in docs/derivation.md
  (the 13/6 interpolant of Eigen, which XLA's CPU backend also uses for float32), within a few
  float32 ulp of the correctly rounded value and clamped to [-1, 1]; the backward pass is the NumPy
  loop's, bit for bit, given the states.  Float32 only: in float64 the approximation would be
  far from the precision asked for, and the NumPy loop runs.
* Only float32, no masks, and ``tanh``/``relu``/``identity``; anything else runs the NumPy loop
  (:func:`supports`).
* :func:`scatter_rows`, the embedding gradient of index inputs (eq. 21), adds the rows in the
  order ``np.add.at`` does, in any float dtype: the same numbers.

*Jobs* are what a batch split over threads runs (:class:`rnnlab.parallel.Runner`): a loop on a
block of rows (:func:`forward_job`, :func:`backward_job`), a product (:func:`gemm_job`,
:func:`vecmat_job`), each an int64 array of addresses and sizes that :func:`run` executes and a
worker thread serves (:func:`serve`), neither taking the GIL, optionally with subnormals flushed.
Within a job the loops may cut the step product into column blocks (:func:`column_block`), sum
the bias gradient as they go and skip the product of a zero ``h0``: the same mathematics, in
sums whose order may differ from the NumPy loop's.

The BLAS is NumPy's own (found through ``threadpoolctl``), so its thread count is the one
:mod:`rnnlab.parallel` sets.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]

_KINDS = {"tanh": 0, "relu": 1, "identity": 2}
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

# A job is an int64 array of JOB_SIZE slots that :func:`run` executes without the GIL; a worker
# thread of rnnlab.parallel serves them (:func:`serve`) without taking the GIL either, which is
# what makes a hand-off cost microseconds instead of the ~50 us of waking a Python thread.
# Slot 0 is the kind, slot 1 the subnormal flush flag; the rest depends on the kind (see the
# *_job makers).  The arrays a job points into must outlive it.
JOB_SIZE = 32
JOB_FORWARD, JOB_BACKWARD, JOB_GEMM, JOB_GEMV, JOB_PYTHON = 1, 2, 3, 4, 9
# fenv_t on x86-64 glibc, as int64 words: MXCSR is bytes 28-31, the high half of word 3; FTZ is
# its bit 15, DAZ its bit 6 (as rnnlab.parallel._FlushDenormals sets them)
_MXCSR_WORD, _FTZ_DAZ = 3, 0x8040 << 32

# eq. (38): tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9] (float32 tanh is +-1 beyond), the monomial
# coefficients of Eigen's generic_fast_tanh_float, lowest degree first
_ALPHA = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
          5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
          -2.76076847742355e-16)
_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
         1.19825839466702e-06)

_lock = threading.Lock()
_built: dict[str, Any] | None = None
_why_not: str | None = None


def _cblas(name: str, args: str) -> Any:
    """NumPy's BLAS ``cblas_<name>`` as a ctypes function (64-bit or 32-bit integers); ``args``
    spells its arguments: ``e`` an enum, ``n`` an integer, ``f`` a float, ``p`` a pointer."""
    from threadpoolctl import ThreadpoolController

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    ours = [lc for lc in libs if "numpy" in str(getattr(lc, "filepath", ""))]
    for lc in ours:
        lib = ctypes.CDLL(lc.filepath)
        for symbol, ilp64 in ((f"scipy_cblas_{name}64_", True), (f"cblas_{name}64_", True),
                              (f"scipy_cblas_{name}", False), (f"cblas_{name}", False)):
            fn = getattr(lib, symbol, None)
            if fn is None:
                continue
            types = {"e": ctypes.c_int, "n": ctypes.c_int64 if ilp64 else ctypes.c_int32,
                     "f": ctypes.c_float, "p": ctypes.c_size_t}
            fn.argtypes = [types[c] for c in args]
            fn.restype = None
            return fn
    raise RuntimeError(f"NumPy's BLAS exports no cblas_{name} that rnnlab knows")


def _build() -> dict[str, Any]:
    """Compile the kernels (once per process, a few seconds)."""
    import numba as nb
    from numba import types
    from numba.extending import intrinsic

    sgemm = _cblas("sgemm", "eeennnfpnpnfpn")
    sgemv = _cblas("sgemv", "eennfpnpnfpn")
    f32 = np.float32
    a1, a3, a5, a7, a9, a11, a13 = (f32(c) for c in _ALPHA)
    b0, b2, b4, b6 = (f32(c) for c in _BETA)
    lim, one, zero = f32(9.0), f32(1.0), f32(0.0)

    # error_model="numpy": a division by zero gives inf/nan instead of raising, which is what
    # lets LLVM vectorise the division (q >= 4.8e-3 > 0 here anyway)
    @nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
    def tanh32(x: Any) -> Any:                          # eq. (38)
        x = min(max(x, -lim), lim)
        x2 = x * x
        p = x2 * a13 + a11
        p = x2 * p + a9
        p = x2 * p + a7
        p = x2 * p + a5
        p = x2 * p + a3
        p = x2 * p + a1
        q = x2 * b6 + b4
        q = x2 * q + b2
        q = x2 * q + b0
        return min(max(x * p / q, -one), one)

    def address_as_pointer(typingctx: Any, addr: Any) -> Any:   # an address as a float32*
        sig = types.CPointer(types.float32)(types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(
                types.CPointer(types.float32)))
        return sig, codegen

    f32_at: Any = intrinsic(address_as_pointer)

    @nb.njit(inline="always")
    def step_product(n: int, H: int, K: int, a: int, lda: int, w: int, c: int, cb: int) -> None:
        # c (n, H) = a (n, K, leading dimension lda) x w (K, H), in column blocks of cb (see
        # column_block); addresses of float32 row-major blocks
        for j0 in range(0, H, cb):
            sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, n, min(cb, H - j0), K, one, a, lda,
                  w + 4 * j0, H, zero, c + 4 * j0, H)

    # Every (steps, rows, H) block is passed flat, with its step and row strides in elements,
    # so that Numba sees contiguous arrays and vectorises the loops over H.
    @nb.njit(nogil=True, fastmath={"contract"}, error_model="numpy")
    def forward(hf: Any, h0: int, h1: int, T: int, n: int, H: int, W: Any, tmp: Any,
                kind: int, reverse: bool, cb: int, kx: int, xa: int, xsize: int, x0: int,
                x1: int) -> None:
        # hf: the state buffer (T + 1 slots of n rows), the projections in the step slots; or,
        # with kx > 0 (a joint buffer, forward direction only), rows [H_{t-1} | x_t | 1] of
        # width >= H + kx in slot t and W = [W_hh; W_xh; b_h] (H + kx, H): the step product is
        # then Z_t itself, eq. (39), and the slots hold nothing to add
        # with xa != 0 (joint buffer only) the loop first copies its input rows into the joint
        # rows, from the (T, n, kx - 1) block at xa (strides x0, x1)
        base, w, c = hf.ctypes.data, W.ctypes.data, tmp.ctypes.data
        if xa != 0:
            xs = nb.carray(f32_at(xa), (xsize,))
            for i in range(n):                      # row by row: a batch-first x in order
                for t in range(T):
                    dst = hf[t * h0 + i * h1 + H:t * h0 + i * h1 + H + kx - 1]
                    src = xs[t * x0 + i * x1:t * x0 + i * x1 + kx - 1]
                    for j in range(kx - 1):
                        dst[j] = src[j]
        for s in range(T):
            t = T - 1 - s if reverse else s
            cur, prev = (t, t + 1) if reverse else (t + 1, t)
            # tmp = H_prev W_hh (+ [x_t | 1] [W_xh; b_h]), eq. (5), in column blocks of cb (see
            # column_block); the H_prev part skipped when it is exactly zero (h0 = 0, the
            # default; W_hh is finite)
            live = s > 0
            if not live:
                for i in range(n):
                    hp = hf[prev * h0 + i * h1:prev * h0 + i * h1 + H]
                    for j in range(H):
                        if hp[j] != zero:
                            live = True
                            break
                    if live:
                        break
            skip = 0 if live else H                    # rows of W (columns of A) left out
            if skip < H + kx:
                step_product(n, H, H + kx - skip, base + 4 * (prev * h0 + skip), h1,
                             w + 4 * skip * H, c, cb)
            else:
                tmp[:n * H] = zero
            # H_t = f(A_t + tmp), or f(tmp) with kx > 0, eqs. (5)-(6); one loop per activation
            # over contiguous rows (slices, so that Numba knows the indices are in range and
            # vectorises)
            for i in range(n):
                z = hf[cur * h0 + i * h1:cur * h0 + i * h1 + H]
                m = tmp[i * H:(i + 1) * H]
                if kx > 0:
                    if kind == 0:
                        for j in range(H):
                            z[j] = tanh32(m[j])                             # with eq. (38)
                    elif kind == 1:
                        for j in range(H):
                            v = m[j]
                            z[j] = v if (v > zero or v != v) else zero      # as np.maximum
                    else:
                        for j in range(H):
                            z[j] = m[j]
                elif kind == 0:
                    for j in range(H):
                        z[j] = tanh32(z[j] + m[j])                          # with eq. (38)
                elif kind == 1:
                    for j in range(H):
                        v = z[j] + m[j]
                        z[j] = v if (v > zero or v != v) else zero          # as np.maximum
                else:
                    for j in range(H):
                        z[j] = z[j] + m[j]

    @nb.njit(nogil=True, error_model="numpy")
    def backward(hf: Any, h0: int, h1: int, gf: Any, g0: int, g1: int, df: Any, d0: int,
                 d1: int, has_dH: bool, T: int, n: int, H: int, WT: Any, dnext: Any,
                 kind: int, reverse: bool, cb: int, db: Any, has_db: bool) -> None:
        # gf: dZ (T slots), df: dH (T slots) or unused; dnext (n * H) holds dL/dH_T on entry,
        # dL/dh0 on exit; with has_db, db (H) accumulates the column sums of dZ, eq. (19)
        gbase, w, d = gf.ctypes.data, WT.ctypes.data, dnext.ctypes.data
        for s in range(T):
            t = s if reverse else T - 1 - s
            if not has_dH:                      # the exact zero-stop of cell.backward
                live = False
                for k in range(n * H):
                    if dnext[k] != zero:
                        live = True
                        break
                if not live:
                    for r in range(s, T):
                        tr = r if reverse else T - 1 - r
                        for i in range(n):
                            o = tr * g0 + i * g1
                            for j in range(H):
                                gf[o + j] = zero
                    return
            hs = t if reverse else t + 1
            for i in range(n):
                dn = dnext[i * H:(i + 1) * H]
                h = hf[hs * h0 + i * h1:hs * h0 + i * h1 + H]
                g = gf[t * g0 + i * g1:t * g0 + i * g1 + H]
                if has_dH:
                    dh = df[t * d0 + i * d1:t * d0 + i * d1 + H]
                    for j in range(H):
                        dn[j] = dn[j] + dh[j]                       # total dL/dH_t, eq. (16)
                # dZ_t = dL/dH_t * f'(Z_t), eqs. (2)-(4), (17)
                if kind == 0:
                    for j in range(H):
                        g[j] = (one - h[j] * h[j]) * dn[j]
                elif kind == 1:
                    for j in range(H):
                        g[j] = (one if h[j] > zero else zero) * dn[j]
                else:
                    for j in range(H):
                        g[j] = dn[j]
                if has_db:                          # while the row is in the cache
                    for j in range(H):
                        db[j] += g[j]
            # dL/dH_{t-1} = dZ_t W_hh^T, eq. (16), in column blocks of cb
            step_product(n, H, H, gbase + 4 * t * g0, g1, w, d, cb)

    libc = ctypes.CDLL(None)
    sched_yield = libc.sched_yield
    sched_yield.argtypes, sched_yield.restype = [], ctypes.c_int
    fegetenv, fesetenv = libc.fegetenv, libc.fesetenv     # glibc: in libc since 2.34, else libm
    for fn in (fegetenv, fesetenv):
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    word, ftz_daz = _MXCSR_WORD, _FTZ_DAZ

    @nb.njit(nogil=True)
    def run(job: Any) -> None:
        # one job (see JOB_SIZE), in the calling thread
        kind, flush = job[0], job[1] != 0
        saved = np.empty(8, np.int64)               # sizeof(fenv_t) is 32 bytes
        if flush:                                   # FTZ and DAZ while the job runs
            env = np.empty(8, np.int64)
            fegetenv(saved.ctypes.data)
            for j in range(8):
                env[j] = saved[j]
            env[word] = env[word] | ftz_daz
            fesetenv(env.ctypes.data)
        if kind == JOB_FORWARD:
            n, H = job[7], job[8]
            forward(nb.carray(f32_at(job[2]), (job[3],)), job[4], job[5], job[6], n, H,
                    nb.carray(f32_at(job[9]), ((H + job[13]) * H,)),
                    np.empty(n * H, np.float32), job[10], job[11] != 0, job[12], job[13],
                    job[14], job[15], job[16], job[17])
        elif kind == JOB_BACKWARD:
            n, H = job[15], job[16]
            backward(nb.carray(f32_at(job[2]), (job[3],)), job[4], job[5],
                     nb.carray(f32_at(job[6]), (job[7],)), job[8], job[9],
                     nb.carray(f32_at(job[10]), (job[11],)), job[12], job[13], job[14] != 0,
                     job[17], n, H, nb.carray(f32_at(job[18]), (H * H,)),
                     nb.carray(f32_at(job[19]), (n * H,)), job[20], job[21] != 0, job[22],
                     nb.carray(f32_at(job[23] if job[23] != 0 else job[19]), (H,)),
                     job[23] != 0)
        elif kind == JOB_GEMM:
            sgemm(_ROW_MAJOR, job[2], job[3], job[4], job[5], job[6], one, job[7], job[8],
                  job[9], job[10], zero, job[11], job[12])
        elif kind == JOB_GEMV:
            sgemv(_ROW_MAJOR, _TRANS, job[2], job[3], one, job[4], job[5], job[6], job[7], zero,
                  job[8], job[9])
        if flush:
            fesetenv(saved.ctypes.data)

    @nb.njit(nogil=True)
    def products(n: int, H: int, cb: int, reps: int, a: Any, W: Any, c: Any) -> None:
        # the step product (n, H) x (H, H) of the loops, reps times, in column blocks of cb
        for _ in range(reps):
            step_product(n, H, H, a.ctypes.data, H, W.ctypes.data, c.ctypes.data, cb)

    @nb.njit(nogil=True)
    def serve(posted: Any, finished: Any, jobs: Any, i: int, taken: int,
              limit: int) -> tuple[int, bool]:
        # worker i: run its jobs as they are posted; return (jobs taken, True) when the next is
        # a Python piece, (jobs taken, False) after `limit` idle polls
        idle = 0
        while idle < limit:
            if posted[i] > taken:
                if jobs[i, 0] == JOB_PYTHON:
                    return taken, True
                run(jobs[i])
                taken += 1
                sched_yield()                       # an opaque call: the job's stores first
                finished[i] = taken
                idle = 0
            else:
                idle += 1
                sched_yield()
        return taken, False

    @nb.njit(nogil=True)
    def spin(counters: Any, i: int, target: int, limit: int) -> bool:
        # wait, without the GIL, until counters[i] >= target; False after `limit` polls.  The
        # sched_yield call between polls keeps the load inside the loop and lets other threads
        # of the process run on this core.
        for _ in range(limit):
            if counters[i] >= target:
                return True
            sched_yield()
        return counters[i] >= target

    @nb.njit(nogil=True)
    def scatter(ids: Any, rows: Any, out: Any) -> None:
        # out[v] = sum of rows[r] over r with ids[r] == v, eq. (21), adding in the order of r as
        # np.add.at does (so the same numbers)
        out[:] = 0
        for r in range(ids.shape[0]):
            o, x = out[ids[r]], rows[r]
            for j in range(out.shape[1]):
                o[j] += x[j]

    return {"forward": forward, "backward": backward, "spin": spin, "scatter": scatter,
            "run": run, "serve": serve, "products": products}


def available() -> bool:
    """True when the kernels can run here (Numba, threadpoolctl and NumPy's cblas found)."""
    return _kernels() is not None


_compiled = False


def compile() -> None:
    """Compile every kernel now (about 2 s, once per process) instead of at its first use,
    as a JAX program is compiled ahead of time; :class:`rnnlab.workspace.Workspace` calls this."""
    global _compiled
    if _compiled or not available():
        return
    f32 = np.float32
    Hb = np.zeros((2, 1, 1), f32)
    W = np.zeros((1, 1), f32)
    forward(Hb, W, "tanh", False)
    for dH in (None, np.zeros((1, 1, 1), f32)):
        backward(Hb, np.zeros((1, 1, 1), f32), dH, W, np.ones((1, 1), f32), "tanh", False)
    for dt in (np.float32, np.float64):
        scatter_rows(np.zeros(1, np.intp), np.zeros((1, 1), dt), np.zeros((1, 1), dt))
    spin(np.ones(1, np.int64), 0, 1, 1)
    _compiled = True


_jobs_compiled = False


def compile_jobs() -> None:
    """Compile :func:`run` and :func:`serve` now (about 3 s, once per process): what a batch
    split over threads needs (:class:`rnnlab.parallel.Runner` calls this)."""
    global _jobs_compiled
    if _jobs_compiled or not available():
        return
    a = np.ones((2, 2), np.float32)
    job = gemm_job(a, a, np.empty((2, 2), np.float32))
    assert job is not None
    run(job)
    serve(np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros((1, JOB_SIZE), np.int64), 0,
          0, 1)
    k = _kernels()
    assert k is not None
    k["products"](2, 2, 2, 1, a, a, np.empty((2, 2), np.float32))
    _jobs_compiled = True


def why_unavailable() -> str | None:
    """Why :func:`available` is False (None when it is True or has not been asked)."""
    return _why_not


def _kernels() -> dict[str, Any] | None:
    global _built, _why_not
    if _built is None and _why_not is None:
        with _lock:
            if _built is None and _why_not is None:
                try:
                    _built = _build()
                except Exception as exc:   # no numba, no threadpoolctl, no cblas, no libc...:
                    _why_not = f"{type(exc).__name__}: {exc}"   # the NumPy loops run instead
    return _built


def supports(act_name: str, dtype: np.dtype, masked: bool) -> bool:
    """Whether the kernels cover this loop (else the NumPy loop runs)."""
    return (act_name in _KINDS and np.dtype(dtype) == np.float32 and not masked
            and available())


def _flat(a: Array) -> tuple[Array, int, int]:
    """A float32 ``(steps, rows, H)`` block with contiguous rows as a flat view from its first
    element, and its step and row strides in elements (element ``(t, i, j)`` is
    ``flat[t * s0 + i * s1 + j]``)."""
    assert a.dtype == np.float32 and a.strides[2] == 4, (a.dtype, a.strides)
    assert a.strides[0] % 4 == 0 and a.strides[1] % 4 == 0 and min(a.strides) >= 0
    s0, s1 = a.strides[0] // 4, a.strides[1] // 4
    size = (a.shape[0] - 1) * s0 + (a.shape[1] - 1) * s1 + a.shape[2]
    return np.lib.stride_tricks.as_strided(a, (size,), (4,)), s0, s1


def forward(Hbuf: Array, W_hh: Array, act_name: str, reverse: bool,
            W_joint: Array | None = None, x: Array | None = None) -> None:
    """The forward loop on ``Hbuf`` ``(T + 1, n, H)`` whose step slots hold the projections
    ``A_t`` (and whose ``h0`` slot is set): as :func:`rnnlab.cell.forward` with ``A`` in place;
    or, with ``W_joint`` (and ``x``), on the state view of a joint buffer (see
    :func:`forward_job`)."""
    k = _kernels()
    assert k is not None and W_hh.flags.c_contiguous, "see supports()"
    T, n, H = Hbuf.shape[0] - 1, Hbuf.shape[1], Hbuf.shape[2]
    ops = _forward_operands(Hbuf, W_hh, reverse, W_joint, x)
    hf, h0, h1, W, kx = ops[:5]
    k["forward"](hf, h0, h1, T, n, H, W, np.empty(n * H, np.float32), _KINDS[act_name],
                 reverse, H, kx, *ops[5:])


def _forward_operands(Hbuf: Array, W_hh: Array, reverse: bool, W_joint: Array | None,
                      x: Array | None) -> tuple[Any, ...]:
    """The flat state buffer, its strides, the weight matrix, the joint width ``kx`` and the
    input block's address, size and strides (zeros without one)."""
    hf, h0, h1 = _flat(Hbuf)
    if W_joint is None:
        assert x is None
        return hf, h0, h1, W_hh, 0, 0, 0, 0, 0
    T, n, H = Hbuf.shape[0] - 1, Hbuf.shape[1], Hbuf.shape[2]
    kx = W_joint.shape[0] - H
    assert not reverse and W_joint.shape[1] == H and kx > 0 and h1 >= H + kx
    assert W_joint.flags.c_contiguous and W_joint.dtype == np.float32
    xa = xsize = x0 = x1 = 0
    if x is not None:
        assert x.shape == (T, n, kx - 1), (x.shape, Hbuf.shape, kx)
        xf, x0, x1 = _flat(x)
        xa, xsize = xf.ctypes.data, xf.size
    # the flat view reaches the [x_t | 1] part of the rows too
    return (np.lib.stride_tricks.as_strided(Hbuf, (hf.size + kx,), (4,)), h0, h1, W_joint, kx,
            xa, xsize, x0, x1)


def backward(Hbuf: Array, dZ: Array, dH: Array | None, W_T: Array, dnext: Array,
             act_name: str, reverse: bool) -> None:
    """The backward loop of :func:`rnnlab.cell.backward` without a mask: writes ``dZ``
    ``(T, n, H)`` and turns ``dnext`` ``(n, H)`` from ``dL/dH_T`` into ``dL/dh0``."""
    k = _kernels()
    assert k is not None and W_T.flags.c_contiguous and dnext.flags.c_contiguous
    T, n, H = dZ.shape
    hf, h0, h1 = _flat(Hbuf)
    gf, g0, g1 = _flat(dZ)
    df, d0, d1 = (np.zeros(1, np.float32), 0, 0) if dH is None else _flat(dH)
    k["backward"](hf, h0, h1, gf, g0, g1, df, d0, d1, dH is not None, T, n, H, W_T,
                  dnext.reshape(-1), _KINDS[act_name], reverse, H, dnext.reshape(-1), False)


def _job(kind: int, flush: bool, *slots: int) -> NDArray[np.int64]:
    job = np.zeros(JOB_SIZE, np.int64)
    job[0], job[1] = kind, flush
    job[2:2 + len(slots)] = slots
    return job


def forward_job(Hbuf: Array, W_hh: Array, act_name: str, reverse: bool, flush: bool,
                cb: int | None = None, W_joint: Array | None = None,
                x: Array | None = None) -> NDArray[np.int64]:
    """:func:`forward` as a job for :func:`run` (``W_hh`` C-contiguous, ``Hbuf``'s ``h0`` slot
    set); ``flush``: with subnormals flushed to zero (FTZ and DAZ) while it runs; ``cb``: the
    step product in column blocks of this width (default: whole, see :func:`column_block`).

    ``W_joint = [W_hh; W_xh; b_h]`` ``(H + D + 1, H)``, C-contiguous: ``Hbuf`` is the ``(T + 1,
    n, H)`` state view of a joint buffer whose rows continue with ``[x_t | 1]`` in slot ``t``
    (forward direction only), and each step's product is the whole pre-activation ``Z_t``
    (eq. 39): no projection in the slots.  ``x`` ``(T, n, D)`` float32 with contiguous rows (a
    time-first view of a batch-first input): the job first copies it into the joint rows.
    """
    assert W_hh.flags.c_contiguous and W_hh.dtype == np.float32, "see supports()"
    T, n, H = Hbuf.shape[0] - 1, Hbuf.shape[1], Hbuf.shape[2]
    ops = _forward_operands(Hbuf, W_hh, reverse, W_joint, x)
    hf, h0, h1, W, kx = ops[:5]
    return _job(JOB_FORWARD, flush, hf.ctypes.data, hf.size, h0, h1, T, n, H,
                W.ctypes.data, _KINDS[act_name], reverse, _block(cb, H), kx, *ops[5:])


def _block(cb: int | None, H: int) -> int:
    assert cb is None or 1 <= cb <= H, (cb, H)
    return H if cb is None else cb


def backward_job(Hbuf: Array, dZ: Array, dH: Array | None, W_T: Array, dnext: Array,
                 act_name: str, reverse: bool, flush: bool, cb: int | None = None,
                 db: Array | None = None) -> NDArray[np.int64]:
    """:func:`backward` as a job for :func:`run` (``dnext`` C-contiguous, ``dL/dH_T`` in it;
    ``flush`` and ``cb`` as for :func:`forward_job`); with ``db`` ``(H,)`` (float32,
    contiguous), the column sums of the block's ``dZ`` are added to it (the bias gradient,
    eq. 19, while each row is in the cache)."""
    assert W_T.flags.c_contiguous and dnext.flags.c_contiguous and W_T.dtype == np.float32
    assert db is None or (db.shape == (dZ.shape[2],) and db.flags.c_contiguous
                          and db.dtype == np.float32)
    T, n, H = dZ.shape
    hf, h0, h1 = _flat(Hbuf)
    gf, g0, g1 = _flat(dZ)
    df, d0, d1 = (gf, 0, 0) if dH is None else _flat(dH)      # unread without dH
    return _job(JOB_BACKWARD, flush, hf.ctypes.data, hf.size, h0, h1, gf.ctypes.data, gf.size,
                g0, g1, df.ctypes.data, df.size, d0, d1, dH is not None, n, H, T,
                W_T.ctypes.data, dnext.ctypes.data, _KINDS[act_name], reverse, _block(cb, H),
                0 if db is None else db.ctypes.data)


def _operand(a: Array) -> tuple[int, int] | None:
    """``(transpose flag, leading dimension)`` of a float32 matrix as a row-major BLAS operand,
    or None when its strides do not allow one."""
    (r, c), (s0, s1) = a.shape, a.strides
    if a.dtype != np.float32 or r < 1 or c < 1 or s0 % 4 or s1 % 4 or r == c == 1:
        return None
    if (s1 == 4 or c == 1) and (r == 1 or s0 >= 4 * c):     # rows (a single row: any s0)
        return _NO_TRANS, c if r == 1 else s0 // 4
    if (s0 == 4 or r == 1) and (c == 1 or s1 >= 4 * r):     # columns: a transposed matrix
        return _TRANS, r if c == 1 else s1 // 4
    return None


def gemm_job(a: Array, b: Array, out: Array, flush: bool = False) -> NDArray[np.int64] | None:
    """``out = a @ b`` (float32, 2-D) as a job for :func:`run`, or None when an operand's strides
    do not suit the BLAS (``out`` needs contiguous rows); ``flush`` as for
    :func:`forward_job`."""
    oa, ob, oc = _operand(a), _operand(b), _operand(out)
    if oa is None or ob is None or oc is None or oc[0] != _NO_TRANS:
        return None
    (M, K), N = a.shape, b.shape[1]
    assert b.shape[0] == K and out.shape == (M, N), (a.shape, b.shape, out.shape)
    return _job(JOB_GEMM, flush, oa[0], ob[0], M, N, K, a.ctypes.data, oa[1], b.ctypes.data,
                ob[1], out.ctypes.data, oc[1])


def vecmat_job(x: Array, a: Array, out: Array,
               flush: bool = False) -> NDArray[np.int64] | None:
    """``out = x @ a`` (float32; ``x`` ``(K,)``, ``a`` ``(K, N)`` with contiguous rows) as a job
    for :func:`run` (BLAS ``gemv``), or None when the strides do not suit the BLAS; ``flush``
    as for :func:`forward_job`."""
    if not (x.dtype == a.dtype == out.dtype == np.float32 and x.ndim == out.ndim == 1
            and x.strides[0] % 4 == 0 and out.strides[0] % 4 == 0 and x.strides[0] > 0
            and out.strides[0] > 0):
        return None
    oa = _operand(a)
    if oa is None or oa[0] != _NO_TRANS:
        return None
    (K, N) = a.shape
    assert x.shape == (K,) and out.shape == (N,), (x.shape, a.shape, out.shape)
    return _job(JOB_GEMV, flush, K, N, a.ctypes.data, oa[1], x.ctypes.data, x.strides[0] // 4,
                out.ctypes.data, out.strides[0] // 4)


_blocks: dict[tuple[int, int], int] = {}


def column_block(n: int, H: int) -> int:
    """The fastest column-block width for the loops' step product ``(n, H) x (H, H)`` on one
    BLAS thread, timed once per shape and process (a few milliseconds).

    OpenBLAS runs a product it deems small (about 10^6 multiply-adds on this machine's kernel)
    without packing its operands; a step product just above that size, as the character model's
    16-row pieces (16 x 256 x 256), ran in 18 us as column blocks against 25 us whole (measured).
    The blocks may round differently from the whole product, so the compiled jobs use this
    and :func:`forward`/:func:`backward` do not.
    """
    key = (n, H)
    if key not in _blocks:
        k = _kernels()
        assert k is not None, "see available()"
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, H)).astype(np.float32)
        W = rng.standard_normal((H, H)).astype(np.float32)
        c = np.empty((n, H), np.float32)
        reps = max(1, int(2e7 // (2 * n * H * H)))            # ~0.1-0.2 ms per timing
        cands = [H] + [cb for cb in (H // 2, H // 4) if cb >= 32 and H % cb == 0 and cb % 16 == 0]
        best: dict[int, float] = {}
        for cb in cands:
            k["products"](n, H, cb, reps, a, W, c)             # warm
        for _ in range(5):
            for cb in cands:
                t = time.perf_counter()
                k["products"](n, H, cb, reps, a, W, c)
                dt = time.perf_counter() - t
                best[cb] = min(best.get(cb, dt), dt)
        # a block must win clearly: otherwise whole (the NumPy loop's numbers for relu)
        fastest = min(best, key=best.__getitem__)
        _blocks[key] = fastest if best[fastest] < 0.9 * best.get(H, np.inf) else H
    return _blocks[key]


def run(job: NDArray[np.int64]) -> None:
    """Run one job in the calling thread, without the GIL."""
    k = _kernels()
    assert k is not None and job.shape == (JOB_SIZE,) and job[0] != JOB_PYTHON
    k["run"](job)


def serve(posted: NDArray[np.int64], finished: NDArray[np.int64], jobs: NDArray[np.int64],
          i: int, taken: int, limit: int) -> tuple[int, bool]:
    """Worker ``i``'s loop, without the GIL: whenever ``posted[i]`` exceeds ``taken``, run the job
    ``jobs[i]`` and set ``finished[i]``; return ``(taken, True)`` when the next is a Python piece
    (kind ``JOB_PYTHON``), ``(taken, False)`` after ``limit`` idle polls (about 0.2 us each)."""
    k = _kernels()
    assert k is not None, "see available()"
    taken, python = k["serve"](posted, finished, jobs, i, taken, limit)
    return int(taken), bool(python)


def spin(counters: NDArray[np.int64], i: int, target: int, limit: int) -> bool:
    """Poll, without the GIL, until ``counters[i] >= target`` (True) or ``limit`` polls passed
    (False); :mod:`rnnlab.parallel`'s workers wait like this between the pieces of one call."""
    k = _kernels()
    assert k is not None, "see available()"
    return bool(k["spin"](counters, i, target, limit))


def scatter_rows(ids: NDArray[np.intp], rows: Array, out: Array) -> Array:
    """``out[v] = sum of rows[r] with ids[r] == v`` in the order of ``r`` (as ``np.add.at``);
    ``rows`` ``(N, H)`` and ``out`` ``(V, H)`` C-contiguous, ``ids`` validated."""
    k = _kernels()
    assert k is not None and rows.flags.c_contiguous and out.flags.c_contiguous
    k["scatter"](ids, rows, out)
    return out
