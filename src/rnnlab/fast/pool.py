"""Work split over threads: the recurrent loops by batch rows, the large products by output rows
(or by their inner dimension), each piece on one BLAS thread (docs/performance.md).

The rows of a batch never interact in the recurrence (eqs. 5-7 and 16-18), so a loop can run on
blocks of rows at once.  Splitting changes no number where each output row of a product is
computed from the same operands by the same kernel and each batch row of the recurrence sees the
same operations in the same order; the compiled jobs' sums along ``K`` and column blocks add the
same terms in other groupings (within float32 rounding).

* :func:`spans` cuts a range into pieces;
* :class:`Pool` is the process's worker threads (:data:`POOL`), which run Python pieces or, with
  the compiled :mod:`rnnlab.fast.kernels`, jobs without the GIL;
* :class:`Runner` runs one call's loops and products, whole or split.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import kernels
from .cpu import BLAS, FlushDenormals

__all__ = ["LARGE_PRODUCT_FLOP", "MIN_LOOP_ROWS", "POOL", "Pool", "Runner", "SERIAL", "spans"]

Array = NDArray[np.floating]


# Pieces smaller than these run whole: a thread hand-off costs tens of microseconds.
MIN_LOOP_ROWS = 8            # batch rows per piece of a recurrent loop
MIN_PIECE_FLOP = 4e6         # multiply-adds x 2 per piece of a product
ROW_ALIGN = 16               # product pieces start at multiples of this row
MIN_JOB_FLOP = 1e6           # the same for a compiled job: its hand-off costs a few us
# A whole product at least this large runs on the option's `rest` BLAS threads, a smaller one on
# one (Runner): OpenBLAS threads products above 0.5 MFLOP, and a second BLAS thread that must
# wait for a core (a busy machine) turns microseconds into a scheduler tick (~12 ms here)
LARGE_PRODUCT_FLOP = float(1 << 26)
K_SPLIT = 4                  # a product with K >= this x max(M, N) is cut along K


def spans(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """``range(n)`` cut into at most ``parts`` contiguous ``(lo, hi)`` pieces of nearly equal
    length, inner boundaries at multiples of ``align``."""
    if n < 0 or parts < 1 or align < 1:
        raise ValueError(f"spans needs n >= 0, parts >= 1, align >= 1; got {n}, {parts}, {align}")
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


class Pool:
    """Process-wide worker threads, grown on demand; worker ``i`` runs the pieces posted to it
    in order, one at a time (a caller waits for its pieces before it posts more).

    A piece is a Python callable (:class:`_Piece`, queued) or, with the compiled
    :mod:`rnnlab.fast.kernels`, a job (an int64 array, written to ``jobs[i]``) that the worker runs
    without the GIL: between pieces it polls for about 2 ms without the GIL
    (:func:`rnnlab.fast.kernels.serve`), running any job posted meanwhile, then sleeps on its queue.
    ``posted[i]`` and ``finished[i]`` count worker ``i``'s pieces; ``sleeping[i]`` says it
    sleeps (a job must then be followed by a wake-up on the queue).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
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
        self.jobs = np.zeros((n, kernels.JOB_SIZE), np.int64)
        self._compiled: kernels.HandOff | None = None

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

    def _hand_off(self) -> kernels.HandOff:
        if self._compiled is None:
            self._compiled = kernels.hand_off(self.posted, self.finished, self.jobs)
        return self._compiled

    def post(self, i: int, piece: _Piece) -> int:
        """Give ``piece`` to worker ``i`` (started if needed); returns its number there."""
        self._queue(i).put(piece)          # first: a worker that sees the count finds it
        number = int(self.posted[i]) + 1
        if _spin_ok():
            self.jobs[i, 0] = kernels.JOB_PYTHON
            self._hand_off().publish("posted", i, number)   # release: the kind before it
        else:
            self.posted[i] = number
        return number

    def post_job(self, i: int, job: NDArray[np.int64]) -> int:
        """Give a compiled job to worker ``i`` (started if needed); returns its number there."""
        q = self._queue(i)
        # jobs[i] = job, then the count published with a release store: a worker whose acquire
        # load sees the new count sees the job too, on any architecture (docs/performance.md,
        # "The thread hand-off")
        number = self._hand_off().post(i, job)
        if self.sleeping[i]:
            q.put(_WAKE)
        return number

    def wait(self, i: int, number: int, piece: _Piece | None = None) -> None:
        """Return once piece ``number`` of worker ``i`` has finished."""
        if _spin_ok() and self._hand_off().spin("finished", i, number, _SPIN_POLLS):
            return
        if piece is not None:
            piece.done.wait()
            return
        while not self._hand_off().spin("finished", i, number, _SPIN_POLLS):   # a long job
            time.sleep(1e-4)

    def job_status(self, i: int) -> int:
        """The status worker ``i`` wrote for the compiled job it ran last (0: done; see
        :func:`rnnlab.fast.kernels.check`)."""
        return int(self.jobs[i, kernels.JOB_STATUS])

    def _work(self, i: int, q: queue.SimpleQueue[_Piece | None]) -> None:
        taken = 0
        while True:
            item: _Piece | None = _WAKE
            if _spin_ok():
                # run compiled jobs as they come; back here for a Python piece or when idle
                taken, python = self._hand_off().serve(i, taken, _SPIN_POLLS)
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
            if _spin_ok():                      # release: the piece's results before the count
                self._hand_off().publish("finished", i, taken)
            else:
                self.finished[i] = taken
            item.done.set()


def _spin_ok() -> bool:
    return kernels.available()


POOL = Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL.reset)


class Runner:
    """Runs the recurrent loops and large products of one call.

    ``Runner()`` runs everything as it is, in the calling thread (the public functions).  With
    ``loop`` the recurrent loops run inside that context (a :class:`~rnnlab.fast.cpu.LoopContext`:
    BLAS thread count, flushed subnormals).  With ``split > 1`` the work is cut into ``split``
    pieces (batch rows of a loop, output rows or inner-dimension slices of a product); with
    ``parallel`` (the default) they run at the same time, one in the calling thread and the
    others in worker threads, else one after another in the calling thread: the same pieces, so
    the same numbers, either way.  The BLAS must then be on one thread (the caller sets it), and
    ``flush`` makes every piece flush subnormals in its own thread.

    ``compiled`` lets the loops run the compiled kernels of :mod:`rnnlab.fast.kernels`: every loop
    and float32 product is then a *job* run without the GIL (in a worker, or in the calling thread
    with subnormals flushed inside the job).  ``blocks`` lets the loops' step product run in the
    column blocks :func:`rnnlab.fast.kernels.column_block` times once per process (faster for
    some shapes, but a timed choice: off where a run must repeat bit for bit).  ``rest`` BLAS
    threads run the products of at least :data:`LARGE_PRODUCT_FLOP` (a whole product, not
    split); smaller ones run on one thread, since a second BLAS thread that must wait for a core
    costs more than it gives there (measured: a ``(73, 256) x (256, 64)`` product 32 us on one
    thread, 12 ms on two on a busy 2-core machine).
    """

    def __init__(self, loop: AbstractContextManager[Any] | None = None, split: int = 1,
                 flush: bool = False, compiled: bool = False, *, parallel: bool = True,
                 blocks: bool = True, rest: int = 1) -> None:
        self.loop = loop
        self.split = split
        self.parallel = parallel
        self.blocks = blocks
        self.rest = rest
        self.compiled = compiled          # loops may use rnnlab.fast.kernels (see cell.forward)
        self._flushes = ([FlushDenormals() for _ in range(split)]
                         if flush and split > 1 else None)
        # the products flush too: a weight gradient H^T dZ over a vanishing dZ otherwise
        # meets subnormal products (pixel MNIST: 20 ms of a 79 ms step)
        self._flush_products = FlushDenormals() if flush else None
        # with the compiled kernels every loop and float32 product is a job, run without the GIL
        self.jobs = compiled and kernels.available()
        self._flush_jobs = flush and FlushDenormals.usable()
        self._partials: dict[tuple[int, ...], Array] = {}
        self._large = None if rest <= 1 else BLAS.limit(rest)
        if self.jobs:
            kernels.compile()

    def block(self, n: int, H: int) -> int:
        """The column block of the loops' step product for ``n`` rows (``H``: whole)."""
        return kernels.column_block(n, H) if self.blocks else H

    def recurrence(self, B: int, fn: Callable[[int, int], object],
                   job: Callable[[int, int, bool], NDArray[np.int64]] | None = None) -> None:
        """``fn(lo, hi)`` runs a loop on batch rows ``lo:hi``; run it on all ``B`` rows.

        ``job(lo, hi, flush)``, when given, makes the same loop as a compiled job
        (:mod:`rnnlab.fast.kernels`), which runs instead of ``fn``.
        """
        pieces = spans(B, self.split) if self.splits(B) else [(0, B)]
        if job is not None and self.jobs:
            jobs = [job(lo, hi, self._flush_jobs) for lo, hi in pieces]
            if len(jobs) > 1:
                self.run_jobs(jobs)
            else:
                with getattr(self.loop, "threads", None) or nullcontext():
                    kernels.run(jobs[0])
            return
        if len(pieces) == 1:
            with self.loop or nullcontext():
                fn(0, B)
            return
        self._map(fn, pieces, self._flushes)

    def splits(self, B: int) -> bool:
        """Whether :meth:`recurrence` cuts a batch of ``B`` rows."""
        return self.split > 1 and B >= 2 * MIN_LOOP_ROWS

    def rows(self, n: int, flop_per_row: float, fn: Callable[[int, int], object],
             flush: bool = False) -> None:
        """``fn(lo, hi)`` computes output rows ``lo:hi`` of a product; compute all ``n`` (with
        ``flush``, subnormals flushed to zero if this runner flushes)."""
        parts = min(self.split, int(n * flop_per_row // MIN_PIECE_FLOP), n // ROW_ALIGN)
        if parts <= 1:
            large = self._large if n * flop_per_row >= LARGE_PRODUCT_FLOP else None
            with (self._flush_products if flush and self._flush_products is not None
                  else nullcontext()), large or nullcontext():
                fn(0, n)
            return
        self._map(fn, spans(n, parts, ROW_ALIGN), self._flushes if flush else None)

    def matmul(self, a: Array, b: Array, out: Array) -> Array:
        """``np.matmul(a, b, out=out)`` for 2-D operands, split by the rows of ``out`` or, for
        a product over many rows (``a`` is ``X^T``: a weight gradient), by its inner dimension
        ``K`` into partial products that are then added (each piece reads contiguous rows of
        both operands and packs half as much)."""
        if not (a.ndim == b.ndim == out.ndim == 2 and a.shape[1] == b.shape[0]
                and out.shape == (a.shape[0], b.shape[1])):
            raise ValueError(f"Runner.matmul needs 2-D operands (M, K) x (K, N) -> (M, N); got "
                             f"{a.shape} x {b.shape} -> {out.shape}")
        (M, K), N = a.shape, b.shape[1]
        if self.jobs and out.dtype == a.dtype == b.dtype == np.float32:
            flop = 2.0 * M * N * K
            if K >= K_SPLIT * max(M, N):
                parts = min(self.split, int(flop // MIN_JOB_FLOP), K // ROW_ALIGN)
                if parts > 1 and self._sum_of_parts(
                        spans(K, parts, ROW_ALIGN), out, lambda lo, hi, o: kernels.gemm_job(
                            a[:, lo:hi], b[lo:hi], o, self._flush_jobs)):
                    return out
            else:
                parts = min(self.split, int(flop // MIN_JOB_FLOP), M // ROW_ALIGN)
                if parts > 1:
                    cut = spans(M, parts, ROW_ALIGN)
                    jobs = [kernels.gemm_job(a[lo:hi], b, out[lo:hi], self._flush_jobs)
                            for lo, hi in cut]
                    if all(j is not None for j in jobs):
                        self.run_jobs(jobs)    # type: ignore[arg-type]
                        return out
            if self.split == 1 or flop < MIN_JOB_FLOP:       # whole: one job, here
                job = kernels.gemm_job(a, b, out, self._flush_jobs)
                if job is not None:
                    with (self._large if flop >= LARGE_PRODUCT_FLOP and self.split == 1
                          else None) or nullcontext():
                        kernels.run(job)
                    return out

        def piece(lo: int, hi: int) -> None:
            np.matmul(a[lo:hi], b, out=out[lo:hi])

        self.rows(out.shape[0], 2.0 * a.shape[1] * b.shape[1], piece, flush=True)
        return out

    def vecmat(self, x: Array, a: Array, out: Array) -> Array:
        """``np.matmul(x, a, out=out)`` for a vector ``x`` ``(K,)`` (a bias gradient ``1^T dZ``),
        split along ``K`` into partial sums that are then added, when the pieces are jobs."""
        K, N = a.shape
        parts = min(self.split, int(2.0 * K * N // MIN_JOB_FLOP), K // ROW_ALIGN)
        if self.jobs and parts > 1 and self._sum_of_parts(
                spans(K, parts, ROW_ALIGN), out, lambda lo, hi, o: kernels.vecmat_job(
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
        """Run compiled jobs (:mod:`rnnlab.fast.kernels`): at the same time (the last in the
        calling thread, the others on the workers; not ``parallel``: one after another in the
        calling thread); return when all have finished."""
        if not self.parallel:
            for job in jobs:
                kernels.run(job)
            return
        with POOL.use:
            posted = [(i, POOL.post_job(i, job)) for i, job in enumerate(jobs[:-1])]
            try:
                kernels.run(jobs[-1])
            finally:
                for i, number in posted:
                    POOL.wait(i, number)
            for i, _ in posted:
                kernels.check(POOL.job_status(i), "a job on a worker thread")

    def column_sum(self, a: Array, out: Array) -> Array:
        """``np.sum(a, axis=0, out=out)`` for a 2-D ``a``, split by columns (same sums)."""
        n, m = a.shape
        parts = min(self.split, int(n * m // (MIN_PIECE_FLOP / 8)), m // ROW_ALIGN)
        if parts <= 1:
            return np.sum(a, axis=0, out=out)

        def piece(lo: int, hi: int) -> None:
            np.sum(a[:, lo:hi], axis=0, out=out[lo:hi])

        self._map(piece, spans(m, parts, ROW_ALIGN), None)
        return out

    def _map(self, fn: Callable[[int, int], object], pieces: Sequence[tuple[int, int]],
             contexts: Sequence[AbstractContextManager[Any]] | None) -> None:
        def run(i: int, lo: int, hi: int) -> None:
            with contexts[i] if contexts is not None else nullcontext():
                fn(lo, hi)

        if len(pieces) == 1 or not self.parallel:
            for i, (lo, hi) in enumerate(pieces):
                run(i, lo, hi)
            return
        posted = []
        error: BaseException | None = None
        with POOL.use:
            for i, (lo, hi) in enumerate(pieces[:-1]):
                piece = _Piece(fn, lo, hi,
                               contexts[i] if contexts is not None else nullcontext())
                posted.append((i, POOL.post(i, piece), piece))
            try:
                run(len(pieces) - 1, *pieces[-1])
            except BaseException as exc:  # wait for the workers before raising: they write
                error = exc               # into the caller's buffers
            for i, number, piece in posted:
                POOL.wait(i, number, piece)
                if error is None and piece.error is not None:
                    error = piece.error
        if error is not None:
            raise error


SERIAL = Runner()
