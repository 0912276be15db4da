"""Gradient diagnostics: finite differences (docs/derivation.md, eq. 22)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


def finite_difference(f: Callable[[], float], x: Array, eps: float = 1e-3) -> Array:
    """``df/dx`` for every entry of ``x`` by the fourth-order central stencil, eq. (22).

    ``(-f(x + 2e) + 8 f(x + e) - 8 f(x - e) + f(x - 2e)) / (12 e)`` has truncation error
    ``O(eps^4)``, so in float64 it reaches ~1e-10 relative accuracy with ``eps = 1e-3`` where the
    two-point stencil stalls near 1e-7.  ``x`` is perturbed in place and restored exactly; ``f``
    must read it.
    """
    if x.dtype != np.float64:
        raise TypeError(f"finite differences need float64 arrays; got {x.dtype}")
    grad = np.empty_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, x), "x must be contiguous"
    for i in range(flat.size):
        orig = flat[i]
        vals = []
        for step in (2.0, 1.0, -1.0, -2.0):
            flat[i] = orig + step * eps
            vals.append(f())
        flat[i] = orig
        gflat[i] = (-vals[0] + 8.0 * vals[1] - 8.0 * vals[2] + vals[3]) / (12.0 * eps)
    return grad


def relative_error(a: Array, b: Array, floor: float = 1e-8) -> float:
    """``max |a - b| / max(|a|, |b|, floor)`` over entries: 0 for identical arrays.

    ``floor`` keeps entries whose true value is 0 (e.g. a weight no loss term reaches) from
    dividing by rounding noise.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    denom = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return float((np.abs(a - b) / denom).max())
