"""The cost of BPTT and RTRL, measured beside the formulas (docs/derivation.md, section 15).

    python -m benchmarks.cost            # H 16..128 (BPTT 32..1024), T 25..200: ~1 minute
    python -m benchmarks.cost --quick    # a smaller grid, about 10 s
    python -m benchmarks.cost --threads 2 --batch 32 --float64

One float32 gradient (forward, loss, gradient; no update) of a one-layer tanh many-to-many
network with a softmax head, at a fixed batch ``B``:

* ``bptt``  :func:`rnnlab.network.value_and_grad`, predicted time per step ``O(B H^2)`` and memory
  ``O(T B H)`` (eq. 33);
* ``rtrl``  :func:`rnnlab.rtrl.value_and_grad`, predicted time per step ``O(B H^2 |theta|)`` and
  memory ``O(B H |theta|)``, independent of ``T`` (eq. 34), with ``|theta|`` the sensitivity rows
  (``D H + H^2 + H`` recurrent parameters plus ``H`` for ``h0``).

Time: the median over repeats of one call's wall time divided by ``T``.  Memory: the peak of
``tracemalloc`` (which NumPy reports its array allocations to) during one separate call, minus
what was allocated before it: every array the call makes, inputs excluded.  The ratio columns
divide each measurement, and each formula's prediction, by its value at the first row of its
block, so matching columns mean the formula's scaling holds; the leading-order formulas leave
out the ``O(B D)`` and ``O(B O)`` terms and the fixed per-step cost of the Python loop, which
dominate BPTT at small ``H``.

BLAS runs on one thread unless ``--threads`` says otherwise (threadpoolctl): on a shared machine a
multi-threaded BLAS whose second core is busy makes small products erratic, tens of times slower.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from rnnlab import RNNSpec, init_params, network, rtrl

D, O = 8, 8


def _problem(H: int, T: int, B: int, dtype: type) -> tuple[RNNSpec, dict, np.ndarray, np.ndarray]:
    spec = RNNSpec(D, H, O, setup="many_to_many")
    rng = np.random.default_rng(0)
    params = init_params(spec, rng, dtype=dtype)
    X = rng.standard_normal((B, T, D)).astype(dtype)
    Y = rng.integers(0, O, size=(B, T))
    return spec, params, X, Y


def _time_per_step(fn: Callable[[], object], T: int, budget: float) -> float:
    fn()                                                  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / T


def _peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _formula(algo: str, B: int, H: int, T: int) -> tuple[float, float]:
    """Leading-order (time per step, memory) of eqs. (33)-(34), up to constants."""
    if algo == "bptt":
        return B * H * H, T * B * H
    theta = D * H + H * H + H + H
    return B * H * H * theta, B * H * theta


def _measure(algo: str, H: int, T: int, B: int, dtype: type, budget: float) -> tuple[float, int]:
    spec, params, X, Y = _problem(H, T, B, dtype)
    if algo == "bptt":
        def fn() -> object:
            return network.value_and_grad(params, X, Y, spec)
    else:
        def fn() -> object:
            return rtrl.value_and_grad(params, X, Y, spec)
    return _time_per_step(fn, T, budget), _peak_bytes(fn)


def _slope(xs: list[int], ys: list[float]) -> float:
    lx, ly = np.log(xs), np.log(ys)
    return float(np.polyfit(lx, ly, 1)[0]) + 0.0     # no "-0.00"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cost", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller grid (about 10 s)")
    ap.add_argument("--batch", type=int, default=16, help="B, fixed throughout (default 16)")
    ap.add_argument("--float64", action="store_true", help="float64 instead of float32")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads (default 1: stable timings on a shared machine)")
    args = ap.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                                   # pragma: no cover
        print("threadpoolctl is not installed: BLAS runs with its default threads")
        _run(args)
        return
    with threadpool_limits(args.threads, user_api="blas"):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    B = args.batch
    dtype = np.float64 if args.float64 else np.float32
    if args.quick:
        H_grid = {"bptt": [16, 32, 64, 128], "rtrl": [16, 32, 64]}
        T_grid, T_fixed, H_fixed, budget = [20, 40, 80], 10, 16, 0.1
    else:
        H_grid = {"bptt": [32, 64, 128, 256, 512, 1024], "rtrl": [16, 32, 64, 128]}
        T_grid, T_fixed, H_fixed, budget = [25, 50, 100, 200], 20, 32, 0.5

    head = (f"{'algo':<5} {'H':>4} {'T':>4} | {'time/step':>10} {'x ref':>8} {'formula':>8} | "
            f"{'peak MiB':>9} {'x ref':>8} {'formula':>8}")
    print(f"B = {B}, D = {D}, O = {O}, {np.dtype(dtype).name}, one tanh layer, many-to-many, "
          f"BLAS threads {args.threads}; time: median wall time per step; memory: tracemalloc "
          "peak per call")
    print("formulas: BPTT time/step B H^2, memory T B H;  RTRL time/step B H^2 |theta|, "
          "memory B H |theta|,  |theta| = D H + H^2 + 2H")
    for sweep in ("H", "T"):
        print()
        print(f"-- H varies, T = {T_fixed}" if sweep == "H" else f"-- T varies, H = {H_fixed}")
        print(head)
        print("-" * len(head))
        for algo in ("bptt", "rtrl"):
            pts = ([(h, T_fixed) for h in H_grid[algo]] if sweep == "H"
                   else [(H_fixed, t) for t in T_grid])
            ref: tuple[float, float, float, float] | None = None
            times: list[float] = []
            for H, T in pts:
                per_step, peak = _measure(algo, H, T, B, dtype, budget)
                ft, fm = _formula(algo, B, H, T)
                if ref is None:
                    ref = (per_step, peak, ft, fm)
                times.append(per_step)
                print(f"{algo:<5} {H:>4} {T:>4} | {per_step * 1e3:>8.3f}ms "
                      f"{per_step / ref[0]:>8.2f} {ft / ref[2]:>8.2f} | {peak / 2**20:>9.2f} "
                      f"{peak / ref[1]:>8.2f} {fm / ref[3]:>8.2f}")
            xs = [p[0] if sweep == "H" else p[1] for p in pts]
            fs = [_formula(algo, B, *p)[0] for p in pts]
            print(f"{'':<5} exponent of time/step in {sweep}: fitted {_slope(xs, times):.2f}, "
                  f"last two points {_slope(xs[-2:], times[-2:]):.2f}; formula "
                  f"{_slope(xs, fs):.2f} and {_slope(xs[-2:], fs[-2:]):.2f}")
    print()
    print("tracemalloc counts NumPy's array allocations (not the interpreter's arenas or BLAS "
          "buffers); the RTRL peak is rtrl.sensitivity_bytes plus the O(T B O) outputs.")


if __name__ == "__main__":
    main()
