"""Inference time of one network three ways: rnnlab's forward, its ONNX export in ONNX Runtime,
its PyTorch module (docs/interop.md).

    python -m benchmarks.inference              # three sizes, one thread each, ~20 s
    python -m benchmarks.inference --threads 2

A one-layer tanh many-to-one classifier (``O = 10``), float32: the median wall time of one call
(forward only) of :func:`rnnlab.forward`, of ``InferenceSession.run`` on the file
:func:`rnnlab.interop.onnx.export` wrote, and of the :func:`rnnlab.interop.torch.to_torch` module
under ``torch.no_grad()``; the ratio columns divide by rnnlab's time.  Every runtime gets the same
number of threads (BLAS through threadpoolctl, ``intra_op_num_threads``, ``torch.set_num_threads``).
Needs ``onnxruntime``, ``onnx`` and ``torch``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from rnnlab import RNN

SIZES = [(1, 100, 32, 128), (64, 100, 32, 128), (256, 50, 64, 256)]   # B, T, D, H


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()                                                   # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    import onnxruntime as ort
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    print(f"{'B x T x D -> H':<24}{'rnnlab':>10}{'onnxruntime':>13}{'torch':>10}"
          f"{'ort/rnnlab':>12}{'torch/rnnlab':>14}")
    with threadpool_limits(args.threads), torch.no_grad(), tempfile.TemporaryDirectory() as d:
        for B, T, D, H in SIZES:
            model = RNN(D, H, output_size=10, seed=0)
            X = np.random.default_rng(0).standard_normal((B, T, D)).astype(np.float32)
            path = model.export_onnx(os.path.join(d, f"m{H}.onnx"))
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            module, Xt = model.to_torch(), torch.as_tensor(X)
            ours = _median_ms(partial(model.forward, X), args.repeats)
            onnx = _median_ms(partial(sess.run, ["y"], {"X": X}), args.repeats)
            tch = _median_ms(partial(module, Xt), args.repeats)
            print(f"{f'{B} x {T} x {D} -> {H}':<24}{ours:>8.2f}ms{onnx:>11.2f}ms{tch:>8.2f}ms"
                  f"{onnx / ours:>12.2f}{tch / ours:>14.2f}")


if __name__ == "__main__":
    main()
