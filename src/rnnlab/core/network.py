"""The whole network, as the reference engine computes it: stacked (bidirectional) layers, the
head, the set-ups, masks (docs/derivation.md, sections 3-6).

The derivation in code, and the public core of the library::

    out, cache = forward(params, X, spec, h0=None, mask=None)        # out.y, out.logits, out.h_n
    res = loss_and_grad(spec, out, Y, mask=...)                      # res.value, res.dz
    g = backward(params, res.dz, cache)                              # g.params, g.X, g.h0

Nothing is mutated and no per-step Python objects are made: the cache is a named tuple of stacked
arrays.  Public arrays are batch first; inside, everything is time first (``(T, B, H)``) so that
each step is one contiguous ``(B, H)`` block, and every product that does not depend on the
recurrence (input projections, head, weight gradients, ``dX``) is one product over ``T * B``
rows.  The fast engine (:mod:`rnnlab.fast`) computes the same on reused buffers and threads, and
is tested against this module.

Non-finite values (docs/derivation.md, "Non-finite values"): ``params``, ``X``, targets and
``h0`` must be finite (ValueError naming the argument and the first bad entry); a computation that
overflows returns ``inf``/``NaN`` and never raises, and the gradients ``backward`` takes
(``dlogits``, ``dh_n``) may be non-finite and propagate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import activations, cell, losses
from .inputs import (
    as_float_array,
    check_h0,
    check_sample_weight,
    check_targets,
    make_mask,
    target_lead,
    time_first,
    time_first_mask,
)
from .params import Params, check_params
from .spec import RNNSpec

__all__ = ["Cache", "Gradients", "Output", "backward", "forward", "head", "input_grad_layout",
           "loss_and_grad", "make_mask", "project", "forward_time_first", "value_and_grad"]

Array = NDArray[np.floating]
Mask = NDArray[np.bool_]


class Output(NamedTuple):
    """What :func:`forward` returns.

    Attributes
    ----------
    y : (B, O) or (B, T, O)
        Predictions ``g(z)``: probabilities for the classification losses, values for MSE.
    logits : same shape as ``y``
        The head's pre-activations ``z = H W_hy + b_y`` (eq. 8).
    h_n : (num_layers * num_directions, B, H)
        Final state of every layer and direction, in PyTorch's order (l0, l0r, l1, ...).
    """

    y: Array
    logits: Array
    h_n: Array


class Cache(NamedTuple):
    """Stacked arrays kept by :func:`forward` for :func:`backward`; never mutated."""

    spec: RNNSpec
    inputs: tuple[NDArray[Any], ...]   # per layer, its input: (T, B, D_l) or (T, B) ids
    hbufs: tuple[Array, ...]                  # per layer and direction: (T + 1, B, H)
    top: Array                                # head input: (B, H_top) or (T, B, H_top)
    mask: Mask | None                         # (T, B), True at real steps
    batch_size: int
    steps: int


class Gradients(NamedTuple):
    """What :func:`backward` returns.

    Attributes
    ----------
    params : dict
        Same keys, shapes and dtypes as the parameters.
    X : ndarray or None
        ``dL/dX`` in the layout of ``X``; ``None`` for index inputs.
    h0 : (num_layers * num_directions, B, H)
        ``dL/dh0``.
    """

    params: Params
    X: Array | None
    h0: Array


# ----------------------------------------------------------------------------- forward


def project(inp: NDArray[Any], W_xh: Array, b_h: Array) -> Array:
    """The input projection of every step in one product, eq. (5): ``(T, B, D) -> (T, B, H)``;
    for ids ``(T, B)``, rows of ``W_xh`` (eq. 21)."""
    if inp.ndim == 2:
        return W_xh[inp] + b_h                                  # (T, B, H)
    T, B, D = inp.shape
    return (inp.reshape(T * B, D) @ W_xh).reshape(T, B, -1) + b_h   # (T*B, D) x (D, H)


def head(top: Array, W_hy: Array, b_y: Array) -> Array:
    """The head's logits, eq. (8): ``z = H W_hy + b_y`` on ``(B, H_top)`` or ``(T, B, H_top)``
    (one product over all rows)."""
    z = top.reshape(-1, top.shape[-1]) @ W_hy + b_y            # (rows, H_top) x (H_top, O)
    return z.reshape(top.shape[:-1] + (W_hy.shape[1],))


def forward_time_first(params: Mapping[str, Array], x: NDArray[Any], h0: Array, spec: RNNSpec,
        mask: Mask | None = None) -> tuple[Array, list[Array], Cache]:
    """Eqs. (5)-(8) on validated, time-first inputs.

    Parameters
    ----------
    x : (T, B, D) floats or (T, B) ids
    h0 : (num_layers * num_directions, B, H)
    mask : (T, B) bool, optional

    Returns
    -------
    logits : (T, B, O) or (B, O)
        Time first.
    finals : list of (B, H)
        The final state of every layer and direction (PyTorch's order).
    cache : Cache
    """
    T, B = x.shape[:2]
    nd = spec.num_directions
    act = activations.get(spec.nonlinearity)
    inputs: list[NDArray[Any]] = [x]
    hbufs: list[Array] = []
    finals: list[Array] = []
    inp: NDArray[Any] = x
    for layer in range(spec.num_layers):
        outs = []
        for d, p in enumerate(spec.layer_keys(layer)):
            rev = d == 1
            A = project(inp, params[f"{p}.W_xh"], params[f"{p}.b_h"])          # (T, B, H)
            hb = cell.forward(A, params[f"{p}.W_hh"], act, h0[len(hbufs)], reverse=rev,
                              mask=mask)                                        # eqs. (5)-(7)
            hbufs.append(hb)
            outs.append(cell.outputs(hb, rev))
            finals.append(cell.final(hb, rev))
        inp = outs[0] if nd == 1 else np.concatenate(outs, axis=2)              # (T, B, nd H)
        if layer + 1 < spec.num_layers:
            inputs.append(inp)
    # many-to-one reads the final states: the last real step forwards, the first backwards
    top = inp if spec.per_step_output else np.concatenate(finals[-nd:], axis=1)
    logits = head(top, params["W_hy"], params["b_y"])                            # eq. (8)
    return logits, finals, Cache(spec, tuple(inputs), tuple(hbufs), top, mask, B, T)


def forward(
    params: Mapping[str, Array],
    X: ArrayLike,
    spec: RNNSpec,
    *,
    h0: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    lengths: ArrayLike | None = None,
    steps: int | None = None,
) -> tuple[Output, Cache]:
    """Run the network, eqs. (5)-(8).

    Parameters
    ----------
    params : dict
        As laid out by :func:`rnnlab.params.shapes`; the dtype of the computation follows them.
    X : ndarray
        ``(B, T, D)`` floats; ``(B, T)`` integer ids for ``input_kind="index"``; ``(B, D)`` for
        ``setup="one_to_many"`` (then ``steps`` gives T).
    spec : RNNSpec
    h0 : (num_layers * num_directions, B, H), optional
        Initial states; zero when omitted.
    mask : (B, T) bool, optional
        False at padded steps: they neither change the state nor are scored.
    lengths : (B,) int, optional
        Alternative to ``mask``: the first ``lengths[b]`` steps of sequence b are real.
    steps : int, optional
        Output steps for ``setup="one_to_many"``.

    Returns
    -------
    out : Output
    cache : Cache
    """
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    dtype = check_params(params, spec)
    x, B, T = time_first(X, spec, dtype, steps)
    m = time_first_mask(B, T, mask=mask, lengths=lengths)
    h0_all = check_h0(h0, spec, B, dtype)
    z, finals, cache = forward_time_first(params, np.ascontiguousarray(x), h0_all, spec, m)
    logits = np.ascontiguousarray(z.transpose(1, 0, 2)) if z.ndim == 3 else z   # batch first
    y = losses.output(spec.loss, logits.reshape(-1, spec.output_size)).reshape(logits.shape)
    return Output(y=y, logits=logits, h_n=np.stack(finals)), cache


# ----------------------------------------------------------------------------- loss


def loss_and_grad(
    spec: RNNSpec,
    out: Output,
    Y: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    lengths: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> losses.LossResult:
    """The loss of ``out`` against targets ``Y`` and its gradient ``dL/dlogits`` (eqs. 9-15).

    Targets per set-up: many-to-one ``(B,)`` labels or ``(B, O)``; many-to-many and one-to-many
    ``(B, T)`` labels or ``(B, T, O)``; many-to-one with ``label_steps="all"`` takes the sequence
    targets ``(B,)`` / ``(B, O)`` and scores them at every real step (seed 000).  Padded steps are
    not scored.

    ``sample_weight`` ``(B,)`` weighs each sequence's loss (every scored step of sequence ``b``
    counts ``w_b`` times; ``(B, T)`` gives a weight per step where every step is scored): eq.
    (15w), the weighted mean for ``reduction="mean"``.

    Returns
    -------
    LossResult
        ``value`` (float) and ``dz``, shaped like ``out.logits``.
    """
    logits = out.logits
    B = logits.shape[0]
    if spec.per_step_output:
        T = logits.shape[1]
        seq_target = spec.setup == "many_to_one"
        y = check_targets(Y, spec, target_lead(spec, B, T), logits.dtype)
        w = check_sample_weight(sample_weight, spec, B, T, logits.dtype)
        if w is not None and w.ndim == 1:              # the sequence's weight at each step
            w = np.broadcast_to(w[:, None], (B, T))
        if seq_target:   # the same sequence target at every step, made explicit here
            y = np.broadcast_to(y[:, None], (B, T) + y.shape[1:])
        m = make_mask(B, T, mask=mask, lengths=lengths)
        if m is None:
            res = losses.loss_and_grad(spec.loss, logits.reshape(B * T, -1),
                                       y.reshape((B * T,) + y.shape[2:]), spec.reduction,
                                       None if w is None else w.reshape(B * T))
            return losses.LossResult(res.value, res.dz.reshape(logits.shape))
        res = losses.loss_and_grad(spec.loss, logits[m], y[m], spec.reduction,
                                   None if w is None else w[m])
        dz = np.zeros_like(logits)
        dz[m] = res.dz
        return losses.LossResult(res.value, dz)
    y = check_targets(Y, spec, (B,), logits.dtype)
    w = check_sample_weight(sample_weight, spec, B, 1, logits.dtype)
    return losses.loss_and_grad(spec.loss, logits, y, spec.reduction, w)


# ----------------------------------------------------------------------------- backward


def backward(
    params: Mapping[str, Array],
    dlogits: ArrayLike,
    cache: Cache,
    *,
    dh_n: ArrayLike | None = None,
) -> Gradients:
    """Backpropagation through time, eqs. (16)-(20).

    Parameters
    ----------
    params : dict
        The parameters given to :func:`forward`.
    dlogits : (B, O) or (B, T, O)
        ``dL/dz``, the gradient with respect to the head's logits (for the fused losses, from
        :func:`loss_and_grad`; for any other objective, its own upstream gradient).  A computed
        value: NaN or inf entries are not refused, they propagate.
    cache : Cache
        From :func:`forward`.
    dh_n : (num_layers * num_directions, B, H), optional
        Gradient with respect to the final states ``out.h_n`` (e.g. from a later chunk).

    Returns
    -------
    Gradients
    """
    spec = cache.spec
    T, B = cache.steps, cache.batch_size
    H, nd, O = spec.hidden_size, spec.num_directions, spec.output_size
    dtype = cache.hbufs[0].dtype
    shape = (B, T, O) if spec.per_step_output else (B, O)
    # gradients flowing backwards may be non-finite (an overflowed forward pass): they propagate
    dz = as_float_array("dlogits", dlogits, dtype, finite=False)
    if dz.shape != shape:
        raise ValueError(f"dlogits must have shape {shape} (the logits' shape); got {dz.shape}")
    dhn = None if dh_n is None else check_h0(dh_n, spec, B, dtype, "dh_n", finite=False)
    act = activations.get(spec.nonlinearity)
    W_hy = params["W_hy"]
    grads: Params = {}

    # the head, eq. (19) applied to the output layer
    if spec.per_step_output:
        dz = dz.transpose(1, 0, 2)                                          # (T, B, O)
    top2, dz2 = cache.top.reshape(-1, cache.top.shape[-1]), dz.reshape(-1, O)
    grads["W_hy"] = top2.T @ dz2
    grads["b_y"] = dz2.sum(axis=0)
    dtop = (dz2 @ W_hy.T).reshape(cache.top.shape)            # (T, B, H_top) or (B, H_top)

    dh0 = np.empty((spec.num_layers * nd, B, H), dtype=dtype)
    d_out: Array | None = dtop if spec.per_step_output else None   # dL/dH_t of each step, above
    d_inp: Array | None = None
    for layer in range(spec.num_layers - 1, -1, -1):
        inp = cache.inputs[layer]
        d_inp = np.zeros(inp.shape, dtype) if inp.ndim == 3 else None   # (T, B, D_l), eq. (20)
        for d, p in enumerate(spec.layer_keys(layer)):
            idx, rev = layer * nd + d, d == 1
            sl = slice(d * H, (d + 1) * H)
            dlast = dtop[:, sl] if d_out is None and layer == spec.num_layers - 1 else None
            if dhn is not None:
                dlast = dhn[idx] if dlast is None else dlast + dhn[idx]
            dH = None if d_out is None else d_out[:, :, sl]
            dZ, dh0[idx] = cell.backward(dH, cache.hbufs[idx], params[f"{p}.W_hh"], act,
                                         reverse=rev, dh_last=dlast, mask=cache.mask)  # (16)-(18)
            dZ2 = dZ.reshape(T * B, H)
            prev = cell.previous(cache.hbufs[idx], rev).reshape(T * B, H)
            grads[f"{p}.W_hh"] = prev.T @ dZ2                               # eq. (19)
            grads[f"{p}.b_h"] = dZ2.sum(axis=0)
            W_xh = params[f"{p}.W_xh"]
            if inp.ndim == 2:                                               # ids, eq. (21)
                grads[f"{p}.W_xh"] = np.zeros_like(W_xh)
                np.add.at(grads[f"{p}.W_xh"], inp.reshape(-1), dZ2)
            else:
                grads[f"{p}.W_xh"] = inp.reshape(T * B, -1).T @ dZ2         # eq. (19)
                assert d_inp is not None
                d_inp += (dZ2 @ W_xh.T).reshape(T, B, -1)                   # eq. (20)
        d_out = d_inp
    grads = {k: grads[k] for k in params}          # the parameters' key order
    return Gradients(grads, input_grad_layout(spec, d_inp), dh0)


def input_grad_layout(spec: RNNSpec, d_inp: Array | None) -> Array | None:
    """``dL/dX`` in the layout of ``X`` from the time-first gradient of the first layer's input
    (summed over the steps that read it for one-to-many)."""
    if d_inp is None:
        return None
    if spec.setup == "one_to_many":
        return d_inp.sum(axis=0) if spec.feed == "every" else d_inp[0].copy()     # (B, D)
    return np.ascontiguousarray(d_inp.transpose(1, 0, 2))                         # (B, T, D)


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
    sample_weight: ArrayLike | None = None,
) -> tuple[float, Gradients, Output]:
    """Forward, loss and BPTT in one call: ``(loss, gradients, output)``; ``sample_weight`` as
    in :func:`loss_and_grad`."""
    out, cache = forward(params, X, spec, h0=h0, mask=mask, lengths=lengths, steps=steps)
    res = loss_and_grad(spec, out, Y, mask=mask, lengths=lengths, sample_weight=sample_weight)
    return res.value, backward(params, res.dz, cache), out
