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

from .activations import Activation

Array = NDArray[np.floating]
Mask = NDArray[np.bool_]


def outputs(Hbuf: Array, reverse: bool = False) -> Array:
    """``(T, B, H)`` view of the states ``H_t`` in time order."""
    return Hbuf[:-1] if reverse else Hbuf[1:]


def previous(Hbuf: Array, reverse: bool = False) -> Array:
    """``(T, B, H)`` view of the state each step read: ``H_{t-1}`` (or ``H_{t+1}`` if reversed)."""
    return Hbuf[1:] if reverse else Hbuf[:-1]


def final(Hbuf: Array, reverse: bool = False) -> Array:
    """``(B, H)`` view of the last state the direction reached (PyTorch's ``h_n``)."""
    return Hbuf[0] if reverse else Hbuf[-1]


def step(a_t: Array, h_prev: Array, W_hh: Array, act: Activation, out: Array) -> Array:
    """One step, eqs. (5)-(6): ``out = f(a_t + h_prev W_hh)``; ``(B, H)`` each, ``out`` written.

    ``out`` must not alias ``h_prev``.
    """
    np.matmul(h_prev, W_hh, out=out)   # (B, H) x (H, H)
    out += a_t                          # Z_t, eq. (5)
    act.f(out, out=out)                 # H_t = f(Z_t), eq. (6)
    return out


def forward(
    A: Array,
    W_hh: Array,
    act: Activation,
    h0: Array,
    *,
    reverse: bool = False,
    mask: Mask | None = None,
    out: Array | None = None,
) -> Array:
    """Run the recurrence over all steps.

    Parameters
    ----------
    A : (T, B, H)
        Input projections ``X_t W_xh + b_h`` (may be a read-only broadcast view).
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

    Returns
    -------
    Hbuf : (T + 1, B, H)
    """
    T, B, H = A.shape
    Hbuf = np.empty((T + 1, B, H), dtype=W_hh.dtype) if out is None else out
    assert Hbuf.shape == (T + 1, B, H), (Hbuf.shape, A.shape)
    if reverse:
        Hbuf[T] = h0
        order = range(T - 1, -1, -1)
    else:
        Hbuf[0] = h0
        order = range(T)
    for t in order:
        cur, prev = (t, t + 1) if reverse else (t + 1, t)
        step(A[t], Hbuf[prev], W_hh, act, out=Hbuf[cur])
        if mask is not None:
            # eq. (7): padded rows keep the previous state
            np.copyto(Hbuf[cur], Hbuf[prev], where=~mask[t][:, None])
    return Hbuf


def backward(
    dH: Array | None,
    Hbuf: Array,
    W_hh: Array,
    act: Activation,
    *,
    reverse: bool = False,
    dh_last: Array | None = None,
    mask: Mask | None = None,
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

    Returns
    -------
    dZ : (T, B, H)
        ``dL/dZ_t`` in time order (zero at padded steps).
    dh0 : (B, H)
        ``dL/dh0``.
    """
    T, B, H = Hbuf.shape[0] - 1, Hbuf.shape[1], Hbuf.shape[2]
    dZ = np.empty((T, B, H), dtype=Hbuf.dtype)
    dnext = np.zeros((B, H), dtype=Hbuf.dtype) if dh_last is None else dh_last.astype(
        Hbuf.dtype, copy=True
    )
    fprime = np.empty((B, H), dtype=Hbuf.dtype)
    order = range(T) if reverse else range(T - 1, -1, -1)
    for t in order:
        cur = t if reverse else t + 1
        g = dZ[t]
        if dH is None:
            np.copyto(g, dnext)
        else:
            np.add(dH[t], dnext, out=g)                     # total dL/dH_t, eq. (16)
        if mask is not None:
            pad = ~mask[t][:, None]
            carried = np.where(pad, g, 0.0)                 # eq. (18): padded rows pass through
        if not act.linear:
            g *= act.grad_from_output(Hbuf[cur], out=fprime)  # dZ_t = dL/dH_t * f'(Z_t), eq. (17)
        if mask is not None:
            np.copyto(g, 0.0, where=pad)
        np.matmul(g, W_hh.T, out=dnext)                     # dL/dH_{t-1} = dZ_t W_hh^T, eq. (16)
        if mask is not None:
            dnext += carried
    return dZ, dnext
