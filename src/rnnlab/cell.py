"""One layer's recurrence over time, forward and backward (docs/derivation.md, eqs. 5-7, 16-20).

The one cell that BPTT, truncated BPTT and RTRL share.  Arrays are time first: ``A`` is
``(T, B, H)``, the input projection ``X_t W_xh + b_h`` of every step, computed by the caller in one
product.  The states live in one buffer ``Hbuf`` of shape ``(T + 1, B, H)``:

* forward direction: ``Hbuf[0] = h0`` and ``Hbuf[t + 1] = H_t``;
* reverse direction (the backward half of a bidirectional layer, which reads time backwards):
  ``Hbuf[T] = h0`` and ``Hbuf[t] = H_t``.

Either way the step outputs (:func:`outputs`) and the states each step read (:func:`previous`) are
contiguous ``(T, B, H)`` blocks in time order, so the weight gradients are single products over all
``T * B`` rows (eq. 19) without a copy.

Masked (padded) steps carry the state, ``H_t = H_{t-1}`` (eq. 7), get ``dZ_t = 0`` and pass the
gradient through unchanged (eq. 18).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from . import kernels
from .activations import Activation

Array = NDArray[np.floating]
Mask = NDArray[np.bool_]


def outputs(Hbuf: Array, reverse: bool = False) -> Array:
    """``(T, B, H)`` view of the states ``H_t`` in time order."""
    return Hbuf[:-1] if reverse else Hbuf[1:]


def previous(Hbuf: Array, reverse: bool = False) -> Array:
    """``(T, B, H)`` view of the state each step read: ``H_{t-1}`` (or ``H_{t+1}`` if reversed)."""
    return Hbuf[1:] if reverse else Hbuf[:-1]


def initial(Hbuf: Array, reverse: bool = False) -> Array:
    """``(B, H)`` view of ``h0``, the state the direction started from."""
    return Hbuf[-1] if reverse else Hbuf[0]


def final(Hbuf: Array, reverse: bool = False) -> Array:
    """``(B, H)`` view of the last state the direction reached (PyTorch's ``h_n``)."""
    return Hbuf[0] if reverse else Hbuf[-1]


def step(a_t: Array, h_prev: Array, W_hh: Array, act: Activation, out: Array) -> Array:
    """One step, eqs. (5)-(6): ``out = f(a_t + h_prev W_hh)``; ``(B, H)`` each, ``out`` written.

    ``out`` must not alias ``h_prev``; it may alias ``a_t`` only if ``a_t`` is ``out`` itself
    (the projection stored in the state slot, as :func:`forward` does).
    """
    if a_t is out or _same_block(a_t, out):
        return _step_inplace(out, h_prev, W_hh, act, np.empty_like(out))
    np.matmul(h_prev, W_hh, out=out)   # (B, H) x (H, H)
    out += a_t                          # Z_t, eq. (5)
    act.f(out, out=out)                 # H_t = f(Z_t), eq. (6)
    return out


def _step_inplace(z: Array, h_prev: Array, W_hh: Array, act: Activation, tmp: Array) -> Array:
    """:func:`step` with ``a_t`` already in ``z``: ``z = f(z + h_prev W_hh)``, ``tmp`` scratch."""
    np.matmul(h_prev, W_hh, out=tmp)    # (B, H) x (H, H)
    z += tmp                            # Z_t = a_t + H_{t-1} W_hh, eq. (5)
    act.f(z, out=z)                     # H_t = f(Z_t), eq. (6)
    return z


def _same_block(a: Array, b: Array) -> bool:
    """True when ``a`` and ``b`` are the same view of the same memory."""
    return (a.shape == b.shape and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def forward(
    A: Array,
    W_hh: Array,
    act: Activation,
    h0: Array,
    *,
    reverse: bool = False,
    mask: Mask | None = None,
    out: Array | None = None,
    compiled: bool = False,
) -> Array:
    """Run the recurrence over all steps.

    Parameters
    ----------
    A : (T, B, H)
        Input projections ``X_t W_xh + b_h`` (may be a read-only broadcast view).  It may also be
        ``outputs(out, reverse)`` itself: the projections written into the state slots, which the
        recurrence then overwrites step by step (no separate ``(T, B, H)`` array; the network
        does this).
    W_hh : (H, H)
    act : Activation
    h0 : (B, H)
        Initial state.
    reverse : bool
        Process ``t = T-1, ..., 0`` (see the module docstring for the buffer layout).
    mask : (T, B) bool, optional
        False at padded steps, which carry the state (eq. 7).
    out : (T + 1, B, H), optional
        Buffer to write into.
    compiled : bool
        Run the compiled loop of :mod:`rnnlab.kernels` where it applies (``A`` in place, see
        :func:`rnnlab.kernels.supports`); the NumPy loop otherwise.

    Returns
    -------
    Hbuf : (T + 1, B, H)
    """
    T, B, H = A.shape
    Hbuf = np.empty((T + 1, B, H), dtype=W_hh.dtype) if out is None else out
    assert Hbuf.shape == (T + 1, B, H), (Hbuf.shape, A.shape)
    inplace = out is not None and _same_block(A, outputs(Hbuf, reverse))
    assert inplace or not np.may_share_memory(A, Hbuf), "A may alias only outputs(out, reverse)"
    if reverse:
        Hbuf[T] = h0
        order = range(T - 1, -1, -1)
    else:
        Hbuf[0] = h0
        order = range(T)
    if compiled and inplace and kernels.supports(act.name, Hbuf.dtype, mask is not None):
        kernels.forward(Hbuf, np.ascontiguousarray(W_hh), act.name, reverse)
        return Hbuf
    pad = None if mask is None else ~mask[:, :, None]          # (T, B, 1)
    tmp = np.empty((B, H), dtype=Hbuf.dtype) if inplace else None
    for t in order:
        cur, prev = (t, t + 1) if reverse else (t + 1, t)
        if tmp is not None:
            _step_inplace(Hbuf[cur], Hbuf[prev], W_hh, act, tmp)
        else:
            step(A[t], Hbuf[prev], W_hh, act, out=Hbuf[cur])
        if pad is not None:
            # eq. (7): padded rows keep the previous state
            np.copyto(Hbuf[cur], Hbuf[prev], where=pad[t])
    return Hbuf


# f'(H) is computed for a block of steps at a time, just before the loop needs it: about this many
# elements, so that the block is still in the cache when the loop reads it.
_FPRIME_BLOCK = 1 << 16


def backward(
    dH: Array | None,
    Hbuf: Array,
    W_hh: Array,
    act: Activation,
    *,
    reverse: bool = False,
    dh_last: Array | None = None,
    mask: Mask | None = None,
    out: Array | None = None,
    compiled: bool = False,
) -> tuple[Array, Array]:
    """Backpropagate through the recurrence, eqs. (16)-(18).

    Parameters
    ----------
    dH : (T, B, H) or None
        Gradient arriving at each step's output ``H_t`` from above (head or next layer), time order.
        ``None`` means zero (many-to-one: only the final state is read).
    Hbuf : (T + 1, B, H)
        The forward buffer.
    W_hh : (H, H)
    act : Activation
    reverse : bool
        As in :func:`forward`.
    dh_last : (B, H), optional
        Gradient with respect to the final state (from the head, or from ``h_n``).
    mask : (T, B) bool, optional
    out : (T, B, H), optional
        Buffer for ``dZ`` (must not alias ``dH`` or ``Hbuf``).
    compiled : bool
        As in :func:`forward`.

    Returns
    -------
    dZ : (T, B, H)
        ``dL/dZ_t`` in time order (zero at padded steps).
    dh0 : (B, H)
        ``dL/dh0``.
    """
    T, B, H = Hbuf.shape[0] - 1, Hbuf.shape[1], Hbuf.shape[2]
    dtype = Hbuf.dtype
    dZ = np.empty((T, B, H), dtype=dtype) if out is None else out
    assert dZ.shape == (T, B, H) and dZ.dtype == dtype, (dZ.shape, dZ.dtype)
    # dnext holds the total dL/dH_t of the step being processed, then dL/dH_{t-1}
    dnext = np.zeros((B, H), dtype=dtype) if dh_last is None else dh_last.astype(
        dtype, copy=True
    )
    # the recurrent product reads W_hh^T row by row: a contiguous copy is faster than a
    # transposed view for the small products of the loop
    W_T = np.ascontiguousarray(W_hh.T) if T > 1 else W_hh.T
    if compiled and kernels.supports(act.name, dtype, mask is not None):
        kernels.backward(Hbuf, dZ, dH, W_T if W_T.flags.c_contiguous else
                         np.ascontiguousarray(W_T), dnext, act.name, reverse)
        return dZ, dnext
    Hs = outputs(Hbuf, reverse)                                 # (T, B, H), H_t in time order
    linear = act.linear
    if mask is not None:
        pad = ~mask[:, :, None]                                 # (T, B, 1)
        carried = np.empty((B, H), dtype=dtype)
    per = max(1, _FPRIME_BLOCK // max(1, B * H))                # steps per f' block
    # blocks of steps in processing order: ascending for the reverse direction
    starts = range(0, T, per) if reverse else range(((T - 1) // per) * per, -1, -per)
    for lo in starts:
        hi = min(lo + per, T)
        if dH is None and not dnext.any():
            # nothing arrives from above and the carried gradient is exactly zero (it underflowed,
            # or none was given): every remaining dZ_t and dL/dh0 are exactly zero
            if reverse:
                dZ[lo:].fill(0.0)
            else:
                dZ[:hi].fill(0.0)
            break
        if not linear:
            act.grad_from_output(Hs[lo:hi], out=dZ[lo:hi])     # f'(Z_t) from H_t, eqs. (2)-(4)
        for t in (range(lo, hi) if reverse else range(hi - 1, lo - 1, -1)):
            g = dZ[t]
            if dH is not None:
                dnext += dH[t]                                  # total dL/dH_t, eq. (16)
            if mask is not None:
                np.multiply(dnext, pad[t], out=carried)         # eq. (18): padded rows pass
            if linear:
                np.copyto(g, dnext)
            else:
                g *= dnext                                      # dZ_t = dL/dH_t * f'(Z_t), (17)
            if mask is not None:
                np.copyto(g, 0.0, where=pad[t])
            np.matmul(g, W_T, out=dnext)                        # dL/dH_{t-1} = dZ_t W_hh^T, (16)
            if mask is not None:
                dnext += carried
    return dZ, dnext
