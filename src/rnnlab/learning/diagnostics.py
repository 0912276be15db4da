"""Gradient diagnostics: finite differences (docs/derivation.md, eq. 22) and per-step gradient
norms, the data behind the vanishing/exploding-gradient picture (section 16, eqs. 35-37)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core import activations, cell, network
from ..core.spec import RNNSpec

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
    if not x.flags.c_contiguous:
        raise ValueError("finite differences perturb x in place through a flat view; x must be "
                         "C-contiguous (np.ascontiguousarray), and f must read that array")
    flat, gflat = x.reshape(-1), grad.reshape(-1)
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


# ----------------------------------------------------------------------------- per-step gradients


@dataclass(frozen=True)
class StepGradients:
    """Where in time the gradient comes from (docs/derivation.md, section 16, eqs. 35-37).

    Rows are layers and directions in PyTorch's order (``keys``: ``"l0", "l0r", "l1", ...``);
    columns are steps ``t = 0 .. T-1`` in time order.

    Attributes
    ----------
    loss : float
        The network's loss (eq. 15).
    keys : tuple of str
        The row labels, the parameter-key prefixes.
    dh_norm : (L * ndir, T)
        ``||G_t||_F = ||dL/dH_t||`` over the batch (eq. 35): the total gradient reaching the state
        at step ``t`` by every path (eqs. 16, 18), the quantity that vanishes or explodes as it
        travels back from the losses.
    whh_norm : (L * ndir, T)
        ``||C_t||_F`` with ``C_t = H_{t-1}^T delta_t`` (``H_{t+1}`` for a reverse direction), step
        ``t``'s term of eq. (19): ``dL/dW_hh = sum_t C_t``.  Zero at padded steps.
    whh_share : (L * ndir, T)
        ``||C_t||_F / ||dL/dW_hh||_F`` (eq. 36).  Not a partition: by the triangle inequality the
        shares sum to at least 1, more when steps cancel.
    whh_fraction : (L * ndir, T)
        ``<C_t, dL/dW_hh> / ||dL/dW_hh||_F^2`` (eq. 37): the signed part of the total gradient
        along its own direction that step ``t`` contributes; sums to exactly 1 over ``t``.
    whh_total : (L * ndir,)
        ``||dL/dW_hh||_F``; where it is 0, that row's shares and fractions are 0.
    """

    loss: float
    keys: tuple[str, ...]
    dh_norm: Array
    whh_norm: Array
    whh_share: Array
    whh_fraction: Array
    whh_total: Array


def _state_grads(dH: Array | None, dZ: Array, W_hh: Array, dlast: Array | None,
                 mask: NDArray[np.bool_] | None, reverse: bool) -> Array:
    """``G_t = dL/dH_t`` (eqs. 16, 18) from ``dZ``: ``G_t = dH_t + delta_{t'} W_hh^T``, with ``t'``
    the step that read ``H_t`` (``G_{t'}`` itself if ``t'`` is padding); ``(T, B, H)``."""
    T, B, H = dZ.shape
    sent = (dZ.reshape(T * B, H) @ W_hh.T).reshape(T, B, H)    # what step t sends back
    G = np.empty_like(dZ)
    nxt = np.zeros((B, H), dtype=dZ.dtype) if dlast is None else dlast
    for t in (range(T) if reverse else range(T - 1, -1, -1)):
        if dH is None:
            np.copyto(G[t], nxt)
        else:
            np.add(dH[t], nxt, out=G[t])
        nxt = sent[t] if mask is None else sent[t] + np.where(mask[t][:, None], 0.0, G[t])
    return G


def _step_terms(prev: Array, dZ: Array, total: Array) -> tuple[Array, Array]:
    """``||H_{t-1}^T delta_t||_F`` and ``<H_{t-1}^T delta_t, total>`` per step, in blocks of
    steps so that the ``(steps, H, H)`` products stay near 32 MiB."""
    T, _, H = dZ.shape
    norms = np.empty(T, dtype=dZ.dtype)
    inner = np.empty(T, dtype=dZ.dtype)
    block = max(1, (1 << 22) // (H * H))
    for s in range(0, T, block):
        C = np.matmul(prev[s:s + block].transpose(0, 2, 1), dZ[s:s + block])   # (blk, H, H)
        norms[s:s + block] = np.sqrt(np.einsum("tij,tij->t", C, C))
        inner[s:s + block] = np.einsum("tij,ij->t", C, total)
    return norms, inner


def per_step_gradients(
    params: Mapping[str, Array],
    X: ArrayLike,
    Y: ArrayLike,
    spec: RNNSpec,
    *,
    h0: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    lengths: ArrayLike | None = None,
    steps: int | None = None,
) -> StepGradients:
    """Per-step gradient norms of full BPTT, for every layer and direction (section 16).

    Arguments as for :func:`rnnlab.network.value_and_grad`; any spec (bidirectional, masks,
    every set-up).  Runs :func:`rnnlab.network.forward` and the layer loop of
    :func:`rnnlab.network.backward` over the shared cell, recording ``G_t`` and ``delta_t``.

    Returns
    -------
    StepGradients
    """
    out, cache = network.forward(params, X, spec, h0=h0, mask=mask, lengths=lengths,
                                 steps=steps)
    res = network.loss_and_grad(spec, out, Y, mask=mask, lengths=lengths)
    T, B = cache.steps, cache.batch_size
    H, nd, L = spec.hidden_size, spec.num_directions, spec.num_layers
    act = activations.get(spec.nonlinearity)
    W_hy = params["W_hy"]
    dtop_seq: Array | None = None
    dtop_last: Array | None = None
    if spec.per_step_output:
        dz_tb = np.ascontiguousarray(res.dz.transpose(1, 0, 2))
        dtop_seq = dz_tb @ W_hy.T                                       # (T, B, H_top)
    else:
        dtop_last = res.dz @ W_hy.T                                     # (B, H_top)
    shape = (L * nd, T)
    dh_norm, whh_norm, whh_inner = np.empty(shape), np.empty(shape), np.empty(shape)
    whh_total = np.empty(L * nd)
    keys: list[str] = []
    d_inp: Array | None = None
    for layer in range(L - 1, -1, -1):
        d_below: Array | None = None
        for d, p in enumerate(spec.layer_keys(layer)):
            idx, rev, sl = layer * nd + d, d == 1, slice(d * H, (d + 1) * H)
            if layer == L - 1:
                dH = None if dtop_seq is None else dtop_seq[:, :, sl]
                dlast = None if dtop_last is None else dtop_last[:, sl]
            else:
                assert d_inp is not None
                dH, dlast = d_inp[:, :, sl], None
            hb, W_hh = cache.hbufs[idx], params[f"{p}.W_hh"]
            dZ, _ = cell.backward(dH, hb, W_hh, act, reverse=rev, dh_last=dlast,
                                  mask=cache.mask)                      # eqs. (16)-(18)
            G = _state_grads(dH, dZ, W_hh, dlast, cache.mask, rev)
            dh_norm[idx] = np.sqrt(np.einsum("tbh,tbh->t", G, G))       # eq. (35)
            prev = cell.previous(hb, rev)
            total = prev.reshape(T * B, H).T @ dZ.reshape(T * B, H)     # eq. (19)
            whh_total[idx] = np.linalg.norm(total)
            whh_norm[idx], whh_inner[idx] = _step_terms(prev, dZ, total)
            if layer > 0:
                dx = dZ @ params[f"{p}.W_xh"].T                         # eq. (20)
                d_below = dx if d_below is None else d_below + dx
        d_inp = d_below
    for layer in range(L):
        keys.extend(spec.layer_keys(layer))
    tot = whh_total[:, None]
    nz = tot > 0
    share = np.divide(whh_norm, tot, out=np.zeros(shape), where=nz)
    frac = np.divide(whh_inner, tot * tot, out=np.zeros(shape), where=nz)
    return StepGradients(res.value, tuple(keys), dh_norm, whh_norm, share, frac, whh_total)
