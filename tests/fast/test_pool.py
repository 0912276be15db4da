"""rnnlab.parallel: the pieces a Workspace call is cut into, the worker pool, the tuner."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from rnnlab.fast.pool import Runner, spans
from rnnlab.fast.tuner import ThreadOption, ThreadTuner, thread_options


def test_spans_cover_the_range_in_aligned_pieces() -> None:
    for n, parts, align in itertools.product(range(0, 70), (1, 2, 3, 5), (1, 4, 16)):
        pieces = spans(n, parts, align)
        assert len(pieces) <= parts
        assert [i for lo, hi in pieces for i in range(lo, hi)] == list(range(n))
        assert all(lo % align == 0 for lo, _ in pieces)
        assert all(hi > lo for lo, hi in pieces)


@pytest.mark.parametrize("split", [2, 3, 4])
def test_pieces_run_on_other_threads_and_write_their_rows(split: int) -> None:
    out = np.zeros(64)
    who: dict[int, int] = {}
    lock = threading.Lock()

    def piece(lo: int, hi: int) -> None:
        out[lo:hi] = np.arange(lo, hi)
        with lock:
            who[lo] = threading.get_ident()

    for _ in range(3):                                          # the workers are reused
        out[:] = -1
        Runner(None, split=split).recurrence(64, piece)
        np.testing.assert_array_equal(out, np.arange(64))
    assert len(set(who.values())) == split                     # one thread per piece


def test_an_error_in_a_worker_reaches_the_caller_after_every_piece_ended() -> None:
    run = Runner(None, split=3)
    done: list[int] = []
    lock = threading.Lock()

    def piece(lo: int, hi: int) -> None:
        if lo == 0:
            raise ValueError("piece 0 failed")
        time.sleep(0.05)
        with lock:
            done.append(lo)

    with pytest.raises(ValueError, match="piece 0 failed"):
        run.recurrence(48, piece)
    assert sorted(done) == [16, 32]                            # the others finished first
    run.recurrence(48, lambda lo, hi: None)                     # and the pool still works


def test_products_are_cut_by_rows_only_when_the_pieces_are_large() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((512, 300)), rng.standard_normal((300, 200))
    out = np.empty((512, 200))
    calls: list[int] = []
    run = Runner(None, split=2)
    real = run._map
    run._map = lambda fn, pieces, ctx: (calls.append(len(pieces)),   # type: ignore[method-assign]
                                        real(fn, pieces, ctx))
    np.testing.assert_allclose(run.matmul(a, b, out), a @ b, rtol=1e-12)
    assert calls == [2]
    small = np.empty((8, 200))
    run.matmul(a[:8], b, small)                                 # 8 rows: not worth a hand-off
    assert calls == [2]
    col = np.empty(200)
    np.testing.assert_array_equal(run.column_sum(a @ b, col), np.sum(a @ b, axis=0))


def test_thread_options() -> None:
    assert thread_options(1, True, 128, 128) == [ThreadOption(1, 1)]
    blas = [ThreadOption(1, 1), ThreadOption(1, 2), ThreadOption(2, 2)]
    assert thread_options(2, False, 128, 128) == blas + [ThreadOption(1, 1, 2)]
    assert thread_options(2, True, 128, 128) == [ThreadOption(1, 1), ThreadOption(1, 1, 2)]
    # too little work per piece: no split, with or without the compiled loops
    assert thread_options(2, True, 16, 32) == blas
    assert thread_options(2, False, 8, 512) == blas


def _drive(tuner: ThreadTuner, fake: dict[ThreadOption, float], calls: int) -> list:
    picks = []
    for _ in range(calls):
        o = tuner.pick()
        picks.append(o)
        if o is not None:
            tuner.record(o, fake[o])
    return picks


def test_tuner_runs_each_option_then_keeps_the_fastest_and_explores() -> None:
    opts = thread_options(2, False, 128, 128)
    tuner = ThreadTuner(budget=2, explore_every=40, options=opts)
    assert tuner.options[0].split == 2                          # splits are tried first
    fake = {o: float(i + 1) for i, o in enumerate(reversed(opts))}
    trial = 1 + tuner.split_run + 3 * tuner.run
    picks = _drive(tuner, fake, trial)
    assert picks[0] is None                                     # first call: untimed
    # each option ran in one run of consecutive calls, only its last `timed` calls counted
    runs = [(o, len(list(g))) for o, g in itertools.groupby(picks[1:])]
    assert [n for _, n in runs] == [tuner.split_run] + [tuner.run] * 3
    assert all(len(t) == tuner.timed for t in tuner.times.values())
    fastest = min(fake, key=fake.__getitem__)
    picks = _drive(tuner, fake, 200)
    assert tuner.best() == fastest
    explored = [o for o in picks if o != fastest]
    assert explored and len(explored) <= 5 * tuner.split_run    # about one run in 40 calls
    assert ThreadTuner(budget=1).options == [ThreadOption(1, 1)]


def test_tuner_ignores_the_first_calls_after_coming_back_from_a_run() -> None:
    """A split is slow for its first calls; those must not count against it."""
    split, one = ThreadOption(1, 1, 2), ThreadOption(1, 1)
    tuner = ThreadTuner(budget=2, explore_every=30, options=[split, one])
    since = {"n": 0, "last": None}

    def cost(o: ThreadOption) -> float:                         # 3 ms once warm, 9 ms before
        if o != since["last"]:
            since["n"], since["last"] = 0, o
        since["n"] += 1
        if o == one:
            return 5.0
        return 9.0 if since["n"] <= 10 else 3.0

    for _ in range(400):
        o = tuner.pick()
        if o is not None:
            tuner.record(o, cost(o))
    assert tuner.best() == split
    assert max(tuner.times[split]) == 3.0


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_workers() -> None:
    import os

    run = Runner(None, split=2)
    run.recurrence(32, lambda lo, hi: None)                    # the parent has a worker now
    pid = os.fork()
    if pid == 0:                                                # child: must not wait forever
        try:
            out = np.zeros(32)

            def piece(lo: int, hi: int) -> None:
                out[lo:hi] = 1

            Runner(None, split=2).recurrence(32, piece)
            os._exit(0 if out.all() else 1)
        except BaseException:
            os._exit(2)
    deadline = time.time() + 30
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung on its split")


# ----------------------------------------------------------------------------- compiled jobs

_needs_kernels = pytest.mark.skipif(not __import__("rnnlab.kernels").kernels.available(),
                                    reason="compiled kernels unavailable")


@_needs_kernels
@pytest.mark.parametrize("shape", [(64, 3000, 48), (48, 4000, 64), (600, 40, 70)], ids=str)
@pytest.mark.parametrize("transposed", [False, True])
def test_split_products_as_jobs_equal_the_product(shape: tuple[int, int, int],
                                                  transposed: bool) -> None:
    """Cut along K (a weight gradient: K >> M, N, partial products added) or by rows."""
    rng = np.random.default_rng(0)
    M, K, N = shape
    a = rng.standard_normal((K, M) if transposed else (M, K)).astype(np.float32)
    a = a.T if transposed else a
    b = rng.standard_normal((K, N)).astype(np.float32)
    run = Runner(None, split=2, compiled=True)
    assert run.jobs
    out = np.full((M, N), np.nan, np.float32)
    for _ in range(3):                                          # partial buffers are reused
        run.matmul(a, b, out)
        np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64),
                                   rtol=2e-5, atol=2e-4)


@_needs_kernels
def test_workers_serve_jobs_and_python_pieces_in_turn_and_wake_from_sleep() -> None:
    """Jobs and Python pieces alternate on the same workers; after a pause longer than the
    workers poll (~2 ms) they sleep, and a job must wake them."""
    from rnnlab import kernels

    rng = np.random.default_rng(1)
    a = rng.standard_normal((96, 64)).astype(np.float32)
    b = rng.standard_normal((64, 80)).astype(np.float32)
    run = Runner(None, split=3, compiled=True)
    seen: set[int] = set()
    for i in range(12):
        out = np.full((96, 80), np.nan, np.float32)
        jobs = [kernels.gemm_job(a[lo:hi], b, out[lo:hi]) for lo, hi in spans(96, 3)]
        run.run_jobs(jobs)                                      # type: ignore[arg-type]
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)
        run.recurrence(96, lambda lo, hi: seen.add(threading.get_ident()))
        if i % 4 == 3:
            time.sleep(0.05)                                    # the workers fall asleep
    assert len(seen) == 3


@_needs_kernels
def test_recurrence_runs_jobs_when_given_and_the_function_otherwise() -> None:
    from rnnlab import kernels

    calls: list[tuple[int, int, bool]] = []
    W = np.zeros((4, 4), np.float32)
    Hb = np.ones((3, 32, 4), np.float32)

    def job(lo: int, hi: int, flush: bool) -> np.ndarray:
        calls.append((lo, hi, flush))
        return kernels.forward_job(Hb[:, lo:hi], W, "identity", False, flush)

    Runner(None, split=2, flush=True, compiled=True).recurrence(
        32, lambda lo, hi: pytest.fail("the function ran"), job)
    assert sorted(c[:2] for c in calls) == [(0, 16), (16, 32)]
    from rnnlab.fast.cpu import FlushDenormals

    assert all(c[2] for c in calls) == FlushDenormals.usable()   # flush, where it can
    np.testing.assert_array_equal(Hb[1:], 1.0)                  # A + h0 W = 1 + 0
    ran = []
    Runner(None, split=2, compiled=False).recurrence(32, lambda lo, hi: ran.append(lo), job)
    assert sorted(ran) == [0, 16] and len(calls) == 2


@pytest.mark.parametrize("split", [1, 2])
def test_a_flushing_runner_flushes_subnormal_products(split: int) -> None:
    """Weight gradients over a vanishing dZ meet subnormal products, each a slow microcode path
    on x86: a flushing runner's products give exact zeros there instead; others do not."""
    from rnnlab.fast.cpu import FlushDenormals

    if not FlushDenormals.usable():
        pytest.skip("no FTZ/DAZ control here")
    K = 4096                                       # tall: a split cuts it along K
    a = np.full((32, K), 1e-20, np.float32)
    b = np.full((K, 32), 1e-21, np.float32)        # every product 1e-41: subnormal, the sums
    #                                                4.1e-38 normal: zero only if flushed
    from threadpoolctl import threadpool_limits

    for flush in (False, True):
        out = np.full((32, 32), np.nan, np.float32)
        with threadpool_limits(1):                 # OpenBLAS's own threads keep their mode
            Runner(None, split=split, flush=flush, compiled=True).matmul(a, b, out)
        assert (out == 0).all() if flush else (out > 0).all()
        v = np.full(32, np.nan, np.float32)
        Runner(None, split=split, flush=flush, compiled=True).vecmat(
            np.full(K, 1e-20, np.float32), b, v)
        assert (v == 0).all() if flush else (v > 0).all()
    assert np.float32(1e-39) * np.float32(1.0) != 0                # the mode was restored


@_needs_kernels
def test_two_threads_that_split_at_once_take_turns() -> None:
    """Two workspaces in two threads share the process's workers (one job slot each): every
    product and every Python piece must still come out right."""
    from rnnlab import kernels

    rng = np.random.default_rng(2)
    a = rng.standard_normal((96, 300)).astype(np.float32)
    b = rng.standard_normal((300, 64)).astype(np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64)
    bad: list[str] = []

    def work(k: int) -> None:
        run = Runner(None, split=2, compiled=True)
        for _ in range(200):
            out = np.full((96, 64), np.nan, np.float32)
            jobs = [kernels.gemm_job(a[lo:hi], b, out[lo:hi]) for lo, hi in spans(96, 2)]
            run.run_jobs(jobs)                                  # type: ignore[arg-type]
            if not np.allclose(out, want, rtol=1e-4, atol=1e-3):
                bad.append(f"thread {k}: a job's product")
            rows = np.zeros(64)

            def fill(lo: int, hi: int, rows: np.ndarray = rows) -> None:
                rows[lo:hi] = k + 1

            run.recurrence(64, fill)
            if not (rows == k + 1).all():
                bad.append(f"thread {k}: a Python piece")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads) and not bad, bad[:3]


# --- the hand-off's memory ordering (issue 13) ---------------------------------------------------


def _compiled_kernels():
    from rnnlab.fast import kernels
    if not kernels.available():
        pytest.skip("the compiled kernels are not available")
    kernels.compile()
    kernels.compile_jobs()
    return kernels


def test_the_hand_off_counters_are_acquire_release_atomics() -> None:
    """The counters through which jobs and results pass between threads are LLVM atomics with
    acquire (reads) and release (writes) ordering, so the hand-off does not rest on x86 keeping
    stores in order: a worker that sees ``posted[i]`` sees the job, a poster that sees
    ``finished[i]`` sees the results, on any architecture (docs/performance.md)."""
    from numba import types

    _compiled_kernels()
    from rnnlab.fast import jit

    ir = {}
    for name in ("post", "publish", "serve", "spin"):
        # the entry points the object file exports, compiled here for their int64 signature
        fn = jit.ENTRIES[name]
        sig = (types.int64,) * fn.py_func.__code__.co_argcount
        fn.compile(sig)
        ir[name] = fn.inspect_llvm(sig)
    for name in ("post", "publish", "serve"):           # they publish a count
        assert "store atomic i64" in ir[name] and " release, align 8" in ir[name], name
    for name in ("serve", "spin"):                      # they wait for one
        assert "load atomic i64" in ir[name] and " acquire, align 8" in ir[name], name


def test_many_hand_offs_deliver_every_job_and_every_result() -> None:
    """Thousands of round trips of small products split over the workers, each checked: a job
    read before it was fully written, or a result read before it was, would show here."""
    kernels = _compiled_kernels()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 16)).astype(np.float32)
    bs = [rng.standard_normal((16, 8)).astype(np.float32) for _ in range(4)]
    outs = [np.empty((64, 8), np.float32) for _ in range(4)]
    run = Runner(split=4, compiled=True)
    for r in range(2000):
        b = bs[r % 4]
        jobs = [kernels.gemm_job(a[i * 16:(i + 1) * 16], b, outs[i][:16]) for i in range(4)]
        for o in outs:
            o.fill(np.nan)
        run.run_jobs(jobs)
        for i in range(4):
            np.testing.assert_array_equal(outs[i][:16], a[i * 16:(i + 1) * 16] @ b)
