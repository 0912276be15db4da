"""Real-time recurrent learning: sensitivities carried forward in time (docs/derivation.md,
sections 12-13, eqs. 26-32).

For every layer ``l`` the sensitivity ``S^l_t = dH^l_t / dtheta`` is kept as a ``(B, R_l, H)``
array: row ``r`` of sequence ``b`` is the derivative of the state row ``H^l_t[b, :]`` with respect
to one entry ``r`` of the parameters of layers ``0..l`` (and of their initial states), so it is
carried with the same right-multiplication by ``W_hh`` as the state itself (eq. 27)::

    S^l_t = (S^l_{t-1} W_hh + S^{l-1}_t W_xh + E^l_t) * f'(Z^l_t)      (one GEMM over B R_l rows)

The forward step is the shared cell (:func:`rnnlab.core.cell.step`) and ``f'`` its activation's
``grad_from_output``.  ``value_and_grad`` gives BPTT's gradients exactly; ``online_update`` applies
an optimizer step at every scored step (seed 004).  Memory ``O(B H |theta|)``, time
``O(B H^2 |theta|)`` per step, independent of ``T``; :func:`sensitivity_bytes` is checked against
``max_bytes`` before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import ArrayLike, NDArray

from ..core import activations, cell, losses, network
from ..core.params import Params
from ..core.spec import RNNSpec
from .batch import Batch, prepare, scored_loss

Array = NDArray[np.floating]

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Layout",
    "SensitivityMemoryError",
    "layout",
    "online_update",
    "sensitivity_bytes",
    "value_and_grad",
]

DEFAULT_MAX_BYTES = 2 * 1024**3
"""The default limit on the sensitivity arrays: 2 GiB."""

_GIB = float(1024**3)


class Optimizer(Protocol):
    """What :func:`online_update` needs of an optimizer (:class:`rnnlab.optim.Optimizer` is
    one): an update of ``params`` in place from ``grads`` and its ``state``."""

    def update_(self, params: Params, grads: Mapping[str, NDArray[Any]], state: dict[str, Any],
                lr: float | None = None) -> None: ...


class SensitivityMemoryError(MemoryError, ValueError):
    """The sensitivity tensors would exceed ``max_bytes`` (raised before allocating)."""


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Which sensitivity rows belong to which parameter entry (eq. 26).

    Layer ``l`` owns the block of rows ``[offset[l], offset[l] + size[l])``, in the order
    ``W_xh`` (``D_l H`` rows, C order), ``W_hh`` (``H H``), ``b_h`` (``H``), then, if
    ``with_h0``, its initial state (``H`` rows).  Layer ``l``'s sensitivity has the rows of
    layers ``0..l``: ``rows[l] = offset[l] + size[l]``.
    """

    hidden: int
    inputs: tuple[int, ...]      # D_l per layer
    offset: tuple[int, ...]
    size: tuple[int, ...]
    with_h0: bool

    @property
    def rows(self) -> tuple[int, ...]:
        return tuple(o + s for o, s in zip(self.offset, self.size, strict=True))


def layout(spec: RNNSpec, *, with_h0: bool = True) -> Layout:
    """The sensitivity row layout of ``spec`` (unidirectional)."""
    H = spec.hidden_size
    ins, offs, sizes, o = [], [], [], 0
    for layer in range(spec.num_layers):
        D = spec.input_size if layer == 0 else H
        n = D * H + H * H + H + (H if with_h0 else 0)
        ins.append(D)
        offs.append(o)
        sizes.append(n)
        o += n
    return Layout(H, tuple(ins), tuple(offs), tuple(sizes), with_h0)


def sensitivity_bytes(spec: RNNSpec, batch_size: int, dtype: Any = np.float64, *,
                      with_h0: bool = True) -> int:
    """Bytes RTRL allocates for ``batch_size`` sequences (section 12, eq. 34).

    Two ``(B, R_l, H)`` buffers per layer (the sensitivity at ``t - 1`` and at ``t``), one
    ``(B, R_{L-2}, H)`` buffer for the contribution of the layer below, and the ``(B, R_{L-1})``
    gradient accumulator with its per-step term.
    """
    lay = layout(spec, with_h0=with_h0)
    B, H, rows = batch_size, lay.hidden, lay.rows
    n = 2 * B * H * sum(rows) + 2 * B * rows[-1]
    if len(rows) > 1:
        n += B * H * rows[-2]
    return n * np.dtype(dtype).itemsize


def _check_memory(spec: RNNSpec, B: int, dtype: np.dtype, with_h0: bool,
                  max_bytes: float | None) -> None:
    if max_bytes is None:
        return
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int | float) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive number or None; got {max_bytes!r}")
    need = sensitivity_bytes(spec, B, dtype, with_h0=with_h0)
    if need > max_bytes:
        lay = layout(spec, with_h0=with_h0)
        raise SensitivityMemoryError(
            f"RTRL needs {need / _GIB:.3g} GiB, limit {max_bytes / _GIB:.3g} GiB (max_bytes): "
            f"the sensitivities dH_t/dtheta are (B, rows, H) = ({B}, {lay.rows[-1]}, "
            f"{lay.hidden}) for the top layer alone ({dtype.name}), growing as B H |theta| ~ "
            "B H^3 per layer; use fewer sequences per batch, a smaller hidden_size, a larger "
            "max_bytes, or BPTT / truncated BPTT"
        )


# ----------------------------------------------------------------------------- the walk


def _diag(S: Array, start: int, n: int) -> Array:
    """Writable ``(B, n, H)`` view ``V[b, i, j] = S[b, start + i H + j, j]`` (eq. 28's ``e_j``)."""
    B, _, H = S.shape
    sB, sR, sH = S.strides
    return as_strided(S[:, start:start + n * H], shape=(B, n, H), strides=(sB, H * sR, sR + sH))


class _Walker:
    """States and sensitivities of every layer, advanced one step at a time."""

    def __init__(self, spec: RNNSpec, lay: Layout, h0: Array, dtype: np.dtype) -> None:
        L, B, H = h0.shape
        self.spec, self.lay, self.B, self.H = spec, lay, B, H
        self.act = activations.get(spec.nonlinearity)
        self.h = [h0[layer].copy() for layer in range(L)]
        self.h_new = [np.empty((B, H), dtype=dtype) for _ in range(L)]
        rows = lay.rows
        self.S = [np.zeros((B, r, H), dtype=dtype) for r in rows]
        self.S_new = [np.empty((B, r, H), dtype=dtype) for r in rows]
        self.below = np.empty(B * rows[-2] * H if L > 1 else 0, dtype=dtype)
        self.fp = np.empty((B, H), dtype=dtype)
        self.rows_b = np.arange(B)
        if lay.with_h0:                      # S_{-1} = dh0/dh0 = I, eq. (29)
            for layer in range(L):
                o = lay.offset[layer] + lay.size[layer] - H
                _diag(self.S[layer], o, 1)[:, 0] += 1.0

    def step(self, params: Mapping[str, Array], x_t: NDArray[Any], pad: NDArray[Any] | None
             ) -> None:
        """Advance every layer by one step (eqs. 5-7 and 27-30); ``pad``: padded row indices."""
        B, H, lay = self.B, self.H, self.lay
        inp = x_t
        for layer in range(self.spec.num_layers):
            p = f"l{layer}"
            W_xh, W_hh = params[f"{p}.W_xh"], params[f"{p}.W_hh"]
            h_prev, h_new = self.h[layer], self.h_new[layer]
            a = W_xh[inp] if inp.ndim == 1 else inp @ W_xh
            a += params[f"{p}.b_h"]
            h_new[...] = cell.step(a, h_prev, W_hh, self.act)                # eqs. (5)-(6)
            S_old, S_new = self.S[layer], self.S_new[layer]
            R = S_old.shape[1]
            np.matmul(S_old.reshape(B * R, H), W_hh, out=S_new.reshape(B * R, H))   # eq. (27)
            if layer > 0:                    # the layer below reaches this one through W_xh
                Rb = lay.rows[layer - 1]
                tmp = self.below[:B * Rb * H].reshape(B * Rb, H)
                np.matmul(self.S[layer - 1].reshape(B * Rb, H), W_xh, out=tmp)
                S_new[:, :Rb] += tmp.reshape(B, Rb, H)
            o, D = lay.offset[layer], lay.inputs[layer]
            dx = _diag(S_new, o, D)                                          # eq. (28)
            if inp.ndim == 1:
                dx[self.rows_b, inp] += 1.0                                  # one-hot X_t, eq. 21
            else:
                dx += inp[:, :, None]
            _diag(S_new, o + D * H, H)[...] += h_prev[:, :, None]
            _diag(S_new, o + D * H + H * H, 1)[:, 0] += 1.0
            if not self.act.linear:
                S_new *= self.act.grad_from_output(h_new, out=self.fp)[:, None, :]
            if pad is not None:                                              # eq. (30)
                S_new[pad] = S_old[pad]
                h_new[pad] = h_prev[pad]
            self.S[layer], self.S_new[layer] = S_new, S_old
            self.h[layer], self.h_new[layer] = h_new, h_prev
            inp = h_new

    def contract(self, G: Array) -> Array:
        """``(B, R)``: ``G_t[b] . S^top_t[b, r]``, each row's share of eq. (31)."""
        return np.matmul(self.S[-1], G[:, :, None])[:, :, 0]

    def unpack(self, rows: Array, out: Params) -> None:
        """Add the summed rows ``(R,)`` into the recurrent gradients ``out``."""
        H, lay = self.H, self.lay
        for layer in range(self.spec.num_layers):
            p, o, D = f"l{layer}", lay.offset[layer], lay.inputs[layer]
            out[f"{p}.W_xh"] += rows[o:o + D * H].reshape(D, H)
            out[f"{p}.W_hh"] += rows[o + D * H:o + D * H + H * H].reshape(H, H)
            out[f"{p}.b_h"] += rows[o + D * H + H * H:o + D * H + H * H + H]


def _pad_rows(batch: Batch, t: int) -> NDArray[np.intp] | None:
    if batch.mask is None:
        return None
    pad = np.flatnonzero(~batch.mask[t])
    return pad if pad.size else None


def _scored(batch: Batch, logits: Array, t: int | None) -> tuple[float, Array, int]:
    """Summed loss and dL/dz of the targets scored at step ``t`` (None: the sequence target)."""
    if t is None:
        return scored_loss(batch.spec.loss, logits, batch.y, None)
    m = None if batch.mask is None else batch.mask[t]
    return scored_loss(batch.spec.loss, logits, batch.y[t], m)


def _output(spec: RNNSpec, logits: Array, h: list[Array]) -> network.Output:
    O = spec.output_size
    y = losses.output(spec.loss, logits.reshape(-1, O)).reshape(logits.shape)
    return network.Output(y=y, logits=logits, h_n=np.stack(h))


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
    max_bytes: float | None = DEFAULT_MAX_BYTES,
) -> tuple[float, network.Gradients, network.Output]:
    """Loss, exact gradient and outputs by real-time recurrent learning, eqs. (26)-(31).

    Parameters
    ----------
    params, X, Y, spec, h0, mask, lengths, steps
        As for :func:`rnnlab.network.value_and_grad`; ``spec`` must be unidirectional.
    max_bytes : float or None
        Limit on the sensitivity arrays (:func:`sensitivity_bytes`); None for no limit.

    Returns
    -------
    loss : float
        Non-finite when the computation overflows (nothing raises then; docs/derivation.md,
        "Non-finite values").
    grads : Gradients
        ``params`` and ``h0`` equal BPTT's (to rounding); ``X`` is None (the gradient with
        respect to the inputs is not a forward-mode quantity).
    out : Output

    Raises
    ------
    SensitivityMemoryError
        (a ``MemoryError`` and a ``ValueError``) if the sensitivities need more than
        ``max_bytes``; the message says how much they need.
    ValueError
        For a bidirectional ``spec``, and as :func:`rnnlab.network.forward` does.
    """
    batch = prepare(params, X, Y, spec, algorithm="RTRL", h0=h0, mask=mask, lengths=lengths,
                    steps=steps)
    _check_memory(spec, batch.B, batch.dtype, True, max_bytes)
    B, T, O = batch.B, batch.T, spec.output_size
    walker = _Walker(spec, layout(spec, with_h0=True), batch.h0, batch.dtype)
    W_hy, b_y = params["W_hy"], params["b_y"]
    acc = np.zeros((B, walker.lay.rows[-1]), dtype=batch.dtype)
    g_hy, g_by = np.zeros_like(W_hy), np.zeros_like(b_y)
    per_step = spec.per_step_output
    logits_tb = np.empty((T, B, O), dtype=batch.dtype) if per_step else None
    total = 0.0
    logits = np.empty((B, O), dtype=batch.dtype)
    for t in range(T):
        walker.step(params, batch.x[t], _pad_rows(batch, t))
        if not per_step and t < T - 1:
            continue
        top = walker.h[-1]
        np.matmul(top, W_hy, out=logits)
        logits += b_y                                                        # eq. (8)
        if logits_tb is not None:
            logits_tb[t] = logits
        value, dz, n = _scored(batch, logits, t if per_step else None)
        if n == 0:
            continue
        total += value
        dz /= batch.denom
        g_hy += top.T @ dz                                                   # eq. (19), head
        g_by += dz.sum(axis=0)
        acc += walker.contract(dz @ W_hy.T)                                  # eq. (31)
    grads: Params = {k: np.zeros_like(p) for k, p in params.items()}
    walker.unpack(acc.sum(axis=0), grads)
    grads["W_hy"], grads["b_y"] = g_hy, g_by
    lay, H = walker.lay, walker.H
    dh0 = np.stack([acc[:, o + s - H:o + s] for o, s in zip(lay.offset, lay.size, strict=True)])
    out_logits = logits if logits_tb is None else np.ascontiguousarray(
        logits_tb.transpose(1, 0, 2))
    return total / batch.denom, network.Gradients(grads, None, dh0), _output(
        spec, out_logits, walker.h)


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
    max_bytes: float | None = DEFAULT_MAX_BYTES,
    every: int = 1,
) -> tuple[float, network.Output]:
    """Online RTRL (seed 004, eq. 32): an optimizer step at every step that scores a target.

    At each step ``t`` the state and sensitivities advance with the current parameters, the loss
    ``L_t`` of the targets scored at ``t`` (the spec's reduction over those targets alone) is
    differentiated through the carried sensitivities, and ``opt.update_(params, grads,
    opt_state, lr=lr)`` changes ``params`` in place.  The sensitivities computed under the old
    parameters are carried across the update, the standard online approximation; steps that
    score nothing (padding, many-to-one before the last step) make no update.  With
    ``every = k`` the update comes after every block of ``k`` steps (and after the last step),
    from the loss of the block's targets (eq. 42).

    Parameters
    ----------
    params : dict
        Updated in place (as is ``opt_state``).
    X, Y, spec, h0, mask, lengths, steps, max_bytes
        As for :func:`value_and_grad`.
    opt, opt_state, lr
        From :mod:`rnnlab.optim`: ``opt.init(params)`` and an optional learning-rate override.
    every : int
        Steps per update (1: at every scored step).

    Returns
    -------
    loss : float
        Eq. (15) over every scored target, each predicted by the parameters current at its step
        (before that step's update).  An overflow makes it non-finite and the updates after it
        non-finite too (they are applied: :func:`rnnlab.fit` snapshots and undoes them).
    out : Output
        Those predictions; ``h_n`` the final states.
    """
    if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise ValueError(f"every must be an int >= 1 (time steps between updates); got "
                         f"{every!r}")
    batch = prepare(params, X, Y, spec, algorithm="RTRL", h0=h0, mask=mask, lengths=lengths,
                    steps=steps)
    _check_memory(spec, batch.B, batch.dtype, False, max_bytes)
    B, T, O = batch.B, batch.T, spec.output_size
    walker = _Walker(spec, layout(spec, with_h0=False), batch.h0, batch.dtype)
    per_step = spec.per_step_output
    k = 1 if spec.loss == "softmax_ce" else O
    logits_tb = np.empty((T, B, O), dtype=batch.dtype) if per_step else None
    total = 0.0
    logits = np.empty((B, O), dtype=batch.dtype)
    grads: Params = {kk: np.zeros_like(p) for kk, p in params.items()}
    n_block = 0
    for t in range(T):
        walker.step(params, batch.x[t], _pad_rows(batch, t))
        if per_step or t == T - 1:
            W_hy = params["W_hy"]
            top = walker.h[-1]
            np.matmul(top, W_hy, out=logits)
            logits += params["b_y"]
            if logits_tb is not None:
                logits_tb[t] = logits
            value, dz, n = _scored(batch, logits, t if per_step else None)
            if n:
                total += value
                n_block += n
                walker.unpack(walker.contract(dz @ W_hy.T).sum(axis=0), grads)
                grads["W_hy"] += top.T @ dz
                grads["b_y"] += dz.sum(axis=0)
        if n_block and ((t + 1) % every == 0 or t == T - 1):
            if spec.reduction == "mean":
                for g in grads.values():
                    g /= n_block * k                                         # L_t's own mean
            opt.update_(params, grads, opt_state, lr=lr)                     # eq. (32)
            grads = {kk: np.zeros_like(p) for kk, p in params.items()}
            n_block = 0
    out_logits = logits.copy() if logits_tb is None else np.ascontiguousarray(
        logits_tb.transpose(1, 0, 2))
    return total / batch.denom, _output(spec, out_logits, walker.h)
