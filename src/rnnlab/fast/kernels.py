"""Compiled recurrent loops for the fast engine (optional: ``pip install 'rnnlab[fast]'``): the
Python face of the kernels of :mod:`rnnlab.fast.jit`, built once by Numba into an object file
that later processes load without Numba (:mod:`rnnlab.fast.native`; the BLAS link, the key and
the cache's place: :mod:`rnnlab.fast.compiled`).

The loops of :func:`rnnlab.fast.loops.forward_into` and :func:`rnnlab.fast.loops.backward_into`
(eqs. 5-6 and 16-17) compiled with Numba: one call runs every step of a block of batch rows,
calling NumPy's own BLAS for the step product and doing the element-wise work in the same pass,
without the interpreter and without holding the GIL.  So a
:class:`rnnlab.fast.workspace.Workspace` can run the rows of a batch on several threads at once
(:class:`rnnlab.fast.pool.Runner`), which the NumPy loop cannot do well: each of its per-step
NumPy calls must take the GIL back.

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

*Jobs* are what a batch split over threads runs (:class:`rnnlab.fast.pool.Runner`): a loop on a
block of rows (:func:`forward_job`, :func:`backward_job`), a product (:func:`gemm_job`,
:func:`vecmat_job`), each an int64 array of addresses and sizes that :func:`run` executes and a
worker thread serves (:func:`serve`), neither taking the GIL, optionally with subnormals flushed.
Within a job the loops may cut the step product into column blocks (:func:`column_block`), sum
the bias gradient as they go and skip the product of a zero ``h0``: the same mathematics, in
sums whose order may differ from the NumPy loop's.

The BLAS is NumPy's own (found through ``threadpoolctl``), so its thread count is the one
:mod:`rnnlab.fast.pool` sets.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from . import compiled, native
from .compiled import (
    JOB_BACKWARD,
    JOB_FORWARD,
    JOB_GEMM,
    JOB_GEMV,
    JOB_PYTHON,
    JOB_SIZE,
    JOB_STATUS,
    KINDS,
    NO_TRANS,
    TRANS,
)
from .cpu import BLAS

__all__ = ["JOB_PYTHON", "JOB_SIZE", "JOB_STATUS", "available", "backward", "backward_job",
           "check", "column_block", "compile", "compile_jobs", "forward", "forward_job",
           "gemm_job", "hand_off", "origin", "post_job", "prefetch", "publish", "run",
           "scatter_rows", "serve", "spin", "supports", "vecmat_job", "why_unavailable"]

Array = NDArray[np.floating]

_lock = threading.Lock()
_built: native.NativeKernels | None = None
_INT64 = np.dtype(np.int64)
_why_not: str | None = None


def available() -> bool:
    """True when the kernels can run here (Numba, threadpoolctl and NumPy's cblas found)."""
    return _kernels() is not None


_compiled = False
_compile_lock = threading.Lock()
_prefetching: threading.Thread | None = None


def prefetch() -> None:
    """Start :func:`compile` on a background thread and return at once.

    Loading the kernels' object file costs a fresh process about 0.05 s, building them (the
    first process on a machine) about 10 s (docs/performance.md, "Start-up"); a program that has
    other work first (reading a dataset: mostly file reads and NumPy, which let the thread run)
    can overlap the two.  The first :class:`rnnlab.fast.workspace.Workspace` then waits only for
    what is left.  ``rnnlab train``, the sweeps and the main job call this before loading their
    data.  A failure on the thread is not lost: it is kept (:func:`why_unavailable`), a
    RuntimeWarning names it and a workspace that asks for the kernels raises it.  Idempotent;
    does nothing without Numba."""
    global _prefetching
    if _compiled or _prefetching is not None:
        return

    def job() -> None:
        try:
            compile()
        except Exception:        # noqa: BLE001 -- compile() repeats it, and raises, when used
            pass

    _prefetching = threading.Thread(target=job, name="rnnlab-kernels-prefetch", daemon=True)
    _prefetching.start()


def _after_fork_in_child() -> None:
    # a prefetch thread does not exist in a forked child: a lock it held would never be released
    global _compile_lock, _prefetching
    if not _compiled:
        _compile_lock, _prefetching = threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def compile() -> None:
    """Build (or load from the cache of an earlier process) the kernels now instead of at their
    first use, as a JAX program is compiled ahead of time; :class:`rnnlab.fast.workspace.Workspace`
    calls this.  The first time on a machine it takes seconds (Numba compiles them: 10-11 s on
    this 2-core machine); after that, a process loads their object file in milliseconds,
    without importing Numba (:mod:`rnnlab.fast.native`; docs/performance.md, "Start-up").  A
    cached object that cannot be used (a damaged file, another key's manifest) is deleted and
    built again.  When the kernels cannot be had, :func:`available` is False and
    :func:`why_unavailable` says why (a RuntimeWarning says so too, unless Numba is simply not
    installed: an install with Numba but without cffi or threadpoolctl is warned about)."""
    global _compiled
    if _compiled:
        return
    with _compile_lock:          # one thread builds (a prefetch); the others wait for it
        if not _compiled:
            _kernels()
            _compiled = True


def cache_location() -> Path | None:
    """The directory that holds this process's cached kernels (None when they are not cached
    or not built yet)."""
    return _cache_where


def origin() -> str | None:
    """Where this process's kernels came from: ``"loaded"`` (the cache of an earlier process),
    ``"built"`` (compiled here by Numba), or None (not built yet, or not available)."""
    return None if _built is None else _built.origin


def compile_jobs() -> None:
    """The same as :func:`compile` (kept for callers that split a batch over threads)."""
    compile()


def why_unavailable() -> str | None:
    """Why :func:`available` is False (None when it is True or has not been asked)."""
    return _why_not


def _kernels() -> native.NativeKernels | None:
    global _built, _why_not
    if _built is None and _why_not is None:
        with _lock:
            if _built is None and _why_not is None:
                try:
                    _built = _build()
                except Exception as exc:   # no numba, no threadpoolctl, no cblas, no libc...:
                    _why_not = f"{type(exc).__name__}: {exc}"   # the NumPy loops run instead
                    # quiet only when Numba itself is missing (the kernels were not asked
                    # for); Numba without cffi or threadpoolctl is an incomplete install
                    if not (isinstance(exc, ImportError) and exc.name == "numba"):
                        warnings.warn(f"rnnlab: the compiled kernels are not available "
                                      f"({_why_not}); the NumPy loops run instead",
                                      RuntimeWarning, stacklevel=2)
    return _built


_cache_where: Path | None = None


def _build() -> native.NativeKernels:
    """The kernels of this process: the object file cached for this key, loaded without Numba,
    or else built by Numba (:mod:`rnnlab.fast.jit`), kept in the cache and loaded."""
    global _cache_where
    # Numba must be installed even to load a build (its version is part of the key): without
    # it, the NumPy loops run and nothing is said
    compiled.installed("numba")
    b = compiled.link()                 # the C functions the object calls, by name
    where = compiled.cache_dir(b) if native.cacheable() else None
    if where is None:
        return _fresh()
    key = where.name
    try:
        found = native.read(where, key)
        if found is not None:
            return _loaded(native.load(*found), where)
    except native.CacheDamaged:
        pass                            # checked again, and rebuilt, under the lock
    with contextlib.ExitStack() as held:
        try:                            # one process builds; the others wait, then load
            held.enter_context(native.locked(where))
        except OSError:                 # a lock file this user cannot open: nothing kept
            return _fresh()
        try:
            found = native.read(where, key)
            if found is not None:
                return _loaded(native.load(*found), where)
        except native.CacheDamaged:
            native.purge(where)         # our own files, unusable: built again below
        obj, sigs = _object()
        about = {"blas": b.path, "blas_version": b.version, "ilp64": b.ilp64, **native.host()}
        try:
            path: Path | None = native.store(where, key, obj, sigs, about)
        except OSError as exc:          # a full disk, say: this process runs what it built
            warnings.warn(f"rnnlab: the compiled kernels could not be kept in {where} ({exc}); "
                          f"the next process builds them again", RuntimeWarning, stacklevel=3)
            path = None
        _cache_where = where if path is not None else None
        return native.load(obj, sigs)


def _object() -> tuple[bytes, dict[str, str]]:
    """The kernels' object file and its entries' signatures, compiled here by Numba (imported
    only here)."""
    from . import jit

    entries = jit.entries()
    return native.build(entries), {name: e.args for name, e in entries.items()}


def _loaded(k: native.NativeKernels, where: Path) -> native.NativeKernels:
    global _cache_where
    k.origin = "loaded"
    _cache_where = where
    return k


def _fresh() -> native.NativeKernels:
    """Built here and not kept (caching off, or no directory that can be written)."""
    return native.load(*_object())


class KernelUsageError(RuntimeError):
    """A compiled kernel was called with operands it cannot read safely (an internal error: the
    fast engine checks :func:`supports` first).  Raised, never asserted: the kernels read raw
    addresses, so their preconditions hold under ``python -O`` too."""


def _fail(what: str) -> NoReturn:
    """Refuse to hand a kernel operands that break ``what`` (checked, not asserted)."""
    raise KernelUsageError(f"rnnlab.fast.kernels: {what}")


def _need() -> native.NativeKernels:
    """The built kernels (KernelUsageError when they are not available here)."""
    k = _kernels()
    if k is None:
        raise KernelUsageError(f"rnnlab.fast.kernels: the compiled kernels are not available "
                               f"({_why_not}); see available()")
    return k


def supports(act_name: str, dtype: np.dtype, masked: bool) -> bool:
    """Whether the kernels cover this loop (else the NumPy loop runs)."""
    return (act_name in KINDS and np.dtype(dtype) == np.float32 and not masked
            and available())


def _flat(a: Array) -> tuple[Array, int, int]:
    """A float32 ``(steps, rows, H)`` block with contiguous rows as a flat view from its first
    element, and its step and row strides in elements (element ``(t, i, j)`` is
    ``flat[t * s0 + i * s1 + j]``)."""
    if not (a.ndim == 3 and a.dtype == np.float32 and a.strides[2] == 4 and a.strides[0] % 4 == 0
            and a.strides[1] % 4 == 0 and min(a.strides) >= 0):
        _fail(f"a (steps, rows, H) float32 block with contiguous rows and non-negative strides; "
              f"got {a.dtype} {a.shape} strides {a.strides}")
    s0, s1 = a.strides[0] // 4, a.strides[1] // 4
    size = (a.shape[0] - 1) * s0 + (a.shape[1] - 1) * s1 + a.shape[2]
    return np.lib.stride_tricks.as_strided(a, (size,), (4,)), s0, s1


def forward(Hbuf: Array, W_hh: Array, act_name: str, reverse: bool,
            W_joint: Array | None = None, x: Array | None = None, flush: bool = False) -> None:
    """The forward loop on ``Hbuf`` ``(T + 1, n, H)`` whose step slots hold the projections
    ``A_t`` (and whose ``h0`` slot is set), as :func:`rnnlab.fast.loops.forward_into`;
    or, with ``W_joint`` (and ``x``), on the state view of a joint buffer (see
    :func:`forward_job`).  Runs :func:`forward_job` in the calling thread (``flush``: with
    subnormals flushed to zero)."""
    run(forward_job(Hbuf, W_hh, act_name, reverse, flush, None, W_joint, x))


def _forward_operands(Hbuf: Array, W_hh: Array, reverse: bool, W_joint: Array | None,
                      x: Array | None) -> tuple[Any, ...]:
    """The flat state buffer, its strides, the weight matrix, the joint width ``kx`` and the
    input block's address, size and strides (zeros without one)."""
    hf, h0, h1 = _flat(Hbuf)
    if W_joint is None:
        if x is not None:
            _fail("an input block x needs a joint buffer (W_joint)")
        return hf, h0, h1, W_hh, 0, 0, 0, 0, 0
    T, n, H = Hbuf.shape[0] - 1, Hbuf.shape[1], Hbuf.shape[2]
    kx = W_joint.shape[0] - H
    if not (not reverse and W_joint.ndim == 2 and W_joint.shape[1] == H and kx > 0 and h1 >= H + kx
            and W_joint.flags.c_contiguous and W_joint.dtype == np.float32):
        _fail(f"a joint buffer needs the forward direction, a C-contiguous float32 W_joint "
              f"(H + kx, H) and rows of width >= H + kx; got W_joint {W_joint.dtype} "
              f"{W_joint.shape}, row stride {h1}, reverse={reverse}")
    xa = xsize = x0 = x1 = 0
    if x is not None:
        if x.shape != (T, n, kx - 1):
            _fail(f"x must be (T, n, kx - 1) = {(T, n, kx - 1)}; got {x.shape}")
        xf, x0, x1 = _flat(x)
        xa, xsize = xf.ctypes.data, xf.size
    # the flat view reaches the [x_t | 1] part of the rows too
    return (np.lib.stride_tricks.as_strided(Hbuf, (hf.size + kx,), (4,)), h0, h1, W_joint, kx,
            xa, xsize, x0, x1)


def backward(Hbuf: Array, dZ: Array, dH: Array | None, W_T: Array, dnext: Array,
             act_name: str, reverse: bool, flush: bool = False,
             db: Array | None = None) -> None:
    """The backward loop of :func:`rnnlab.fast.loops.backward_into` without a mask: writes ``dZ``
    ``(T, n, H)`` and turns ``dnext`` ``(n, H)`` from ``dL/dH_T`` into ``dL/dh0``.  Runs
    :func:`backward_job` in the calling thread (``flush`` and ``db`` as there)."""
    run(backward_job(Hbuf, dZ, dH, W_T, dnext, act_name, reverse, flush, None, db))


def _check_backward(Hbuf: Array, dZ: Array, dH: Array | None, W_T: Array,
                    dnext: Array) -> None:
    T, n, H = dZ.shape
    if not (Hbuf.shape == (T + 1, n, H) and (dH is None or dH.shape == (T, n, H))):
        _fail(f"Hbuf (T + 1, n, H), dZ and dH (T, n, H) must agree; got {Hbuf.shape}, "
              f"{dZ.shape}, {None if dH is None else dH.shape}")
    if not (W_T.flags.c_contiguous and W_T.dtype == np.float32 and W_T.shape == (H, H)):
        _fail(f"W_hh^T must be a C-contiguous float32 (H, H) matrix; got {W_T.dtype} {W_T.shape}")
    if not (dnext.flags.c_contiguous and dnext.dtype == np.float32 and dnext.shape == (n, H)):
        _fail(f"dnext must be a C-contiguous float32 (n, H) array; got {dnext.dtype} "
              f"{dnext.shape}")


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
    if not (W_hh.flags.c_contiguous and W_hh.dtype == np.float32
            and W_hh.shape == (Hbuf.shape[2], Hbuf.shape[2])):
        _fail(f"W_hh must be a C-contiguous float32 (H, H) matrix; got {W_hh.dtype} "
              f"{W_hh.shape}")
    T, n, H = Hbuf.shape[0] - 1, Hbuf.shape[1], Hbuf.shape[2]
    ops = _forward_operands(Hbuf, W_hh, reverse, W_joint, x)
    hf, h0, h1, W, kx = ops[:5]
    return _job(JOB_FORWARD, flush, hf.ctypes.data, hf.size, h0, h1, T, n, H,
                W.ctypes.data, KINDS[act_name], reverse, _block(cb, H), kx, *ops[5:])


def _block(cb: int | None, H: int) -> int:
    if not (cb is None or 1 <= cb <= H):
        _fail(f"a column block must lie in [1, {H}]; got {cb}")
    return H if cb is None else cb


def backward_job(Hbuf: Array, dZ: Array, dH: Array | None, W_T: Array, dnext: Array,
                 act_name: str, reverse: bool, flush: bool, cb: int | None = None,
                 db: Array | None = None) -> NDArray[np.int64]:
    """:func:`backward` as a job for :func:`run` (``dnext`` C-contiguous, ``dL/dH_T`` in it;
    ``flush`` and ``cb`` as for :func:`forward_job`); with ``db`` ``(H,)`` (float32,
    contiguous), the column sums of the block's ``dZ`` are added to it (the bias gradient,
    eq. 19, while each row is in the cache)."""
    _check_backward(Hbuf, dZ, dH, W_T, dnext)
    if not (db is None or (db.shape == (dZ.shape[2],) and db.flags.c_contiguous
            and db.dtype == np.float32)):
        _fail("db must be a contiguous float32 (H,) array")
    T, n, H = dZ.shape
    hf, h0, h1 = _flat(Hbuf)
    gf, g0, g1 = _flat(dZ)
    df, d0, d1 = (gf, 0, 0) if dH is None else _flat(dH)      # unread without dH
    return _job(JOB_BACKWARD, flush, hf.ctypes.data, hf.size, h0, h1, gf.ctypes.data, gf.size,
                g0, g1, df.ctypes.data, df.size, d0, d1, dH is not None, n, H, T,
                W_T.ctypes.data, dnext.ctypes.data, KINDS[act_name], reverse, _block(cb, H),
                0 if db is None else db.ctypes.data)


def _operand(a: Array) -> tuple[int, int] | None:
    """``(transpose flag, leading dimension)`` of a float32 matrix as a row-major BLAS operand,
    or None when its strides do not allow one."""
    (r, c), (s0, s1) = a.shape, a.strides
    if a.dtype != np.float32 or r < 1 or c < 1 or s0 % 4 or s1 % 4 or r == c == 1:
        return None
    if (s1 == 4 or c == 1) and (r == 1 or s0 >= 4 * c):     # rows (a single row: any s0)
        return NO_TRANS, c if r == 1 else s0 // 4
    if (s0 == 4 or r == 1) and (c == 1 or s1 >= 4 * r):     # columns: a transposed matrix
        return TRANS, r if c == 1 else s1 // 4
    return None


def gemm_job(a: Array, b: Array, out: Array, flush: bool = False) -> NDArray[np.int64] | None:
    """``out = a @ b`` (float32, 2-D) as a job for :func:`run`, or None when an operand's strides
    do not suit the BLAS (``out`` needs contiguous rows); ``flush`` as for
    :func:`forward_job`."""
    oa, ob, oc = _operand(a), _operand(b), _operand(out)
    if oa is None or ob is None or oc is None or oc[0] != NO_TRANS:
        return None
    (M, K), N = a.shape, b.shape[1]
    if not (b.shape[0] == K and out.shape == (M, N)):
        _fail(f"gemm shapes disagree: {a.shape} x {b.shape} -> {out.shape}")
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
    if oa is None or oa[0] != NO_TRANS:
        return None
    (K, N) = a.shape
    if not (x.shape == (K,) and out.shape == (N,)):
        _fail(f"gemv shapes disagree: {x.shape} x {a.shape} -> {out.shape}")
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
        k = _need()
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, H)).astype(np.float32)
        W = rng.standard_normal((H, H)).astype(np.float32)
        c = np.empty((n, H), np.float32)
        reps = max(1, int(2e7 // (2 * n * H * H)))            # ~0.1-0.2 ms per timing
        cands = [H] + [cb for cb in (H // 2, H // 4) if cb >= 32 and H % cb == 0 and cb % 16 == 0]
        best: dict[int, float] = {}
        # on one BLAS thread, as the loops run it (whatever the caller's count: a second thread
        # waiting for a core on a busy machine made this take 1.5 s instead of milliseconds)
        with BLAS.limit(1):
            ptrs = (a.ctypes.data, W.ctypes.data, c.ctypes.data)
            for cb in cands:
                k["products"](n, H, cb, reps, *ptrs)           # warm
            for _ in range(5):
                for cb in cands:
                    t = time.perf_counter()
                    k["products"](n, H, cb, reps, *ptrs)
                    dt = time.perf_counter() - t
                    best[cb] = min(best.get(cb, dt), dt)
        # a block must win clearly: otherwise whole (the NumPy loop's numbers for relu)
        fastest = min(best, key=best.__getitem__)
        _blocks[key] = fastest if best[fastest] < 0.9 * best.get(H, np.inf) else H
    return _blocks[key]


try:                                          # a job array as the entries' int64_t * argument
    _job_buffer: Any = native.int64_buffer()
except ImportError:                           # no cffi: no kernels either (available() says why)
    _job_buffer = None


def check(status: int, what: str) -> None:
    """Raise for a kernel's failed ``status`` (-1: the kernel reported an error; 1: no memory
    for a job's scratch space); nothing for 0 or more."""
    if status == 1:
        raise MemoryError(f"rnnlab.fast.kernels: {what}: no memory for the job's scratch space")
    if status < 0:
        raise KernelUsageError(f"rnnlab.fast.kernels: {what} failed in the compiled code")


def run(job: NDArray[np.int64]) -> None:
    """Run one job in the calling thread, without the GIL."""
    k = _built if _built is not None else _need()
    if not (job.dtype == _INT64 and job.shape == (JOB_SIZE,) and job.flags.c_contiguous
            and JOB_FORWARD <= job.item(0) <= JOB_GEMV):
        _fail(f"a job is an int64 ({JOB_SIZE},) C-contiguous array of a compiled kind; got "
              f"{job.dtype} {job.shape} kind {job[0] if job.size else None}")
    status = k["run"](_job_buffer(job))
    if status:
        check(status, "a job")


def _counters(who: str, a: NDArray[np.int64], i: int, cols: int | None = None) -> None:
    if not (a.dtype == _INT64 and a.flags.c_contiguous and 0 <= i < a.shape[0]
            and (a.ndim == 1 if cols is None else a.shape[1:] == (cols,))):
        what = "counter array" if cols is None else f"(n, {cols}) job array"
        _fail(f"{who} needs a contiguous int64 {what} with a row {i}; got {a.dtype} {a.shape}")


def serve(posted: NDArray[np.int64], finished: NDArray[np.int64], jobs: NDArray[np.int64],
          i: int, taken: int, limit: int) -> tuple[int, bool]:
    """Worker ``i``'s loop, without the GIL: whenever ``posted[i]`` exceeds ``taken``, run the job
    ``jobs[i]``, write its status to ``jobs[i, JOB_STATUS]`` and set ``finished[i]``; return
    ``(taken, True)`` when the next is a Python piece (kind ``JOB_PYTHON``), ``(taken, False)``
    after ``limit`` idle polls (about 0.2 us each)."""
    n = posted.shape[0]
    for a in (posted, finished):
        _counters("serve", a, i)
    _counters("serve", jobs, i, JOB_SIZE)
    if not (finished.shape[0] == jobs.shape[0] == n):
        _fail("posted, finished and jobs must have one row per worker")
    return _served(_need()["serve"](posted.ctypes.data, finished.ctypes.data, jobs.ctypes.data,
                                    n, i, taken, limit))


def _served(code: int) -> tuple[int, bool]:
    """``serve_at``'s result, ``2 * taken + python``, as ``(taken, python)`` (raises for -1)."""
    if code < 0:
        check(code, "serve")
    return code >> 1, bool(code & 1)


def publish(counters: NDArray[np.int64], i: int, value: int) -> None:
    """``counters[i] = value`` as a release store: whatever the calling thread wrote before is
    visible to a thread whose acquire load (:func:`spin`, :func:`serve`) reads ``value``."""
    _counters("publish", counters, i)
    _need()["publish"](counters.ctypes.data, i, value)


class HandOff:
    """The compiled hand-off of :class:`rnnlab.fast.pool.Pool` on its own arrays, bound once
    (their addresses), without the argument checks of :func:`post_job`, :func:`publish`,
    :func:`serve` and :func:`spin`; the counters are read with acquire loads and written with
    release stores (docs/performance.md, "The thread hand-off").  The arrays must outlive it."""

    def __init__(self, posted: NDArray[np.int64], finished: NDArray[np.int64],
                 jobs: NDArray[np.int64]) -> None:
        n = posted.shape[0]
        for a in (posted, finished):
            _counters("hand_off", a, n - 1)
        _counters("hand_off", jobs, n - 1, JOB_SIZE)
        k = _need()
        self._arrays = (posted, finished, jobs)          # kept alive with the addresses
        self._n = n
        self._at = {"posted": posted.ctypes.data, "finished": finished.ctypes.data}
        self._jobs = jobs.ctypes.data
        self._post, self._publish = k["post"], k["publish"]
        self._serve, self._spin = k["serve"], k["spin"]

    def post(self, i: int, job: NDArray[np.int64]) -> int:
        """``jobs[i] = job`` then ``posted[i] + 1`` published; returns it (``job``: a contiguous
        int64 ``(JOB_SIZE,)`` array, as the job makers give)."""
        return int(self._post(self._jobs, self._at["posted"], self._n, i, _job_buffer(job)))

    def publish(self, counter: str, i: int, value: int) -> None:
        """``posted[i]`` or ``finished[i]`` (``counter``) ``= value``, a release store."""
        self._publish(self._at[counter], i, value)

    def serve(self, i: int, taken: int, limit: int) -> tuple[int, bool]:
        """:func:`serve` on the pool's arrays."""
        return _served(self._serve(self._at["posted"], self._at["finished"], self._jobs, self._n,
                                   i, taken, limit))

    def spin(self, counter: str, i: int, target: int, limit: int) -> bool:
        """:func:`spin` on ``posted`` or ``finished`` (``counter``)."""
        return bool(self._spin(self._at[counter], self._n, i, target, limit))


def hand_off(posted: NDArray[np.int64], finished: NDArray[np.int64],
             jobs: NDArray[np.int64]) -> HandOff:
    """The compiled hand-off on these arrays (:class:`HandOff`); KernelUsageError without the
    kernels."""
    return HandOff(posted, finished, jobs)


def post_job(jobs: NDArray[np.int64], posted: NDArray[np.int64], i: int,
             job: NDArray[np.int64]) -> int:
    """``jobs[i] = job``, then ``posted[i] + 1`` published (a release store: a worker whose
    acquire load reads it sees the job); returns the new count."""
    _counters("post_job", jobs, i, JOB_SIZE)
    _counters("post_job", posted, i)
    if not (job.dtype == _INT64 and job.shape == (JOB_SIZE,) and job.flags.c_contiguous
            and jobs.shape[0] == posted.shape[0]):
        _fail("post_job needs the pool's contiguous int64 jobs (n, JOB_SIZE) and posted (n,) "
              "and a contiguous int64 job")
    return int(_need()["post"](jobs.ctypes.data, posted.ctypes.data, posted.shape[0], i,
                               _job_buffer(job)))


def spin(counters: NDArray[np.int64], i: int, target: int, limit: int) -> bool:
    """Poll, without the GIL, until ``counters[i] >= target`` (True) or ``limit`` polls passed
    (False); :mod:`rnnlab.fast.pool`'s workers wait like this between the pieces of one call."""
    _counters("spin", counters, i)
    return bool(_need()["spin"](counters.ctypes.data, counters.shape[0], i, target, limit))


def scatter_rows(ids: NDArray[np.intp], rows: Array, out: Array) -> Array:
    """``out[v] = sum of rows[r] with ids[r] == v`` in the order of ``r`` (as ``np.add.at``);
    ``rows`` ``(N, H)`` and ``out`` ``(V, H)`` C-contiguous float32 or float64, ``ids``
    validated."""
    k = _need()
    if not (rows.flags.c_contiguous and out.flags.c_contiguous and rows.ndim == out.ndim == 2
            and rows.shape[1] == out.shape[1] and ids.shape == (rows.shape[0],)
            and rows.dtype == out.dtype and rows.dtype in (np.float32, np.float64)):
        _fail(f"scatter_rows needs C-contiguous float32 or float64 rows (N, H) and out (V, H) of "
              f"one dtype and ids (N,); got {rows.shape} {rows.dtype}, {out.shape} {out.dtype}, "
              f"{ids.shape}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= out.shape[0]):
        raise KernelUsageError(f"rnnlab.fast.kernels: ids must lie in [0, {out.shape[0]})")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    name = "scatter32" if rows.dtype == np.float32 else "scatter64"
    check(k[name](ids.ctypes.data, ids.shape[0], rows.ctypes.data, out.ctypes.data,
                  out.shape[0], out.shape[1]), "scatter_rows")
    return out
