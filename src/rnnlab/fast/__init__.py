"""The fast engine: the reference network's equations on reused buffers, compiled loops and
threads (docs/performance.md, docs/architecture.md).

``workspace`` (the engine, :class:`~rnnlab.fast.workspace.Workspace`), ``buffers`` (its arrays),
``network`` (forward, loss and backward on buffers), ``loops`` (the recurrence in place),
``kernels`` and ``compiled`` (the optional Numba kernels and their Python face), ``pool`` (work
split over threads), ``tuner`` (the thread options, chosen by timing) and ``cpu`` (BLAS thread
counts, subnormal flushing).  Tested against :mod:`rnnlab.core` on the shared grid.
"""

from .kernels import prefetch

__all__ = ["prefetch"]
