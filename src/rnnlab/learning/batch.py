"""A batch validated once for the learning rules that walk time forwards (truncated BPTT, RTRL).

:func:`prepare` reads a batch through :mod:`rnnlab.core.inputs`, as the engines do, and lays it
out time first with the targets and the divisor of eq. (15); :func:`scored_loss`
(:func:`rnnlab.core.losses.scored_loss`, shared with the fast rules) is the summed loss of the
scored entries of one step or chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core.inputs import check_h0, check_targets, make_mask, target_lead, time_first
from ..core.losses import scored_loss
from ..core.params import check_params
from ..core.spec import RNNSpec

__all__ = ["Batch", "prepare", "scored_loss"]

Array = NDArray[np.floating]
Mask = NDArray[np.bool_]


@dataclass(frozen=True)
class Batch:
    """A validated batch in the time-first layout, shared by truncated BPTT and RTRL.

    Attributes
    ----------
    spec : RNNSpec
        As given.
    B, T : int
    dtype : numpy dtype of the parameters (the dtype of the computation)
    x : (T, B, D) floats (possibly a strided or broadcast view) or (T, B) integer ids
        The input of every step; one-to-many inputs are expanded by ``spec.feed``.
    mask : (T, B) bool or None
        True at real steps; None when every step is real.
    h0 : (num_layers, B, H)
    y : targets, time first for per-step set-ups
        ``(T, B)`` labels or ``(T, B, O)`` when ``spec.per_step_output`` (a many-to-one
        ``label_steps="all"`` target is broadcast over time); ``(B,)`` or ``(B, O)`` otherwise.
    denom : float
        The divisor of eq. (15): 1 for ``"sum"``, ``|S| k`` for ``"mean"``.
    """

    spec: RNNSpec
    B: int
    T: int
    dtype: np.dtype
    x: NDArray[Any]
    mask: Mask | None
    h0: Array
    y: NDArray[Any]
    denom: float


def prepare(
    params: Mapping[str, Array],
    X: ArrayLike,
    Y: ArrayLike,
    spec: RNNSpec,
    *,
    algorithm: str,
    h0: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    lengths: ArrayLike | None = None,
    steps: int | None = None,
) -> Batch:
    """Validate everything one call of truncated BPTT or RTRL reads, once, up front.

    Raises ``ValueError`` for a bidirectional ``spec`` (``algorithm`` names the caller in the
    message): both algorithms walk time forwards only.
    """
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    if spec.bidirectional:
        raise ValueError(
            f"{algorithm} needs a unidirectional network (spec.bidirectional=False): it walks "
            "time forwards, carrying the state (and, for RTRL, the sensitivities dH_t/dtheta) "
            "from step t-1 to t, but a reverse-direction layer's state at step t depends on every "
            "later input, so nothing can be carried forward; use full BPTT "
            "(rnnlab.network.value_and_grad) for bidirectional networks"
        )
    dtype = check_params(params, spec)
    x, B, T = time_first(X, spec, dtype, steps)
    m_bt = make_mask(B, T, mask=mask, lengths=lengths)
    h0_arr = check_h0(h0, spec, B, dtype)
    O = spec.output_size
    per_step = spec.per_step_output
    y = check_targets(Y, spec, target_lead(spec, B, T), dtype)
    if per_step:
        if spec.setup == "many_to_one":              # label_steps="all": the label at every step
            y = np.broadcast_to(y[:, None], (B, T) + y.shape[1:])
        y = np.moveaxis(y, 1, 0)                     # (T, B[, O])
    n_scored = (B * T if m_bt is None else int(m_bt.sum())) if per_step else B
    k = 1 if spec.loss == "softmax_ce" else O
    denom = 1.0 if spec.reduction == "sum" else float(n_scored * k)
    m_tb = None if m_bt is None else np.ascontiguousarray(m_bt.T)
    return Batch(spec, B, T, dtype, x, m_tb, h0_arr, y, denom)
