"""The fast path: a workspace that reuses its buffers across training steps (docs/performance.md).

::

    ws = Workspace(spec)
    for X, Y in batches:
        loss, grads = ws.value_and_grad(params, X, Y)   # the gradients of network.value_and_grad
        opt.update_(params, grads, state)

:class:`Workspace` runs the core of :mod:`rnnlab.network` (``_forward_core``, the time-first
loss, ``_backward_core``) on the arrays of :class:`_Buffers`, made once per batch shape, with the
threads of :mod:`rnnlab.parallel` and, when installed, the compiled loops of
:mod:`rnnlab.kernels`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import cell, losses
from . import kernels as _kernels
from .network import (
    Array,
    Cache,
    Mask,
    _backward_core,
    _check_h0,
    _check_targets,
    _forward_core,
    _input_grad,
    _prepare_input,
    make_mask,
)
from .parallel import (
    _BLAS,
    SERIAL,
    Runner,
    ThreadOption,
    _FlushDenormals,
    _LoopContext,
    _ThreadTuner,
    thread_options,
)
from .params import Params, check_params, shapes
from .spec import RNNSpec

__all__ = ["Workspace"]


class _Buffers:
    """Every array one training step needs, for one (spec, B, T, dtype); see :class:`Workspace`."""

    def __init__(self, spec: RNNSpec, B: int, T: int, dtype: np.dtype, input_grad: bool,
                 joint: bool = False) -> None:
        H, nd, L, O = spec.hidden_size, spec.num_directions, spec.num_layers, spec.output_size
        D = spec.input_size
        index = spec.input_kind == "index"
        self.key = (B, T, np.dtype(dtype))
        self.h0 = np.zeros((L * nd, B, H), dtype)
        # dense inputs time first with a column of ones: [x_t | 1] [W_xh; b_h] (_project_into)
        self.x1: Array | None = None
        self.x: NDArray[Any]
        # the joint buffer of the first layer (dense inputs, one direction; Workspace._buffers
        # decides): slot t holds the rows [H_{t-1} | x_t | 1], so that one product per step gives
        # Z_t and one product over all steps gives [dW_hh; dW_xh; db_h] into `joint_grad`,
        # eq. (39)
        self.joint: Array | None = None
        self.joint_grad: Array | None = None
        self.pending: Array | None = None      # the input the joint loop copies in (deferred)
        if joint:
            assert nd == 1 and not index, "a joint buffer needs one direction of dense inputs"
            self.joint = np.zeros((T + 1, B, H + D + 1), dtype)
            self.joint[:, :, H + D] = 1.0
            self.x1 = self.joint[:T, :, H:]
            self.x = self.joint[:T, :, H:H + D]
        elif index:
            self.x = np.empty((T, B), np.intp)
        else:
            self.x1 = np.ones((T, B, D + 1), dtype)
            self.x = self.x1[:, :, :D]
        self.hbufs = [self.joint[:, :, :H] if i == 0 and self.joint is not None
                      else np.empty((T + 1, B, H), dtype) for i in range(L * nd)]
        self.ones = np.ones(T * B, dtype)
        self.cat = [np.empty((T, B, nd * H), dtype) if nd == 2 else None for _ in range(L)]
        self.top = np.empty((B, nd * H), dtype)
        lead = (T, B) if spec.per_step_output else (B,)
        self.logits = np.empty(lead + (O,), dtype)
        self.dz = np.empty(lead + (O,), dtype)
        self.loss_tmp = np.empty(lead + (O,), dtype)
        self.dtop = np.empty(lead + (nd * H,), dtype)
        self.dZ = np.empty((T, B, H), dtype)        # shared by every layer and direction
        self.dh0 = np.empty((L * nd, B, H), dtype)
        self.d_inp: list[Array | None] = []
        for layer in range(L):
            d_in = D if layer == 0 else nd * H
            need = layer > 0 or (input_grad and not index)
            self.d_inp.append(np.empty((T, B, d_in), dtype) if need else None)
        # the reverse direction's dX, for any layer's input width
        self.dx = np.empty(T * B * max(D, nd * H), dtype) if nd == 2 else None
        self.grads: Params = {k: np.empty(v, dtype) for k, v in shapes(spec).items()}
        if self.joint is not None:
            p = spec.layer_keys(0)[0]
            G = self.joint_grad = np.empty((H + D + 1, H), dtype)
            self.grads[f"{p}.W_hh"], self.grads[f"{p}.W_xh"] = G[:H], G[H:H + D]
            self.grads[f"{p}.b_h"] = G[H + D]

    def input(self, shape: tuple[int, ...]) -> NDArray[Any] | None:
        return self.x if self.x.shape == shape else None


class Workspace:
    """Buffers reused across training steps: the fast path (docs/performance.md).

    ::

        ws = Workspace(spec)
        for X, Y in batches:
            loss, grads = ws.value_and_grad(params, X, Y)
            opt.update_(params, grads, state)

    :meth:`value_and_grad` computes what :func:`value_and_grad` computes.  Without the compiled
    kernels (``kernels=False``, float64, masks) it does so by the same operations on the same
    numbers (the gradients are the same bit for bit unless subnormal numbers occur or a split
    cuts a product, see below; the loss value up to the order of its sum); the kernels group
    some sums differently (within float32 rounding, see ``kernels``).  It adds:

    * every array preallocated for the batch shape and reused by the next call;
    * no predictions ``y`` (the loss needs only the logits) and no ``dL/dX`` unless
      ``input_grad=True``;
    * the recurrent loops and the large products (weight gradients above all) run with
      subnormal numbers flushed to zero (``flush_denormals``): a vanishing gradient becomes
      exactly zero instead of crawling through the subnormal range, the backward loop stops
      there, and the weight gradients skip the slow path that subnormal products take on x86.
      Only numbers below ~1.2e-38 (float32) or ~2.2e-308 (float64) are affected, as with XLA's
      CPU kernels (a product that OpenBLAS runs on its own threads is not flushed there);
    * the BLAS thread counts chosen by timing (``threads="auto"``, see :class:`_ThreadTuner`),
      the batch split over threads among the options (:class:`rnnlab.parallel.Runner`);
    * with the compiled kernels, float32 and one direction of dense inputs: the first layer on
      a joint buffer of rows ``[H_{t-1} | x_t | 1]``, eq. (39) of docs/derivation.md (one
      product per step, one for its three gradients, which are views of that product's
      result).

    Inputs, targets, masks and parameters are validated on every call, as the public functions
    do.  The returned gradients, :attr:`cache`, :attr:`logits`, :attr:`h0_grad` and
    :attr:`input_grad` are views of the workspace's buffers: valid until the next call, which
    overwrites them; copy what must outlive it.  A new batch shape or dtype reallocates the
    buffers.  A workspace is not thread-safe: use one per thread.

    Parameters
    ----------
    spec : RNNSpec
    input_grad : bool
        Also compute ``dL/dX`` (:attr:`input_grad`); a training step does not need it.
    threads : "auto", int or None
        BLAS threads.  ``"auto"`` (default): within the current BLAS thread count (the budget,
        e.g. set by ``threadpoolctl.threadpool_limits``), the counts for the recurrent loops and
        for the rest that the tuner finds fastest.  An int: that many threads for the loops, the
        budget for the rest.  ``None``: leave the BLAS alone.  The count is set for the duration
        of the call and restored after it; this needs the optional package ``threadpoolctl``
        (without it, ``"auto"`` and ints act as ``None``).
    flush_denormals : bool
        Flush subnormals to zero in the recurrent loops and the large products (x86-64 Linux;
        elsewhere a no-op).
    kernels : "auto" or bool
        Run the recurrent loops with the compiled kernels of :mod:`rnnlab.kernels` where they
        apply (float32, no mask, tanh/relu/identity; needs the optional ``numba``):
        ``"auto"`` (default) when they are installed, ``True`` requires them, ``False`` never.
        With them a float32 ``tanh`` state is the rational approximation of eq. (38), within a
        few ulp of ``np.tanh``, and the joint buffer (eq. 39) and a split (column blocks, sums
        along ``K``, per-piece bias sums) add the same terms in other groupings: the gradients
        are within float32 rounding of the float64 ones (tested).
    """

    def __init__(self, spec: RNNSpec, *, input_grad: bool = False,
                 threads: int | str | None = "auto", flush_denormals: bool = True,
                 kernels: bool | str = "auto") -> None:
        if not isinstance(spec, RNNSpec):
            raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
        if not isinstance(input_grad, bool):
            raise TypeError(f"input_grad must be a bool; got {type(input_grad).__name__}")
        if not (threads is None or threads == "auto" or (
                isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1)):
            raise ValueError(f"threads must be 'auto', an int >= 1 or None; got {threads!r}")
        if not isinstance(flush_denormals, bool):
            raise TypeError(
                f"flush_denormals must be a bool; got {type(flush_denormals).__name__}")
        if not (kernels == "auto" or isinstance(kernels, bool)):
            raise ValueError(f"kernels must be 'auto', True or False; got {kernels!r}")
        if kernels is True and not _kernels.available():
            raise RuntimeError("kernels=True needs the compiled kernels (pip install "
                               f"'rnnlab[fast]'): {_kernels.why_unavailable()}")
        self.spec = spec
        self.compiled = bool(kernels) and _kernels.available()
        if self.compiled:
            _kernels.compile()
        if threads == "auto" and _kernels.available():
            _kernels.compile_jobs()        # what a split may need (about 3 s, once)
        self.want_input_grad = input_grad
        self.threads = threads
        self._flush = _FlushDenormals() if flush_denormals else None
        self._bufs: _Buffers | None = None
        self._tuner: _ThreadTuner | None = None
        self._runners: dict[ThreadOption | None, Runner] = {}
        self._joint_ok = True          # the first layer may run on a joint buffer (_Buffers)
        self.cache: Cache | None = None
        self.h0_grad: Array | None = None
        self.input_grad: Array | None = None
        self._logits: Array | None = None

    def _buffers(self, B: int, T: int, dtype: np.dtype) -> _Buffers:
        if self._bufs is None or self._bufs.key != (B, T, np.dtype(dtype)):
            self._bufs = None                      # free the old buffers before allocating
            spec = self.spec
            joint = (self._joint_ok and self.compiled and np.dtype(dtype) == np.float32
                     and spec.num_directions == 1 and spec.input_kind == "dense"
                     and spec.setup != "one_to_many")
            self._bufs = _Buffers(spec, B, T, dtype, self.want_input_grad, joint)
            self._tuner = None                     # new shapes: time the options again
        return self._bufs

    def _thread_option(self) -> ThreadOption | None:
        """The thread option for this call, or None to leave the BLAS alone."""
        if self.threads is None or not _BLAS.libs():
            return None
        budget = _BLAS.get() or 1
        if isinstance(self.threads, int):
            return ThreadOption(self.threads, budget)
        if self._tuner is None or self._tuner.budget != budget:
            B = self._bufs.key[0] if self._bufs is not None else 1
            self._tuner = _ThreadTuner(budget, options=thread_options(
                budget, self.compiled, B, self.spec.hidden_size))
        return self._tuner.pick()

    def _runner(self, option: ThreadOption | None) -> Runner:
        """The :class:`~rnnlab.parallel.Runner` for a thread option (made once per option)."""
        run = self._runners.get(option)
        if run is None:
            if option is not None and option.split > 1:
                # the pieces run on one BLAS thread each (option.rest == 1: a BLAS thread left
                # spinning after a product of its own would take a core from a piece)
                run = Runner(_LoopContext(None, self._flush), option.split,
                             flush=self._flush is not None, compiled=self.compiled)
            else:
                threads = None if option is None else _BLAS.limit(option.loop)
                run = Runner(_LoopContext(threads, self._flush), flush=self._flush is not None,
                             compiled=self.compiled)
            self._runners[option] = run
        return run

    def _copy_input(self, dst: Array, src: Array) -> None:
        """Write the time-first input into its buffer; into a joint buffer the compiled forward
        loop copies it, each piece its own rows (see :class:`_Buffers`), so here it is only
        kept (:func:`rnnlab.network._forward_core` copies it itself for the NumPy loops)."""
        bufs = self._bufs
        if (bufs is not None and bufs.joint is not None and dst is bufs.x
                and src.dtype == dst.dtype and src.strides[2] == src.itemsize
                and min(src.strides) >= 0):
            bufs.pending = src
        else:
            np.copyto(dst, src)

    @property
    def thread_choice(self) -> ThreadOption | None:
        """The option the tuner currently prefers (None before it has timed any)."""
        if self._tuner is None or not any(self._tuner.times.values()):
            return None
        return self._tuner.best()

    def h_n(self) -> Array:
        """The last call's final states ``(num_layers * num_directions, B, H)``, a new array."""
        if self.cache is None:
            raise RuntimeError("h_n() needs a value_and_grad call first")
        nd = self.spec.num_directions
        return np.stack([cell.final(hb, i % nd == 1) for i, hb in enumerate(self.cache.hbufs)])

    @property
    def logits(self) -> Array | None:
        """The last call's logits in the public layout, ``(B, O)`` or ``(B, T, O)`` (a view)."""
        z = self._logits
        if z is None:
            return None
        return z if z.ndim == 2 else z.transpose(1, 0, 2)

    def value_and_grad(
        self,
        params: Mapping[str, Array],
        X: ArrayLike,
        Y: ArrayLike,
        *,
        h0: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        lengths: ArrayLike | None = None,
        steps: int | None = None,
    ) -> tuple[float, Params]:
        """``(loss, gradients)`` of one batch, arguments as for :func:`value_and_grad`.

        The gradients are a dict in the parameters' key order whose arrays belong to the
        workspace (overwritten by the next call).
        """
        spec = self.spec
        dtype = check_params(params, spec)

        def buffer_for(shape: tuple[int, ...]) -> NDArray[Any] | None:
            return self._buffers(shape[1], shape[0], dtype).input(shape)      # (T, B[, D])

        one_to_many = spec.setup == "one_to_many"
        x_tb, B, T = _prepare_input(X, spec, dtype, steps, None if one_to_many else buffer_for,
                                    self._copy_input)
        bufs = self._buffers(B, T, dtype)
        m_bt = make_mask(B, T, mask=mask, lengths=lengths)
        m_tb = None if m_bt is None else np.ascontiguousarray(m_bt.T)
        h0_all = bufs.h0 if h0 is None else _check_h0(h0, spec, B, dtype)
        if h0 is None:
            h0_all.fill(0.0)
        if spec.per_step_output:      # validate the targets before the work
            _check_targets(Y, spec, (B,) if spec.setup == "many_to_one" else (B, T), dtype)

        option = self._thread_option()
        tuner = self._tuner if self.threads == "auto" else None
        rest = (nullcontext() if option is None
                else _BLAS.limit(1 if option.split > 1 else option.rest))
        run = self._runner(option)
        t0 = time.perf_counter()
        with rest:
            x1 = bufs.x1 if x_tb is bufs.x else None
            z, _, cache = _forward_core(params, x_tb, m_tb, h0_all, spec, bufs, run, x1)
            value, dz = _loss_time_first(spec, z, Y, m_tb, bufs, run)
            grads, d_inp, dh0 = _backward_core(params, dz, cache, None, bufs,
                                               self.want_input_grad, run)
        if tuner is not None and option is not None:
            tuner.record(option, time.perf_counter() - t0)
        self.cache, self._logits, self.h0_grad = cache, z, dh0
        self.input_grad = _input_grad(spec, d_inp) if self.want_input_grad else None
        return value, {k: grads[k] for k in params}


def _loss_time_first(
    spec: RNNSpec, z: Array, Y: ArrayLike, m_tb: Mask | None, bufs: _Buffers,
    run: Runner = SERIAL,
) -> tuple[float, Array]:
    """:func:`loss_and_grad` on time-first logits ``(T, B, O)`` (or ``(B, O)``), into buffers.

    Returns the value and ``dL/dz`` as ``(T * B, O)`` rows (or ``(B, O)``).
    """
    O = spec.output_size
    if z.ndim == 3:
        T, B = z.shape[:2]
        seq_target = spec.setup == "many_to_one"
        y = _check_targets(Y, spec, (B,) if seq_target else (B, T), z.dtype)
        y_tb = (np.broadcast_to(y[None], (T,) + y.shape) if seq_target
                else np.swapaxes(y, 0, 1))                         # (T, B) or (T, B, O)
        rows, dz = z.reshape(T * B, O), bufs.dz.reshape(T * B, O)
        if m_tb is None:
            y_rows = y_tb.reshape((T * B,) + y_tb.shape[2:])
        else:
            sel = m_tb.reshape(-1)
            res = losses.loss_and_grad(spec.loss, rows[sel], y_tb.reshape(
                (T * B,) + y_tb.shape[2:])[sel], spec.reduction)
            dz.fill(0.0)
            dz[sel] = res.dz
            return res.value, dz
    else:
        y = _check_targets(Y, spec, (z.shape[0],), z.dtype)
        rows, dz, y_rows = z, bufs.dz, y
    if spec.loss == "softmax_ce" and y_rows.ndim == 1:
        denom = losses._denominator(spec.loss, rows, spec.reduction)
        tmp = bufs.loss_tmp.reshape(rows.shape)
        parts: dict[int, float] = {}

        def piece(lo: int, hi: int) -> None:        # rows are independent: the same dz
            parts[lo] = losses._softmax_ce_labels(rows[lo:hi], y_rows[lo:hi], denom, dz[lo:hi],
                                                  tmp[lo:hi])

        run.rows(rows.shape[0], 40.0 * rows.shape[1], piece)   # ~40 flop-equivalents per entry
        return sum(parts[k] for k in sorted(parts)), dz
    res = losses.loss_and_grad(spec.loss, rows, y_rows, spec.reduction)
    np.copyto(dz, res.dz)
    return res.value, dz
