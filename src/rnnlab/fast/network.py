"""The fast engine's network: the reference network's equations on buffers, threads and kernels.

:func:`forward`, :func:`loss` and :func:`backward` compute what :func:`rnnlab.core.network.forward`,
:func:`~rnnlab.core.network.loss_and_grad` and :func:`~rnnlab.core.network.backward` compute
(eqs. 5-21), on validated time-first inputs, with every array one of a :class:`Buffers`' and the
loops and large products run by a :class:`~rnnlab.fast.pool.Runner`:

* the input projection is written into the state slots and the recurrence overwrites it there
  (:func:`rnnlab.fast.loops.forward_into`); a dense input carries a column of ones so that the
  bias is added inside the product, ``[x_t | 1] [W_xh; b_h]``;
* with the compiled kernels, float32 and one direction of dense inputs, the first layer runs on
  a joint buffer of rows ``[H_{t-1} | x_t | 1]`` (eq. 39): one product per step, one for its three
  gradients;
* a split runner runs the loops as compiled jobs on blocks of batch rows, without the GIL.

:class:`rnnlab.fast.workspace.Workspace` validates a batch and calls these; tests compare the
result with the reference engine on the shared grid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..core import activations, cell, losses
from ..core.activations import Activation
from ..core.network import Cache
from ..core.params import Params
from ..core.spec import RNNSpec
from . import kernels
from .buffers import Buffers
from .loops import backward_into, forward_into
from .pool import Runner

__all__ = ["backward", "check_windows", "forward", "loss", "project_into", "scatter_rows"]

Array = NDArray[np.floating]
Mask = NDArray[np.bool_]
Job = Callable[[int, int, bool], NDArray[np.int64]]


# ----------------------------------------------------------------------------- forward


def project_into(inp: NDArray[Any], W_xh: Array, b_h: Array, out: Array, run: Runner,
                 x1: Array | None = None) -> Array:
    """The input projection of every step, eq. (5) (eq. 21 for ids), into ``out`` ``(T, B, H)``,
    a state buffer's step slots.

    ``x1`` ``(T, B, D + 1)``, when given, is ``[inp | 1]`` (``inp`` its first ``D`` columns):
    then the bias is added inside the product, ``[x_t | 1] [W_xh; b_h]``, saving a pass.
    """
    T, B, H = out.shape
    if inp.ndim == 2:                                  # ids (T, B): a row lookup, eq. (21)
        # the bias is added to the (V, H) table, not to the (T, B, H) result: the same sums
        np.take(W_xh + b_h, inp, axis=0, out=out, mode="clip")   # ids validated
        return out
    o2 = out.reshape(T * B, H)
    if x1 is not None:
        return run.matmul(x1.reshape(T * B, -1), np.concatenate([W_xh, b_h[None]]),
                          o2).reshape(T, B, H)
    x2 = inp.reshape(T * B, -1)

    def piece(lo: int, hi: int) -> None:
        np.matmul(x2[lo:hi], W_xh, out=o2[lo:hi])     # (rows, D) x (D, H)
        o2[lo:hi] += b_h

    run.rows(T * B, 2.0 * x2.shape[1] * H, piece)
    return out


def forward(params: Mapping[str, Array], x_tb: NDArray[Any], m_tb: Mask | None, h0_all: Array,
            spec: RNNSpec, bufs: Buffers, run: Runner) -> Cache:
    """Eqs. (5)-(8) on validated, time-first inputs ``x_tb`` (``(T, B, D)`` or ``(T, B)`` ids).

    Writes the logits into ``bufs.logits`` (``(T, B, O)`` or ``(B, O)``, time first) and
    returns the cache :func:`backward` reads (the reference network's :class:`Cache`).
    """
    T, B = x_tb.shape[:2]
    nd = spec.num_directions
    act = activations.get(spec.nonlinearity)
    inputs: list[NDArray[Any]] = [x_tb]
    hbufs: list[Array] = []
    finals: list[Array] = []
    inp: NDArray[Any] = x_tb
    for layer in range(spec.num_layers):
        outs = []
        for d, p in enumerate(spec.layer_keys(layer)):
            idx, rev = layer * nd + d, d == 1
            hb = bufs.hbufs[idx]
            W_hh, W_xh, b_h = params[f"{p}.W_hh"], params[f"{p}.W_xh"], params[f"{p}.b_h"]
            if not (idx == 0 and _first_layer_joint(W_hh, W_xh, b_h, act, h0_all[0], hb, m_tb,
                                                    bufs, run)):
                x1 = bufs.x1 if layer == 0 and inp is bufs.x else None
                project_into(inp, W_xh, b_h, cell.outputs(hb, rev), run, x1)   # (T, B, H)
                run.recurrence(B, _forward_rows(W_hh, act, h0_all[idx], rev, m_tb, hb,
                                                run.compiled),
                               _forward_job(W_hh, act, h0_all[idx], rev, m_tb, hb, run))
            hbufs.append(hb)
            outs.append(cell.outputs(hb, rev))
            finals.append(cell.final(hb, rev))
        if len(outs) == 1:
            inp = outs[0]
        elif layer + 1 < spec.num_layers or spec.per_step_output:
            inp = np.concatenate(outs, axis=2, out=bufs.cat[layer])           # (T, B, 2H)
        if layer + 1 < spec.num_layers:
            inputs.append(inp)

    W_hy, b_y = params["W_hy"], params["b_y"]
    top: Array
    if spec.per_step_output:
        top = inp                                                           # (T, B, H_top)
        z = run.matmul(top.reshape(T * B, -1), W_hy,
                       bufs.logits.reshape(T * B, -1)).reshape(T, B, -1)
    else:
        top = bufs.top
        np.concatenate(finals[-nd:], axis=1, out=top)                       # (B, H_top)
        z = np.matmul(top, W_hy, out=bufs.logits)
    z += b_y                                                                # eq. (8)
    return Cache(spec, tuple(inputs), tuple(hbufs), top, m_tb, B, T)


def _first_layer_joint(W_hh: Array, W_xh: Array, b_h: Array, act: Activation, h0: Array,
                       hb: Array, m_tb: Mask | None, bufs: Buffers, run: Runner) -> bool:
    """Run the first layer on its joint buffer when the workspace deferred the input copy into
    it (True), or do that copy and leave the layer to the usual path (False)."""
    if bufs.pending is None:
        return False
    x_in, bufs.pending = bufs.pending, None
    assert bufs.x is not None
    if not (run.compiled and kernels.supports(act.name, hb.dtype, m_tb is not None)):
        np.copyto(bufs.x, x_in)                       # the copy the workspace deferred
        return False
    # each step's product [H_{t-1} | x_t | 1] [W_hh; W_xh; b_h] is Z_t, eq. (39); the compiled
    # loop first copies its rows of x_in (T, B, D) into the joint rows
    W = np.ascontiguousarray(W_hh)
    # C-contiguous whatever the parameters' layout (a transposed view, a Fortran-ordered copy)
    Wj = np.ascontiguousarray(np.concatenate([W_hh, W_xh, b_h[None]]))  # (H + D + 1, H)
    hb[0] = h0

    def job(lo: int, hi: int, flush: bool) -> NDArray[np.int64]:
        return kernels.forward_job(hb[:, lo:hi], W, act.name, False, flush,
                                   run.block(hi - lo, W.shape[0]), Wj,
                                   x_in[:, lo:hi])

    def rows(lo: int, hi: int) -> None:
        kernels.forward(hb[:, lo:hi], W, act.name, False, Wj, x_in[:, lo:hi])

    run.recurrence(hb.shape[1], rows, job)
    return True


def _forward_rows(W_hh: Array, act: Activation, h0: Array, rev: bool, m_tb: Mask | None,
                  hb: Array, compiled: bool) -> Callable[[int, int], object]:
    """The recurrence of one layer and direction on batch rows ``lo:hi`` (they never interact)."""
    def rows(lo: int, hi: int) -> None:
        forward_into(hb[:, lo:hi], W_hh, act, h0[lo:hi], reverse=rev,
                     mask=None if m_tb is None else m_tb[:, lo:hi], compiled=compiled)
    return rows


def _forward_job(W_hh: Array, act: Activation, h0: Array, rev: bool, m_tb: Mask | None,
                 hb: Array, run: Runner) -> Job | None:
    """:func:`_forward_rows` as compiled jobs (the projections in ``hb``'s step slots), or None
    where the kernels do not apply."""
    if not (run.jobs and kernels.supports(act.name, hb.dtype, m_tb is not None)):
        return None
    W = np.ascontiguousarray(W_hh)

    def job(lo: int, hi: int, flush: bool) -> NDArray[np.int64]:
        cell.initial(hb, rev)[lo:hi] = h0[lo:hi]
        return kernels.forward_job(hb[:, lo:hi], W, act.name, rev, flush,
                                   run.block(hi - lo, W.shape[0]))
    return job


# ----------------------------------------------------------------------------- loss


def loss(spec: RNNSpec, z: Array, y: NDArray[Any], m_tb: Mask | None, bufs: Buffers,
         run: Runner, weight: Array | None = None) -> tuple[float, Array]:
    """The loss of time-first logits ``z`` (``(T, B, O)`` or ``(B, O)``) and ``dL/dz``, eqs.
    (9)-(15), as :func:`rnnlab.core.network.loss_and_grad` computes them, into ``bufs.dz``;
    ``y`` the targets, validated (:func:`rnnlab.core.inputs.check_targets`), batch first;
    ``weight`` the validated sample weights, ``(B,)`` or ``(B, T)`` (eq. 15w).

    Returns the value and ``dL/dz`` as ``(T * B, O)`` rows (or ``(B, O)``).
    """
    O = spec.output_size
    w_rows: Array | None = None
    if z.ndim == 3:
        T, B = z.shape[:2]
        y_tb = (np.broadcast_to(y[None], (T,) + y.shape) if spec.setup == "many_to_one"
                else np.swapaxes(y, 0, 1))                         # (T, B) or (T, B, O)
        rows, dz = z.reshape(T * B, O), bufs.dz.reshape(T * B, O)
        y_rows = y_tb.reshape((T * B,) + y_tb.shape[2:])
        if weight is not None:                                     # rows are (t, b): time first
            w_tb = np.broadcast_to(weight[None], (T, B)) if weight.ndim == 1 else weight.T
            w_rows = np.ascontiguousarray(w_tb).reshape(T * B)
        if m_tb is not None:                                       # padded steps not scored
            sel = m_tb.reshape(-1)
            res = losses.loss_and_grad(spec.loss, rows[sel], y_rows[sel], spec.reduction,
                                       None if w_rows is None else w_rows[sel])
            dz.fill(0.0)
            dz[sel] = res.dz
            return res.value, dz
    else:
        rows, dz, y_rows, w_rows = z, bufs.dz, y, weight
    if w_rows is not None:
        res = losses.loss_and_grad(spec.loss, rows, y_rows, spec.reduction, w_rows)
        np.copyto(dz, res.dz)
        return res.value, dz
    if spec.loss == "softmax_ce" and y_rows.ndim == 1:
        denom = losses.denominator(spec.loss, rows, spec.reduction)
        tmp = bufs.loss_tmp.reshape(rows.shape)
        parts: dict[int, float] = {}

        def piece(lo: int, hi: int) -> None:        # rows are independent: the same dz
            parts[lo] = losses.softmax_ce_labels(rows[lo:hi], y_rows[lo:hi], denom, dz[lo:hi],
                                                 tmp[lo:hi])

        run.rows(rows.shape[0], 40.0 * rows.shape[1], piece)   # ~40 flop-equivalents per entry
        return sum(parts[k] for k in sorted(parts)), dz
    res = losses.loss_and_grad(spec.loss, rows, y_rows, spec.reduction)
    np.copyto(dz, res.dz)
    return res.value, dz


# ----------------------------------------------------------------------------- backward


def scatter_rows(ids: NDArray[np.intp], dZ2: Array, out: Array) -> Array:
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


def check_windows(windows: Sequence[tuple[int, ...]], T: int, spec: RNNSpec) -> None:
    """Check truncation windows ``(start, score, stop)`` for :func:`backward` (as
    :func:`rnnlab.learning.tbptt.scored_windows` makes them): a unidirectional network,
    ``0 <= start < stop <= T`` and ``0 <= score < stop``, scored ranges ``[score, stop)`` in
    order without overlap; with a loss at every step ``start <= score`` (``k2 >= k1``) and they
    cover ``[0, T)``; with a loss at the last step the last one ends at ``T`` (and may start
    after its score, ``k2 < k1``: only the final step is scored)."""
    if spec.num_directions != 1:
        raise ValueError("truncated BPTT walks time forwards and needs a unidirectional network "
                         "(bidirectional=False)")
    if not windows:
        raise ValueError("truncated BPTT needs at least one window")
    prev = 0
    per_step = spec.per_step_output
    for w in windows:
        if (len(w) != 3 or not (0 <= w[0] < w[2] <= T and 0 <= w[1] < w[2]) or w[1] < prev
                or (per_step and w[0] > w[1])):
            raise ValueError(f"a window is (start, score, stop) with 0 <= start < stop <= T = {T}, "
                             f"score < stop (and start <= score with a loss at every step), "
                             f"scored ranges in order; got {list(windows)}")
        prev = w[2]
    if spec.per_step_output and [(w[1], w[2]) for w in windows] != list(zip(
            [0] + [w[2] for w in windows[:-1]], [w[2] for w in windows], strict=True)):
        raise ValueError(f"with a loss at every step the scored ranges must cover [0, {T}) in "
                         f"order; got {list(windows)}")
    if windows[-1][2] != T:
        raise ValueError(f"the last window must end at T = {T}; got {list(windows)}")


def backward(params: Mapping[str, Array], dz: Array, cache: Cache, bufs: Buffers,
             input_grad: bool, run: Runner,
             windows: Sequence[tuple[int, ...]] | None = None
             ) -> tuple[Params, Array | None, Array]:
    """Eqs. (16)-(21) from ``dz = dL/dlogits``, time first: ``(T * B, O)`` rows or ``(B, O)``.

    Returns the parameter gradients (in the layout order, not yet the parameters' key order), the
    gradient of the first layer's time-first input (``None`` for ids or when not
    ``input_grad``) and ``dL/dh0``; every array is one of ``bufs``.  With ``windows``
    (:func:`check_windows`) the truncated gradient of BPTT(k2; k1), eq. (24): see
    :func:`_windowed`.
    """
    spec = cache.spec
    T, B = cache.steps, cache.batch_size
    H, nd = spec.hidden_size, spec.num_directions
    act = activations.get(spec.nonlinearity)
    W_hy = params["W_hy"]
    grads: Params = {}
    g = bufs.grads

    # head, eq. (19) applied to the output layer
    dtop_seq: Array | None = None
    dtop_last: Array | None = None
    if spec.per_step_output:
        grads["W_hy"] = run.matmul(cache.top.reshape(T * B, -1).T, dz, g["W_hy"])
        grads["b_y"] = run.column_sum(dz, g["b_y"])
        dtop_seq = run.matmul(dz, W_hy.T, bufs.dtop.reshape(T * B, -1)).reshape(T, B, -1)
    else:
        grads["W_hy"] = np.matmul(cache.top.T, dz, out=g["W_hy"])
        grads["b_y"] = np.sum(dz, axis=0, out=g["b_y"])
        dtop_last = np.matmul(dz, W_hy.T, out=bufs.dtop)                     # (B, H_top)

    dh0 = bufs.dh0
    d_inp: Array | None = None
    if windows is not None:
        d_inp = _windowed(params, cache, bufs, run, windows, dtop_seq, dtop_last, input_grad,
                          grads)
        return grads, d_inp, dh0
    for layer in range(spec.num_layers - 1, -1, -1):
        inp = cache.inputs[layer]
        need_dx = inp.ndim == 3 and (layer > 0 or input_grad)
        d_below: Array | None = None
        for d, p in enumerate(spec.layer_keys(layer)):
            idx, rev = layer * nd + d, d == 1
            sl = slice(d * H, (d + 1) * H)
            if layer == spec.num_layers - 1:
                dH = None if dtop_seq is None else dtop_seq[:, :, sl]
                dlast = None if dtop_last is None else dtop_last[:, sl]
            else:
                assert d_inp is not None
                dH, dlast = d_inp[:, :, sl], None
            hb = cache.hbufs[idx]
            W_hh, W_xh = params[f"{p}.W_hh"], params[f"{p}.W_xh"]
            dZ = bufs.dZ
            joint = idx == 0 and bufs.joint is not None and cache.inputs[0] is bufs.x
            db_parts: list[Array] = []          # the jobs' column sums of dZ, eq. (19)
            run.recurrence(B, _backward_rows(dH, hb, W_hh, act, rev, dlast, cache.mask, dZ,
                                             dh0[idx], run.compiled),
                           _backward_job(dH, hb, W_hh, act, rev, dlast, cache.mask, dZ,
                                         dh0[idx], run, None if joint else db_parts))
            dZ2 = dZ.reshape(T * B, H)
            if joint:
                _joint_grads(dZ2, T, B, bufs, run)
                for key in (f"{p}.W_hh", f"{p}.W_xh", f"{p}.b_h"):
                    grads[key] = g[key]
            else:
                _layer_grads(p, inp, hb, rev, dZ2, T, B, db_parts, grads, bufs, run)
            if need_dx:                                                         # eq. (20)
                d_below = _input_grad(dZ2, W_xh, T, B, layer, d_below, bufs, run)
        d_inp = d_below
    return grads, d_inp, dh0


def _windowed(params: Mapping[str, Array], cache: Cache, bufs: Buffers, run: Runner,
              windows: Sequence[tuple[int, ...]], dtop_seq: Array | None,
              dtop_last: Array | None, input_grad: bool, grads: Params) -> Array | None:
    """The truncated backward pass of BPTT(k2; k1), eq. (24), for a unidirectional network.

    Window ``(s, a, b)`` backpropagates the losses of steps ``[a, b)`` through steps ``[s, b)``
    of every layer, top to bottom, with nothing flowing in from step ``b`` (later losses belong to
    later windows) or out through step ``s`` (the state before it is a constant), except into
    ``dL/dh0`` when ``s = 0``.  Each layer's ``dZ`` of all windows is summed into one ``(T, B, H)``
    array (``dZ^j`` is zero outside ``[s_j, b_j)``), from which the weight gradients are one
    product each, as in BPTT; the layer below a window reads that window's own ``dZ^j W_xh^T``.
    Windows that do not overlap (``k2 <= k1``) write their steps of the sum directly.
    """
    spec = cache.spec
    T, B = cache.steps, cache.batch_size
    H, L = spec.hidden_size, spec.num_layers
    act = activations.get(spec.nonlinearity)
    g = bufs.grads
    overlap = any(w2[0] < w1[2] for w1, w2 in zip(windows[:-1], windows[1:], strict=True))
    longest = max(b - s for s, _, b in windows)
    tot = bufs.layer_dZ(L)                                 # (T, B, H) per layer: sum of dZ^j
    for layer in range(L):
        if overlap:
            tot[layer].fill(0.0)
        else:                                              # steps no window reaches: zero
            covered = np.zeros(T, bool)
            for s, _, b in windows:
                covered[s:b] = True
            tot[layer][~covered] = 0.0
    dh0 = bufs.dh0
    dh0.fill(0.0)
    dh_start = bufs.scratch("dh_start", (B, H))
    for s, a, b in windows:
        n = b - s
        dH: Array | None = None
        dlast: Array | None = None
        if dtop_seq is not None:
            if a == s:
                dH = dtop_seq[s:b]
            else:                                          # steps [s, a) score nothing here
                dH = bufs.scratch("dH_top", (longest, B, H))[:n]
                dH[:a - s] = 0.0
                dH[a - s:] = dtop_seq[a:b]
        else:
            assert dtop_last is not None
            if b != T:
                continue                                   # a loss at the last step only
            dlast = dtop_last
        for layer in range(L - 1, -1, -1):
            p = spec.layer_keys(layer)[0]
            hb = cache.hbufs[layer][s:b + 1]               # states H_{s-1} .. H_{b-1}
            W_hh, W_xh = params[f"{p}.W_hh"], params[f"{p}.W_xh"]
            dZ = bufs.scratch("dZ_window", (longest, B, H))[:n] if overlap else tot[layer][s:b]
            mask = None if cache.mask is None else cache.mask[s:b]
            run.recurrence(B, _backward_rows(dH, hb, W_hh, act, False, dlast, mask, dZ,
                                             dh_start, run.compiled),
                           _backward_job(dH, hb, W_hh, act, False, dlast, mask, dZ, dh_start,
                                         run, None))
            if overlap:
                tot[layer][s:b] += dZ
            if s == 0:
                dh0[layer] += dh_start                     # the window reads h0 itself
            if layer > 0:                                  # eq. (20), this window's alone
                dH = run.matmul(dZ.reshape(n * B, H), W_xh.T, bufs.scratch(
                    f"dH_{layer}", (longest * B, W_xh.shape[0]))[:n * B]).reshape(n, B, -1)
                dlast = None
    d_inp: Array | None = None
    for layer in range(L - 1, -1, -1):
        p = spec.layer_keys(layer)[0]
        inp = cache.inputs[layer]
        dZ2 = tot[layer].reshape(T * B, H)
        if layer == 0 and bufs.joint is not None and cache.inputs[0] is bufs.x:
            _joint_grads(dZ2, T, B, bufs, run)
            for key in (f"{p}.W_hh", f"{p}.W_xh", f"{p}.b_h"):
                grads[key] = g[key]
        else:
            _layer_grads(p, inp, cache.hbufs[layer], False, dZ2, T, B, [], grads, bufs, run)
        if layer == 0 and input_grad and inp.ndim == 3:
            d_inp = _input_grad(dZ2, params[f"{p}.W_xh"], T, B, 0, None, bufs, run)
    return d_inp


def _joint_grads(dZ2: Array, T: int, B: int, bufs: Buffers, run: Runner) -> None:
    """``[dW_hh; dW_xh; db_h] = [H_{t-1} | x_t | 1]^T dZ`` over all steps, eq. (39): one product
    over the joint buffer, whose result the three gradients are views of."""
    assert bufs.joint is not None and bufs.joint_grad is not None
    run.matmul(bufs.joint[:T].reshape(T * B, -1).T, dZ2, bufs.joint_grad)


def _layer_grads(p: str, inp: NDArray[Any], hb: Array, rev: bool, dZ2: Array, T: int, B: int,
                 db_parts: list[Array], grads: Params, bufs: Buffers, run: Runner) -> None:
    """``dW_hh``, ``db_h`` and ``dW_xh`` of one layer and direction, eqs. (19) and (21)."""
    H, g = dZ2.shape[1], bufs.grads
    # the step that read h0 adds nothing when h0 = 0 (the default): its rows are skipped
    rows = (slice(0, (T - 1) * B) if rev else slice(B, T * B)) if (
        T > 1 and not cell.initial(hb, rev).any()) else slice(0, T * B)
    grads[f"{p}.W_hh"] = run.matmul(cell.previous(hb, rev).reshape(T * B, H)[rows].T,
                                    dZ2[rows], g[f"{p}.W_hh"])
    # db_h = 1^T dZ over all steps: the jobs' column sums, else a matrix-vector product (BLAS),
    # 2-5x faster than NumPy's column sum here
    if db_parts:
        grads[f"{p}.b_h"] = np.sum(db_parts, axis=0, out=g[f"{p}.b_h"])
    else:
        grads[f"{p}.b_h"] = run.vecmat(bufs.ones, dZ2, g[f"{p}.b_h"])
    if inp.ndim == 2:                                                           # ids, eq. (21)
        ids, gW = inp.reshape(-1), g[f"{p}.W_xh"]
        grads[f"{p}.W_xh"] = (kernels.scatter_rows(ids, dZ2, gW) if run.compiled
                              else scatter_rows(ids, dZ2, gW))
    else:
        grads[f"{p}.W_xh"] = run.matmul(inp.reshape(T * B, -1).T, dZ2, g[f"{p}.W_xh"])


def _input_grad(dZ2: Array, W_xh: Array, T: int, B: int, layer: int, d_below: Array | None,
                bufs: Buffers, run: Runner) -> Array:
    """``dL/dX`` of a layer's input, eq. (20): ``dZ W_xh^T``, summed over the directions."""
    D_in = W_xh.shape[0]
    if d_below is None:
        kept = bufs.d_inp[layer]
        assert kept is not None
        return run.matmul(dZ2, W_xh.T, kept.reshape(T * B, -1)).reshape(T, B, -1)
    assert bufs.dx is not None
    dx = run.matmul(dZ2, W_xh.T, bufs.dx[:T * B * D_in].reshape(T * B, D_in))
    d_below += dx.reshape(T, B, -1)
    return d_below


def _backward_rows(dH: Array | None, hb: Array, W_hh: Array, act: Activation, rev: bool,
                   dlast: Array | None, mask: Mask | None, dZ: Array, dh0: Array,
                   compiled: bool) -> Callable[[int, int], object]:
    """The backward recurrence of one layer and direction on batch rows ``lo:hi``, writing
    ``dZ[:, lo:hi]`` and ``dh0[lo:hi]``."""
    def rows(lo: int, hi: int) -> None:
        _, dh0[lo:hi] = backward_into(None if dH is None else dH[:, lo:hi], hb[:, lo:hi], W_hh,
                                      act, reverse=rev,
                                      dh_last=None if dlast is None else dlast[lo:hi],
                                      mask=None if mask is None else mask[:, lo:hi],
                                      out=dZ[:, lo:hi], compiled=compiled)
    return rows


def _backward_job(dH: Array | None, hb: Array, W_hh: Array, act: Activation, rev: bool,
                  dlast: Array | None, mask: Mask | None, dZ: Array, dh0: Array, run: Runner,
                  db_parts: list[Array] | None) -> Job | None:
    """:func:`_backward_rows` as compiled jobs, or None where the kernels do not apply; with
    ``db_parts`` each job also sums its block of ``dZ`` over steps and rows into an array
    appended to it (in the order of the blocks), whose sum is the bias gradient."""
    if not (run.jobs and dh0.flags.c_contiguous
            and kernels.supports(act.name, hb.dtype, mask is not None)):
        return None
    W_T = np.ascontiguousarray(W_hh.T)          # one copy for every piece

    def job(lo: int, hi: int, flush: bool) -> NDArray[np.int64]:
        d = dh0[lo:hi]                            # dL/dH_T in, dL/dh0 out (loops.backward_into)
        if dlast is None:
            d.fill(0.0)
        else:
            np.copyto(d, dlast[lo:hi])
        db = None
        if db_parts is not None:
            db = np.zeros(W_T.shape[0], np.float32)
            db_parts.append(db)
        return kernels.backward_job(hb[:, lo:hi], dZ[:, lo:hi],
                                    None if dH is None else dH[:, lo:hi], W_T, d, act.name,
                                    rev, flush, run.block(hi - lo, W_T.shape[0]), db)
    return job
