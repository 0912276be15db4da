"""The compiled kernels are kept on disk between processes, keyed safely (issue 18,
docs/performance.md "Start-up"): a second process loads them instead of compiling, a build never
holds an address of the process that compiled it, the key separates BLAS interfaces, a damaged
cache is rebuilt, and ``RNNLAB_KERNEL_CACHE=0`` keeps nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnlab.fast import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="the compiled kernels (numba) "
                                "are not installed")

SRC = Path(__file__).resolve().parents[2] / "src"

# a child: the kernels (compiled or loaded), one workspace step, what was loaded from the cache
CHILD = r"""
import json, sys
import numpy as np
from rnnlab import RNNSpec, Workspace, init_params
from rnnlab.fast import compiled, jit, kernels
kernels.compile()
spec = RNNSpec(5, 16, 3)
rng = np.random.default_rng(0)
params = init_params(spec, rng, dtype=np.float32)
X = rng.standard_normal((24, 7, 5)).astype(np.float32)
Y = rng.integers(0, 3, 24)
loss, grads = Workspace(spec, threads=1).value_and_grad(params, X, Y)
hits = sum(sum(d.stats.cache_hits.values()) for d in jit.KERNELS.values())
misses = sum(sum(d.stats.cache_misses.values()) for d in jit.KERNELS.values())
dynamic = [name for name, d in jit.KERNELS.items()
           for cres in d.overloads.values() if cres.library.has_dynamic_globals]
b = compiled.blas()
print(json.dumps({"loss": float(loss), "grads": {k: v.tolist() for k, v in grads.items()},
                  "hits": hits, "misses": misses, "dynamic": dynamic,
                  "sgemm": b.sgemm_address, "where": str(kernels.cache_location())}))
"""


def _child(env_extra: dict[str, str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC), **env_extra}
    res = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_builds_which_hold_no_address(tmp_path: Path) -> None:
    cache = tmp_path / "kernels"
    first = _child({"RNNLAB_KERNEL_CACHE": str(cache)})
    assert first["misses"] > 0 and first["dynamic"] == []      # compiled, cacheable
    where = Path(first["where"])
    assert where.parent == cache and where.is_dir()              # one directory per key
    builds = sorted(where.rglob("*.nbc"))
    assert builds and sorted(where.rglob("*.nbi"))
    # the builds call NumPy's BLAS by rnnlab's symbol name, not by the compiling process's
    # address of it
    blob = b"".join(f.read_bytes() for f in builds)
    assert b"rnnlab_cblas_sgemm" in blob
    assert struct.pack("<Q", first["sgemm"]) not in blob

    second = _child({"RNNLAB_KERNEL_CACHE": str(cache)})
    assert second["misses"] == 0 and second["hits"] > 0          # loaded, nothing compiled
    assert second["loss"] == first["loss"] and second["grads"] == first["grads"]

    # a damaged cache (a truncated index, a build overwritten with garbage) is rebuilt
    for f in list(where.rglob("jit.run-*.nbi"))[:1] + builds[:2]:
        f.write_bytes(b"garbage")
    third = _child({"RNNLAB_KERNEL_CACHE": str(cache)})
    assert third["misses"] > 0
    assert third["loss"] == first["loss"] and third["grads"] == first["grads"]
    fourth = _child({"RNNLAB_KERNEL_CACHE": str(cache)})
    assert fourth["misses"] == 0


def test_caching_can_be_switched_off(tmp_path: Path) -> None:
    out = _child({"RNNLAB_KERNEL_CACHE": "0", "XDG_CACHE_HOME": str(tmp_path),
                  "HOME": str(tmp_path), "NUMBA_CACHE_DIR": ""})
    assert out["where"] == "None" and out["hits"] == 0
    assert not any(p.suffix in (".nbi", ".nbc") for p in tmp_path.rglob("*"))


def test_the_key_separates_blas_interfaces_and_libraries() -> None:
    from rnnlab.fast import compiled

    b = compiled.blas()
    key = compiled.cache_key(b)
    assert key == compiled.cache_key(b)                        # stable within a process
    for change in ({"ilp64": not b.ilp64}, {"path": b.path + ".other"},
                   {"version": b.version + ".1"}, {"sgemm": "cblas_sgemm"}):
        assert compiled.cache_key(dataclasses.replace(b, **change)) != key, change
    # the addresses are not part of the key: every process has its own
    assert compiled.cache_key(dataclasses.replace(b, sgemm_address=1, sgemv_address=2)) == key


def test_the_key_follows_the_kernels_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """An edited jit.py or compiled.py (another job layout) is another key, whatever the files'
    modification times: a build of other code is never loaded."""
    import hashlib

    from rnnlab.fast import compiled

    b = compiled.blas()
    key = compiled.cache_key(b)
    src = Path(compiled.__file__).resolve()
    h = hashlib.sha256(src.with_name("jit.py").read_bytes() + src.read_bytes()).hexdigest()
    assert compiled.source_digest() == h
    monkeypatch.setattr(compiled, "source_digest", lambda: "0" * 64)
    assert compiled.cache_key(b) != key


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    from rnnlab.fast import compiled

    monkeypatch.setenv("RNNLAB_KERNEL_CACHE", str(tmp_path / "k"))
    assert compiled.cache_root() == tmp_path / "k"
    for off in ("0", "off", "OFF", "false"):
        monkeypatch.setenv("RNNLAB_KERNEL_CACHE", off)
        assert compiled.cache_root() is None
    monkeypatch.delenv("RNNLAB_KERNEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compiled.cache_root() == tmp_path / "xdg" / "rnnlab" / "kernels"


def test_the_loaded_kernels_compute_what_the_numpy_loops_do() -> None:
    """Whatever the build's origin (compiled here or loaded), the relu loop is the NumPy loop's
    arithmetic, bit for bit (tests/fast/test_kernels.py checks every kernel in depth)."""
    from rnnlab.core.activations import get
    from rnnlab.fast.loops import forward_into

    rng = np.random.default_rng(3)
    T, B, H = 6, 4, 8
    W = (rng.standard_normal((H, H)) / 3).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    A = rng.standard_normal((T, B, H)).astype(np.float32)
    a, b = (np.concatenate([np.zeros((1, B, H), np.float32), A]) for _ in range(2))
    forward_into(a, W, get("relu"), h0, compiled=True)
    forward_into(b, W, get("relu"), h0, compiled=False)
    np.testing.assert_array_equal(a, b)
