"""The CPU controls a :class:`~rnnlab.fast.workspace.Workspace` call runs under
(docs/performance.md).

* :class:`BlasThreads` reads and sets NumPy's BLAS thread count (through the optional
  ``threadpoolctl``); :data:`BLAS` is the process's one instance;
* :class:`FlushDenormals` flushes subnormal floats to zero in the calling thread;
* :class:`LoopContext` is both, for the recurrent loops.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from typing import Any

import numpy as np

__all__ = ["BLAS", "BlasThreads", "FlushDenormals", "LoopContext", "ThreadLimit"]


class BlasThreads:
    """Reads and sets the thread count of NumPy's BLAS through threadpoolctl, when installed.

    Without threadpoolctl (an optional dependency) nothing is changed.
    """

    def __init__(self) -> None:
        self._libs: list[Any] | None = None

    def libs(self) -> list[Any]:
        if self._libs is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                self._libs = []
            else:
                found = ThreadpoolController().select(user_api="blas").lib_controllers
                # NumPy's own BLAS (a wheel bundles it in numpy.libs), not another library's
                ours = [lc for lc in found if "numpy" in str(getattr(lc, "filepath", ""))]
                self._libs = ours or list(found)
        return self._libs

    def get(self) -> int | None:
        libs = self.libs()
        return int(libs[0].get_num_threads()) if libs else None

    def limit(self, n: int) -> ThreadLimit:
        """A reusable context: run the block with ``n`` BLAS threads, then restore the count."""
        return ThreadLimit(self.libs(), n)


class ThreadLimit:
    """See :meth:`BlasThreads.limit`; not re-entrant (not needed)."""

    def __init__(self, libs: list[Any], n: int) -> None:
        self.libs, self.n = libs, n
        self.before: list[int] = []

    def __enter__(self) -> None:
        self.before = [int(lc.get_num_threads()) for lc in self.libs]
        for lc, b in zip(self.libs, self.before, strict=True):
            if b != self.n:
                lc.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        for lc, b in zip(self.libs, self.before, strict=True):
            if b != self.n:
                lc.set_num_threads(b)


BLAS = BlasThreads()


class FlushDenormals:
    """Flush subnormal floats to zero in the calling thread while the block runs.

    Sets the FTZ and DAZ bits of the SSE control register (MXCSR) through glibc's
    ``fegetenv``/``fesetenv`` and restores the saved environment on exit, as XLA does for its CPU
    kernels.  A vanishing gradient passes through the subnormal range (below ~1.2e-38 in float32),
    where each operation takes a slow microcode path; flushed, it becomes exactly zero and the
    backward loop stops there (:func:`rnnlab.fast.loops.backward_into`).  Only numbers below the
    normal range
    change (to zero).  A no-op where it is not x86-64 Linux with glibc, or where the self-test
    fails.  One object per thread: it keeps the saved environment.
    """

    _MXCSR_OFFSET = 28            # fenv_t on x86-64: the x87 environment (28 bytes), then MXCSR
    _FTZ_DAZ = 0x8040
    _libm: Any = None
    _usable: bool | None = None

    def __init__(self) -> None:
        self._saved = ctypes.create_string_buffer(64)    # sizeof(fenv_t) is 32
        self._flush = ctypes.create_string_buffer(64)
        self.ok = bool(self.usable())

    @classmethod
    def usable(cls) -> bool:
        """Whether flushing works here (x86-64 Linux with glibc, self-test passed)."""
        if cls._usable is None:
            cls._usable = False
            if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
                return False
            try:
                libm = ctypes.CDLL("libm.so.6")
                libm.fegetenv, libm.fesetenv      # noqa: B018 (both must exist)
            except (OSError, AttributeError):
                return False
            buf = ctypes.create_string_buffer(64)
            if libm.fegetenv(buf) != 0:
                return False
            o = cls._MXCSR_OFFSET
            mx = int.from_bytes(buf.raw[o:o + 4], "little")
            if mx >> 16 or (mx & 0x1F80) != 0x1F80:  # not an MXCSR with every exception masked
                return False
            cls._libm, cls._usable = libm, True
            probe = cls()
            with probe:
                flushed = np.float32(1e-39) * np.float32(1.0) == 0.0
            cls._usable = bool(flushed) and np.float32(1e-39) * np.float32(1.0) != 0.0
        return cls._usable

    def __enter__(self) -> None:
        if not self.ok:
            return
        libm = self._libm
        libm.fegetenv(self._saved)
        raw = bytearray(self._saved.raw)
        o = self._MXCSR_OFFSET
        mx = int.from_bytes(raw[o:o + 4], "little") | self._FTZ_DAZ
        raw[o:o + 4] = mx.to_bytes(4, "little")
        ctypes.memmove(self._flush, bytes(raw), len(raw))
        libm.fesetenv(self._flush)

    def __exit__(self, *exc: object) -> None:
        if self.ok:
            self._libm.fesetenv(self._saved)


class LoopContext:
    """What the recurrent loops of a :class:`Workspace` run under: a BLAS thread count and
    flushed subnormals.  Reusable, not re-entrant."""

    def __init__(self, threads: ThreadLimit | None, flush: FlushDenormals | None) -> None:
        self.threads, self.flush = threads, flush

    def __enter__(self) -> None:
        if self.threads is not None:
            self.threads.__enter__()
        if self.flush is not None:
            self.flush.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.flush is not None:
            self.flush.__exit__(*exc)
        if self.threads is not None:
            self.threads.__exit__(*exc)
