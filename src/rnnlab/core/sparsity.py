"""The storage of a sparse influence matrix: SnAp-n's pattern (docs/derivation.md, eqs. 50-51).

SnAp-n keeps ``S̃_t[(i, j), k]`` only where ``P_n[j, k]`` holds; each unit ``j``'s row of the
pattern is stored as a padded list of the units it reaches.  The reference rule
(:mod:`rnnlab.learning.snap`) and the fast one (:mod:`rnnlab.fast.estimates`) store it alike.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["pattern_layout"]


def pattern_layout(P: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.bool_],
                                                  NDArray[np.intp]]:
    """``idx`` ``(H, p)`` each unit's pattern row (padded with the unit itself), ``valid``
    ``(H, p)`` which entries are real, ``pos`` ``(H,)`` where unit ``j`` sits in its own row;
    ``p`` is the longest row of the boolean ``(H, H)`` pattern ``P`` (eq. 50)."""
    H = P.shape[0]
    p = int(P.sum(axis=1).max())
    idx = np.empty((H, p), dtype=np.intp)
    valid = np.zeros((H, p), dtype=bool)
    pos = np.empty(H, dtype=np.intp)
    for j in range(H):
        row = np.flatnonzero(P[j])
        idx[j, :row.size] = row
        idx[j, row.size:] = j
        valid[j, :row.size] = True
        pos[j] = int(np.searchsorted(row, j))
    return idx, valid, pos
