"""What batching costs in ``fit``: the per-batch gather against the fast step it feeds (issue 18).

    python -m benchmarks.batching                  # Fashion-MNIST rows' shapes
    python -m benchmarks.batching --batch 32 --hidden 64

``fit`` takes each shuffled minibatch with one fancy-indexing gather (``X[idx]``, ``y[idx]``) and
the fast engine copies it into its own buffer (the compiled forward loop, row by row).  This
times the gather and one training step of a reproducible :class:`rnnlab.Workspace` (what ``fit``
runs) on random data of the given shapes, medians, for 1 and 2 BLAS threads.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np


def _median(f: Callable[[], object], n: int) -> float:
    for _ in range(min(20, n)):
        f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.batching", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60000, help="training sequences")
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--inputs", type=int, default=28)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from rnnlab import RNNSpec, Workspace
    from rnnlab.core.params import init_params

    rng = np.random.default_rng(0)
    N, T, D, H, B = args.n, args.steps, args.inputs, args.hidden, args.batch
    X = rng.random((N, T, D), dtype=np.float32)
    y = rng.integers(0, 10, N)
    spec = RNNSpec(D, H, 10)
    params = init_params(spec, rng, dtype=np.float32)
    ws = Workspace(spec, reproducible=True)
    idx = rng.permutation(N)[:B]
    Xb, yb = X[idx], y[idx]
    print(f"N={N} T={T} D={D} H={H} B={B}, float32; medians")
    for threads in (1, 2):
        with threadpool_limits(threads):
            g = _median(lambda: (X[idx], y[idx]), 300)
            s = _median(lambda: ws.value_and_grad(params, Xb, yb), 200)
        print(f"{threads} thread(s): gather {g * 1e6:.0f} us, step {s * 1e3:.2f} ms, "
              f"gather / step {100 * g / s:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
