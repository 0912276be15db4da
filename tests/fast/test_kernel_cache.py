"""The compiled kernels are kept on disk between processes as an object file, keyed safely (issue
18, docs/performance.md "Start-up"): a second process loads it without importing Numba, the
object never holds an address of the process that built it, the key separates BLAS interfaces,
CPUs and sources, a damaged cache is rebuilt, two processes never build one cache at once, and
``RNNLAB_KERNEL_CACHE=0`` keeps nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
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

# a child: the kernels (built or loaded), one workspace step split over two threads, where the
# kernels came from and whether Numba was imported
CHILD = r"""
import json, sys
import numpy as np
from rnnlab import RNNSpec, Workspace, init_params
from rnnlab.fast import compiled, kernels
kernels.compile()
spec = RNNSpec(5, 16, 3)
rng = np.random.default_rng(0)
params = init_params(spec, rng, dtype=np.float32)
X = rng.standard_normal((24, 7, 5)).astype(np.float32)
Y = rng.integers(0, 3, 24)
loss, grads = Workspace(spec, threads=1).value_and_grad(params, X, Y)
b = compiled.blas()
print(json.dumps({"loss": float(loss), "grads": {k: v.tolist() for k, v in grads.items()},
                  "origin": kernels.origin(), "numba": "numba" in sys.modules,
                  "sgemm": b.sgemm_address, "where": str(kernels.cache_location())}))
"""


def _start(env_extra: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), **env_extra}
    return subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen[str]) -> dict:
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _child(env_extra: dict[str, str]) -> dict:
    return _result(_start(env_extra))


def test_a_second_process_loads_the_object_without_numba(tmp_path: Path) -> None:
    cache = tmp_path / "kernels"
    first = _child({"RNNLAB_KERNEL_CACHE": str(cache)})
    assert first["origin"] == "built" and first["numba"]
    where = Path(first["where"])
    assert where.parent == cache and where.is_dir()              # one directory per key
    objects = sorted(where.glob("kernels-*.o"))
    assert len(objects) == 1 and (where / "manifest.json").is_file()
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest["key"] == where.name and manifest["object"] == objects[0].name
    # the object calls NumPy's BLAS by rnnlab's symbol name, not by the building process's
    # address of it
    blob = objects[0].read_bytes()
    assert b"rnnlab_cblas_sgemm" in blob
    assert struct.pack("<Q", first["sgemm"]) not in blob

    second = _child({"RNNLAB_KERNEL_CACHE": str(cache)})
    assert second["origin"] == "loaded" and not second["numba"]     # no Numba imported
    assert second["loss"] == first["loss"] and second["grads"] == first["grads"]

    # a damaged object is deleted and built again (the other kinds of damage: below)
    for f in where.glob("kernels-*.o"):
        f.write_bytes(b"garbage")
    again = _child({"RNNLAB_KERNEL_CACHE": str(cache)})
    assert again["origin"] == "built"
    assert again["loss"] == first["loss"] and again["grads"] == first["grads"]
    last = _child({"RNNLAB_KERNEL_CACHE": str(cache)})
    assert last["origin"] == "loaded" and last["grads"] == first["grads"]
    assert len(list(where.glob("kernels-*.o"))) == 1             # nothing left behind


def test_read_refuses_every_kind_of_damage(tmp_path: Path) -> None:
    """What the loading process checks before it hands anything to LLVM: the manifest's
    format and key, and the object's SHA-256 (a file cut short, overwritten, missing)."""
    from rnnlab.fast import native

    where = tmp_path / "key"
    where.mkdir()
    assert native.read(where, "k") is None                      # nothing cached yet
    ir = "define i32 @entry(ptr %r, ptr %e, i64 %a) {\n  store i64 %a, ptr %r\n  ret i32 0\n}\n"
    obj = native.build({"run": native.Entry(ir, "entry", "i")})
    with native.locked(where):
        path = native.store(where, "k", obj, {"run": "p"}, {"about": "test"})
    assert native.read(where, "k") == (obj, {"run": "p"})
    good = (where / "manifest.json").read_text()
    damage = [
        lambda: path.write_bytes(obj[:100]),                      # cut short
        lambda: path.write_bytes(b"garbage"),                     # overwritten
        lambda: path.unlink(),                                    # gone
        lambda: (where / "manifest.json").write_text("{"),        # not JSON
        lambda: (where / "manifest.json").write_text(good.replace('"key": "k"', '"key": "x"')),
        lambda: (where / "manifest.json").write_text(good.replace('"format": 1', '"format": 9')),
        lambda: (where / "manifest.json").write_text("[]"),
    ]
    for i, do in enumerate(damage):
        do()
        with pytest.raises(native.CacheDamaged):
            native.read(where, "k")
        with native.locked(where):
            assert native.purge(where) or i == 2
            assert not any(where.glob("kernels-*.o")) and not (where / "manifest.json").exists()
            path = native.store(where, "k", obj, {"run": "p"}, {"about": "test"})
        assert native.read(where, "k") == (obj, {"run": "p"})
    # purge deletes what store wrote and nothing else
    (where / "notes.txt").write_text("a user's file")
    with native.locked(where):
        native.purge(where)
    assert sorted(p.name for p in where.iterdir()) == [".lock", "notes.txt"]


def test_two_processes_never_build_one_cache_at_once(tmp_path: Path) -> None:
    """Started together on an empty cache: one builds under the directory's lock, the other
    waits for it and loads what it wrote."""
    cache = tmp_path / "kernels"
    procs = [_start({"RNNLAB_KERNEL_CACHE": str(cache)}) for _ in range(2)]
    outs = [_result(p) for p in procs]
    assert sorted(o["origin"] for o in outs) == ["built", "loaded"]
    assert outs[0]["grads"] == outs[1]["grads"]


def test_caching_can_be_switched_off(tmp_path: Path) -> None:
    out = _child({"RNNLAB_KERNEL_CACHE": "0", "XDG_CACHE_HOME": str(tmp_path),
                  "HOME": str(tmp_path)})
    assert out["where"] == "None" and out["origin"] == "built"
    assert not any(p.suffix == ".o" or p.name == "manifest.json" for p in tmp_path.rglob("*"))


def test_an_object_that_needs_a_missing_symbol_is_refused_not_loaded() -> None:
    """LLVM would abort the process on a symbol it cannot resolve; load() checks the object's
    undefined symbols first and raises instead."""
    from rnnlab.fast import native

    ir = ('declare i64 @rnnlab_no_such_symbol(i64)\n'
          'define i32 @entry(ptr %r, ptr %e, i64 %a) {\n'
          '  %v = call i64 @rnnlab_no_such_symbol(i64 %a)\n  store i64 %v, ptr %r\n'
          '  ret i32 0\n}\n')
    obj = native.build({"probe": native.Entry(ir, "entry", "i")})
    assert native.undefined_symbols(obj) == ["rnnlab_no_such_symbol"]
    with pytest.raises(native.CacheDamaged, match="rnnlab_no_such_symbol"):
        native.load(obj, {"probe": "i"})


def test_the_builder_refuses_code_that_needs_numbas_runtime() -> None:
    from rnnlab.fast import native

    ir = ('declare ptr @NRT_MemInfo_alloc_aligned(i64, i32)\n'
          'define i32 @entry(ptr %r, ptr %e, i64 %a) {\n'
          '  %m = call ptr @NRT_MemInfo_alloc_aligned(i64 %a, i32 32)\n'
          '  %v = ptrtoint ptr %m to i64\n  store i64 %v, ptr %r\n  ret i32 0\n}\n')
    with pytest.raises(RuntimeError, match="NRT_MemInfo_alloc_aligned"):
        native.build({"probe": native.Entry(ir, "entry", "i")})


def test_a_wrapper_returns_the_result_or_minus_one_on_an_error() -> None:
    """The C wrapper passes an int64 as it is and a buffer (``"p"``) as its address, returns
    what the native function stored, and -1 when it reports an error (a non-zero status)."""
    import _cffi_backend as ffi

    from rnnlab.fast import native

    ir = ('define i32 @entry(ptr %r, ptr %e, i64 %a, i64 %b) {\n'
          '  %bad = icmp slt i64 %a, 0\n  br i1 %bad, label %err, label %ok\n'
          'ok:\n  %p = inttoptr i64 %b to ptr\n  %x = load i64, ptr %p\n'
          '  %v = mul i64 %a, %x\n  store i64 %v, ptr %r\n  ret i32 0\n'
          'err:\n  ret i32 -1\n}\n')
    k = native.load(native.build({"mul": native.Entry(ir, "entry", "ip")}), {"mul": "ip"})
    seven = np.array([7, 0], np.int64)
    buf = ffi.from_buffer(ffi.new_array_type(ffi.new_pointer_type(
        ffi.new_primitive_type("int64_t")), None), seven)
    assert k["mul"](6, buf) == 42 and k["mul"](-1, buf) == -1
    seven[0] = 8                                   # the address, not a copy, reached the code
    assert k["mul"](6, buf) == 48
    with pytest.raises(ValueError, match="letters"):
        native.Entry(ir, "entry", "ix")


def test_undefined_symbols_reads_what_nm_reads() -> None:
    from rnnlab.fast import native

    where = kernels.cache_location()
    nm = shutil.which("nm")
    if where is None or nm is None:
        pytest.skip("needs a cached object and binutils' nm")
    obj = next(where.glob("kernels-*.o"))
    out = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True)
    expected = sorted(line.split()[-1] for line in out.stdout.splitlines() if line.strip())
    assert native.undefined_symbols(obj.read_bytes()) == expected
    for bad in (b"", b"\x7fELF", b"not an object at all", obj.read_bytes()[:100]):
        with pytest.raises(native.CacheDamaged):
            native.undefined_symbols(bad)


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
    """An edited jit.py, compiled.py (another job layout) or native.py (other wrappers) is
    another key, whatever the files' modification times: a build of other code is never
    loaded."""
    import hashlib

    from rnnlab.fast import compiled

    b = compiled.blas()
    key = compiled.cache_key(b)
    src = Path(compiled.__file__).resolve()
    h = hashlib.sha256(src.with_name("jit.py").read_bytes() + src.read_bytes()
                       + src.with_name("native.py").read_bytes()).hexdigest()
    assert compiled.source_digest() == h
    monkeypatch.setattr(compiled, "source_digest", lambda: "0" * 64)
    assert compiled.cache_key(b) != key


def test_the_key_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The object is machine code for this CPU: another CPU name or feature set (a cache on a
    shared home directory read from another machine) is another key."""
    from rnnlab.fast import compiled, native

    b = compiled.blas()
    key = compiled.cache_key(b)
    real = native.host()
    for change in ({"cpu": real["cpu"] + "-other"}, {"features": real["features"] + ",+x"},
                   {"triple": "aarch64-unknown-linux-gnu"}):
        monkeypatch.setattr(native, "host", lambda c=change: {**real, **c})
        assert compiled.cache_key(b) != key, change


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


MISSING_CHILD = r"""
import sys, warnings
sys.modules[sys.argv[1]] = None                      # as if it were not installed
warnings.simplefilter("error")                       # a warning fails the child
from rnnlab.fast import kernels
try:
    print(kernels.available(), kernels.why_unavailable())
except RuntimeWarning as w:
    print("warned:", w)
"""


@pytest.mark.parametrize("module, warned", [("numba", False), ("_cffi_backend", True),
                                             ("threadpoolctl", True)])
def test_a_missing_dependency_is_named_and_only_numba_is_quiet(module: str, warned: bool) -> None:
    """Without Numba the NumPy loops run and nothing is said (the kernels are optional); Numba
    without another part of the ``fast`` extra is an incomplete install: a RuntimeWarning."""
    res = subprocess.run([sys.executable, "-c", MISSING_CHILD, module], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert res.returncode == 0, res.stderr
    if warned:
        assert res.stdout.startswith("warned: rnnlab: the compiled kernels are not available"), \
            res.stdout
        assert module in res.stdout
    else:
        assert res.stdout.strip() == "False ImportError: numba is not installed", res.stdout


@pytest.mark.parametrize("blocked", [".lock", "manifest.json"])
def test_a_cache_that_cannot_be_locked_or_written_still_gives_kernels(tmp_path: Path,
                                                                      blocked: str) -> None:
    """A lock file that cannot be opened, or a manifest that cannot be written (a full disk,
    here a directory in its place): the process builds and runs the kernels without keeping
    them, and the manifest's failure is a RuntimeWarning."""
    from rnnlab.fast import compiled

    cache = tmp_path / "kernels"
    where = cache / compiled.cache_key(compiled.blas())
    (where / blocked).mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(SRC), "RNNLAB_KERNEL_CACHE": str(cache)}
    res = subprocess.run([sys.executable, "-W", "always", "-c", CHILD], capture_output=True,
                         text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["origin"] == "built" and out["where"] == "None"
    assert np.isfinite(out["loss"])
    assert ("could not be kept" in res.stderr) == (blocked == "manifest.json"), res.stderr
    assert (where / blocked).is_dir()                          # left as it was
