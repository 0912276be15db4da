"""The compiled kernels themselves: Numba builds of the fast engine's loops, products and
worker loop (optional: ``pip install 'rnnlab[fast]'``).

:func:`build` compiles them once per process, from these parts, each named for what a reader
looks for:

* :func:`_tanh32`: the float32 ``tanh`` of eq. (38);
* :func:`_address` and :func:`_step_product`: raw addresses as float32 pointers, and the loops'
  step product through NumPy's own BLAS (``cblas_sgemm``, found by :func:`cblas`);
* :func:`_forward_loop` and :func:`_backward_loop`: eqs. (5)-(6) with (39), and (16)-(17) with the
  bias gradient of (19), on a block of batch rows;
* :func:`_job_runner`: one job (an int64 array, see :data:`JOB_SIZE`) run without the GIL,
  optionally with subnormals flushed;
* :func:`_atomics` and :func:`_workers`: the acquire/release counters of the thread hand-off,
  and what a worker thread runs between jobs (``serve``, ``spin``, ``publish``);
* :func:`_products` (the column-block timing loop) and :func:`_scatter` (eq. 21).

:mod:`rnnlab.fast.kernels` is the Python face that calls them.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

__all__ = ["JOB_BACKWARD", "JOB_FORWARD", "JOB_GEMM", "JOB_GEMV", "JOB_PYTHON", "JOB_SIZE",
           "KINDS", "NO_TRANS", "TRANS", "build", "cblas"]

KINDS = {"tanh": 0, "relu": 1, "identity": 2}
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

# A job is an int64 array of JOB_SIZE slots that :func:`run` executes without the GIL; a worker
# thread of rnnlab.fast.pool serves them (:func:`serve`) without taking the GIL either, which is
# what makes a hand-off cost microseconds instead of the ~50 us of waking a Python thread.
# Slot 0 is the kind, slot 1 the subnormal flush flag; the rest depends on the kind (see the
# *_job makers).  The arrays a job points into must outlive it.
JOB_SIZE = 32
JOB_FORWARD, JOB_BACKWARD, JOB_GEMM, JOB_GEMV, JOB_PYTHON = 1, 2, 3, 4, 9
# fenv_t on x86-64 glibc, as int64 words: MXCSR is bytes 28-31, the high half of word 3; FTZ is
# its bit 15, DAZ its bit 6 (as rnnlab.fast.cpu.FlushDenormals sets them)
_MXCSR_WORD, _FTZ_DAZ = 3, 0x8040 << 32

# eq. (38): tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9] (float32 tanh is +-1 beyond), the monomial
# coefficients of Eigen's generic_fast_tanh_float, lowest degree first
_ALPHA = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
          5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
          -2.76076847742355e-16)
_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
         1.19825839466702e-06)


def cblas(name: str, args: str) -> Any:
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


def _tanh32(nb: Any) -> Any:
    """eq. (38): ``tanh(x) ~ x P(x^2) / Q(x^2)``, clamped, for one float32 (inlined)."""
    f32 = np.float32
    a1, a3, a5, a7, a9, a11, a13 = (f32(c) for c in _ALPHA)
    b0, b2, b4, b6 = (f32(c) for c in _BETA)
    lim, one = f32(9.0), f32(1.0)

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
    return tanh32


def _address() -> Any:
    """An intrinsic that turns an int64 address into a float32 pointer (for ``nb.carray``)."""
    from numba import types
    from numba.extending import intrinsic

    def address_as_pointer(typingctx: Any, addr: Any) -> Any:   # an address as a float32*
        sig = types.CPointer(types.float32)(types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(
                types.CPointer(types.float32)))
        return sig, codegen

    return intrinsic(address_as_pointer)


def _atomics() -> tuple[Any, Any]:
    """``load_acquire(addr)`` and ``store_release(addr, value)`` on an int64 at an address:
    LLVM atomic operations with acquire and release ordering, for the counters through which
    the threads of :mod:`rnnlab.fast.pool` hand jobs and results to each other.

    A release store makes every write the thread did before it visible to a thread whose
    acquire load reads the stored value, on any architecture (x86-64 and AArch64 alike: LLVM
    emits a plain ``mov`` on x86-64, ``stlr``/``ldar`` on AArch64), and the compiler may not
    move memory operations across them.
    """
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    i64 = ir.IntType(64)

    def load_acquire(typingctx: Any, addr: Any) -> Any:
        sig = types.int64(types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ptr = builder.inttoptr(args[0], i64.as_pointer())
            return builder.load_atomic(ptr, "acquire", 8)
        return sig, codegen

    def store_release(typingctx: Any, addr: Any, value: Any) -> Any:
        sig = types.void(types.int64, types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ptr = builder.inttoptr(args[0], i64.as_pointer())
            builder.store_atomic(args[1], ptr, "release", 8)
            return context.get_dummy_value()
        return sig, codegen

    return intrinsic(load_acquire), intrinsic(store_release)


def _step_product(nb: Any, sgemm: Any) -> Any:
    """The loops' step product through ``cblas_sgemm``, in column blocks (inlined)."""
    one, zero = np.float32(1.0), np.float32(0.0)

    @nb.njit(inline="always")
    def step_product(n: int, H: int, K: int, a: int, lda: int, w: int, c: int, cb: int) -> None:
        # c (n, H) = a (n, K, leading dimension lda) x w (K, H), in column blocks of cb (see
        # column_block); addresses of float32 row-major blocks
        for j0 in range(0, H, cb):
            sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, n, min(cb, H - j0), K, one, a, lda,
                  w + 4 * j0, H, zero, c + 4 * j0, H)
    return step_product


def _forward_loop(nb: Any, tanh32: Any, step_product: Any, f32_at: Any) -> Any:
    """The forward loop, eqs. (5)-(6), on a block of rows (with eq. 39 on a joint buffer)."""
    zero = np.float32(0.0)

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
    return forward


def _backward_loop(nb: Any, step_product: Any) -> Any:
    """The backward loop, eqs. (16)-(17), on a block of rows (with the bias sum of eq. 19)."""
    one, zero = np.float32(1.0), np.float32(0.0)

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
    return backward


def _job_runner(nb: Any, forward: Any, backward: Any, sgemm: Any, sgemv: Any,
                f32_at: Any) -> Any:
    """``run(job)``: one job, in the calling thread, without the GIL."""
    one, zero = np.float32(1.0), np.float32(0.0)
    libc = ctypes.CDLL(None)
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
            sgemm(ROW_MAJOR, job[2], job[3], job[4], job[5], job[6], one, job[7], job[8],
                  job[9], job[10], zero, job[11], job[12])
        elif kind == JOB_GEMV:
            sgemv(ROW_MAJOR, TRANS, job[2], job[3], one, job[4], job[5], job[6], job[7], zero,
                  job[8], job[9])
        if flush:
            fesetenv(saved.ctypes.data)
    return run


def _sched_yield() -> Any:
    libc = ctypes.CDLL(None)
    sched_yield = libc.sched_yield
    sched_yield.argtypes, sched_yield.restype = [], ctypes.c_int
    return sched_yield


def _workers(nb: Any, run: Any, load_acquire: Any, store_release: Any
             ) -> tuple[Any, Any, Any, Any]:
    """``serve`` (a worker's loop over posted jobs), ``spin`` (a wait on a counter),
    ``publish`` (a counter's new value, after everything written before it) and ``post`` (a job
    and its count, published).

    The hand-off: a poster writes the job (``jobs[i]``), then publishes ``posted[i]`` with a
    release store; the worker reads ``posted[i]`` with an acquire load before it reads the job,
    runs it, and publishes ``finished[i]`` with a release store; the poster's acquire load of
    ``finished[i]`` (:func:`spin`) then sees every result the job wrote.  These orderings hold on
    any architecture, not only where the hardware keeps stores in order (x86-64).
    """
    sched_yield = _sched_yield()

    @nb.njit(nogil=True)
    def serve(posted: Any, finished: Any, jobs: Any, i: int, taken: int,
              limit: int) -> tuple[int, bool]:
        # worker i: run its jobs as they are posted; return (jobs taken, True) when the next is
        # a Python piece, (jobs taken, False) after `limit` idle polls
        at_posted = posted.ctypes.data + 8 * i
        at_finished = finished.ctypes.data + 8 * i
        idle = 0
        while idle < limit:
            if load_acquire(at_posted) > taken:     # acquire: the job written before it
                if jobs[i, 0] == JOB_PYTHON:
                    return taken, True
                run(jobs[i])
                taken += 1
                store_release(at_finished, taken)   # release: the job's results before it
                idle = 0
            else:
                idle += 1
                sched_yield()
        return taken, False

    @nb.njit(nogil=True)
    def spin(counters: Any, i: int, target: int, limit: int) -> bool:
        # wait, without the GIL, until counters[i] >= target (an acquire load: what was written
        # before the value was published is visible after); False after `limit` polls.  The
        # sched_yield call between polls lets other threads of the process run on this core.
        at = counters.ctypes.data + 8 * i
        for _ in range(limit):
            if load_acquire(at) >= target:
                return True
            sched_yield()
        return load_acquire(at) >= target

    @nb.njit(nogil=True)
    def publish(counters: Any, i: int, value: int) -> None:
        # counters[i] = value with a release store: every write this thread made before it
        # (a job's operands, a Python piece's results) is visible to an acquire load that
        # reads the value
        store_release(counters.ctypes.data + 8 * i, value)

    @nb.njit(nogil=True)
    def post(jobs: Any, posted: Any, i: int, job: Any) -> int:
        # the poster's half of the hand-off in one call: jobs[i] = job, then posted[i] + 1
        # published with a release store (only the poster writes posted[i]); returns it
        for j in range(job.shape[0]):
            jobs[i, j] = job[j]
        number = posted[i] + 1
        store_release(posted.ctypes.data + 8 * i, number)
        return number
    return serve, spin, publish, post


def _products(nb: Any, step_product: Any) -> Any:
    """The step product ``reps`` times (:func:`rnnlab.fast.kernels.column_block` times it)."""
    @nb.njit(nogil=True)
    def products(n: int, H: int, cb: int, reps: int, a: Any, W: Any, c: Any) -> None:
        # the step product (n, H) x (H, H) of the loops, reps times, in column blocks of cb
        for _ in range(reps):
            step_product(n, H, H, a.ctypes.data, H, W.ctypes.data, c.ctypes.data, cb)
    return products


def _scatter(nb: Any) -> Any:
    """Eq. (21)'s embedding gradient, in the order ``np.add.at`` adds."""
    @nb.njit(nogil=True)
    def scatter(ids: Any, rows: Any, out: Any) -> None:
        # out[v] = sum of rows[r] over r with ids[r] == v, eq. (21), adding in the order of r as
        # np.add.at does (so the same numbers)
        out[:] = 0
        for r in range(ids.shape[0]):
            o, x = out[ids[r]], rows[r]
            for j in range(out.shape[1]):
                o[j] += x[j]
    return scatter


def build() -> dict[str, Any]:
    """Compile the kernels (once per process, a few seconds)."""
    import numba as nb

    sgemm = cblas("sgemm", "eeennnfpnpnfpn")
    sgemv = cblas("sgemv", "eennfpnpnfpn")
    f32_at = _address()
    step_product = _step_product(nb, sgemm)
    forward = _forward_loop(nb, _tanh32(nb), step_product, f32_at)
    backward = _backward_loop(nb, step_product)
    run = _job_runner(nb, forward, backward, sgemm, sgemv, f32_at)
    serve, spin, publish, post = _workers(nb, run, *_atomics())
    return {"forward": forward, "backward": backward, "spin": spin, "scatter": _scatter(nb),
            "run": run, "serve": serve, "publish": publish, "post": post,
            "products": _products(nb, step_product)}
