"""SnAp-n, the sparse n-step approximation of RTRL (Menick, Elsen, Evci, Osindero, Simonyan and
Graves 2021; docs/derivation.md, section 14, eqs. 50-51).

RTRL's influence matrix ``S_t[(i, j), k] = dH_t[k]/dW[i, j]`` (joint weights ``W = [W_hh; W_xh;
b_h]``, eq. 39; row ``(i, j)`` feeds unit ``j``) is kept only on the entries where the weight
can reach unit ``k`` within ``n`` steps: unit ``k`` reachable from unit ``j`` along at most
``n - 1`` recurrent connections (entries of ``W_hh``).  After every step of eq. (27) the
entries outside that pattern are dropped::

    S_t = ( S_{t-1} W_hh  +  u_t ⊗ I ) ⊙ f'(Z_t)   restricted to the pattern P_n     (eq. 51)

SnAp-1 keeps the diagonal ``S[(i, j), j]`` (``O(B |θ|)`` memory and time, like BPTT's per step).
For a dense ``W_hh`` every unit reaches every other in one step, so SnAp-n with ``n >= 2`` *is*
RTRL (Menick et al. section 3); it saves work only for sparse networks (``connectivity``: the
connections that exist; the others are zero in ``W_hh``, get no gradient and so stay zero under
any optimizer), where each unit's row of the pattern is stored compactly.

Storage, one recurrent layer: ``(H, B, H + D + 1, p)``: for unit ``j`` the ``p`` units of its
pattern row (padded to the longest row), so one step is one batched ``(B (H + D + 1), p) x
(p, p)`` product per unit (one GEMM over all rows when the pattern is full); SnAp-1 keeps its
diagonal as ``(B, H + D + 1, H)``, updated element-wise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core import network
from ..core.params import Params
from ..core.sparsity import pattern_layout
from ..core.spec import RNNSpec
from .batch import Batch, prepare
from .rtrl import DEFAULT_MAX_BYTES, SensitivityMemoryError
from .walk import (
    Optimizer,
    Rows,
    Tracker,
    check_every,
    check_single_layer,
    gradients,
    unpack_joint,
    walk,
)

Array = NDArray[np.floating]

__all__ = ["SnApTracker", "check_connectivity", "online_update", "pattern", "snap_bytes",
           "value_and_grad"]

_GIB = float(1024**3)
_WHY = "Menick et al. define the sparsity pattern on one recurrent core's units"


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"SnAp's n must be an int >= 1 (the steps of the pattern); got "
                        f"{type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"SnAp's n must be an int >= 1 (the steps of the pattern); got {n}")
    return int(n)


def pattern(connectivity: ArrayLike, n: int) -> NDArray[np.bool_]:
    """The SnAp-n pattern ``P`` ``(H, H)`` of eq. (50): ``P[j, k]`` is True when unit ``k`` is
    reachable from unit ``j`` along at most ``n - 1`` connections (``connectivity[m, k]`` true:
    ``W_hh[m, k]`` connects unit ``m`` to unit ``k``, the row convention).  ``P_1`` is the
    identity; a dense network has ``P_n`` full for every ``n >= 2``."""
    n = _check_n(n)
    A = np.asarray(connectivity, dtype=bool)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"connectivity must be a square (H, H) matrix; got shape {A.shape}")
    P = np.eye(A.shape[0], dtype=bool)
    for _ in range(n - 1):
        nxt = P | ((P.astype(np.int64) @ A.astype(np.int64)) > 0)
        if np.array_equal(nxt, P):
            break
        P = nxt
    return P


def check_connectivity(connectivity: object, W_hh: Array) -> NDArray[np.bool_]:
    """The connections of a SnAp network as an ``(H, H)`` bool matrix.

    None: dense (every connection).  ``"nonzero"``: the nonzero entries of ``W_hh``.  Or a bool
    ``(H, H)`` array.  ``W_hh`` must be zero where there is no connection.
    """
    H = W_hh.shape[0]
    if connectivity is None:
        return np.ones((H, H), dtype=bool)
    if isinstance(connectivity, str):
        if connectivity != "nonzero":
            raise ValueError(f"SnAp: connectivity must be None (dense), 'nonzero' (the nonzero "
                             f"entries of W_hh) or a bool (H, H) array; got {connectivity!r}")
        return np.asarray(W_hh != 0)
    conn = np.asarray(connectivity)
    if conn.dtype != np.bool_ or conn.shape != (H, H):
        raise ValueError(f"SnAp: a connectivity array must be bool (H, H) = ({H}, {H}); got "
                         f"{conn.dtype} {conn.shape}")
    outside = int(np.count_nonzero(W_hh[~conn]))
    if outside:
        raise ValueError(f"SnAp: W_hh has {outside} nonzero entries where connectivity is False; "
                         "a sparse network must hold zeros at its absent connections (multiply "
                         "W_hh by the connectivity mask)")
    return conn


def snap_bytes(spec: RNNSpec, batch_size: int, p: int, dtype: Any = np.float64) -> int:
    """Bytes of SnAp's two influence buffers: ``2 B H (H + D + 1) p`` entries (``p``: the longest
    pattern row; 1 for SnAp-1, ``H`` when the pattern is full)."""
    H, D = spec.hidden_size, spec.input_size
    return 2 * batch_size * H * (H + D + 1) * p * np.dtype(dtype).itemsize


class SnApTracker(Tracker):
    """The influence matrix on the SnAp-n pattern, eq. (51)."""

    def __init__(self, spec: RNNSpec, batch: Batch, conn: NDArray[np.bool_], n: int) -> None:
        super().__init__(spec, batch)
        B, H, D, dt = batch.B, spec.hidden_size, spec.input_size, batch.dtype
        self.conn = conn
        self.sparse = not bool(conn.all())
        self.P = pattern(conn, n)
        self.idx, self.valid, self.pos = pattern_layout(self.P)
        self.p = self.idx.shape[1]
        self.full = self.p == H and bool(self.valid.all())
        self.units = np.arange(H)
        # SnAp-1 keeps s[b, i, j] = S[b, (i, j), j]: (B, H + D + 1, H), the layout of the joint
        # gradient; otherwise unit j's row of the pattern: (H, B, H + D + 1, p)
        shape = (B, H + D + 1, H) if self.p == 1 else (H, B, H + D + 1, self.p)
        self.S = np.zeros(shape, dt)                     # S_{-1} = 0, eq. (29)
        self.S_new = np.empty(shape, dt)
        self.ubuf = np.empty((B, H + D + 1), dt)
        self.mask2 = (self.valid[:, :, None] & self.valid[:, None, :]).astype(dt)

    def update(self, params: Mapping[str, Array], pad: Rows | None) -> None:
        W = params["l0.W_hh"]
        S, S_new = self.S, self.S_new
        if self.p == 1:                                  # SnAp-1: only W_hh[j, j] survives
            np.multiply(S, np.ascontiguousarray(np.diagonal(W)), out=S_new)
            S_new += self.u(0, self.ubuf)[:, :, None]    # u_t ⊗ I on the diagonal
            S_new *= self.fp[0][:, None, :]
            if pad is not None:                          # eq. (30)
                S_new[pad] = S[pad]
            self.S, self.S_new = S_new, S
            return
        H, B, R, p = S.shape
        if self.full:                                    # the pattern is everything: RTRL, (27)
            np.matmul(S.reshape(H * B * R, H), W, out=S_new.reshape(H * B * R, H))
        else:                                            # unit j: (B R, p) x (p, p)
            W_sub = W[self.idx[:, :, None], self.idx[:, None, :]] * self.mask2
            np.matmul(S.reshape(H, B * R, p), W_sub, out=S_new.reshape(H, B * R, p))
        u = self.u(0, self.ubuf)
        S_new[self.units, :, :, self.pos] += u           # the immediate term u_t ⊗ I (eq. 40)
        f = self.fp[0][:, self.idx]                      # (B, H, p): f'(Z_t) at each kept unit
        S_new *= f.transpose(1, 0, 2)[:, :, None, :]
        if pad is not None:                              # eq. (30)
            S_new[:, pad] = S[:, pad]
        self.S, self.S_new = S_new, S

    def contract(self, G: Array, grads: Params) -> None:
        if self.p == 1:
            gj = np.einsum("bij,bj->ij", self.S, G)                 # Σ_b s[b] ⊙ G[b]
            if self.sparse:
                gj[:self.H] *= self.conn
            unpack_joint(gj, 0, self.H, grads)
            return
        Gt = G[:, self.idx].transpose(1, 0, 2)[:, :, :, None]        # (H, B, p, 1)
        g = np.matmul(self.S, Gt)[..., 0].sum(axis=1)               # (H, H + D + 1)
        gj = np.ascontiguousarray(g.T)                              # joint rows (i), units (j)
        if self.sparse:
            gj[:self.H] *= self.conn                                 # absent connections
        unpack_joint(gj, 0, self.H, grads)


def _batch(params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike, spec: RNNSpec,
           h0: ArrayLike | None, mask: ArrayLike | None, lengths: ArrayLike | None,
           steps: int | None, n: int, connectivity: object, max_bytes: float | None
           ) -> tuple[Batch, SnApTracker]:
    batch = prepare(params, X, Y, spec, algorithm="SnAp", h0=h0, mask=mask, lengths=lengths,
                    steps=steps)
    check_single_layer(spec, "SnAp", _WHY)
    conn = check_connectivity(connectivity, params["l0.W_hh"])
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int | float) or (
                max_bytes <= 0):
            raise ValueError(f"max_bytes must be a positive number or None; got {max_bytes!r}")
        p = int(pattern(conn, n).sum(axis=1).max())
        need = snap_bytes(spec, batch.B, p, batch.dtype)
        if need > max_bytes:
            raise SensitivityMemoryError(
                f"SnAp-{n} needs {need / _GIB:.3g} GiB, limit {max_bytes / _GIB:.3g} GiB "
                f"(max_bytes): its pattern keeps up to p = {p} of H = {spec.hidden_size} units "
                f"per weight, (H, B, H + D + 1, p) entries twice; use a smaller n, a sparser "
                "W_hh, fewer sequences per batch or a larger max_bytes")
    return batch, SnApTracker(spec, batch, conn, n)


def value_and_grad(
    params: Mapping[str, Array],
    X: ArrayLike,
    Y: ArrayLike,
    spec: RNNSpec,
    *,
    h0: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    lengths: ArrayLike | None = None,
    steps: int | None = None,
    n: int = 1,
    connectivity: ArrayLike | str | None = None,
    max_bytes: float | None = DEFAULT_MAX_BYTES,
) -> tuple[float, network.Gradients, network.Output]:
    """Loss, the SnAp-n gradient and outputs (eqs. 41, 50-51).

    Parameters
    ----------
    params, X, Y, spec, h0, mask, lengths, steps
        As for :func:`rnnlab.network.value_and_grad`; one unidirectional layer.
    n : int
        The pattern's steps (eq. 50): 1 keeps the diagonal; with a dense ``W_hh``, ``n >= 2``
        keeps everything and the result is RTRL's gradient.
    connectivity : None, "nonzero" or bool (H, H) array
        The recurrent connections of a sparse network (None: dense).  ``"nonzero"`` takes the
        nonzero entries of ``W_hh``.  ``W_hh`` must be zero at absent connections; their
        gradient is 0, so they stay absent.
    max_bytes : float or None
        Limit on the influence buffers (:func:`snap_bytes`); None for no limit.

    Returns
    -------
    loss : float
        The exact loss (eq. 15).
    grads : Gradients
        ``params``: SnAp-n's gradient (exact for the head; equal to RTRL's where the pattern is
        full); ``X`` None; ``h0`` zeros (not estimated).
    out : Output
    """
    k = _check_n(n)
    p = dict(params)
    batch, tracker = _batch(p, X, Y, spec, h0, mask, lengths, steps, k, connectivity,
                            max_bytes)
    loss, grads, out = walk(tracker, p, batch)
    return loss, gradients(grads, batch), out


def online_update(
    params: Params,
    X: ArrayLike,
    Y: ArrayLike,
    spec: RNNSpec,
    *,
    opt: Optimizer,
    opt_state: dict[str, Any],
    lr: float | None = None,
    h0: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    lengths: ArrayLike | None = None,
    steps: int | None = None,
    n: int = 1,
    connectivity: ArrayLike | str | None = None,
    max_bytes: float | None = DEFAULT_MAX_BYTES,
    every: int = 1,
) -> tuple[float, network.Output]:
    """Online SnAp-n (eq. 42): an optimizer step every ``every`` steps; ``params`` and
    ``opt_state`` are updated in place (the pattern is fixed by ``W_hh`` at the call's start).
    Arguments as :func:`value_and_grad` and :func:`rnnlab.rtrl.online_update`; returns
    ``(loss, out)``."""
    k = _check_n(n)
    e = check_every(every)
    batch, tracker = _batch(params, X, Y, spec, h0, mask, lengths, steps, k, connectivity,
                            max_bytes)
    loss, _, out = walk(tracker, params, batch, opt=opt, opt_state=opt_state, lr=lr, every=e)
    return loss, out
