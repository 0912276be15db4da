"""The split's levers one at a time: rnnlab's step with one lever off, side by side (issue 6).

    python -m benchmarks.levers                      # configs a, b, c, d (~1.5 minutes)
    python -m benchmarks.levers --configs d --rounds 20

Each variant is a :class:`rnnlab.fast.workspace.Workspace` fixed on the batch split over the thread
budget (no tuner), with the compiled kernels (``rnnlab[fast]``), on the problems of
:mod:`benchmarks.step` (the same parameters, batch and SGD step).  The variants take turns in
one process, ``--block`` steps each (the first two of every block untimed), for ``--rounds``
rounds (the first two untimed); the table gives the median step time and its ratio to ``all``:

* ``all``               everything on (what ``Workspace(spec)`` runs once its tuner picks the split)
* ``Python pieces``     the pieces handed to the workers as Python callables (each worker takes
                        the GIL to start one) instead of compiled jobs served without the GIL
* ``no joint buffer``   the first layer on separate state and input buffers: a projection
                        product before the loop and separate weight-gradient products
* ``no column blocks``  the loops' step product always whole (``kernels.column_block``)
* ``no K split``        the weight gradients cut by output rows instead of along ``K``
* ``products unflushed`` the products' jobs without FTZ/DAZ (the loops still flush)

The variants change module-level switches of :mod:`rnnlab.fast.kernels` and
:mod:`rnnlab.fast.pool` for the duration of their block (a benchmark's liberty, not an API).
A last line times the hand-off alone: the round trip of two trivial jobs (one on a worker)
against two Python pieces.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.step import CONFIGS, LR, MAIN_CONFIGS, _problem

VARIANTS = ("all", "Python pieces", "no joint buffer", "no column blocks", "no K split",
            "products unflushed")


@contextmanager
def _variant(name: str, ws: Any) -> Iterator[None]:
    """Turn one lever off for the duration of the block."""
    from rnnlab.fast import cpu, kernels, pool
    from rnnlab.fast.tuner import ThreadOption

    run = ws._runner(ThreadOption(1, 1, cpu.BLAS.get() or 1))
    saved = (kernels.column_block, pool.K_SPLIT, kernels.gemm_job, kernels.vecmat_job,
             run.jobs)
    try:
        if name == "Python pieces":
            run.jobs = False
        elif name == "no column blocks":
            kernels.column_block = lambda n, H: H
        elif name == "no K split":
            pool.K_SPLIT = 1 << 62
        elif name == "products unflushed":
            gemm, vecmat = saved[2], saved[3]
            kernels.gemm_job = lambda a, b, out, flush=False: gemm(a, b, out, False)
            kernels.vecmat_job = lambda x, a, out, flush=False: vecmat(x, a, out, False)
        yield
    finally:
        (kernels.column_block, pool.K_SPLIT, kernels.gemm_job, kernels.vecmat_job,
         run.jobs) = saved


def time_config(name: str, rounds: int, block: int) -> dict[str, float]:
    """Median step time (s) of every variant on config ``name``."""
    from rnnlab import Workspace, optim
    from rnnlab.fast import cpu
    from rnnlab.fast.tuner import ThreadOption

    spec, X, Y, params = _problem(CONFIGS[name])
    opt = optim.make("sgd", lr=LR)
    state = opt.init(params)
    split = cpu.BLAS.get() or 1
    spaces = {}
    for v in VARIANTS:
        ws = Workspace(spec)
        ws._thread_option = lambda: ThreadOption(1, 1, split)
        ws._joint_ok = v != "no joint buffer"
        spaces[v] = ws
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for v, ws in spaces.items():
            with _variant(v, ws):
                for i in range(block):
                    t = time.perf_counter()
                    _, g = ws.value_and_grad(params, X, Y)
                    opt.update_(params, g, state)
                    if r >= 2 and i >= 2:
                        times[v].append(time.perf_counter() - t)
    return {v: statistics.median(t) for v, t in times.items()}


def handoff(n: int = 5000) -> tuple[float, float]:
    """Median round trip (s) of two trivial jobs, one on a worker, and of two Python pieces."""
    import numpy as np

    from rnnlab.fast import kernels
    from rnnlab.fast.pool import Runner

    a = np.ones((2, 2), np.float32)
    outs = [np.empty((2, 2), np.float32) for _ in range(2)]      # alive as long as the jobs
    jobs = [kernels.gemm_job(a, a, out) for out in outs]
    run = Runner(split=2, compiled=True)

    def median(fn: Callable[[], object]) -> float:
        for _ in range(500):
            fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    return (median(lambda: run.run_jobs(jobs)),
            median(lambda: run._map(lambda lo, hi: None, [(0, 1), (1, 2)], None)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(MAIN_CONFIGS))
    parser.add_argument("--threads", type=int, default=None, help="budget (default: all cores)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=8)
    args = parser.parse_args(argv)
    import os

    from threadpoolctl import threadpool_limits

    from rnnlab.fast import kernels

    if not kernels.available():
        print(f"the compiled kernels are unavailable: {kernels.why_unavailable()}")
        return 1
    threads = args.threads or os.cpu_count() or 1
    if threads < 2:
        print("the split needs a budget of at least 2 threads")
        return 1
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; expected some of {sorted(CONFIGS)}")
    with threadpool_limits(threads):
        print(f"rnnlab levers: split over {threads} threads; rounds={args.rounds} "
              f"block={args.block}; ms per step (median), ratio to 'all'")
        width = max(map(len, VARIANTS))
        print(f"{'variant':{width}s} | " + " | ".join(f"{c:>14s}" for c in names))
        results = {c: time_config(c, args.rounds, args.block) for c in names}
        for v in VARIANTS:
            cells = [f"{results[c][v] * 1e3:8.2f} {results[c][v] / results[c]['all']:4.2f}x"
                     for c in names]
            print(f"{v:{width}s} | " + " | ".join(f"{x:>14s}" for x in cells))
        jobs, pieces = handoff()
        print(f"hand-off round trip: two jobs {jobs * 1e6:.1f} us, two Python pieces "
              f"{pieces * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
