"""Start-up of a fresh process: import, the compiled kernels (built by Numba, or loaded from the
object file an earlier process cached, without Numba), a Workspace and its first training step
(issue 18).

    python -m benchmarks.startup                 # row MNIST's shapes, 5 warm processes
    python -m benchmarks.startup --runs 9 --batch 32 --steps 8 --inputs 64 --hidden 64

The first process runs with an empty cache directory (``RNNLAB_KERNEL_CACHE`` pointed at a new
temporary directory): it compiles every kernel with Numba and writes their object file. The next
``--runs`` processes use the same directory, as every process on a machine after its first
does. Each prints the seconds from its start to: ``import rnnlab`` done; ``Workspace(spec)`` made
(the kernels built or loaded); the first ``value_and_grad`` done (buffers, the
column-block timing, the first step). Medians of the warm runs; a last row without the cache
(``RNNLAB_KERNEL_CACHE=0``) for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import rnnlab
from rnnlab import RNNSpec, Workspace
t1 = time.perf_counter()
B, T, D, H = (int(v) for v in sys.argv[1:5])
spec = RNNSpec(D, H, 10)
ws = Workspace(spec)
t2 = time.perf_counter()
rng = np.random.default_rng(0)
params = {k: (0.1 * rng.standard_normal(v)).astype(np.float32)
          for k, v in rnnlab.core.params.shapes(spec).items()}
X = rng.standard_normal((B, T, D)).astype(np.float32)
Y = rng.integers(0, 10, B)
t3 = time.perf_counter()
ws.value_and_grad(params, X, Y)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "workspace": t2 - t1, "first_step": t4 - t3,
                  "total": (t4 - t3) + (t2 - t0), "numba": "numba" in sys.modules,
                  "origin": rnnlab.fast.kernels.origin()}))
"""


def _run(env_cache: str, shape: list[str]) -> dict[str, float]:
    env = {**os.environ, "RNNLAB_KERNEL_CACHE": env_cache}
    res = subprocess.run([sys.executable, "-c", CHILD, *shape], capture_output=True, text=True,
                         env=env, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip().splitlines()[-1])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--inputs", type=int, default=28)
    ap.add_argument("--hidden", type=int, default=128)
    args = ap.parse_args(argv)
    shape = [str(v) for v in (args.batch, args.steps, args.inputs, args.hidden)]
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as d:
        cache = os.path.join(d, "kernels")
        rows.append(("first process (compiles, writes the cache)", _run(cache, shape)))
        warm = [_run(cache, shape) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in warm) for k in ("import", "workspace",
                                                                   "first_step", "total")}
        origins = sorted({str(r["origin"]) for r in warm})
        rows.append((f"later processes (load the cache), median of {args.runs}",
                     {**med, "origin": "/".join(origins), "numba": any(r["numba"] for r in warm)}))
    rows.append(("without the cache (RNNLAB_KERNEL_CACHE=0)", _run("0", shape)))
    print(f"start-up of a fresh process: B={args.batch} T={args.steps} D={args.inputs} "
          f"H={args.hidden}, float32; seconds from the process's start")
    head = (f"{'':<50}{'import':>8}{'Workspace':>11}{'1st step':>10}{'total':>8}"
            f"{'kernels':>9}{'Numba':>7}")
    print(head)
    for name, r in rows:
        print(f"{name:<50}{r['import']:>8.2f}{r['workspace']:>11.2f}{r['first_step']:>10.2f}"
              f"{r['total']:>8.2f}{r['origin']:>9}{'yes' if r['numba'] else 'no':>7}")
    print("total = import + Workspace + first step (the random data between them excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
