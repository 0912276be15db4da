"""One layer's recurrence over time, forward and backward (docs/derivation.md, eqs. 5-7, 16-18).

The one cell that BPTT, truncated BPTT and RTRL share, as the reference engine computes it:
short NumPy loops over time that read like the equations.  (The fast engine runs the same
recurrence on preallocated buffers, in place and compiled: :mod:`rnnlab.fast.loops`, tested
against this module.)

Arrays are time first: ``A`` is ``(T, B, H)``, the input projection ``X_t W_xh + b_h`` of every
step, computed by the caller in one product.  The states live in one array ``Hbuf`` of shape
``(T + 1, B, H)``:

* forward direction: ``Hbuf[0] = h0`` and ``Hbuf[t + 1] = H_t``;
* reverse direction (the backward half of a bidirectional layer, which reads time backwards):
  ``Hbuf[T] = h0`` and ``Hbuf[t] = H_t``.

Either way the step outputs (:func:`outputs`) and the states each step read (:func:`previous`)
are contiguous ``(T, B, H)`` blocks in time order, so the weight gradients are single products
over all ``T * B`` rows (eq. 19).

Masked (padded) steps carry the state, ``H_t = H_{t-1}`` (eq. 7), get ``dZ_t = 0`` and pass the
gradient through unchanged (eq. 18).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .activations import Activation

__all__ = ["backward", "final", "forward", "initial", "outputs", "previous", "step"]

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


def order(T: int, reverse: bool = False) -> range:
    """The steps in the order a direction reads them: ``0..T-1``, or ``T-1..0`` reversed."""
    return range(T - 1, -1, -1) if reverse else range(T)


def step(a_t: Array, h_prev: Array, W_hh: Array, act: Activation) -> Array:
    """One step, eqs. (5)-(6): ``H_t = f(a_t + H_{t-1} W_hh)``; ``(B, H)`` each, a new array."""
    z = a_t + h_prev @ W_hh                         # Z_t, eq. (5): (B, H) + (B, H) x (H, H)
    return act.f(z, out=z)                          # H_t = f(Z_t), eq. (6)


def forward(A: Array, W_hh: Array, act: Activation, h0: Array, *, reverse: bool = False,
            mask: Mask | None = None) -> Array:
    """Run the recurrence over all steps.

    Parameters
    ----------
    A : (T, B, H)
        Input projections ``X_t W_xh + b_h`` (a read-only broadcast view is fine).
    W_hh : (H, H)
    act : Activation
    h0 : (B, H)
        Initial state.
    reverse : bool
        Read ``t = T-1, ..., 0`` (see the module docstring for the layout of ``Hbuf``).
    mask : (T, B) bool, optional
        False at padded steps, which carry the state (eq. 7).

    Returns
    -------
    Hbuf : (T + 1, B, H)
    """
    T, B, H = A.shape
    Hbuf = np.empty((T + 1, B, H), dtype=W_hh.dtype)
    initial(Hbuf, reverse)[...] = h0
    for t in order(T, reverse):
        cur, prev = (t, t + 1) if reverse else (t + 1, t)
        z = np.matmul(Hbuf[prev], W_hh, out=Hbuf[cur])        # H_{t-1} W_hh: (B, H) x (H, H)
        z += A[t]                                             # Z_t, eq. (5)
        act.f(z, out=z)                                       # H_t = f(Z_t), eq. (6)
        if mask is not None:                                  # eq. (7): padded rows keep H_{t-1}
            np.copyto(z, Hbuf[prev], where=~mask[t][:, None])
    return Hbuf


def backward(dH: Array | None, Hbuf: Array, W_hh: Array, act: Activation, *,
             reverse: bool = False, dh_last: Array | None = None, mask: Mask | None = None
             ) -> tuple[Array, Array]:
    """Backpropagate through the recurrence, eqs. (16)-(18).

    Parameters
    ----------
    dH : (T, B, H) or None
        Gradient arriving at each step's output ``H_t`` from above (head or next layer), in time
        order.  ``None`` means zero (many-to-one: only the final state is read).
    Hbuf : (T + 1, B, H)
        From :func:`forward`.
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
    fprime = act.grad_from_output(outputs(Hbuf, reverse))   # f'(Z_t) from H_t, eqs. (2)-(4)
    W_T = np.ascontiguousarray(W_hh.T)                       # (H, H), read row by row below
    dZ = np.empty((T, B, H), dtype=Hbuf.dtype)
    # dnext: dL/dH_t, first from the steps after t (dL/dH_T: dh_last), then from above too
    dnext = np.zeros((B, H), Hbuf.dtype) if dh_last is None else dh_last.astype(Hbuf.dtype)
    for t in order(T, not reverse):                          # backwards through the reading order
        if dH is not None:
            dnext += dH[t]                                   # dL/dH_t, eq. (16)
        np.multiply(dnext, fprime[t], out=dZ[t])             # dZ_t = dL/dH_t * f'(Z_t), (17)
        if mask is None:
            np.matmul(dZ[t], W_T, out=dnext)                 # dL/dH_{t-1} = dZ_t W_hh^T, (16)
            continue
        pad = ~mask[t]                                       # eq. (18): padded rows get dZ_t = 0
        dZ[t][pad] = 0.0                                     # and pass dL/dH_t on unchanged
        carried = dnext[pad]
        np.matmul(dZ[t], W_T, out=dnext)
        dnext[pad] = carried
    return dZ, dnext
