"""The fast engine: a workspace that reuses its buffers across training steps
(docs/performance.md).

::

    ws = Workspace(spec)
    for X, Y in batches:
        loss, grads = ws.value_and_grad(params, X, Y)   # those of rnnlab.value_and_grad
        opt.update_(params, grads, state)

:class:`Workspace` validates a batch as the reference engine does (:mod:`rnnlab.core.inputs`) and
runs :mod:`rnnlab.fast.network` on the arrays of a :class:`~rnnlab.fast.buffers.Buffers`, made
once per batch shape, with the threads of :mod:`rnnlab.fast.pool` and :mod:`rnnlab.fast.tuner`
and, when installed, the compiled loops of :mod:`rnnlab.fast.kernels`.  It is the engine
:func:`rnnlab.fit` runs; it keeps the contract of :class:`rnnlab.core.engine.Engine`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core import cell
from ..core.inputs import (
    Mask,
    check_h0,
    check_sample_weight,
    check_targets,
    target_lead,
    time_first,
    time_first_mask,
)
from ..core.network import Cache, input_grad_layout
from ..core.params import Params, check_params
from ..core.spec import RNNSpec
from . import kernels as _kernels
from . import network
from .buffers import Buffers
from .cpu import BLAS, FlushDenormals, LoopContext
from .pool import Runner
from .tuner import (
    ThreadOption,
    ThreadTuner,
    reproducible_options,
    split_pieces,
    thread_options,
)

Array = np.ndarray

__all__ = ["Workspace"]


class Workspace:
    """The fast engine: buffers reused across training steps (docs/performance.md).

    ::

        ws = Workspace(spec)
        for X, Y in batches:
            loss, grads = ws.value_and_grad(params, X, Y)
            opt.update_(params, grads, state)

    :meth:`value_and_grad` computes what :func:`rnnlab.core.network.value_and_grad` (the
    reference engine) computes, by its own implementation of the same equations
    (:mod:`rnnlab.fast.network`): the gradients agree to rounding (float64 within ``1e-11`` of
    each array's scale; float32 within float32 rounding, the compiled kernels grouping some sums
    differently and computing a float32 ``tanh`` by eq. 38), tested on the shared grid.  It
    keeps the engine contract of :class:`rnnlab.core.engine.Engine` and adds:

    * every array preallocated for the batch shape and reused by the next call;
    * no predictions ``y`` (the loss needs only the logits) and no ``dL/dX`` unless
      ``input_grad=True``;
    * the recurrent loops and the large products (weight gradients above all) run with
      subnormal numbers flushed to zero (``flush_denormals``): a vanishing gradient becomes
      exactly zero instead of crawling through the subnormal range, the backward loop stops
      there, and the weight gradients skip the slow path that subnormal products take on x86.
      Only numbers below ~1.2e-38 (float32) or ~2.2e-308 (float64) are affected, as with XLA's
      CPU kernels (a product that OpenBLAS runs on its own threads is not flushed there);
    * the BLAS thread counts chosen by timing (``threads="auto"``, see :class:`ThreadTuner`),
      the batch split over threads among the options (:class:`rnnlab.fast.pool.Runner`);
    * with the compiled kernels, float32 and one direction of dense inputs: the first layer on
      a joint buffer of rows ``[H_{t-1} | x_t | 1]``, eq. (39) of docs/derivation.md (one
      product per step, one for its three gradients, which are views of that product's
      result).

    Inputs, targets, masks and parameters are validated on every call, as the public functions
    do (non-finite ones refused); a batch whose computation overflows returns a non-finite loss
    and gradients, as every engine does (docs/derivation.md, "Non-finite values").  The returned
    gradients, :attr:`cache`, :attr:`logits`, :attr:`h0_grad` and :attr:`input_grad` are views
    of the workspace's buffers: valid until the next call, which overwrites them; copy what must
    outlive it.  A new batch shape or dtype reallocates the buffers.  A workspace is not
    thread-safe: use one per thread.

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
        Run the recurrent loops with the compiled kernels of :mod:`rnnlab.fast.kernels` where they
        apply (float32, no mask, tanh/relu/identity; needs the optional ``numba``):
        ``"auto"`` (default) when they are installed, ``True`` requires them, ``False`` never.
        With them a float32 ``tanh`` state is the rational approximation of eq. (38), within a
        few ulp of ``np.tanh``, and the joint buffer (eq. 39) and a split (column blocks, sums
        along ``K``, per-piece bias sums) add the same terms in other groupings: the gradients
        are within float32 rounding of the float64 ones (tested).
    """

    def __init__(self, spec: RNNSpec, *, input_grad: bool = False,
                 threads: int | str | None = "auto", flush_denormals: bool = True,
                 kernels: bool | str = "auto", reproducible: bool = False) -> None:
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
        if not isinstance(reproducible, bool):
            raise TypeError(f"reproducible must be a bool; got {type(reproducible).__name__}")
        if reproducible and threads is None:
            raise ValueError("reproducible=True needs threads='auto' or an int (the threads its "
                             "pieces may run on); got threads=None")
        if kernels is True and not _kernels.available():
            raise RuntimeError("kernels=True needs the compiled kernels (pip install "
                               f"'rnnlab[fast]'): {_kernels.why_unavailable()}")
        self.spec = spec
        self.compiled = bool(kernels) and _kernels.available()
        if self.compiled:
            _kernels.compile()         # or load the builds an earlier process cached
        self.want_input_grad = input_grad
        self.threads = threads
        self.reproducible = reproducible
        # a reproducible workspace cuts its work for the thread budget it starts with: the
        # pieces (and so the numbers) never change with the load, only where they run
        self._budget0 = (threads if isinstance(threads, int) else (BLAS.get() or 1)) \
            if reproducible else 1
        self._flush = FlushDenormals() if flush_denormals else None
        self._cache: dict[tuple[int, int, np.dtype, bool, bool], Buffers] = {}
        self._bufs: Buffers | None = None
        self._tuner: ThreadTuner | None = None
        self._runners: dict[ThreadOption | None, Runner] = {}
        self._joint_ok = True          # the first layer may run on a joint buffer (Buffers)
        self.cache: Cache | None = None
        self.h0_grad: Array | None = None
        self.input_grad: Array | None = None
        self._logits: Array | None = None

    # buffer sets kept at once (a training batch, the epoch's last short batch, evaluation's)
    KEEP_BUFFERS = 4

    def _buffers(self, B: int, T: int, dtype: np.dtype, train: bool = True,
                 backward: bool = True) -> Buffers:
        key = (B, T, np.dtype(dtype), train, backward)
        bufs = self._cache.pop(key, None)
        if bufs is None:
            while len(self._cache) >= self.KEEP_BUFFERS:   # free the oldest before allocating
                del self._cache[next(iter(self._cache))]
            spec = self.spec
            joint = (self._joint_ok and self.compiled and np.dtype(dtype) == np.float32
                     and spec.num_directions == 1 and spec.input_kind == "dense"
                     and spec.setup != "one_to_many")
            bufs = Buffers(spec, B, T, dtype, self.want_input_grad and train, joint, train,
                           backward)
        self._cache[key] = bufs                            # the most recent last
        self._bufs = bufs
        self._tuner = bufs.tuner
        return bufs

    def _thread_option(self) -> ThreadOption | None:
        """The thread option for this call, or None to leave the BLAS alone."""
        if self.threads is None or not BLAS.libs():
            return None
        bufs = self._bufs
        B = bufs.key[0] if bufs is not None else 1
        H = self.spec.hidden_size
        if self.reproducible:
            tuner = bufs.tuner if bufs is not None else None
            if tuner is None:
                options = reproducible_options(split_pieces(self._budget0, B, H))
                tuner = ThreadTuner(self._budget0, options=options)
                if bufs is not None:
                    bufs.tuner = self._tuner = tuner
            # never None (the tuner's untimed first call): None would leave the BLAS alone and
            # not cut the work, so that call's numbers would differ from the others'
            return tuner.pick() or tuner.options[-1]
        budget = BLAS.get() or 1
        if isinstance(self.threads, int):
            return ThreadOption(self.threads, budget)
        tuner = bufs.tuner if bufs is not None else None
        if tuner is None or tuner.budget != budget:
            tuner = ThreadTuner(budget, options=thread_options(budget, self.compiled, B, H))
            if bufs is not None:
                bufs.tuner = self._tuner = tuner
        # the tuner's untimed first call runs on one thread: the whole BLAS budget there, on a
        # busy machine, waits for a core (a fresh process's first step took 0.9 s, not 30 ms)
        return tuner.pick() or ThreadOption(1, 1)

    def _runner(self, option: ThreadOption | None) -> Runner:
        """The :class:`~rnnlab.fast.pool.Runner` for a thread option (made once per option)."""
        run = self._runners.get(option)
        if run is None:
            # column blocks are a choice timed once per process: only where the numbers may
            # follow the tuner anyway
            blocks = self.threads == "auto" and not self.reproducible
            flush = self._flush is not None
            if option is not None and option.split > 1:
                # the pieces run on one BLAS thread each (option.rest == 1: a BLAS thread left
                # spinning after a product of its own would take a core from a piece)
                run = Runner(LoopContext(None, self._flush), option.split, flush=flush,
                             compiled=self.compiled, parallel=option.parallel, blocks=blocks)
            else:
                threads = None if option is None else BLAS.limit(option.loop)
                run = Runner(LoopContext(threads, self._flush), flush=flush,
                             compiled=self.compiled, blocks=blocks,
                             rest=1 if option is None else option.rest)
            self._runners[option] = run
        return run

    def _copy_input(self, dst: Array, src: Array) -> None:
        """Write the time-first input into its buffer; into a joint buffer the compiled forward
        loop copies it, each piece its own rows (see :class:`Buffers`), so here it is only
        kept (:func:`rnnlab.fast.network.forward` copies it itself for the NumPy loops)."""
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
            raise RuntimeError("h_n() needs a value_and_grad or forward call first")
        nd = self.spec.num_directions
        return np.stack([cell.final(hb, i % nd == 1) for i, hb in enumerate(self.cache.hbufs)])

    @property
    def logits(self) -> Array | None:
        """The last call's logits in the public layout, ``(B, O)`` or ``(B, T, O)`` (a view)."""
        z = self._logits
        if z is None:
            return None
        return z if z.ndim == 2 else z.transpose(1, 0, 2)

    def _batch(self, params: Mapping[str, Array], X: ArrayLike, mask: ArrayLike | None,
               lengths: ArrayLike | None, steps: int | None
               ) -> tuple[np.dtype, NDArray[Any], int, int, Mask | None]:
        """The parameters' dtype, the validated inputs time first (``(T, B, D)`` or ids
        ``(T, B)``), ``B``, ``T`` and the ``(T, B)`` mask, as every call reads them."""
        dtype = check_params(params, self.spec)
        x_tb, B, T = time_first(X, self.spec, dtype, steps)
        return dtype, x_tb, B, T, time_first_mask(B, T, mask=mask, lengths=lengths)

    def forward(
        self,
        params: Mapping[str, Array],
        X: ArrayLike,
        *,
        h0: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        lengths: ArrayLike | None = None,
        steps: int | None = None,
    ) -> Array:
        """The logits of one batch, the forward pass only (eqs. 5-8), arguments as for
        :func:`rnnlab.core.network.forward`: ``(B, O)`` or ``(B, T, O)``, a view of the
        workspace's buffer (valid until the next call); :meth:`h_n` gives the final states.

        What inference runs (``RNN.predict``, ``evaluate``, ``fit``'s validation): the same
        numbers as :meth:`value_and_grad`'s forward pass, with buffers of their own (no gradient
        arrays), kept for the last few batch shapes.
        """
        spec = self.spec
        dtype, x_tb, B, T, m_tb = self._batch(params, X, mask, lengths, steps)
        h0_all = None if h0 is None else check_h0(h0, spec, B, dtype)
        bufs = self._buffers(B, T, dtype, train=False)
        with self._call(bufs, h0_all, x_tb) as (run, h0_all, x_tb):
            cache = network.forward(params, x_tb, m_tb, h0_all, spec, bufs, run)
        self.cache, self._logits, self.h0_grad, self.input_grad = cache, bufs.logits, None, None
        logits = self.logits
        assert logits is not None
        return logits

    def forward_loss(
        self,
        params: Mapping[str, Array],
        X: ArrayLike,
        Y: ArrayLike,
        *,
        h0: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        lengths: ArrayLike | None = None,
        steps: int | None = None,
    ) -> tuple[float, Array]:
        """The forward pass and the loss of one batch, no backward pass: ``(loss, dL/dz)``.

        ``dL/dz`` (eqs. 9-15, the spec's reduction) is time first, ``(T, B, O)`` when the spec
        scores every step (zero at padded steps) and ``(B, O)`` otherwise, a view of the
        workspace's buffer; :attr:`cache` holds the states of every layer (``hbufs``, ``(T + 1,
        B, H)``: ``H_{-1}`` then ``H_0 .. H_{T-1}``, padded steps carrying their state, eq. 7)
        and :attr:`logits` the logits.  What the forward-mode learning rules on the fast path
        read (:mod:`rnnlab.fast.rules`): their batch form needs the states and the learning
        signal of every step, not BPTT's backward pass.
        """
        spec = self.spec
        dtype, x_tb, B, T, m_tb = self._batch(params, X, mask, lengths, steps)
        y = check_targets(Y, spec, target_lead(spec, B, T), dtype)
        h0_all = None if h0 is None else check_h0(h0, spec, B, dtype)
        bufs = self._buffers(B, T, dtype, backward=False)
        with self._call(bufs, h0_all, x_tb) as (run, h0_all, x_tb):
            cache = network.forward(params, x_tb, m_tb, h0_all, spec, bufs, run)
            value, dz = network.loss(spec, bufs.logits, y, m_tb, bufs, run)
        self.cache, self._logits, self.h0_grad, self.input_grad = cache, bufs.logits, None, None
        return value, dz.reshape(bufs.logits.shape)

    @contextmanager
    def _call(self, bufs: Buffers, h0_all: Array | None, x_tb: NDArray[Any]
              ) -> Iterator[tuple[Runner, Array, NDArray[Any]]]:
        """One call on ``bufs``: the initial states (zeros by default), the input through its
        buffer, the thread option and its runner, the BLAS thread count; the tuner is told
        how long the block took."""
        if h0_all is None:
            h0_all = bufs.h0
            h0_all.fill(0.0)
        if bufs.x is not None:                  # dense inputs, read through their buffer
            self._copy_input(bufs.x, x_tb)
            x_tb = bufs.x
        option = self._thread_option()
        tuner = self._tuner if self.threads == "auto" or self.reproducible else None
        # one BLAS thread, except in the loops (option.loop) and the large products (option.rest)
        rest = nullcontext() if option is None else BLAS.limit(1)
        run = self._runner(option)
        t0 = time.perf_counter()
        with rest:
            yield run, h0_all, x_tb
        if tuner is not None and option is not None:
            tuner.record(option, time.perf_counter() - t0)

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
        sample_weight: ArrayLike | None = None,
    ) -> tuple[float, Params]:
        """``(loss, gradients)`` of one batch, arguments as for
        :func:`rnnlab.core.network.value_and_grad` (``sample_weight``: eq. 15w).

        The gradients are a dict in the parameters' key order whose arrays belong to the
        workspace (overwritten by the next call); they are blocks of one flat array
        (:attr:`flat_grad`).
        """
        return self._value_and_grad(params, X, Y, h0, mask, lengths, steps, sample_weight, None)

    def truncated_value_and_grad(
        self,
        params: Mapping[str, Array],
        X: ArrayLike,
        Y: ArrayLike,
        windows: Sequence[tuple[int, int, int]],
        *,
        h0: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        lengths: ArrayLike | None = None,
        steps: int | None = None,
    ) -> tuple[float, Params]:
        """``(loss, truncated gradient)`` of BPTT(k2; k1), eqs. (23)-(25), on the fast engine:
        what :func:`rnnlab.learning.tbptt.value_and_grad` computes (the definition; tested
        equal), for the windows :func:`rnnlab.learning.tbptt.windows` gives.

        ``windows``: ``(start, score, stop)`` triples whose scored ranges ``[score, stop)``
        partition ``[0, T)`` in order (only the last is used for a loss at the last step).  The
        forward pass and the loss are exact and computed once; each window backpropagates the
        losses of its scored steps through ``[start, stop)``, the state before ``start`` a
        constant, and the gradients of all windows are summed: the backward loops run window by
        window (each over its own steps), the weight gradients as one product over all steps,
        since ``sum_j sum_t H_{t-1}^T dZ^j_t = sum_t H_{t-1}^T (sum_j dZ^j_t)`` (per layer).
        With ``k1 = k2`` the windows tile the sequence and the cost is one BPTT step's.
        """
        wins = [tuple(int(v) for v in w) for w in windows]
        return self._value_and_grad(params, X, Y, h0, mask, lengths, steps, None, wins)

    def _value_and_grad(self, params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike,
                        h0: ArrayLike | None, mask: ArrayLike | None, lengths: ArrayLike | None,
                        steps: int | None, sample_weight: ArrayLike | None,
                        windows: list[tuple[int, ...]] | None) -> tuple[float, Params]:
        spec = self.spec
        dtype, x_tb, B, T, m_tb = self._batch(params, X, mask, lengths, steps)
        y = check_targets(Y, spec, target_lead(spec, B, T), dtype)
        w = check_sample_weight(sample_weight, spec, B, T, dtype)
        h0_all = None if h0 is None else check_h0(h0, spec, B, dtype)
        if windows is not None:
            network.check_windows(windows, T, spec)
        bufs = self._buffers(B, T, dtype)
        with self._call(bufs, h0_all, x_tb) as (run, h0_all, x_tb):
            cache = network.forward(params, x_tb, m_tb, h0_all, spec, bufs, run)
            value, dz = network.loss(spec, bufs.logits, y, m_tb, bufs, run, w)
            grads, d_inp, dh0 = network.backward(params, dz, cache, bufs,
                                                 self.want_input_grad, run, windows)
        self.cache, self._logits, self.h0_grad = cache, bufs.logits, dh0
        self.input_grad = input_grad_layout(spec, d_inp) if self.want_input_grad else None
        return value, {k: grads[k] for k in params}

    @property
    def flat_grad(self) -> Array | None:
        """The last training call's gradients as one flat array (each key's gradient one block
        of it, in the order of :attr:`grad_order`); None before the first call."""
        bufs = self._bufs
        return None if bufs is None or not bufs.backward else bufs.flat_grad

    @property
    def grad_order(self) -> list[str] | None:
        """The parameter keys in the order of their blocks in :attr:`flat_grad`."""
        bufs = self._bufs
        return None if bufs is None or not bufs.backward else list(bufs.grad_order)
