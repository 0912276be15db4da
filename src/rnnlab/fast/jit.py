"""The compiled kernels themselves: Numba builds of the fast engine's loops, products and worker
loop (optional: ``pip install 'rnnlab[fast]'``).

Imported only by a process that builds them (:mod:`rnnlab.fast.kernels`, when no build of this
key is cached): it registers the C functions the kernels call
(:func:`rnnlab.fast.compiled.link`), and :func:`entries` compiles the entry points and hands
their LLVM IR to :mod:`rnnlab.fast.native`, which turns it into an object file that later
processes load without Numba (docs/performance.md, "Start-up").  The C functions (NumPy's
``cblas_sgemm`` and ``cblas_sgemv``, ``fegetenv``/``fesetenv``, ``sched_yield``, ``malloc``/
``free``) are called by name (:data:`rnnlab.fast.compiled.SYMBOLS`), never by an address baked
into the code, and nothing here uses Numba's runtime (no array is allocated by Numba: scratch
space comes from ``malloc``), so the object needs nothing of Numba's.

The parts, each named for what a reader looks for:

* :func:`tanh32`: the float32 ``tanh`` of eq. (38);
* :func:`f32_at` (and ``f64_at``, ``i64_at``): a raw address as a typed pointer;
  :func:`step_product`: the loops' step product through NumPy's own BLAS;
* :func:`forward_loop` and :func:`backward_loop`: eqs. (5)-(6) with (39), and (16)-(17) with the
  bias gradient of (19), on a block of batch rows;
* :func:`run`: one job (an int64 array, see :data:`rnnlab.fast.compiled.JOB_SIZE`) run without
  the GIL, optionally with subnormals flushed;
* :func:`load_acquire`/:func:`store_release` and :func:`serve`, :func:`spin`, :func:`post`: the
  acquire/release counters of the thread hand-off and what a worker thread runs between jobs;
* :func:`scatter` (eq. 21);
* the entry points (:data:`ENTRIES`: ``run_at``, ``serve_at``, ...): the same on addresses, the
  functions the object file exports, with ``publish_at`` (a release store of one counter) and
  ``products_at`` (the column-block timing loop).
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from . import compiled, native
from .compiled import (
    JOB_BACKWARD,
    JOB_FORWARD,
    JOB_GEMM,
    JOB_GEMV,
    JOB_PYTHON,
    JOB_SIZE,
    JOB_STATUS,
    NO_TRANS,
    ROW_MAJOR,
    SYMBOLS,
    TRANS,
)

__all__ = ["ENTRIES", "POINTERS", "entries"]

_BLAS = compiled.link()                       # the C functions, registered by name
_N = types.int64 if _BLAS.ilp64 else types.int32          # the BLAS's integers
_E, _F, _P = types.int32, types.float32, types.intp       # enums, floats, addresses

# cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
_sgemm: Any = types.ExternalFunction(SYMBOLS["sgemm"], types.void(
    _E, _E, _E, _N, _N, _N, _F, _P, _N, _P, _N, _F, _P, _N))
# cblas_sgemv(order, trans, M, N, alpha, A, lda, x, incx, beta, y, incy)
_sgemv: Any = types.ExternalFunction(SYMBOLS["sgemv"], types.void(
    _E, _E, _N, _N, _F, _P, _N, _P, _N, _F, _P, _N))
_fegetenv: Any = types.ExternalFunction(SYMBOLS["fegetenv"], types.int32(_P))
_fesetenv: Any = types.ExternalFunction(SYMBOLS["fesetenv"], types.int32(_P))
_sched_yield: Any = types.ExternalFunction(SYMBOLS["sched_yield"], types.int32())
_malloc: Any = types.ExternalFunction(SYMBOLS["malloc"], types.intp(types.intp))
_free: Any = types.ExternalFunction(SYMBOLS["free"], types.void(types.intp))

_ONE, _ZERO = np.float32(1.0), np.float32(0.0)
_ROW_MAJOR, _NO_TRANS, _TRANS = np.int32(ROW_MAJOR), np.int32(NO_TRANS), np.int32(TRANS)
# fenv_t on x86-64 glibc, as int64 words: MXCSR is bytes 28-31, the high half of word 3; FTZ is
# its bit 15, DAZ its bit 6 (as rnnlab.fast.cpu.FlushDenormals sets them)
_MXCSR_WORD, _FTZ_DAZ = 3, 0x8040 << 32


# ----------------------------------------------------------------------------- eq. (38)

# tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9] (float32 tanh is +-1 beyond), the monomial coefficients
# of Eigen's generic_fast_tanh_float, lowest degree first
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = (np.float32(c) for c in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_B0, _B2, _B4, _B6 = (np.float32(c) for c in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))
_LIM = np.float32(9.0)


# error_model="numpy": a division by zero gives inf/nan instead of raising, which is what lets
# LLVM vectorise the division (q >= 4.8e-3 > 0 here anyway)
@nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def tanh32(x: Any) -> Any:                          # eq. (38), one float32, inlined
    x = min(max(x, -_LIM), _LIM)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return min(max(x * p / q, -_ONE), _ONE)


# ----------------------------------------------------------------------------- intrinsics


def _pointer_codegen(dtype: Any) -> Any:
    """The typing result of an address-to-pointer intrinsic: ``dtype*`` from an int64."""
    sig = types.CPointer(dtype)(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(dtype)))
    return sig, codegen


# one function per type: Numba tells intrinsics apart by their function's name
def _f32_at(typingctx: Any, addr: Any) -> Any:
    """An int64 address as a float32 pointer (for ``nb.carray``)."""
    return _pointer_codegen(types.float32)


def _f64_at(typingctx: Any, addr: Any) -> Any:
    """An int64 address as a float64 pointer."""
    return _pointer_codegen(types.float64)


def _i64_at(typingctx: Any, addr: Any) -> Any:
    """An int64 address as an int64 pointer."""
    return _pointer_codegen(types.int64)


f32_at: Any = intrinsic(_f32_at)
f64_at: Any = intrinsic(_f64_at)
i64_at: Any = intrinsic(_i64_at)


_I64 = ir.IntType(64)


def _load_acquire(typingctx: Any, addr: Any) -> Any:
    """The int64 at ``addr``, an LLVM atomic load with acquire ordering.

    With :func:`store_release`: the counters through which the threads of
    :mod:`rnnlab.fast.pool` hand jobs and results to each other.  A release store makes every
    write the thread did before it visible to a thread whose acquire load reads the stored
    value, on any architecture (x86-64 and AArch64 alike: LLVM emits a plain ``mov`` on x86-64,
    ``stlr``/``ldar`` on AArch64), and the compiler may not move memory operations across them.
    """
    sig = types.int64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr = builder.inttoptr(args[0], _I64.as_pointer())
        return builder.load_atomic(ptr, "acquire", 8)
    return sig, codegen


load_acquire: Any = intrinsic(_load_acquire)


def _store_release(typingctx: Any, addr: Any, value: Any) -> Any:
    """``*addr = value`` (int64), an LLVM atomic store with release ordering."""
    sig = types.void(types.int64, types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr = builder.inttoptr(args[0], _I64.as_pointer())
        builder.store_atomic(args[1], ptr, "release", 8)
        return context.get_dummy_value()
    return sig, codegen


store_release: Any = intrinsic(_store_release)


# ----------------------------------------------------------------------------- the loops


@nb.njit(inline="always")
def step_product(n: int, H: int, K: int, a: int, lda: int, w: int, c: int, cb: int) -> None:
    # c (n, H) = a (n, K, leading dimension lda) x w (K, H), in column blocks of cb (see
    # kernels.column_block); addresses of float32 row-major blocks
    for j0 in range(0, H, cb):
        _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, n, min(cb, H - j0), K, _ONE, a, lda,
               w + 4 * j0, H, _ZERO, c + 4 * j0, H)


# Every (steps, rows, H) block is passed flat, with its step and row strides in elements, so that
# Numba sees contiguous arrays and vectorises the loops over H.
@nb.njit(nogil=True, fastmath={"contract"}, error_model="numpy")
def forward_loop(hf: Any, h0: int, h1: int, T: int, n: int, H: int, W: Any, tmp: Any,
                 kind: int, reverse: bool, cb: int, kx: int, xa: int, xsize: int, x0: int,
                 x1: int) -> None:
    """The forward loop, eqs. (5)-(6), on a block of rows (with eq. 39 on a joint buffer)."""
    # hf: the state buffer (T + 1 slots of n rows), the projections in the step slots; or, with
    # kx > 0 (a joint buffer, forward direction only), rows [H_{t-1} | x_t | 1] of width
    # >= H + kx in slot t and W = [W_hh; W_xh; b_h] (H + kx, H): the step product is then Z_t
    # itself, eq. (39), and the slots hold nothing to add
    # with xa != 0 (joint buffer only) the loop first copies its input rows into the joint rows,
    # from the (T, n, kx - 1) block at xa (strides x0, x1)
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
        # column_block); the H_prev part skipped when it is exactly zero (h0 = 0, the default;
        # W_hh is finite)
        live = s > 0
        if not live:
            for i in range(n):
                hp = hf[prev * h0 + i * h1:prev * h0 + i * h1 + H]
                for j in range(H):
                    if hp[j] != _ZERO:
                        live = True
                        break
                if live:
                    break
        skip = 0 if live else H                    # rows of W (columns of A) left out
        if skip < H + kx:
            step_product(n, H, H + kx - skip, base + 4 * (prev * h0 + skip), h1,
                         w + 4 * skip * H, c, cb)
        else:
            tmp[:n * H] = _ZERO
        # H_t = f(A_t + tmp), or f(tmp) with kx > 0, eqs. (5)-(6); one loop per activation over
        # contiguous rows (slices, so that Numba knows the indices are in range and vectorises)
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
                        z[j] = v if (v > _ZERO or v != v) else _ZERO    # as np.maximum
                else:
                    for j in range(H):
                        z[j] = m[j]
            elif kind == 0:
                for j in range(H):
                    z[j] = tanh32(z[j] + m[j])                          # with eq. (38)
            elif kind == 1:
                for j in range(H):
                    v = z[j] + m[j]
                    z[j] = v if (v > _ZERO or v != v) else _ZERO        # as np.maximum
            else:
                for j in range(H):
                    z[j] = z[j] + m[j]


@nb.njit(nogil=True, error_model="numpy")
def backward_loop(hf: Any, h0: int, h1: int, gf: Any, g0: int, g1: int, df: Any, d0: int,
                  d1: int, has_dH: bool, T: int, n: int, H: int, WT: Any, dnext: Any,
                  kind: int, reverse: bool, cb: int, db: Any, has_db: bool) -> None:
    """The backward loop, eqs. (16)-(17), on a block of rows (with the bias sum of eq. 19)."""
    # gf: dZ (T slots), df: dH (T slots) or unused; dnext (n * H) holds dL/dH_T on entry,
    # dL/dh0 on exit; with has_db, db (H) accumulates the column sums of dZ, eq. (19)
    gbase, w, d = gf.ctypes.data, WT.ctypes.data, dnext.ctypes.data
    for s in range(T):
        t = s if reverse else T - 1 - s
        if not has_dH:                      # the exact zero-stop of cell.backward
            live = False
            for k in range(n * H):
                if dnext[k] != _ZERO:
                    live = True
                    break
            if not live:
                for r in range(s, T):
                    tr = r if reverse else T - 1 - r
                    for i in range(n):
                        o = tr * g0 + i * g1
                        for j in range(H):
                            gf[o + j] = _ZERO
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
                    g[j] = (_ONE - h[j] * h[j]) * dn[j]
            elif kind == 1:
                for j in range(H):
                    g[j] = (_ONE if h[j] > _ZERO else _ZERO) * dn[j]
            else:
                for j in range(H):
                    g[j] = dn[j]
            if has_db:                          # while the row is in the cache
                for j in range(H):
                    db[j] += g[j]
        # dL/dH_{t-1} = dZ_t W_hh^T, eq. (16), in column blocks of cb
        step_product(n, H, H, gbase + 4 * t * g0, g1, w, d, cb)


# ----------------------------------------------------------------------------- jobs


@nb.njit(nogil=True)
def run(job: Any) -> int:
    """One job (see :data:`rnnlab.fast.compiled.JOB_SIZE`), in the calling thread, without the
    GIL; 0, or 1 when the C library had no memory for its scratch space."""
    kind, flush = job[0], job[1] != 0
    # scratch from the C library (no Numba runtime: see rnnlab.fast.native): two fenv_t of 32
    # bytes in 64 each, then the forward loop's (n, H) product
    scratch = 128 + (4 * job[7] * job[8] if kind == JOB_FORWARD else 0)
    block = _malloc(scratch)
    if block == 0:
        return 1
    saved = nb.carray(i64_at(block), (8,))
    if flush:                                   # FTZ and DAZ while the job runs
        env = nb.carray(i64_at(block + 64), (8,))
        _fegetenv(block)
        for j in range(8):
            env[j] = saved[j]
        env[_MXCSR_WORD] = env[_MXCSR_WORD] | _FTZ_DAZ
        _fesetenv(block + 64)
    if kind == JOB_FORWARD:
        n, H = job[7], job[8]
        forward_loop(nb.carray(f32_at(job[2]), (job[3],)), job[4], job[5], job[6], n, H,
                     nb.carray(f32_at(job[9]), ((H + job[13]) * H,)),
                     nb.carray(f32_at(block + 128), (n * H,)), job[10], job[11] != 0, job[12],
                     job[13], job[14], job[15], job[16], job[17])
    elif kind == JOB_BACKWARD:
        n, H = job[15], job[16]
        backward_loop(nb.carray(f32_at(job[2]), (job[3],)), job[4], job[5],
                      nb.carray(f32_at(job[6]), (job[7],)), job[8], job[9],
                      nb.carray(f32_at(job[10]), (job[11],)), job[12], job[13], job[14] != 0,
                      job[17], n, H, nb.carray(f32_at(job[18]), (H * H,)),
                      nb.carray(f32_at(job[19]), (n * H,)), job[20], job[21] != 0, job[22],
                      nb.carray(f32_at(job[23] if job[23] != 0 else job[19]), (H,)),
                      job[23] != 0)
    elif kind == JOB_GEMM:
        _sgemm(_ROW_MAJOR, job[2], job[3], job[4], job[5], job[6], _ONE, job[7], job[8],
               job[9], job[10], _ZERO, job[11], job[12])
    elif kind == JOB_GEMV:
        _sgemv(_ROW_MAJOR, _TRANS, job[2], job[3], _ONE, job[4], job[5], job[6], job[7], _ZERO,
               job[8], job[9])
    if flush:
        _fesetenv(block)
    _free(block)
    return 0


# ----------------------------------------------------------------------------- the hand-off
#
# A poster writes the job (jobs[i]), then publishes posted[i] with a release store; the worker
# reads posted[i] with an acquire load before it reads the job, runs it, and publishes
# finished[i] with a release store; the poster's acquire load of finished[i] (spin) then sees
# every result the job wrote.  These orderings hold on any architecture, not only where the
# hardware keeps stores in order (x86-64).


@nb.njit(nogil=True)
def serve(posted: Any, finished: Any, jobs: Any, i: int, taken: int,
          limit: int) -> tuple[int, bool]:
    """Worker ``i``: run its jobs as they are posted; return ``(jobs taken, True)`` when the next
    is a Python piece, ``(jobs taken, False)`` after ``limit`` idle polls."""
    at_posted = posted.ctypes.data + 8 * i
    at_finished = finished.ctypes.data + 8 * i
    idle = 0
    while idle < limit:
        if load_acquire(at_posted) > taken:     # acquire: the job written before it
            if jobs[i, 0] == JOB_PYTHON:
                return taken, True
            jobs[i, JOB_STATUS] = run(jobs[i])
            taken += 1
            store_release(at_finished, taken)   # release: the job's results before it
            idle = 0
        else:
            idle += 1
            _sched_yield()
    return taken, False


@nb.njit(nogil=True)
def spin(counters: Any, i: int, target: int, limit: int) -> bool:
    """Wait, without the GIL, until ``counters[i] >= target`` (an acquire load: what was written
    before the value was published is visible after); False after ``limit`` polls.  The
    ``sched_yield`` call between polls lets other threads of the process run on this core."""
    at = counters.ctypes.data + 8 * i
    for _ in range(limit):
        if load_acquire(at) >= target:
            return True
        _sched_yield()
    return load_acquire(at) >= target


@nb.njit(nogil=True)
def post(jobs: Any, posted: Any, i: int, job: Any) -> int:
    """The poster's half of the hand-off in one call: ``jobs[i] = job``, then ``posted[i] + 1``
    published with a release store (only the poster writes ``posted[i]``); returns it."""
    for j in range(job.shape[0]):
        jobs[i, j] = job[j]
    number = posted[i] + 1
    store_release(posted.ctypes.data + 8 * i, number)
    return number


# ----------------------------------------------------------------------------- the rest


@nb.njit(nogil=True)
def scatter(ids: Any, rows: Any, out: Any) -> None:
    """Eq. (21)'s embedding gradient: ``out[v] = sum of rows[r] over r with ids[r] == v``, adding
    in the order of ``r`` as ``np.add.at`` does (so the same numbers)."""
    out[:] = 0
    for r in range(ids.shape[0]):
        o, x = out[ids[r]], rows[r]
        for j in range(out.shape[1]):
            o[j] += x[j]


# ----------------------------------------------------------------------------- entry points
#
# What rnnlab.fast.native exports as C functions: int64 arguments (addresses, sizes, counts) and
# an int64 result >= 0 (the native wrapper returns -1 when Numba's function reports an error).


@nb.njit(nogil=True)
def run_at(job: int) -> int:
    """:func:`run` on the job at address ``job``."""
    return run(nb.carray(i64_at(job), (JOB_SIZE,)))


@nb.njit(nogil=True)
def serve_at(posted: int, finished: int, jobs: int, n: int, i: int, taken: int,
             limit: int) -> int:
    """:func:`serve` on the pool's ``(n,)`` counters and ``(n, JOB_SIZE)`` jobs at these
    addresses: ``2 * taken + (1 if the next piece is Python's else 0)``."""
    taken, python = serve(nb.carray(i64_at(posted), (n,)), nb.carray(i64_at(finished), (n,)),
                          nb.carray(i64_at(jobs), (n, JOB_SIZE)), i, taken, limit)
    return 2 * taken + (1 if python else 0)


@nb.njit(nogil=True)
def spin_at(counters: int, n: int, i: int, target: int, limit: int) -> int:
    """:func:`spin` on the ``(n,)`` counters at ``counters``: 1 (reached) or 0."""
    return 1 if spin(nb.carray(i64_at(counters), (n,)), i, target, limit) else 0


@nb.njit(nogil=True)
def publish_at(counters: int, i: int, value: int) -> int:
    """``counters[i] = value`` (int64 counters at ``counters``) with a release store: every write
    this thread made before it (a job's operands, a Python piece's results) is visible to an
    acquire load that reads it."""
    store_release(counters + 8 * i, value)
    return 0


@nb.njit(nogil=True)
def post_at(jobs: int, posted: int, n: int, i: int, job: int) -> int:
    """:func:`post` on the pool's jobs and counters at these addresses, the job at ``job``."""
    return post(nb.carray(i64_at(jobs), (n, JOB_SIZE)), nb.carray(i64_at(posted), (n,)), i,
                nb.carray(i64_at(job), (JOB_SIZE,)))


@nb.njit(nogil=True)
def products_at(n: int, H: int, cb: int, reps: int, a: int, W: int, c: int) -> int:
    """The loops' step product ``c = a W`` on float32 ``a`` (n, H), ``W`` (H, H), ``c`` (n, H)
    at these addresses, ``reps`` times, in column blocks of ``cb``
    (:func:`rnnlab.fast.kernels.column_block` times it)."""
    for _ in range(reps):
        step_product(n, H, H, a, H, W, c, cb)
    return 0


@nb.njit(nogil=True)
def scatter32_at(ids: int, N: int, rows: int, out: int, V: int, H: int) -> int:
    """:func:`scatter` on intp ``ids`` (N,), float32 ``rows`` (N, H) and ``out`` (V, H)."""
    scatter(nb.carray(i64_at(ids), (N,)), nb.carray(f32_at(rows), (N, H)),
            nb.carray(f32_at(out), (V, H)))
    return 0


@nb.njit(nogil=True)
def scatter64_at(ids: int, N: int, rows: int, out: int, V: int, H: int) -> int:
    """:func:`scatter` on intp ``ids`` (N,), float64 ``rows`` (N, H) and ``out`` (V, H)."""
    scatter(nb.carray(i64_at(ids), (N,)), nb.carray(f64_at(rows), (N, H)),
            nb.carray(f64_at(out), (V, H)))
    return 0


ENTRIES: dict[str, Any] = {
    "run": run_at, "serve": serve_at, "spin": spin_at, "publish": publish_at, "post": post_at,
    "products": products_at, "scatter32": scatter32_at, "scatter64": scatter64_at,
}
"""The entry points by the names :mod:`rnnlab.fast.kernels` calls them."""


POINTERS: dict[str, tuple[int, ...]] = {"run": (0,), "post": (4,)}
"""The arguments of each entry that its C wrapper takes as ``int64_t *`` (a job array, passed
as a buffer: a call from Python costs a fraction of a microsecond instead of the 1.5-2.5 us of
``ndarray.ctypes.data``); the others are ``int64_t``."""


def entries() -> dict[str, native.Entry]:
    """Compile every entry point (for ``int64`` arguments) and return its LLVM IR and the C
    signature of its wrapper, for :func:`rnnlab.fast.native.build`."""
    out = {}
    for name, fn in ENTRIES.items():
        n = fn.py_func.__code__.co_argcount
        sig = (types.int64,) * n
        fn.compile(sig)
        args = "".join("p" if i in POINTERS.get(name, ()) else "i" for i in range(n))
        out[name] = native.Entry(fn.inspect_llvm(sig), fn.overloads[sig].fndesc.llvm_func_name,
                                 args)
    return out
