"""The whole network: stacked (bidirectional) layers, the head, the set-ups, masks.

The pure core of the library (docs/derivation.md, sections 3-5)::

    out, cache = forward(params, X, spec, h0=None, mask=None)        # out.y, out.logits, out.h_n
    res = loss_and_grad(spec, out, Y, mask=...)    # res.value, res.dz = dL/dlogits
    g = backward(params, res.dz, cache)                              # g.params, g.X, g.h0

Nothing is mutated and no per-step Python objects are made: the cache is a named tuple of stacked
arrays.  Public arrays are batch first; inside, everything is time first (``(T, B, H)``) so that
each step is one contiguous ``(B, H)`` block, and every product that does not depend on the
recurrence (input projections, head, weight gradients, ``dX``) is one GEMM over ``T * B`` rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import activations, cell, losses
from .params import Params, check_params
from .spec import RNNSpec

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


# ----------------------------------------------------------------------------- validation


def _as_float_array(name: str, a: ArrayLike, dtype: np.dtype) -> Array:
    arr = np.asarray(a)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be a real numeric array; got dtype {arr.dtype}")
    arr = arr.astype(dtype, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _check_batch_steps(B: int, T: int) -> None:
    if B == 0:
        raise ValueError("empty batch: X has B = 0 sequences; expected B >= 1")
    if T == 0:
        raise ValueError("X has T = 0 steps; expected T >= 1")


def _prepare_input(
    X: ArrayLike, spec: RNNSpec, dtype: np.dtype, steps: int | None
) -> tuple[NDArray[Any], int, int]:
    """Validate ``X`` and return it time first: ``(T, B, D)`` floats or ``(T, B)`` ids."""
    D = spec.input_size
    if spec.input_kind == "index":
        ids = np.asarray(X)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(
                f"X must hold integer ids for input_kind='index'; got dtype {ids.dtype}"
            )
        if ids.ndim != 2:
            raise ValueError(f"X must be (B, T) ids for input_kind='index'; got shape {ids.shape}")
        B, T = ids.shape
        _check_batch_steps(B, T)
        if ids.min() < 0 or ids.max() >= D:
            raise ValueError(
                f"X ids must lie in [0, {D}) (input_size); got range [{ids.min()}, {ids.max()}]"
            )
        return np.ascontiguousarray(ids.T, dtype=np.intp), B, T
    if spec.setup == "one_to_many":
        x = np.asarray(X)
        if x.ndim != 2 or x.shape[1] != D:
            raise ValueError(f"X must be (B, {D}) for setup='one_to_many'; got shape {x.shape}")
        if steps is None:
            raise ValueError("setup='one_to_many' needs steps=T, the number of output steps")
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
            raise TypeError(f"steps must be an int; got {type(steps).__name__}")
        B, T = x.shape[0], int(steps)
        _check_batch_steps(B, T)
        x = _as_float_array("X", x, dtype)
        seq = np.zeros((T, B, D), dtype=dtype)
        if spec.feed == "every":
            seq[:] = x          # seed 000: the same vector at every step
        else:
            seq[0] = x          # only at the first step
        return seq, B, T
    if steps is not None:
        raise ValueError(f"steps is only used with setup='one_to_many'; got setup={spec.setup!r}")
    x = np.asarray(X)
    if x.ndim != 3 or x.shape[2] != D:
        raise ValueError(f"X must be (B, T, {D}); got shape {x.shape}")
    B, T = x.shape[:2]
    _check_batch_steps(B, T)
    x = _as_float_array("X", x, dtype)
    return np.ascontiguousarray(x.transpose(1, 0, 2)), B, T


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


def _check_h0(h0: ArrayLike | None, spec: RNNSpec, B: int, dtype: np.dtype) -> Array:
    shape = (spec.num_layers * spec.num_directions, B, spec.hidden_size)
    if h0 is None:
        return np.zeros(shape, dtype=dtype)
    h = _as_float_array("h0", h0, dtype)
    if h.shape != shape:
        raise ValueError(
            f"h0 must be (num_layers * num_directions, B, H) = {shape}; got {h.shape}"
        )
    return h


# ----------------------------------------------------------------------------- forward


def _project(inp: NDArray[Any], W_xh: Array, b_h: Array) -> Array:
    """Input projection of every step in one product, eq. (5): ``(T, B, D) -> (T, B, H)``."""
    if inp.ndim == 2:                                  # ids (T, B): a row lookup, eq. (21)
        A = W_xh[inp]
    else:
        T, B, D = inp.shape
        A = (inp.reshape(T * B, D) @ W_xh).reshape(T, B, -1)
    A += b_h
    return A


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
    x_tb, B, T = _prepare_input(X, spec, dtype, steps)
    m_bt = make_mask(B, T, mask=mask, lengths=lengths)
    m_tb = None if m_bt is None else np.ascontiguousarray(m_bt.T)
    h0_all = _check_h0(h0, spec, B, dtype)
    act = activations.get(spec.nonlinearity)

    inputs: list[NDArray[Any]] = [x_tb]
    hbufs: list[Array] = []
    finals: list[Array] = []
    inp: NDArray[Any] = x_tb
    for layer in range(spec.num_layers):
        outs = []
        for d, p in enumerate(spec.layer_keys(layer)):
            A = _project(inp, params[f"{p}.W_xh"], params[f"{p}.b_h"])         # (T, B, H)
            rev = d == 1
            hb = cell.forward(A, params[f"{p}.W_hh"], act,
                              h0_all[layer * spec.num_directions + d], reverse=rev, mask=m_tb)
            hbufs.append(hb)
            outs.append(cell.outputs(hb, rev))
            finals.append(cell.final(hb, rev))
        inp = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)   # (T, B, H or 2H)
        if layer + 1 < spec.num_layers:
            inputs.append(inp)

    W_hy, b_y = params["W_hy"], params["b_y"]
    top: Array
    if spec.per_step_output:
        top = inp                                                           # (T, B, H_top)
        z_tb = (top.reshape(T * B, -1) @ W_hy).reshape(T, B, -1)
        z_tb += b_y                                                         # eq. (8)
        logits = np.ascontiguousarray(z_tb.transpose(1, 0, 2))              # (B, T, O)
    else:
        last = finals[-spec.num_directions:]
        top = last[0].copy() if len(last) == 1 else np.concatenate(last, axis=1)  # (B, H_top)
        logits = top @ W_hy
        logits += b_y                                                       # (B, O), eq. (8)
    y = losses.output(spec.loss, logits.reshape(-1, spec.output_size)).reshape(logits.shape)
    out = Output(y=y, logits=logits, h_n=np.stack(finals))
    cache = Cache(spec, tuple(inputs), tuple(hbufs), top, m_tb, B, T)
    return out, cache


# ----------------------------------------------------------------------------- loss


def _check_targets(
    Y: ArrayLike, spec: RNNSpec, lead: tuple[int, ...], dtype: np.dtype
) -> NDArray[Any]:
    """Validate targets with leading shape ``lead`` ((B,) or (B, T))."""
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
    if y.shape != lead + (O,):
        kind = "class labels of shape " + str(lead) + " or " if spec.loss == "softmax_ce" else ""
        raise ValueError(f"targets must be {kind}floats of shape {lead + (O,)}; got {y.shape}")
    y = _as_float_array("targets", y, dtype)
    if spec.loss in ("softmax_ce", "sigmoid_bce") and (y.min() < 0 or y.max() > 1):
        raise ValueError(
            f"{spec.loss} targets must be probabilities in [0, 1]; got range [{y.min()}, {y.max()}]"
        )
    return y


def loss_and_grad(
    spec: RNNSpec,
    out: Output,
    Y: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    lengths: ArrayLike | None = None,
) -> losses.LossResult:
    """The loss of ``out`` against targets ``Y`` and its gradient ``dL/dlogits`` (eqs. 9-15).

    Targets per set-up: many-to-one ``(B,)`` labels or ``(B, O)``; many-to-many and one-to-many
    ``(B, T)`` labels or ``(B, T, O)``; many-to-one with ``label_steps="all"`` takes the sequence
    targets ``(B,)`` / ``(B, O)`` and scores them at every real step (seed 000).  Padded steps are
    not scored.

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
        y = _check_targets(Y, spec, (B,) if seq_target else (B, T), logits.dtype)
        if seq_target:   # the same sequence target at every step, made explicit here
            y = np.broadcast_to(y[:, None], (B, T) + y.shape[1:])
        m = make_mask(B, T, mask=mask, lengths=lengths)
        if m is None:
            res = losses.loss_and_grad(spec.loss, logits.reshape(B * T, -1),
                                       y.reshape((B * T,) + y.shape[2:]), spec.reduction)
            return losses.LossResult(res.value, res.dz.reshape(logits.shape))
        res = losses.loss_and_grad(spec.loss, logits[m], y[m], spec.reduction)
        dz = np.zeros_like(logits)
        dz[m] = res.dz
        return losses.LossResult(res.value, dz)
    y = _check_targets(Y, spec, (B,), logits.dtype)
    return losses.loss_and_grad(spec.loss, logits, y, spec.reduction)


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
        :func:`loss_and_grad`; for any other objective, its own upstream gradient).
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
    H, O, nd = spec.hidden_size, spec.output_size, spec.num_directions
    dtype = cache.hbufs[0].dtype
    shape = (B, T, O) if spec.per_step_output else (B, O)
    dz = _as_float_array("dlogits", dlogits, dtype)
    if dz.shape != shape:
        raise ValueError(f"dlogits must have shape {shape} (the logits' shape); got {dz.shape}")
    dhn = None if dh_n is None else _check_h0(dh_n, spec, B, dtype)
    act = activations.get(spec.nonlinearity)
    W_hy = params["W_hy"]
    grads: Params = {}

    # head, eq. (19) applied to the output layer
    dtop_seq: Array | None = None
    dtop_last: Array | None = None
    if spec.per_step_output:
        dz_tb = np.ascontiguousarray(dz.transpose(1, 0, 2)).reshape(T * B, O)   # (T*B, O)
        grads["W_hy"] = cache.top.reshape(T * B, -1).T @ dz_tb
        grads["b_y"] = dz_tb.sum(axis=0)
        dtop_seq = (dz_tb @ W_hy.T).reshape(T, B, -1)                           # (T, B, H_top)
    else:
        grads["W_hy"] = cache.top.T @ dz
        grads["b_y"] = dz.sum(axis=0)
        dtop_last = dz @ W_hy.T                                                 # (B, H_top)

    dh0 = np.empty((spec.num_layers * nd, B, H), dtype=dtype)
    d_inp: Array | None = None
    for layer in range(spec.num_layers - 1, -1, -1):
        inp = cache.inputs[layer]
        d_below: Array | None = None
        for d, p in enumerate(spec.layer_keys(layer)):
            idx = layer * nd + d
            rev = d == 1
            sl = slice(d * H, (d + 1) * H)
            if layer == spec.num_layers - 1:
                dH = None if dtop_seq is None else dtop_seq[:, :, sl]
                dlast = None if dtop_last is None else dtop_last[:, sl]
            else:
                assert d_inp is not None
                dH, dlast = d_inp[:, :, sl], None
            if dhn is not None:
                dlast = dhn[idx] if dlast is None else dlast + dhn[idx]
            hb = cache.hbufs[idx]
            W_hh, W_xh = params[f"{p}.W_hh"], params[f"{p}.W_xh"]
            dZ, dh0[idx] = cell.backward(dH, hb, W_hh, act, reverse=rev, dh_last=dlast,
                                         mask=cache.mask)
            dZ2 = dZ.reshape(T * B, H)
            grads[f"{p}.W_hh"] = cell.previous(hb, rev).reshape(T * B, H).T @ dZ2   # eq. (19)
            grads[f"{p}.b_h"] = dZ2.sum(axis=0)                                     # eq. (19)
            if inp.ndim == 2:                                                       # ids, eq. (21)
                gW = np.zeros_like(W_xh)
                np.add.at(gW, inp.reshape(-1), dZ2)
                grads[f"{p}.W_xh"] = gW
                continue
            grads[f"{p}.W_xh"] = inp.reshape(T * B, -1).T @ dZ2                     # eq. (19)
            dx = (dZ2 @ W_xh.T).reshape(T, B, -1)                                   # eq. (20)
            d_below = dx if d_below is None else d_below + dx
        d_inp = d_below

    grads = {k: grads[k] for k in params}          # the parameters' key order
    dX: Array | None = None
    if d_inp is not None:
        if spec.setup == "one_to_many":
            dX = d_inp.sum(axis=0) if spec.feed == "every" else d_inp[0].copy()   # (B, D)
        else:
            dX = np.ascontiguousarray(d_inp.transpose(1, 0, 2))                 # (B, T, D)
    return Gradients(grads, dX, dh0)


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
) -> tuple[float, Gradients, Output]:
    """Forward, loss and BPTT in one call: ``(loss, gradients, output)``."""
    out, cache = forward(params, X, spec, h0=h0, mask=mask, lengths=lengths, steps=steps)
    res = loss_and_grad(spec, out, Y, mask=mask, lengths=lengths)
    return res.value, backward(params, res.dz, cache), out
