"""How a :class:`~rnnlab.workspace.Workspace` call uses the cores (docs/performance.md).

* :class:`_BlasThreads` reads and sets NumPy's BLAS thread count (through the optional
  ``threadpoolctl``);
* :class:`_FlushDenormals` flushes subnormal floats to zero in the calling thread;
* :class:`Runner` runs the recurrent loops and the large products of one call, either as they
  are (under a BLAS thread count) or split over Python threads: the loops by batch rows (the rows
  of a batch never interact in the recurrence, eqs. 5-7 and 16-18) and the products by output
  rows, each piece on one BLAS thread;
* :class:`_ThreadTuner` chooses among these options (:class:`ThreadOption`) by timing.

Splitting changes no number: every output row of a product is computed from the same operands by
the same kernel, and each batch row of the recurrence sees the same operations in the same order.
"""

from __future__ import annotations

import ctypes
import os
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from . import kernels as _kernels

Array = NDArray[np.floating]


class _BlasThreads:
    """Reads and sets the thread count of NumPy's BLAS through threadpoolctl, when installed.

    Without threadpoolctl (an optional dependency) nothing is changed.
    """

    def __init__(self) -> None:
        self._libs: list[Any] | None = None

    def libs(self) -> list[Any]:
        if self._libs is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                self._libs = []
            else:
                found = ThreadpoolController().select(user_api="blas").lib_controllers
                # NumPy's own BLAS (a wheel bundles it in numpy.libs), not another library's
                ours = [lc for lc in found if "numpy" in str(getattr(lc, "filepath", ""))]
                self._libs = ours or list(found)
        return self._libs

    def get(self) -> int | None:
        libs = self.libs()
        return int(libs[0].get_num_threads()) if libs else None

    def limit(self, n: int) -> _ThreadLimit:
        """A reusable context: run the block with ``n`` BLAS threads, then restore the count."""
        return _ThreadLimit(self.libs(), n)


class _ThreadLimit:
    """See :meth:`_BlasThreads.limit`; not re-entrant (not needed)."""

    def __init__(self, libs: list[Any], n: int) -> None:
        self.libs, self.n = libs, n
        self.before: list[int] = []

    def __enter__(self) -> None:
        self.before = [int(lc.get_num_threads()) for lc in self.libs]
        for lc, b in zip(self.libs, self.before, strict=True):
            if b != self.n:
                lc.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        for lc, b in zip(self.libs, self.before, strict=True):
            if b != self.n:
                lc.set_num_threads(b)


_BLAS = _BlasThreads()


class _FlushDenormals:
    """Flush subnormal floats to zero in the calling thread while the block runs.

    Sets the FTZ and DAZ bits of the SSE control register (MXCSR) through glibc's
    ``fegetenv``/``fesetenv`` and restores the saved environment on exit, as XLA does for its CPU
    kernels.  A vanishing gradient passes through the subnormal range (below ~1.2e-38 in float32),
    where each operation takes a slow microcode path; flushed, it becomes exactly zero and the
    backward loop stops there (:func:`rnnlab.cell.backward`).  Only numbers below the normal range
    change (to zero).  A no-op where it is not x86-64 Linux with glibc, or where the self-test
    fails.  One object per thread: it keeps the saved environment.
    """

    _MXCSR_OFFSET = 28            # fenv_t on x86-64: the x87 environment (28 bytes), then MXCSR
    _FTZ_DAZ = 0x8040
    _libm: Any = None
    _usable: bool | None = None

    def __init__(self) -> None:
        self._saved = ctypes.create_string_buffer(64)    # sizeof(fenv_t) is 32
        self._flush = ctypes.create_string_buffer(64)
        self.ok = bool(self._probe())

    @classmethod
    def _probe(cls) -> bool:
        if cls._usable is None:
            cls._usable = False
            if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
                return False
            try:
                libm = ctypes.CDLL("libm.so.6")
                libm.fegetenv, libm.fesetenv      # noqa: B018 (both must exist)
            except (OSError, AttributeError):
                return False
            buf = ctypes.create_string_buffer(64)
            if libm.fegetenv(buf) != 0:
                return False
            o = cls._MXCSR_OFFSET
            mx = int.from_bytes(buf.raw[o:o + 4], "little")
            if mx >> 16 or (mx & 0x1F80) != 0x1F80:  # not an MXCSR with every exception masked
                return False
            cls._libm, cls._usable = libm, True
            probe = cls()
            with probe:
                flushed = np.float32(1e-39) * np.float32(1.0) == 0.0
            cls._usable = bool(flushed) and np.float32(1e-39) * np.float32(1.0) != 0.0
        return cls._usable

    def __enter__(self) -> None:
        if not self.ok:
            return
        libm = self._libm
        libm.fegetenv(self._saved)
        raw = bytearray(self._saved.raw)
        o = self._MXCSR_OFFSET
        mx = int.from_bytes(raw[o:o + 4], "little") | self._FTZ_DAZ
        raw[o:o + 4] = mx.to_bytes(4, "little")
        ctypes.memmove(self._flush, bytes(raw), len(raw))
        libm.fesetenv(self._flush)

    def __exit__(self, *exc: object) -> None:
        if self.ok:
            self._libm.fesetenv(self._saved)


class ThreadOption(NamedTuple):
    """How a :class:`~rnnlab.workspace.Workspace` call uses its thread budget.

    ``loop`` BLAS threads for the recurrent loops, ``rest`` for everything else; with ``split > 1``
    the BLAS runs one thread and the work is split over ``split`` Python threads instead (the
    loops by batch rows, the large products by output rows; see :class:`Runner`).
    """

    loop: int
    rest: int
    split: int = 1


class _LoopContext:
    """What the recurrent loops of a :class:`Workspace` run under: a BLAS thread count and
    flushed subnormals.  Reusable, not re-entrant."""

    def __init__(self, threads: _ThreadLimit | None, flush: _FlushDenormals | None) -> None:
        self.threads, self.flush = threads, flush

    def __enter__(self) -> None:
        if self.threads is not None:
            self.threads.__enter__()
        if self.flush is not None:
            self.flush.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.flush is not None:
            self.flush.__exit__(*exc)
        if self.threads is not None:
            self.threads.__exit__(*exc)


# A split pays for its thread hand-offs when each piece's step product has at least this many
# multiply-adds (rows x H x H): row MNIST's 64 x 128 x 128 does, RTRL's small 8 x 32 x 32 does not
# (measured: 22k sequences/s split against 46k whole).
_MIN_SPLIT_WORK = 1 << 18


def thread_options(budget: int, compiled: bool, B: int, H: int) -> list[ThreadOption]:
    """The options a tuner tries for a budget of BLAS threads, a batch of ``B`` and ``H`` units.

    ``(1, 1)``, ``(1, budget)``, ``(budget, budget)`` and, when each piece has enough work, the
    batch split over ``budget`` threads.  With the compiled loops (:mod:`rnnlab.kernels`, which
    run without the GIL) a split uses the cores better than BLAS threads, and the BLAS-thread
    options would hurt it: after a multi-threaded product OpenBLAS's workers spin for about
    0.1 s, taking a core from the pieces (measured: row MNIST 3.9 ms per step split alone, 5.8 ms
    when every other 20 steps use two BLAS threads).  So then the options are ``(1, 1)`` and the
    split only.
    """
    opts = [ThreadOption(1, 1)]
    if budget == 1:
        return opts
    rows = B // budget
    split = ([ThreadOption(1, 1, budget)]
             if rows >= _MIN_LOOP_ROWS and rows * H * H >= _MIN_SPLIT_WORK else [])
    if compiled and split:
        return opts + split
    return opts + [ThreadOption(1, budget), ThreadOption(budget, budget)] + split


class _ThreadTuner:
    """Chooses how a :class:`Workspace` uses its thread budget, by timing its own calls.

    The options (:class:`ThreadOption`, from :func:`thread_options`) differ in the BLAS thread
    counts for the recurrent loops (one small ``(B, H) x (H, H)`` product and a few element-wise
    passes per step) and for everything else (the large products over all steps), or split the
    batch over Python threads.  Which is fastest depends on the shapes and on what else the
    machine runs: on an idle machine two threads win for large ``H``; on a busy one a second
    thread that must wait for a core costs more than it gives, at every one of the ``2T`` small
    products.

    Options run in *runs* of consecutive calls of which only the last few are timed, because an
    option's first calls after another's are slow: another option's BLAS threads may still be
    spinning, and a split needs both cores busy for a while before it runs at speed (on this
    2-vCPU machine row MNIST took 6-8 ms per call for the first 10-16 calls of a split, then
    4.1 ms; one thread, 4.7-5.0 ms).  So a split's run is ``split_run`` calls with the last
    ``timed`` timed, any other option's ``run`` calls.  After one untimed call each option gets a
    run (the split ones first); then the fastest by the median of its last ``keep`` timed calls
    runs, and every ``explore_every`` calls another option gets a run, so that a change of load
    is noticed.
    """

    def __init__(self, budget: int, explore_every: int = 200, keep: int = 5, run: int = 6,
                 split_run: int = 20, timed: int = 3,
                 options: Sequence[ThreadOption] | None = None) -> None:
        assert 1 <= timed <= min(run, split_run), (timed, run, split_run)
        self.budget = budget
        opts = list(thread_options(budget, False, 1, 1) if options is None else options)
        self.options = sorted(opts, key=lambda o: o.split == 1)      # splits are tried first
        self.times: dict[ThreadOption, list[float]] = {o: [] for o in self.options}
        self.keep, self.explore_every, self.timed = keep, explore_every, timed
        self.run, self.split_run = run, split_run
        self.calls = 0
        self._rotate = 0
        self._current: ThreadOption | None = None
        self._left = 0                 # calls left in the current run
        self._skip = 0                 # untimed calls left before the best's times count again
        self._timing = False           # whether the call just picked is timed

    def best(self) -> ThreadOption:
        return min(self.options, key=lambda o: statistics.median(self.times[o]) if self.times[o]
                   else float("inf"))

    def pick(self) -> ThreadOption | None:
        """The option to run now; ``None`` for the first call (untimed: it allocates)."""
        self.calls += 1
        self._timing = False
        if self.calls == 1:
            return None
        if self._left == 0:
            untried = [o for o in self.options if not self.times[o]]
            if untried:
                self._current = untried[0]
            elif len(self.options) > 1 and self.calls % self.explore_every == 0:
                best = self.best()
                others = [o for o in self.options if o != best]
                self._rotate += 1
                self._current = others[self._rotate % len(others)]
            else:
                best = self.best()
                if best != self._current:    # back from a run of another option: warm up again
                    self._current, self._skip = best, self._warmup(best)
                self._timing = self._skip == 0   # steady state: the best, timed once warm
                self._skip = max(0, self._skip - 1)
                return best
            self._left = self._warmup(self._current) + self.timed
        assert self._current is not None
        self._left -= 1
        self._timing = self._left < self.timed
        return self._current

    def _warmup(self, option: ThreadOption) -> int:
        """Untimed calls before an option's times count (see the class docstring)."""
        return (self.split_run if option.split > 1 else self.run) - self.timed

    def record(self, option: ThreadOption, seconds: float) -> None:
        """The time of the call :meth:`pick` just chose ``option`` for (ignored if untimed)."""
        if not self._timing:
            return
        t = self.times[option]
        t.append(seconds)
        if len(t) > self.keep:
            del t[0]


# ----------------------------------------------------------------------------- splitting

# Pieces smaller than these run whole: a thread hand-off costs tens of microseconds.
_MIN_LOOP_ROWS = 8            # batch rows per piece of a recurrent loop
_MIN_PIECE_FLOP = 4e6         # multiply-adds x 2 per piece of a product
_ROW_ALIGN = 16               # product pieces start at multiples of this row
_MIN_JOB_FLOP = 1e6           # the same for a compiled job: its hand-off costs a few us
_K_SPLIT = 4                  # a product with K >= this x max(M, N) is cut along K


def spans(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """``range(n)`` cut into at most ``parts`` contiguous ``(lo, hi)`` pieces of nearly equal
    length, inner boundaries at multiples of ``align``."""
    assert n >= 0 and parts >= 1 and align >= 1, (n, parts, align)
    cuts = [0]
    for i in range(1, parts):
        c = (n * i // parts) // align * align
        if cuts[-1] < c < n:
            cuts.append(c)
    cuts.append(n)
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True) if hi > lo]


class _Piece:
    """One piece of work for a worker: ``fn(lo, hi)`` inside ``context``."""

    __slots__ = ("fn", "lo", "hi", "context", "error", "done")

    def __init__(self, fn: Callable[[int, int], object], lo: int, hi: int,
                 context: AbstractContextManager[Any]) -> None:
        self.fn, self.lo, self.hi, self.context = fn, lo, hi, context
        self.error: BaseException | None = None
        self.done = threading.Event()


# Polls (about 0.2 us each) a worker or the caller spends waiting without the GIL before it
# sleeps: about 2 ms.  A sleeping worker took 55-165 us to start a piece on this 2-vCPU machine
# (a VM), four times per training step; polling removed the slow first 10-16 calls of a split
# (docs/performance.md, "Workers that poll before they sleep").
_SPIN_POLLS = 10_000
_WAKE = None          # queued to wake a sleeping worker for a compiled job


class _Pool:
    """Process-wide worker threads, grown on demand; worker ``i`` runs the pieces posted to it
    in order, one at a time (a caller waits for its pieces before it posts more).

    A piece is a Python callable (:class:`_Piece`, queued) or, with the compiled
    :mod:`rnnlab.kernels`, a job (an int64 array, written to ``jobs[i]``) that the worker runs
    without the GIL: between pieces it polls for about 2 ms without the GIL
    (:func:`rnnlab.kernels.serve`), running any job posted meanwhile, then sleeps on its queue.
    ``posted[i]`` and ``finished[i]`` count worker ``i``'s pieces; ``sleeping[i]`` says it
    sleeps (a job must then be followed by a wake-up on the queue).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Forget every worker (a forked child has none of its parent's threads)."""
        self._lock = threading.Lock()
        # held by a caller from its first post to its last wait: a worker has one job slot,
        # so two threads that split at once (two workspaces) take turns
        self.use = threading.Lock()
        self._queues: list[queue.SimpleQueue[_Piece | None]] = []
        n = 256
        self.posted = np.zeros(n, np.int64)
        self.finished = np.zeros(n, np.int64)
        self.sleeping = np.zeros(n, np.int64)
        self.jobs = np.zeros((n, _kernels.JOB_SIZE), np.int64)

    def _queue(self, i: int) -> queue.SimpleQueue[_Piece | None]:
        with self._lock:
            while len(self._queues) <= i:
                if len(self._queues) == self.posted.size:
                    raise RuntimeError(f"at most {self.posted.size} worker threads")
                q: queue.SimpleQueue[_Piece | None] = queue.SimpleQueue()
                self._queues.append(q)
                threading.Thread(target=self._work, args=(len(self._queues) - 1, q),
                                 name=f"rnnlab-{len(self._queues)}", daemon=True).start()
            return self._queues[i]

    def post(self, i: int, piece: _Piece) -> int:
        """Give ``piece`` to worker ``i`` (started if needed); returns its number there."""
        self._queue(i).put(piece)          # first: a worker that sees the count finds it
        if _spin_ok():
            self.jobs[i, 0] = _kernels.JOB_PYTHON
        self.posted[i] += 1
        return int(self.posted[i])

    def post_job(self, i: int, job: NDArray[np.int64]) -> int:
        """Give a compiled job to worker ``i`` (started if needed); returns its number there."""
        q = self._queue(i)
        self.jobs[i] = job
        self.posted[i] += 1                # after the job: x86 keeps stores in order
        if self.sleeping[i]:
            q.put(_WAKE)
        return int(self.posted[i])

    def wait(self, i: int, number: int, piece: _Piece | None = None) -> None:
        """Return once piece ``number`` of worker ``i`` has finished."""
        if _spin_ok() and _kernels.spin(self.finished, i, number, _SPIN_POLLS):
            return
        if piece is not None:
            piece.done.wait()
            return
        while not _kernels.spin(self.finished, i, number, _SPIN_POLLS):   # a long job
            time.sleep(1e-4)

    def _work(self, i: int, q: queue.SimpleQueue[_Piece | None]) -> None:
        taken = 0
        while True:
            item: _Piece | None = _WAKE
            if _spin_ok():
                # run compiled jobs as they come; back here for a Python piece or when idle
                taken, python = _kernels.serve(self.posted, self.finished, self.jobs, i, taken,
                                               _SPIN_POLLS)
                if not python:
                    self.sleeping[i] = 1           # the GIL orders this with post_job's check
                    if self.posted[i] == taken:
                        item = q.get()
                    self.sleeping[i] = 0
                    if item is _WAKE:
                        continue
                else:
                    while item is _WAKE:           # a late wake-up may be queued before it
                        item = q.get()
            else:
                item = q.get()
            assert item is not None
            taken += 1
            try:
                with item.context:
                    item.fn(item.lo, item.hi)
            except BaseException as exc:        # handed to the caller
                item.error = exc
            self.finished[i] = taken
            item.done.set()


def _spin_ok() -> bool:
    return _kernels.available()


_POOL = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL._reset)


class Runner:
    """Runs the recurrent loops and large products of one call.

    ``Runner()`` runs everything as it is, in the calling thread (the public functions).  With
    ``loop`` the recurrent loops run inside that context (BLAS thread count, flushed subnormals).
    With ``split > 1`` the work is cut into ``split`` pieces run at the same time, one in the
    calling thread and the others in worker threads; the BLAS must then be on one thread (the
    caller sets it), and ``flush`` makes every piece of a loop flush subnormals in its own thread.
    ``compiled`` lets the loops run the compiled kernels of :mod:`rnnlab.kernels`.
    """

    def __init__(self, loop: AbstractContextManager[Any] | None = None, split: int = 1,
                 flush: bool = False, compiled: bool = False) -> None:
        self.loop = loop
        self.split = split
        self.compiled = compiled          # loops may use rnnlab.kernels (see cell.forward)
        self._flushes = ([_FlushDenormals() for _ in range(split)]
                         if flush and split > 1 else None)
        # the products flush too: a weight gradient H^T dZ over a vanishing dZ otherwise
        # meets subnormal products (pixel MNIST: 20 ms of a 79 ms step)
        self._flush_products = _FlushDenormals() if flush else None
        # with the compiled kernels the pieces of a split are jobs, run without the GIL
        self.jobs = compiled and split > 1 and _kernels.available()
        self._flush_jobs = flush and _FlushDenormals._probe()
        self._partials: dict[tuple[int, ...], Array] = {}
        if split > 1 and _spin_ok():
            _kernels.compile_jobs()       # the workers serve jobs

    def recurrence(self, B: int, fn: Callable[[int, int], object],
                   job: Callable[[int, int, bool], NDArray[np.int64]] | None = None) -> None:
        """``fn(lo, hi)`` runs a loop on batch rows ``lo:hi``; run it on all ``B`` rows.

        ``job(lo, hi, flush)``, when given, makes the same loop as a compiled job
        (:mod:`rnnlab.kernels`), which a split then runs instead of ``fn``.
        """
        if not self.splits(B):
            with self.loop or nullcontext():
                fn(0, B)
            return
        pieces = spans(B, self.split)
        if job is not None and self.jobs:
            self.run_jobs([job(lo, hi, self._flush_jobs) for lo, hi in pieces])
            return
        self._map(fn, pieces, self._flushes)

    def splits(self, B: int) -> bool:
        """Whether :meth:`recurrence` cuts a batch of ``B`` rows."""
        return self.split > 1 and B >= 2 * _MIN_LOOP_ROWS

    def rows(self, n: int, flop_per_row: float, fn: Callable[[int, int], object],
             flush: bool = False) -> None:
        """``fn(lo, hi)`` computes output rows ``lo:hi`` of a product; compute all ``n`` (with
        ``flush``, subnormals flushed to zero if this runner flushes)."""
        parts = min(self.split, int(n * flop_per_row // _MIN_PIECE_FLOP), n // _ROW_ALIGN)
        if parts <= 1:
            with (self._flush_products if flush and self._flush_products is not None
                  else nullcontext()):
                fn(0, n)
            return
        self._map(fn, spans(n, parts, _ROW_ALIGN), self._flushes if flush else None)

    def matmul(self, a: Array, b: Array, out: Array) -> Array:
        """``np.matmul(a, b, out=out)`` for 2-D operands, split by the rows of ``out`` or, for
        a product over many rows (``a`` is ``X^T``: a weight gradient), by its inner dimension
        ``K`` into partial products that are then added (each piece reads contiguous rows of
        both operands and packs half as much)."""
        assert a.ndim == b.ndim == out.ndim == 2, (a.shape, b.shape, out.shape)
        (M, K), N = a.shape, b.shape[1]
        if self.jobs and out.dtype == a.dtype == b.dtype == np.float32:
            flop = 2.0 * M * N * K
            if K >= _K_SPLIT * max(M, N):
                parts = min(self.split, int(flop // _MIN_JOB_FLOP), K // _ROW_ALIGN)
                if parts > 1 and self._sum_of_parts(
                        spans(K, parts, _ROW_ALIGN), out, lambda lo, hi, o: _kernels.gemm_job(
                            a[:, lo:hi], b[lo:hi], o, self._flush_jobs)):
                    return out
            else:
                parts = min(self.split, int(flop // _MIN_JOB_FLOP), M // _ROW_ALIGN)
                if parts > 1:
                    cut = spans(M, parts, _ROW_ALIGN)
                    jobs = [_kernels.gemm_job(a[lo:hi], b, out[lo:hi], self._flush_jobs)
                            for lo, hi in cut]
                    if all(j is not None for j in jobs):
                        self.run_jobs(jobs)    # type: ignore[arg-type]
                        return out

        def piece(lo: int, hi: int) -> None:
            np.matmul(a[lo:hi], b, out=out[lo:hi])

        self.rows(out.shape[0], 2.0 * a.shape[1] * b.shape[1], piece, flush=True)
        return out

    def vecmat(self, x: Array, a: Array, out: Array) -> Array:
        """``np.matmul(x, a, out=out)`` for a vector ``x`` ``(K,)`` (a bias gradient ``1^T dZ``),
        split along ``K`` into partial sums that are then added, when the pieces are jobs."""
        K, N = a.shape
        parts = min(self.split, int(2.0 * K * N // _MIN_JOB_FLOP), K // _ROW_ALIGN)
        if self.jobs and parts > 1 and self._sum_of_parts(
                spans(K, parts, _ROW_ALIGN), out, lambda lo, hi, o: _kernels.vecmat_job(
                    x[lo:hi], a[lo:hi], o, self._flush_jobs)):
            return out
        with self._flush_products or nullcontext():
            return np.matmul(x, a, out=out)

    def _sum_of_parts(self, cut: list[tuple[int, int]], out: Array,
                      make: Callable[[int, int, Array], NDArray[np.int64] | None]) -> bool:
        """``out`` as the sum of the jobs ``make(lo, hi, part)`` over the pieces ``cut`` of the
        inner dimension, the first writing ``out`` itself (False, nothing run, when a piece has
        no job: an operand does not suit the BLAS)."""
        outs = [out] + [self._partial(i, out.shape) for i in range(1, len(cut))]
        jobs = [make(lo, hi, o) for (lo, hi), o in zip(cut, outs, strict=True)]
        if any(j is None for j in jobs):
            return False
        self.run_jobs(jobs)    # type: ignore[arg-type]
        for o in outs[1:]:
            out += o
        return True

    def _partial(self, i: int, shape: tuple[int, ...]) -> Array:
        """A float32 buffer for partial product ``i``, kept for the next call of that shape."""
        key = (i,) + tuple(shape)
        buf = self._partials.get(key)
        if buf is None:
            buf = self._partials[key] = np.empty(shape, np.float32)
        return buf

    def run_jobs(self, jobs: Sequence[NDArray[np.int64]]) -> None:
        """Run compiled jobs (:mod:`rnnlab.kernels`) at the same time: the last in the calling
        thread, the others on the workers; return when all have finished."""
        with _POOL.use:
            posted = [(i, _POOL.post_job(i, job)) for i, job in enumerate(jobs[:-1])]
            try:
                _kernels.run(jobs[-1])
            finally:
                for i, number in posted:
                    _POOL.wait(i, number)

    def column_sum(self, a: Array, out: Array) -> Array:
        """``np.sum(a, axis=0, out=out)`` for a 2-D ``a``, split by columns (same sums)."""
        n, m = a.shape
        parts = min(self.split, int(n * m // (_MIN_PIECE_FLOP / 8)), m // _ROW_ALIGN)
        if parts <= 1:
            return np.sum(a, axis=0, out=out)

        def piece(lo: int, hi: int) -> None:
            np.sum(a[:, lo:hi], axis=0, out=out[lo:hi])

        self._map(piece, spans(m, parts, _ROW_ALIGN), None)
        return out

    def _map(self, fn: Callable[[int, int], object], pieces: Sequence[tuple[int, int]],
             contexts: Sequence[AbstractContextManager[Any]] | None) -> None:
        def run(i: int, lo: int, hi: int) -> None:
            with contexts[i] if contexts is not None else nullcontext():
                fn(lo, hi)

        if len(pieces) == 1:
            run(0, *pieces[0])
            return
        posted = []
        error: BaseException | None = None
        with _POOL.use:
            for i, (lo, hi) in enumerate(pieces[:-1]):
                piece = _Piece(fn, lo, hi,
                               contexts[i] if contexts is not None else nullcontext())
                posted.append((i, _POOL.post(i, piece), piece))
            try:
                run(len(pieces) - 1, *pieces[-1])
            except BaseException as exc:  # wait for the workers before raising: they write
                error = exc               # into the caller's buffers
            for i, number, piece in posted:
                _POOL.wait(i, number, piece)
                if error is None and piece.error is not None:
                    error = piece.error
        if error is not None:
            raise error


SERIAL = Runner()
