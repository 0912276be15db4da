"""What a batch must look like: validation of inputs, masks, initial states and targets.

The public boundary of every engine and learning rule: the reference network
(:mod:`rnnlab.core.network`), the fast engine (:mod:`rnnlab.fast`), truncated BPTT and RTRL
(:mod:`rnnlab.learning`) all read a batch through these functions, so they accept and refuse the
same things with the same messages.  Each error names what was expected and what came.

Public arrays are batch first (``X`` ``(B, T, D)``, masks ``(B, T)``); :func:`time_first` returns
the time-first layout the engines compute in (``(T, B, D)``, a view where it can be).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .spec import RNNSpec

__all__ = ["SOFT_TARGET_TOLERANCE", "as_float_array", "check_finite", "check_h0",
           "check_sample_weight", "check_steps", "check_targets", "make_mask", "target_lead",
           "time_first", "time_first_mask"]

Array = NDArray[np.floating]
Mask = NDArray[np.bool_]

SOFT_TARGET_TOLERANCE = 1e-3
"""How far from 1 the sum of a ``softmax_ce`` soft-target row may be (rounding slack; the
gradient is exact for the row as given either way, docs/derivation.md eq. 10)."""


def as_float_array(name: str, a: ArrayLike, dtype: np.dtype, *, finite: bool = True) -> Array:
    """``a`` as a real array of ``dtype`` (no copy when it already is one).

    ``finite=True`` (data, parameters, initial states: what a caller gives) refuses NaN and
    infinities with a ValueError naming ``name`` and the first offending entry;
    ``finite=False`` (gradients flowing backwards, ``dlogits``, ``dh_n``: values computed upstream)
    lets them through, to propagate as IEEE arithmetic makes them (docs/derivation.md, "Non-finite
    values").
    """
    arr = np.asarray(a)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be a real numeric array; got dtype {arr.dtype}")
    arr = arr.astype(dtype, copy=False)
    if finite:
        check_finite(name, arr)
    return arr


def check_finite(name: str, arr: NDArray[Any]) -> None:
    """ValueError if the float array ``arr`` holds NaN or an infinity; the message names ``name``,
    the first offending index and its value."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        first = np.argwhere(~np.isfinite(arr))[0]
        where = tuple(int(i) for i in first)
        raise ValueError(f"{name} contains NaN or inf (first at index {where}: "
                         f"{arr[where]}); expected finite values")


def _check_batch_steps(B: int, T: int) -> None:
    if B == 0:
        raise ValueError("empty batch: X has B = 0 sequences; expected B >= 1")
    if T == 0:
        raise ValueError("X has T = 0 steps; expected T >= 1")


def check_steps(steps: object) -> int:
    """``steps`` (one-to-many output steps) as an int >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
        raise TypeError(f"steps must be an int; got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    return int(steps)


def time_first(X: ArrayLike, spec: RNNSpec, dtype: np.dtype, steps: int | None
               ) -> tuple[NDArray[Any], int, int]:
    """Validate ``X`` for ``spec``; return it time first with ``B`` and ``T``.

    * dense ``(B, T, D)`` floats: a ``(T, B, D)`` view of ``X`` cast to ``dtype`` (not
      contiguous: the caller copies it where it needs to);
    * ``input_kind="index"``: ``(B, T)`` ids, returned as a contiguous ``(T, B)`` ``intp`` array;
    * ``setup="one_to_many"``: one ``(B, D)`` vector per sequence, returned as the ``(T, B, D)``
      sequence the network reads (``T = steps``): the vector at every step (``feed="every"``, a
      read-only broadcast view) or at the first step and zeros after (``feed="first"``).
    """
    D = spec.input_size
    x = np.asarray(X)
    if spec.setup != "one_to_many" and steps is not None:
        raise ValueError(f"steps is only used with setup='one_to_many'; got setup={spec.setup!r}")
    if spec.input_kind == "index":
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"X must hold integer ids for input_kind='index'; got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"X must be (B, T) ids for input_kind='index'; got shape {x.shape}")
        B, T = x.shape
        _check_batch_steps(B, T)
        if x.min() < 0 or x.max() >= D:
            raise ValueError(
                f"X ids must lie in [0, {D}) (input_size); got range [{x.min()}, {x.max()}]"
            )
        return np.ascontiguousarray(x.T, dtype=np.intp), B, T
    if spec.setup == "one_to_many":
        if x.ndim != 2 or x.shape[1] != D:
            raise ValueError(f"X must be (B, {D}) for setup='one_to_many'; got shape {x.shape}")
        if steps is None:
            raise ValueError("setup='one_to_many' needs steps=T, the number of output steps")
        B, T = x.shape[0], check_steps(steps)
        _check_batch_steps(B, T)
        v = as_float_array("X", x, dtype)
        if spec.feed == "every":                     # seed 000: the same vector at every step
            return np.broadcast_to(v, (T, B, D)), B, T
        seq = np.zeros((T, B, D), dtype=dtype)       # only at the first step
        seq[0] = v
        return seq, B, T
    if x.ndim != 3 or x.shape[2] != D:
        raise ValueError(f"X must be (B, T, {D}); got shape {x.shape}")
    B, T = x.shape[:2]
    _check_batch_steps(B, T)
    return as_float_array("X", x, dtype).transpose(1, 0, 2), B, T


def make_mask(
    B: int, T: int, *, mask: ArrayLike | None = None, lengths: ArrayLike | None = None
) -> Mask | None:
    """Validate a ``(B, T)`` mask or ``(B,)`` lengths; return the ``(B, T)`` mask or ``None``.

    ``None`` means every step is real.  Each sequence must have at least one real step.
    """
    if mask is not None and lengths is not None:
        raise ValueError("give either mask or lengths, not both")
    if lengths is not None:
        ln = np.asarray(lengths)
        if not np.issubdtype(ln.dtype, np.integer):
            raise TypeError(f"lengths must be integers; got dtype {ln.dtype}")
        if ln.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},); got {ln.shape}")
        if ln.min() < 1 or ln.max() > T:
            raise ValueError(f"lengths must lie in [1, {T}]; got range [{ln.min()}, {ln.max()}]")
        m = np.arange(T)[None, :] < ln[:, None]
    elif mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise TypeError(f"mask must be a bool array (True = real step); got dtype {m.dtype}")
        if m.shape != (B, T):
            raise ValueError(f"mask must have shape ({B}, {T}); got {m.shape}")
        empty = np.flatnonzero(~m.any(axis=1))
        if empty.size:
            raise ValueError(
                f"every sequence needs at least one real step; mask rows {empty[:5].tolist()} "
                "are all False"
            )
    else:
        return None
    return None if m.all() else m


def time_first_mask(B: int, T: int, *, mask: ArrayLike | None = None,
                    lengths: ArrayLike | None = None) -> Mask | None:
    """:func:`make_mask` as a contiguous ``(T, B)`` array (or ``None``)."""
    m = make_mask(B, T, mask=mask, lengths=lengths)
    return None if m is None else np.ascontiguousarray(m.T)


def check_h0(h0: ArrayLike | None, spec: RNNSpec, B: int, dtype: np.dtype,
             name: str = "h0", *, finite: bool = True) -> Array:
    """Initial states ``(num_layers * num_directions, B, H)``; zeros when ``h0`` is None
    (``finite`` as for :func:`as_float_array`: False for a gradient ``dh_n``)."""
    shape = (spec.num_layers * spec.num_directions, B, spec.hidden_size)
    if h0 is None:
        return np.zeros(shape, dtype=dtype)
    h = as_float_array(name, h0, dtype, finite=finite)
    if h.shape != shape:
        raise ValueError(
            f"{name} must be (num_layers * num_directions, B, H) = {shape}; got {h.shape}"
        )
    return h


def check_targets(Y: ArrayLike, spec: RNNSpec, lead: tuple[int, ...], dtype: np.dtype
                  ) -> NDArray[Any]:
    """Validate targets with leading shape ``lead`` (``(B,)`` or ``(B, T)``).

    Class labels (integers, ``softmax_ce`` only) of shape ``lead`` in ``[0, O)``, or finite
    floats of shape ``lead + (O,)``: probabilities in [0, 1] for the classification losses, and
    for ``softmax_ce`` distributions, every row summing to 1 (within
    :data:`SOFT_TARGET_TOLERANCE`).
    """
    O = spec.output_size
    y = np.asarray(Y)
    if spec.loss == "softmax_ce" and np.issubdtype(y.dtype, np.integer):
        if y.shape != lead:
            raise ValueError(f"class labels must have shape {lead}; got {y.shape}")
        if y.min() < 0 or y.max() >= O:
            raise ValueError(
                f"class labels must lie in [0, {O}) (output_size); got range [{y.min()}, {y.max()}]"
            )
        return y
    if spec.loss == "softmax_ce" and y.shape == lead:
        raise ValueError(f"class labels must be integers; got dtype {y.dtype} (soft targets are "
                        f"floats of shape {lead + (O,)})")
    if y.shape != lead + (O,):
        kind = "class labels of shape " + str(lead) + " or " if spec.loss == "softmax_ce" else ""
        raise ValueError(f"targets must be {kind}floats of shape {lead + (O,)}; got {y.shape}")
    y = as_float_array("targets", y, dtype)
    if spec.loss in ("softmax_ce", "sigmoid_bce") and (y.min() < 0 or y.max() > 1):
        raise ValueError(
            f"{spec.loss} targets must be probabilities in [0, 1]; got range [{y.min()}, {y.max()}]"
        )
    if spec.loss == "softmax_ce":
        sums = y.sum(axis=-1, dtype=np.float64)
        off = np.abs(sums - 1.0) > SOFT_TARGET_TOLERANCE
        if off.any():
            first = tuple(int(i) for i in np.argwhere(off)[0])
            raise ValueError(
                f"softmax_ce soft targets must be distributions over the {O} classes (each row "
                f"summing to 1); row {first} sums to {sums[first]:.6g} (row sums range "
                f"[{sums.min():.6g}, {sums.max():.6g}]); normalise them, or give integer class "
                "labels (for independent yes/no targets use loss='sigmoid_bce')"
            )
    return y


def target_lead(spec: RNNSpec, B: int, T: int) -> tuple[int, ...]:
    """The leading shape of the targets ``spec`` scores: ``(B, T)`` for per-step targets of
    many-to-many and one-to-many, ``(B,)`` for a sequence target (many-to-one, whichever steps
    score it)."""
    return (B, T) if spec.setup != "many_to_one" else (B,)


def check_sample_weight(w: ArrayLike | None, spec: RNNSpec, B: int, T: int, dtype: np.dtype
                        ) -> Array | None:
    """Per-sequence loss weights ``(B,)``, or per (sequence, step) ``(B, T)`` for set-ups that
    score every step: finite, ``>= 0``, cast to ``dtype`` (eq. 15 with weights)."""
    if w is None:
        return None
    arr = as_float_array("sample_weight", w, dtype)
    shapes = [(B,)] + ([(B, T)] if spec.per_step_output else [])
    if arr.shape not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(f"sample_weight must have shape {want} (one weight per sequence"
                         + (", or per sequence and step" if spec.per_step_output else "")
                         + f"); got {arr.shape}")
    if (arr < 0).any():
        raise ValueError(f"sample_weight must be >= 0; got a minimum of {arr.min()!r}")
    return arr
