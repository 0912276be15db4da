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

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import activations, cell, losses
from . import kernels as _kernels
from .parallel import SERIAL, Runner, ThreadOption
from .params import Params, check_params
from .spec import RNNSpec

if TYPE_CHECKING:
    from .workspace import _Buffers

__all__ = ["Cache", "Gradients", "Output", "ThreadOption", "Workspace", "backward", "forward",
           "loss_and_grad", "make_mask", "value_and_grad"]

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
    X: ArrayLike, spec: RNNSpec, dtype: np.dtype, steps: int | None,
    out: Callable[[tuple[int, ...]], NDArray[Any] | None] | None = None,
    copy: Callable[[Array, Array], object] = np.copyto,
) -> tuple[NDArray[Any], int, int]:
    """Validate ``X`` and return it time first: ``(T, B, D)`` floats or ``(T, B)`` ids.

    ``out(shape)``, if given, returns a buffer to write the time-first copy into (or None);
    ``copy(buffer, view)`` writes a dense input there (a workspace may defer it, see
    :meth:`Workspace._copy_input`).
    """
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
        buf = None if out is None else out((T, B))
        if buf is None:
            return np.ascontiguousarray(ids.T, dtype=np.intp), B, T
        np.copyto(buf, ids.T, casting="unsafe")
        return buf, B, T
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
    buf = None if out is None else out((T, B, D))
    if buf is None:
        return np.ascontiguousarray(x.transpose(1, 0, 2)), B, T
    copy(buf, x.transpose(1, 0, 2))
    return buf, B, T


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
    T, B = inp.shape[:2]
    A = np.empty((T, B, W_xh.shape[1]), dtype=W_xh.dtype)
    return _project_into(inp, W_xh, b_h, A)


def _project_into(inp: NDArray[Any], W_xh: Array, b_h: Array, out: Array,
                  run: Runner = SERIAL, x1: Array | None = None) -> Array:
    """:func:`_project` written into ``out`` ``(T, B, H)``, a contiguous block (a state buffer's
    step slots, see :func:`rnnlab.cell.forward`).

    ``x1`` ``(T, B, D + 1)``, when given, is ``[inp | 1]`` (``inp`` is its view ``[:, :, :D]``):
    then the bias is added inside the product, ``[x_t | 1] [W_xh; b_h]``, saving a pass.
    """
    T, B, H = out.shape
    if inp.ndim == 2:                                  # ids (T, B): a row lookup, eq. (21)
        # the bias is added to the (V, H) table, not to the (T, B, H) result: the same sums
        np.take(W_xh + b_h, inp, axis=0, out=out, mode="clip")   # ids validated
        return out
    o2 = out.reshape(T * B, H)
    if x1 is not None:
        assert x1.shape == inp.shape[:2] + (inp.shape[2] + 1,) and cell._same_block(
            x1[:, :, :-1], inp), "x1 must be [inp | 1]"
        return run.matmul(x1.reshape(T * B, -1), np.concatenate([W_xh, b_h[None]]),
                          o2).reshape(T, B, H)
    x2 = inp.reshape(T * B, -1)

    def piece(lo: int, hi: int) -> None:
        np.matmul(x2[lo:hi], W_xh, out=o2[lo:hi])     # (rows, D) x (D, H)
        o2[lo:hi] += b_h

    run.rows(T * B, 2.0 * x2.shape[1] * H, piece)
    return out


def _with_ones(dtype: np.dtype, keep: list[Array]) -> Callable[[tuple[int, ...]], Array | None]:
    """A buffer for :func:`_prepare_input`: dense ``(T, B, D)`` inputs are written into the first
    ``D`` columns of a new ``(T, B, D + 1)`` array of ones, appended to ``keep``."""
    def buffer(shape: tuple[int, ...]) -> Array | None:
        if len(shape) != 3:
            return None
        x1 = np.ones(shape[:2] + (shape[2] + 1,), dtype)
        keep.append(x1)
        return x1[:, :, :-1]
    return buffer


def _forward_core(
    params: Mapping[str, Array], x_tb: NDArray[Any], m_tb: Mask | None, h0_all: Array,
    spec: RNNSpec, bufs: _Buffers | None, run: Runner = SERIAL, x1: Array | None = None,
) -> tuple[Array, list[Array], Cache]:
    """Eqs. (5)-(8) on validated, time-first inputs (``x1``: ``[x_tb | 1]``, see
    :func:`_project_into`).

    Returns the logits time first (``(T, B, O)`` or ``(B, O)``), the final state of every layer and
    direction, and the cache.  With ``bufs`` every array is one of its buffers; ``run`` runs the
    loops and the large products (split over threads in a :class:`Workspace`).
    """
    T, B = x_tb.shape[:2]
    H, nd = spec.hidden_size, spec.num_directions
    dtype = h0_all.dtype
    act = activations.get(spec.nonlinearity)
    inputs: list[NDArray[Any]] = [x_tb]
    hbufs: list[Array] = []
    finals: list[Array] = []
    inp: NDArray[Any] = x_tb
    for layer in range(spec.num_layers):
        outs = []
        for d, p in enumerate(spec.layer_keys(layer)):
            idx = layer * nd + d
            rev = d == 1
            hb = np.empty((T + 1, B, H), dtype) if bufs is None else bufs.hbufs[idx]
            W_hh, W_xh, b_h = params[f"{p}.W_hh"], params[f"{p}.W_xh"], params[f"{p}.b_h"]
            joint = False
            if idx == 0 and bufs is not None and bufs.pending is not None:
                # the workspace deferred the input copy into the joint buffer (_copy_input):
                # the compiled loop does it, or it is done here for the NumPy loops
                x_in, bufs.pending = bufs.pending, None
                joint = run.compiled and _kernels.supports(act.name, dtype, m_tb is not None)
                if joint:
                    _forward_joint(W_hh, W_xh, b_h, act, h0_all[0], hb, x_in, run)  # eq. (39)
                else:
                    np.copyto(bufs.x, x_in)               # the copy the workspace deferred
            if not joint:
                A = _project_into(inp, W_xh, b_h, cell.outputs(hb, rev), run,
                                  x1 if layer == 0 else None)             # (T, B, H), in place
                run.recurrence(B, _forward_rows(A, W_hh, act, h0_all[idx], rev, m_tb, hb,
                                                run.compiled),
                               _forward_job(W_hh, act, h0_all[idx], rev, m_tb, hb, run))
            hbufs.append(hb)
            outs.append(cell.outputs(hb, rev))
            finals.append(cell.final(hb, rev))
        if len(outs) == 1:
            inp = outs[0]
        elif layer + 1 < spec.num_layers or spec.per_step_output:
            inp = np.concatenate(outs, axis=2, out=None if bufs is None else bufs.cat[layer])
        if layer + 1 < spec.num_layers:
            inputs.append(inp)

    W_hy, b_y = params["W_hy"], params["b_y"]
    top: Array
    if spec.per_step_output:
        top = inp                                                           # (T, B, H_top)
        z = run.matmul(top.reshape(T * B, -1), W_hy,
                       np.empty((T * B, W_hy.shape[1]), dtype) if bufs is None
                       else bufs.logits.reshape(T * B, -1)).reshape(T, B, -1)
    else:
        last = finals[-nd:]
        top = (np.empty((B, nd * H), dtype) if bufs is None else bufs.top)
        np.concatenate(last, axis=1, out=top)                               # (B, H_top)
        z = np.matmul(top, W_hy, out=None if bufs is None else bufs.logits)
    z += b_y                                                                # eq. (8)
    return z, finals, Cache(spec, tuple(inputs), tuple(hbufs), top, m_tb, B, T)


def _forward_rows(A: Array, W_hh: Array, act: activations.Activation, h0: Array, rev: bool,
                  m_tb: Mask | None, hb: Array, compiled: bool) -> Callable[[int, int], object]:
    """The recurrence of one layer and direction on batch rows ``lo:hi`` (they never interact)."""
    def rows(lo: int, hi: int) -> None:
        cell.forward(A[:, lo:hi], W_hh, act, h0[lo:hi], reverse=rev,
                     mask=None if m_tb is None else m_tb[:, lo:hi], out=hb[:, lo:hi],
                     compiled=compiled)
    return rows


def _forward_job(W_hh: Array, act: activations.Activation, h0: Array, rev: bool,
                 m_tb: Mask | None, hb: Array,
                 run: Runner) -> Callable[[int, int, bool], NDArray[np.int64]] | None:
    """:func:`_forward_rows` as compiled jobs (the projections in ``hb``'s step slots), or None
    where the kernels do not apply."""
    if not (run.jobs and _kernels.supports(act.name, hb.dtype, m_tb is not None)):
        return None
    W = np.ascontiguousarray(W_hh)
    slot = hb.shape[0] - 1 if rev else 0              # h0's slot, see cell.forward

    def job(lo: int, hi: int, flush: bool) -> NDArray[np.int64]:
        hb[slot, lo:hi] = h0[lo:hi]
        return _kernels.forward_job(hb[:, lo:hi], W, act.name, rev, flush,
                                    _kernels.column_block(hi - lo, W.shape[0]))
    return job


def _forward_joint(W_hh: Array, W_xh: Array, b_h: Array, act: activations.Activation,
                   h0: Array, hb: Array, x: Array, run: Runner) -> None:
    """The first layer's forward loop on its joint buffer (``hb`` its state view): the loop
    copies its rows of ``x`` ``(T, B, D)`` into the joint rows, then each step's product
    ``[H_{t-1} | x_t | 1] [W_hh; W_xh; b_h]`` is ``Z_t``, eq. (39): no projection pass."""
    W = np.ascontiguousarray(W_hh)
    Wj = np.concatenate([W_hh, W_xh, b_h[None]])                         # (H + D + 1, H)
    hb[0] = h0

    def job(lo: int, hi: int, flush: bool) -> NDArray[np.int64]:
        return _kernels.forward_job(hb[:, lo:hi], W, act.name, False, flush,
                                    _kernels.column_block(hi - lo, W.shape[0]), Wj,
                                    x[:, lo:hi])

    def rows(lo: int, hi: int) -> None:
        _kernels.forward(hb[:, lo:hi], W, act.name, False, Wj, x[:, lo:hi])

    run.recurrence(hb.shape[1], rows, job)


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
    ones: list[Array] = []
    x_tb, B, T = _prepare_input(X, spec, dtype, steps, _with_ones(dtype, ones))
    m_bt = make_mask(B, T, mask=mask, lengths=lengths)
    m_tb = None if m_bt is None else np.ascontiguousarray(m_bt.T)
    h0_all = _check_h0(h0, spec, B, dtype)
    z, finals, cache = _forward_core(params, x_tb, m_tb, h0_all, spec, None,
                                     x1=ones[0] if ones else None)
    logits = np.ascontiguousarray(z.transpose(1, 0, 2)) if z.ndim == 3 else z   # batch first
    y = losses.output(spec.loss, logits.reshape(-1, spec.output_size)).reshape(logits.shape)
    out = Output(y=y, logits=logits, h_n=np.stack(finals))
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


def _scatter_rows(ids: NDArray[np.intp], dZ2: Array, out: Array) -> Array:
    """``out[v] = sum of dZ2[i] over i with ids[i] == v``, eq. (21), in the order of ``i``.

    ``np.add.at`` adds row by row in that order; summing each id's rows, gathered in that order
    by a stable sort, adds the same numbers in the same order (a reduction over the leading axis
    is sequential), so the result is the same, bit for bit, and an order of magnitude faster
    while ids repeat (a vocabulary smaller than the batch).
    """
    out.fill(0.0)
    n = ids.shape[0]
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
    if starts.size * 8 > n:                       # few repeats: the sort does not pay
        np.add.at(out, ids, dZ2)
        return out
    rows = dZ2[order]
    ends = np.append(starts[1:], n)
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        np.sum(rows[lo:hi], axis=0, out=out[sid[lo]])
    return out


def _backward_core(
    params: Mapping[str, Array], dz: Array, cache: Cache, dhn: Array | None,
    bufs: _Buffers | None, input_grad: bool, run: Runner = SERIAL,
) -> tuple[Params, Array | None, Array]:
    """Eqs. (16)-(20) from ``dz = dL/dlogits``, time first: ``(T * B, O)`` rows or ``(B, O)``.

    Returns the parameter gradients (in the layout order, not yet the parameters' key order), the
    gradient of the first layer's time-first input (``None`` for ids or when not ``input_grad``)
    and ``dL/dh0``.  With ``bufs`` every array is one of its buffers; ``run`` as in
    :func:`_forward_core`.
    """
    spec = cache.spec
    T, B = cache.steps, cache.batch_size
    H, nd = spec.hidden_size, spec.num_directions
    dtype = cache.hbufs[0].dtype
    act = activations.get(spec.nonlinearity)
    W_hy = params["W_hy"]
    grads: Params = {}

    def gout(key: str) -> Array:
        return np.empty(params[key].shape, dtype) if bufs is None else bufs.grads[key]

    # head, eq. (19) applied to the output layer
    dtop_seq: Array | None = None
    dtop_last: Array | None = None
    if spec.per_step_output:
        grads["W_hy"] = run.matmul(cache.top.reshape(T * B, -1).T, dz, gout("W_hy"))
        grads["b_y"] = run.column_sum(dz, gout("b_y"))
        dtop_seq = run.matmul(dz, W_hy.T, np.empty((T * B, W_hy.shape[0]), dtype) if bufs is None
                              else bufs.dtop.reshape(T * B, -1)).reshape(T, B, -1)  # (T, B, H_top)
    else:
        grads["W_hy"] = np.matmul(cache.top.T, dz, out=gout("W_hy"))
        grads["b_y"] = np.sum(dz, axis=0, out=gout("b_y"))
        dtop_last = np.matmul(dz, W_hy.T, out=None if bufs is None else bufs.dtop)  # (B, H_top)

    dh0 = np.empty((spec.num_layers * nd, B, H), dtype=dtype) if bufs is None else bufs.dh0
    d_inp: Array | None = None
    for layer in range(spec.num_layers - 1, -1, -1):
        inp = cache.inputs[layer]
        need_dx = inp.ndim == 3 and (layer > 0 or input_grad)
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
            dZ = np.empty((T, B, H), dtype) if bufs is None else bufs.dZ
            joint = (idx == 0 and bufs is not None and bufs.joint is not None
                     and cache.inputs[0] is bufs.x)
            db_parts: list[Array] = []          # the jobs' column sums of dZ, eq. (19)
            run.recurrence(B, _backward_rows(dH, hb, W_hh, act, rev, dlast, cache.mask, dZ,
                                             dh0[idx], run.compiled),
                           _backward_job(dH, hb, W_hh, act, rev, dlast, cache.mask, dZ,
                                         dh0[idx], run, None if joint else db_parts))
            dZ2 = dZ.reshape(T * B, H)
            if joint:
                assert bufs is not None and bufs.joint is not None and bufs.joint_grad is not None
                # [dW_hh; dW_xh; db_h] = [H_{t-1} | x_t | 1]^T dZ over all steps, eq. (39),
                # one product over the joint buffer (the gradients are views of its result)
                run.matmul(bufs.joint[:T].reshape(T * B, -1).T, dZ2, bufs.joint_grad)
                for key in (f"{p}.W_hh", f"{p}.W_xh", f"{p}.b_h"):
                    grads[key] = gout(key)
            else:
                # eq. (19); the step that read h0 adds nothing when h0 = 0 (the default): skipped
                rows = (slice(0, (T - 1) * B) if rev else slice(B, T * B)) if (
                    T > 1 and not cell.initial(hb, rev).any()) else slice(0, T * B)
                grads[f"{p}.W_hh"] = run.matmul(
                    cell.previous(hb, rev).reshape(T * B, H)[rows].T, dZ2[rows],
                    gout(f"{p}.W_hh"))
                # db_h = 1^T dZ over all steps, eq. (19): the jobs' column sums, else a
                # matrix-vector product (BLAS), 2-5x faster than NumPy's column sum here
                if db_parts:
                    grads[f"{p}.b_h"] = np.sum(db_parts, axis=0, out=gout(f"{p}.b_h"))
                else:
                    ones = np.ones(T * B, dtype) if bufs is None else bufs.ones
                    grads[f"{p}.b_h"] = run.vecmat(ones, dZ2, gout(f"{p}.b_h"))
                if inp.ndim == 2:                                               # ids, eq. (21)
                    ids, gW = inp.reshape(-1), gout(f"{p}.W_xh")
                    grads[f"{p}.W_xh"] = (_kernels.scatter_rows(ids, dZ2, gW) if run.compiled
                                          else _scatter_rows(ids, dZ2, gW))
                    continue
                grads[f"{p}.W_xh"] = run.matmul(inp.reshape(T * B, -1).T, dZ2,
                                                gout(f"{p}.W_xh"))              # eq. (19)
            if not need_dx:
                continue
            D_in = W_xh.shape[0]
            if d_below is None:                                                 # eq. (20)
                kept = None if bufs is None else bufs.d_inp[layer]
                buf = (np.empty((T * B, D_in), dtype) if kept is None
                       else kept.reshape(T * B, -1))
                d_below = run.matmul(dZ2, W_xh.T, buf).reshape(T, B, -1)
            else:
                flat = np.empty(T * B * D_in, dtype) if bufs is None or bufs.dx is None else bufs.dx
                dx = run.matmul(dZ2, W_xh.T, flat[:T * B * D_in].reshape(T * B, D_in))
                d_below += dx.reshape(T, B, -1)
        d_inp = d_below
    return grads, d_inp, dh0


def _backward_rows(dH: Array | None, hb: Array, W_hh: Array, act: activations.Activation,
                   rev: bool, dlast: Array | None, mask: Mask | None, dZ: Array,
                   dh0: Array, compiled: bool) -> Callable[[int, int], object]:
    """The backward recurrence of one layer and direction on batch rows ``lo:hi``, writing
    ``dZ[:, lo:hi]`` and ``dh0[lo:hi]``."""
    def rows(lo: int, hi: int) -> None:
        _, dh0[lo:hi] = cell.backward(None if dH is None else dH[:, lo:hi], hb[:, lo:hi], W_hh,
                                      act, reverse=rev,
                                      dh_last=None if dlast is None else dlast[lo:hi],
                                      mask=None if mask is None else mask[:, lo:hi],
                                      out=dZ[:, lo:hi], compiled=compiled)
    return rows


def _backward_job(dH: Array | None, hb: Array, W_hh: Array, act: activations.Activation,
                  rev: bool, dlast: Array | None, mask: Mask | None, dZ: Array, dh0: Array,
                  run: Runner, db_parts: list[Array] | None,
                  ) -> Callable[[int, int, bool], NDArray[np.int64]] | None:
    """:func:`_backward_rows` as compiled jobs, or None where the kernels do not apply; with
    ``db_parts`` each job also sums its block of ``dZ`` over steps and rows into an array
    appended to it (in the order of the blocks), whose sum is the bias gradient."""
    if not (run.jobs and dh0.flags.c_contiguous
            and _kernels.supports(act.name, hb.dtype, mask is not None)):
        return None
    W_T = np.ascontiguousarray(W_hh.T)          # one copy for every piece

    def job(lo: int, hi: int, flush: bool) -> NDArray[np.int64]:
        d = dh0[lo:hi]                            # dL/dH_T in, dL/dh0 out (cell.backward)
        if dlast is None:
            d.fill(0.0)
        else:
            np.copyto(d, dlast[lo:hi])
        db = None
        if db_parts is not None:
            db = np.zeros(W_T.shape[0], np.float32)
            db_parts.append(db)
        return _kernels.backward_job(hb[:, lo:hi], dZ[:, lo:hi],
                                     None if dH is None else dH[:, lo:hi], W_T, d, act.name,
                                     rev, flush, _kernels.column_block(hi - lo, W_T.shape[0]),
                                     db)
    return job


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
    O = spec.output_size
    dtype = cache.hbufs[0].dtype
    shape = (B, T, O) if spec.per_step_output else (B, O)
    dz = _as_float_array("dlogits", dlogits, dtype)
    if dz.shape != shape:
        raise ValueError(f"dlogits must have shape {shape} (the logits' shape); got {dz.shape}")
    dhn = None if dh_n is None else _check_h0(dh_n, spec, B, dtype)
    if spec.per_step_output:
        dz = np.ascontiguousarray(dz.transpose(1, 0, 2)).reshape(T * B, O)     # (T*B, O)
    grads, d_inp, dh0 = _backward_core(params, dz, cache, dhn, None, True)
    grads = {k: grads[k] for k in params}          # the parameters' key order
    return Gradients(grads, _input_grad(spec, d_inp), dh0)


def _input_grad(spec: RNNSpec, d_inp: Array | None) -> Array | None:
    """``dL/dX`` in the layout of ``X`` from the time-first gradient of the first layer."""
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
) -> tuple[float, Gradients, Output]:
    """Forward, loss and BPTT in one call: ``(loss, gradients, output)``."""
    out, cache = forward(params, X, spec, h0=h0, mask=mask, lengths=lengths, steps=steps)
    res = loss_and_grad(spec, out, Y, mask=mask, lengths=lengths)
    return res.value, backward(params, res.dz, cache), out


# the fast path lives in its own module; rnnlab.network.Workspace names it here too
from .workspace import Workspace  # noqa: E402
