"""Truncated backpropagation through time, BPTT(k2; k1) of Williams and Peng (docs/derivation.md,
section 11, eqs. 23-25).

The sequence is walked forward in chunks with the exact state carried across them (so the
outputs and the loss are those of :func:`rnnlab.network.forward`); every ``k1`` steps the losses
of those ``k1`` steps are backpropagated ``k2`` steps back from the update point, and the state
that window starts from is treated as a constant.  The gradient returned is the sum over windows
(the parameters are fixed during one call; the trainer applies it once, or calls this on shorter
chunks of a stream and carries the state with :func:`carry`).

Forward chunks run the reference network on the shared cell
(:func:`rnnlab.core.network.forward_time_first`) and are backpropagated with
:func:`rnnlab.core.network.backward`, chained across chunk boundaries with ``dh_n``.  Only the
chunks the next window reaches back to are kept, so memory is ``O((k1 + k2) B H L)``, not
``O(T B H L)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core import losses, network
from ..core.params import Params
from ..core.spec import RNNSpec
from .batch import prepare, scored_loss

Array = NDArray[np.floating]
Mask = NDArray[np.bool_]

__all__ = ["Window", "carry", "value_and_grad", "windows"]


# ----------------------------------------------------------------------------- windows


class Window(NamedTuple):
    """One truncation window (eq. 23): steps ``start <= t < stop`` are backpropagated through,
    the losses of steps ``score <= t < stop`` are scored, and the state before ``start`` is a
    constant."""

    start: int
    score: int
    stop: int


def _check_k(name: str, k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"{name} must be an int; got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"{name} must be >= 1; got {k}")
    return int(k)


def windows(T: int, k1: int, k2: int) -> list[Window]:
    """The windows of BPTT(k2; k1) over ``T`` steps, eq. (23).

    Window ``j`` scores steps ``[j k1, min((j + 1) k1, T))`` and backpropagates from its last step
    back to ``max(0, stop - k2)``.  The scored ranges partition ``[0, T)``.
    """
    k1, k2 = _check_k("k1", k1), _check_k("k2", k2)
    return [Window(max(0, min(a + k1, T) - k2), a, min(a + k1, T)) for a in range(0, T, k1)]


def carry(h_n: ArrayLike, reset: ArrayLike | None = None) -> Array:
    """The initial state of the next minibatch of a stateful stream (Keras ``stateful=True``,
    min-char-rnn's ``hprev``).

    Parameters
    ----------
    h_n : (num_layers, B, H)
        ``Output.h_n`` of the previous call.
    reset : (B,) bool, optional
        True for the rows whose sequence ends here: their state restarts at zero.

    Returns
    -------
    h0 : (num_layers, B, H)
        A fresh copy (no gradient flows across minibatches: the carried state is a constant).
    """
    h = np.array(h_n, copy=True)
    if h.ndim != 3:
        raise ValueError(f"h_n must be (num_layers, B, H); got shape {h.shape}")
    if reset is not None:
        r = np.asarray(reset)
        if r.dtype != np.bool_ or r.shape != (h.shape[1],):
            raise ValueError(f"reset must be a ({h.shape[1]},) bool array; "
                             f"got {r.dtype} {r.shape}")
        h[:, r] = 0.0
    return h


# ----------------------------------------------------------------------------- the walk


class _Chunk(NamedTuple):
    start: int
    stop: int
    cache: network.Cache
    dz: Array | None          # dL/dlogits of its scored steps (None: nothing scored)


def value_and_grad(
    params: Mapping[str, Array],
    X: ArrayLike,
    Y: ArrayLike,
    spec: RNNSpec,
    *,
    k1: int,
    k2: int,
    h0: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    lengths: ArrayLike | None = None,
    steps: int | None = None,
) -> tuple[float, network.Gradients, network.Output]:
    """Loss, truncated gradient and outputs of BPTT(k2; k1), eqs. (23)-(25).

    Parameters
    ----------
    params, X, Y, spec, h0, mask, lengths, steps
        As for :func:`rnnlab.network.value_and_grad` (``h0`` is ``(num_layers, B, H)``).
    k1 : int >= 1
        Steps between updates: the losses of each block of ``k1`` steps form one window.
    k2 : int >= 1
        Steps each window backpropagates through, counted back from its last step.  ``k2 >= k1``
        is required when more than the final step is scored (otherwise the losses of the first
        ``k1 - k2`` steps of every window would never reach the weights); many-to-one with
        ``label_steps="last"`` scores only the final state and takes any ``k2``.  Windows are in
        absolute steps shared by the batch: padded steps count (they carry state and gradient).

    Returns
    -------
    loss : float
        The network's loss (eq. 15): the forward pass is exact, only the gradient is truncated.
        Non-finite when the computation overflows (nothing raises then; docs/derivation.md,
        "Non-finite values").
    grads : Gradients
        ``params``: the gradient of the truncated objective (eq. 24); ``X``: its gradient with
        respect to the inputs (None for index inputs); ``h0``: with respect to ``h0`` (zero unless
        a window starts at step 0).  With ``k2 >= T`` (any ``k1``) this is exactly BPTT.
    out : Output
        As :func:`rnnlab.network.forward` gives; ``h_n`` are the final states.
    """
    k1, k2 = _check_k("k1", k1), _check_k("k2", k2)
    batch = prepare(params, X, Y, spec, algorithm="truncated BPTT", h0=h0, mask=mask,
                    lengths=lengths, steps=steps)
    per_step = spec.per_step_output
    if k2 < k1 and per_step:
        raise ValueError(
            f"k2 (={k2}) must be >= k1 (={k1}) when every step is scored (setup={spec.setup!r}, "
            f"label_steps={spec.label_steps!r}): each update backpropagates the losses of the "
            f"last k1 steps through k2 steps, so with k2 < k1 the first k1 - k2 steps' losses "
            "would never reach the weights"
        )
    B, T, O = batch.B, batch.T, spec.output_size
    # the per-step set-ups become many-to-many on the explicit input and target sequences
    cspec = replace(spec, setup="many_to_many", label_steps="last") if per_step else spec
    wins = windows(T, k1, k2)
    todo = wins if per_step else wins[-1:]          # many-to-one: only the last step is scored
    bounds = sorted({0, T} | {w.score for w in wins} | {w.start for w in todo})

    grads: Params = {k: np.zeros_like(p) for k, p in params.items()}
    dense = batch.x.ndim == 3
    dX = np.zeros((T, B, spec.input_size), dtype=batch.dtype) if dense else None
    dh0 = np.zeros_like(batch.h0)
    logits_tb = np.empty((T, B, O), dtype=batch.dtype) if per_step else None
    logits_last: Array | None = None
    total = 0.0
    live: deque[_Chunk] = deque()
    h = batch.h0
    wi = 0
    for c0, c1 in zip(bounds[:-1], bounds[1:], strict=True):
        m = None if batch.mask is None else batch.mask[c0:c1]
        logits, finals, cache = network.forward_time_first(
            params, np.ascontiguousarray(batch.x[c0:c1]), h, cspec, m)    # eqs. (5)-(8)
        dz: Array | None = None
        if per_step:
            assert logits_tb is not None
            logits_tb[c0:c1] = logits
            value, dz, _ = scored_loss(spec.loss, logits, batch.y[c0:c1], m)
            total += value
        elif c1 == T:
            logits_last = logits
            value, dz, _ = scored_loss(spec.loss, logits, batch.y, None)
            total += value
        if dz is not None:
            dz /= batch.denom
            dz = np.ascontiguousarray(dz.swapaxes(0, 1)) if per_step else dz   # batch first
        h = np.stack(finals)
        live.append(_Chunk(c0, c1, cache, dz))
        while wi < len(todo) and todo[wi].stop == c1:
            _backprop_window(params, todo[wi], live, grads, dX, dh0)            # eq. (24)
            wi += 1
        keep_from = todo[wi].start if wi < len(todo) else T
        while live and live[0].stop <= keep_from:
            live.popleft()

    if per_step:
        assert logits_tb is not None
        logits_out = np.ascontiguousarray(logits_tb.transpose(1, 0, 2))
    else:
        assert logits_last is not None
        logits_out = logits_last
    y = losses.output(spec.loss, logits_out.reshape(-1, O)).reshape(logits_out.shape)
    out = network.Output(y=y, logits=logits_out, h_n=h)
    gX: Array | None = None
    if dX is not None:
        if spec.setup == "one_to_many":
            gX = dX.sum(axis=0) if spec.feed == "every" else dX[0].copy()
        else:
            gX = np.ascontiguousarray(dX.transpose(1, 0, 2))
    return total / batch.denom, network.Gradients(grads, gX, dh0), out


def _backprop_window(params: Mapping[str, Array], w: Window, live: deque[_Chunk],
                     grads: Params, dX: Array | None, dh0: Array) -> None:
    """Backpropagate one window through its chunks, last to first, chaining ``dh_n``."""
    dh: Array | None = None
    for c in reversed(live):
        if c.start < w.start:
            break
        scored = c.dz is not None and c.start >= w.score
        if not scored and dh is None:
            continue                                 # nothing reaches this chunk
        dl = c.dz if scored and c.dz is not None else _logits_like(c)
        g = network.backward(params, dl, c.cache, dh_n=dh)
        for k, v in g.params.items():
            grads[k] += v
        if dX is not None and g.X is not None:
            dX[c.start:c.stop] += g.X.transpose(1, 0, 2)
        dh = g.h0                                    # reaches the previous chunk's final state
    if w.start == 0 and dh is not None:
        dh0 += dh                                    # the window reads h0 itself


def _logits_like(c: _Chunk) -> Array:
    spec, B = c.cache.spec, c.cache.batch_size
    shape = (B, c.cache.steps, spec.output_size) if spec.per_step_output else (
        B, spec.output_size)
    return np.zeros(shape, dtype=c.cache.hbufs[0].dtype)
