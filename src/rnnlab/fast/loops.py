"""The fast engine's time loops: the recurrence of :mod:`rnnlab.core.cell` on buffers.

The same equations as the reference cell (eqs. 5-7 forward, 16-18 backward), computed for speed:

* every array is a caller's buffer, written in place (the projections may sit in the state
  slots, which the recurrence then overwrites step by step: no separate ``(T, B, H)`` array);
* ``f'(H)`` is computed a block of steps at a time, while the block is in the cache;
* the backward loop stops as soon as the carried gradient is exactly zero (it underflowed, or
  none was given): every remaining ``dZ_t`` is zero;
* with ``compiled=True`` the loops run the compiled kernels of :mod:`rnnlab.fast.kernels` where
  they apply.

The buffer layout is the reference cell's (``Hbuf`` ``(T + 1, B, H)``, see
:mod:`rnnlab.core.cell`); tests check both loops against it on the shared grid.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..core.activations import Activation
from ..core.cell import initial, order, outputs
from . import kernels

Array = NDArray[np.floating]
Mask = NDArray[np.bool_]


def forward_into(Hbuf: Array, W_hh: Array, act: Activation, h0: Array, *,
                 reverse: bool = False, mask: Mask | None = None,
                 compiled: bool = False) -> Array:
    """The recurrence over all steps, in place: eqs. (5)-(7) on a buffer whose step slots
    (``outputs(Hbuf, reverse)``) hold the input projections ``A_t = X_t W_xh + b_h``, which each
    step overwrites with its state ``H_t = f(A_t + H_{t-1} W_hh)``.

    Parameters
    ----------
    Hbuf : (T + 1, B, H)
        The state buffer (layout of :mod:`rnnlab.core.cell`), projections in its step slots.
    W_hh : (H, H)
    act : Activation
    h0 : (B, H)
        Initial state, copied into its slot.
    reverse : bool
        Read ``t = T-1, ..., 0``.
    mask : (T, B) bool, optional
        False at padded steps, which carry the state (eq. 7).
    compiled : bool
        Run the compiled loop of :mod:`rnnlab.fast.kernels` where it applies (see
        :func:`rnnlab.fast.kernels.supports`); the NumPy loop otherwise.

    Returns
    -------
    Hbuf : (T + 1, B, H)
    """
    T, B, H = Hbuf.shape[0] - 1, Hbuf.shape[1], Hbuf.shape[2]
    initial(Hbuf, reverse)[...] = h0
    if compiled and kernels.supports(act.name, Hbuf.dtype, mask is not None):
        kernels.forward(Hbuf, np.ascontiguousarray(W_hh), act.name, reverse)
        return Hbuf
    pad = None if mask is None else ~mask[:, :, None]          # (T, B, 1)
    tmp = np.empty((B, H), dtype=Hbuf.dtype)
    for t in order(T, reverse):
        cur, prev = (t, t + 1) if reverse else (t + 1, t)
        z = Hbuf[cur]                                           # A_t
        np.matmul(Hbuf[prev], W_hh, out=tmp)                    # (B, H) x (H, H)
        z += tmp                                                # Z_t = A_t + H_{t-1} W_hh, (5)
        act.f(z, out=z)                                         # H_t = f(Z_t), eq. (6)
        if pad is not None:
            np.copyto(z, Hbuf[prev], where=pad[t])              # eq. (7): padded rows keep it
    return Hbuf


# f'(H) is computed for a block of steps at a time, just before the loop needs it: about this many
# elements, so that the block is still in the cache when the loop reads it.
FPRIME_BLOCK = 1 << 16


def backward_into(
    dH: Array | None,
    Hbuf: Array,
    W_hh: Array,
    act: Activation,
    *,
    reverse: bool = False,
    dh_last: Array | None = None,
    mask: Mask | None = None,
    out: Array,
    compiled: bool = False,
) -> tuple[Array, Array]:
    """Backpropagate through the recurrence, eqs. (16)-(18), into ``out``.

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
        As in :func:`forward_into`.
    dh_last : (B, H), optional
        Gradient with respect to the final state (from the head, or from ``h_n``).
    mask : (T, B) bool, optional
    out : (T, B, H)
        Buffer for ``dZ`` (must not alias ``dH`` or ``Hbuf``).
    compiled : bool
        As in :func:`forward_into`.

    Returns
    -------
    dZ : (T, B, H)
        ``dL/dZ_t`` in time order (zero at padded steps).
    dh0 : (B, H)
        ``dL/dh0``.
    """
    T, B, H = Hbuf.shape[0] - 1, Hbuf.shape[1], Hbuf.shape[2]
    dtype = Hbuf.dtype
    dZ = out
    if dZ.shape != (T, B, H) or dZ.dtype != dtype:
        raise ValueError(f"out must be a {dtype} (T, B, H) = {(T, B, H)} buffer; got {dZ.dtype} "
                         f"{dZ.shape}")
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
    per = max(1, FPRIME_BLOCK // max(1, B * H))                # steps per f' block
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
