"""What the compiled kernels need besides Numba: the job layout, NumPy's BLAS and the C functions
they call, linked by name, and the key and place of their cache (``pip install 'rnnlab[fast]'``).

The kernels themselves are the Numba functions of :mod:`rnnlab.fast.jit`, turned into an object
file by :mod:`rnnlab.fast.native`; :mod:`rnnlab.fast.kernels` is the Python face that calls
them.  This module imports no Numba:

* the job layout (:data:`JOB_SIZE`, the ``JOB_*`` kinds) and the BLAS enums;
* :func:`blas`: NumPy's own BLAS, found through threadpoolctl (its ``cblas_sgemm`` and
  ``cblas_sgemv`` and their integer width);
* :func:`link`: the C functions the kernels call, registered with LLVM under rnnlab's own
  symbol names (:data:`SYMBOLS`) at their addresses in this process;
* :func:`cache_key`, :func:`cache_root` and :func:`cache_dir`: where the object file is kept
  between processes.

The kernels call the C functions by *name*: the object file holds an undefined symbol such as
``rnnlab_cblas_sgemm``, which LLVM resolves when the object is loaded, from the table
:func:`link` fills in the loading process.  So a cached build never holds an address: loaded in
another process (another address of NumPy's BLAS, another libc), it calls that process's
functions.  What the address cannot say, the cache key says (:func:`cache_key`): the integer width
of the BLAS interface (a build for 64-bit integers must never call a 32-bit BLAS), the BLAS
library and version, Numba, llvmlite and Python, the CPU (LLVM's triple, the host CPU's name and
features: the code is compiled for this CPU) and a digest of the kernels' source, of this module
(the job layout and constants the builds bake in) and of :mod:`rnnlab.fast.native` (the wrappers
it adds) (:func:`source_digest`); the build of each key lives in a directory of its own.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "JOB_BACKWARD", "JOB_FORWARD", "JOB_GEMM", "JOB_GEMV", "JOB_PYTHON",
           "JOB_SIZE", "JOB_STATUS", "KINDS", "NO_TRANS", "ROW_MAJOR", "SYMBOLS", "TRANS", "Blas",
           "blas", "cache_dir", "cache_key", "cache_root", "describe", "installed", "link",
           "source_digest"]

KINDS = {"tanh": 0, "relu": 1, "identity": 2}
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

# A job is an int64 array of JOB_SIZE slots that rnnlab.fast.jit.run executes without the GIL; a
# worker thread of rnnlab.fast.pool serves them (rnnlab.fast.jit.serve) without taking the GIL
# either, which is what makes a hand-off cost microseconds instead of the ~50 us of waking a
# Python thread.  Slot 0 is the kind, slot 1 the subnormal flush flag; the rest depends on the
# kind (see the *_job makers of rnnlab.fast.kernels).  The arrays a job points into must outlive
# it.
JOB_SIZE = 32
JOB_STATUS = JOB_SIZE - 1      # a worker writes the status of the job it ran here (0: done)
JOB_FORWARD, JOB_BACKWARD, JOB_GEMM, JOB_GEMV, JOB_PYTHON = 1, 2, 3, 4, 9

SYMBOLS = {
    "sgemm": "rnnlab_cblas_sgemm",        # NumPy's cblas_sgemm (whatever its exported name)
    "sgemv": "rnnlab_cblas_sgemv",
    "fegetenv": "rnnlab_fegetenv",        # glibc: in libc since 2.34, else in libm
    "fesetenv": "rnnlab_fesetenv",
    "sched_yield": "rnnlab_sched_yield",
    "malloc": "rnnlab_malloc",            # scratch space of a job (no Numba runtime)
    "free": "rnnlab_free",
}
"""The names under which the kernels call C functions (resolved when a build is loaded)."""

CACHE_ENV = "RNNLAB_KERNEL_CACHE"
"""Environment variable: ``0`` (or ``off``) compiles the kernels in every process without
keeping them; a path keeps them there instead of the default :func:`cache_root`."""


@dataclass(frozen=True)
class Blas:
    """NumPy's BLAS as the kernels call it: the library file, its version, whether its integers
    are 64-bit (ILP64), the exported names of ``cblas_sgemm``/``cblas_sgemv`` and their
    addresses in this process."""

    path: str
    version: str
    ilp64: bool
    sgemm: str
    sgemv: str
    sgemm_address: int
    sgemv_address: int


_blas: Blas | None = None


def blas() -> Blas:
    """NumPy's own BLAS (found through threadpoolctl): RuntimeError when it exports no
    ``cblas_sgemm`` and ``cblas_sgemv`` of one integer width that rnnlab knows."""
    global _blas
    if _blas is not None:
        return _blas
    from threadpoolctl import ThreadpoolController

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    ours = [lc for lc in libs if "numpy" in str(getattr(lc, "filepath", ""))]
    for lc in ours:
        lib = ctypes.CDLL(lc.filepath)
        for pattern, ilp64 in (("scipy_cblas_{}64_", True), ("cblas_{}64_", True),
                               ("scipy_cblas_{}", False), ("cblas_{}", False)):
            names = [pattern.format(n) for n in ("sgemm", "sgemv")]
            fns = [getattr(lib, n, None) for n in names]
            if any(f is None for f in fns):
                continue
            addr = [ctypes.cast(f, ctypes.c_void_p).value or 0 for f in fns if f is not None]
            _blas = Blas(str(lc.filepath), str(getattr(lc, "version", None)), ilp64, names[0],
                         names[1], addr[0], addr[1])
            return _blas
    raise RuntimeError("NumPy's BLAS exports no cblas_sgemm and cblas_sgemv that rnnlab knows")


def _libc_address(name: str) -> int:
    for lib in (None, "libm.so.6"):
        try:
            fn = getattr(ctypes.CDLL(lib), name)
        except (OSError, AttributeError):
            continue
        addr = ctypes.cast(fn, ctypes.c_void_p).value
        if addr:
            return addr
    raise RuntimeError(f"the C library exports no {name}")


def link() -> Blas:
    """Register the C functions the kernels call with LLVM, under :data:`SYMBOLS`, at their
    addresses in this process (before any kernel is compiled or loaded); returns the BLAS."""
    import llvmlite.binding as llvm

    b = blas()
    addresses = {"sgemm": b.sgemm_address, "sgemv": b.sgemv_address}
    for name in ("fegetenv", "fesetenv", "sched_yield", "malloc", "free"):
        addresses[name] = _libc_address(name)
    for name, symbol in SYMBOLS.items():
        llvm.add_symbol(symbol, addresses[name])
    return b


def cache_key(b: Blas) -> str:
    """The key of the directory that holds the object file for this BLAS, Numba, CPU and source:
    everything that decides the machine code the kernels compile to."""
    import llvmlite

    from . import native

    h = native.host()
    parts = [f"ilp64={b.ilp64}", f"sgemm={b.sgemm}", f"sgemv={b.sgemv}", f"blas={b.path}",
             f"blas_version={b.version}", f"numba={installed('numba')}",
             f"llvmlite={llvmlite.__version__}", f"python={sys.version}",
             f"machine={platform.machine()}", f"symbols={sorted(SYMBOLS.items())}",
             f"triple={h['triple']}", f"cpu={h['cpu']}", f"features={h['features']}",
             f"format={native.FORMAT}", f"source={source_digest()}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def installed(name: str) -> str:
    """The installed distribution of package ``name`` without importing it (nor
    ``importlib.metadata``, whose import alone costs a start-up 40 ms): the names of the
    ``<name>-<version>.dist-info`` directories beside it, else its metadata's version;
    ImportError when it is not installed."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ValueError, AttributeError):        # blocked: sys.modules[name] is None
        spec = None
    if spec is None or spec.origin is None:
        raise ImportError(f"{name} is not installed", name=name)
    found = sorted(p.name for p in Path(spec.origin).parent.parent.glob(f"{name}-*.dist-info"))
    if found:
        return ",".join(found)
    from importlib.metadata import version

    return version(name)


def source_digest() -> str:
    """SHA-256 of the kernels' source (:mod:`rnnlab.fast.jit`), of this module (the job layout
    and constants the builds bake in) and of :mod:`rnnlab.fast.native` (the wrappers): part of
    :func:`cache_key`, so that an edited or reinstalled rnnlab never loads a build of other
    code, whatever the files' modification times."""
    h = hashlib.sha256()
    here = Path(__file__).resolve()
    for f in (here.with_name("jit.py"), here, here.with_name("native.py")):
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_root() -> Path | None:
    """Where rnnlab keeps compiled kernels: ``$RNNLAB_KERNEL_CACHE`` if it is a path (None if it
    is ``0``/``off``), else ``$XDG_CACHE_HOME/rnnlab/kernels`` (``~/.cache/rnnlab/kernels``)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() in ("0", "off", "false", "no"):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnlab" / "kernels"


def cache_dir(b: Blas) -> Path | None:
    """This key's directory under :func:`cache_root`, made if needed; None when caching is off
    or the directory cannot be written (the kernels are then built in every process)."""
    root = cache_root()
    if root is None:
        return None
    where = root / cache_key(b)
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return None
    return where


def describe() -> dict[str, Any]:
    """What the kernels link against and where their builds are kept (for reports)."""
    b = blas()
    root = cache_root()
    return {"blas": b.path, "blas_version": b.version, "ilp64": b.ilp64,
            "cache": None if root is None else str(root / cache_key(b))}
