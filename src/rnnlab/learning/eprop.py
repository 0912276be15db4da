"""e-prop for a vanilla (rate) recurrent network (Bellec, Scherr, Subramoney, Hajek, Salaj,
Legenstein and Maass 2020; docs/derivation.md, section 14, eqs. 54-55).

e-prop splits each neuron's state into a *hidden* state with its own internal dynamics and the
*observable* output the other neurons read, keeps the internal dynamics in an eligibility trace
and drops every dependence through the observables (so every path through ``W_hh``).  For a rate
neuron with a leaky membrane, the form of Bellec et al.'s leaky integrate-and-fire neuron with a
rate nonlinearity in place of the spike::

    V_t = decay · V_{t-1} + Z_t,   H_t = f(V_t),   Z_t = X_t W_xh + H_{t-1} W_hh + b_h   (eq. 54)

(``decay = exp(-Δt/τ_m)``, Bellec et al.'s ``α``; ``decay = 0`` is rnnlab's vanilla cell, eqs.
5-6), the eligibility vector of weight ``(i, j)`` is the low-pass filtered presynaptic input and
the eligibility trace multiplies it by the postsynaptic derivative::

    ε_t = decay · ε_{t-1} + u_t,    e_t[i, j] = f'(V_t)[j] ε_t[i],
    ĝ = Σ_t ε_tᵀ (G_t ⊙ f'(V_t))                                                   (eq. 55)

with ``u_t = [H_{t-1} | X_t | 1]`` (eq. 40), so the trace is one vector per sequence (``ε``
``(B, H + D + 1)``) and the gradient one product over the batch per step, like BPTT's weight
gradient (eq. 19).  ``G_t = (dL/dz_t) F`` (eq. 44): symmetric e-prop (``F = W_hyᵀ``, the default)
or random e-prop (a fixed random ``F``).  The readout is rnnlab's instantaneous head (Bellec et
al.'s ``κ = 0``).  With ``decay = 0`` the trace is memoryless and e-prop equals RFLO with ``α = 1``
(:mod:`rnnlab.learning.rflo`) and, with symmetric feedback, truncated BPTT(1; 1).  Defined for one
recurrent layer.

The trainer (:func:`rnnlab.fit`) and the rest of rnnlab compute the vanilla cell (``decay = 0``);
the leaky membrane (``decay > 0``, which starts from ``V_{-1} = 0`` with ``H_{-1} = h0``) is
available through these functions, which run eq. (54) themselves, but ``fit`` refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core import network
from ..core.params import Params
from ..core.spec import RNNSpec
from .batch import Batch, prepare
from .walk import (
    Optimizer,
    Rows,
    Tracker,
    check_every,
    check_single_layer,
    feedback_matrix,
    gradients,
    unpack_joint,
    walk,
)

Array = NDArray[np.floating]

__all__ = ["EpropTracker", "check_decay", "online_update", "value_and_grad"]

_WHY = ("Bellec et al. derive the eligibility traces for one recurrent population whose outputs "
        "a readout reads")


def check_decay(decay: object) -> float:
    """The membrane's ``decay = exp(-Δt/τ_m)`` in ``[0, 1)``."""
    if isinstance(decay, bool) or not isinstance(decay, int | float | np.integer | np.floating):
        raise TypeError(f"e-prop: decay (= exp(-Δt/τ_m)) must be a number in [0, 1); got "
                        f"{type(decay).__name__} {decay!r}")
    d = float(decay)
    if not (math.isfinite(d) and 0.0 <= d < 1.0):
        raise ValueError(f"e-prop: decay (= exp(-Δt/τ_m)) must be in [0, 1) (0 is the vanilla "
                         f"cell); got {d!r}")
    return d


class EpropTracker(Tracker):
    """The eligibility vectors ``ε`` of eq. (55) (and, for ``decay > 0``, the membrane of
    eq. 54)."""

    def __init__(self, spec: RNNSpec, batch: Batch, decay: float) -> None:
        super().__init__(spec, batch)
        B, H, D, dt = batch.B, spec.hidden_size, spec.input_size, batch.dtype
        self.decay = decay
        self.eps = np.zeros((B, H + D + 1), dt)
        self.ubuf = np.empty((B, H + D + 1), dt)
        self.V = np.zeros((B, H), dt)

    def forward(self, params: Mapping[str, Array], x_t: NDArray[Any], pad: Rows | None) -> None:
        if self.decay == 0.0:
            return super().forward(params, x_t, pad)                 # the vanilla cell
        W_xh = params["l0.W_xh"]
        z = W_xh[x_t] if x_t.ndim == 1 else x_t @ W_xh
        z += params["l0.b_h"]
        h_old = self.h[0]
        z += h_old @ params["l0.W_hh"]                                # Z_t
        V = self.decay * self.V + z                                   # eq. (54)
        h_new = self.act.f(V)
        fp = self.act.grad_from_output(h_new)                         # f'(V_t)
        if pad is not None:
            h_new[pad] = h_old[pad]
            V[pad] = self.V[pad]
            fp[pad] = self.fp[0][pad]
        self.V, self.fp[0] = V, fp
        self.h_prev[0], self.h[0], self.inp[0] = h_old, h_new, x_t

    def update(self, params: Mapping[str, Array], pad: Rows | None) -> None:
        keep = None if pad is None else self.eps[pad].copy()
        u = self.u(0, self.ubuf)
        if self.decay == 0.0:
            self.eps, self.ubuf = u, self.eps
        else:
            self.eps *= self.decay                                    # eq. (55)
            self.eps += u
        if pad is not None:                                           # eq. (30)
            assert keep is not None
            self.eps[pad] = keep

    def contract(self, G: Array, grads: Params) -> None:
        unpack_joint(self.eps.T @ (G * self.fp[0]), 0, self.H, grads)   # eq. (55)


def _setup(params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike, spec: RNNSpec,
           h0: ArrayLike | None, mask: ArrayLike | None, lengths: ArrayLike | None,
           steps: int | None, feedback: object, feedback_seed: object, decay: object
           ) -> tuple[Batch, EpropTracker, Array | None]:
    d = check_decay(decay)
    batch = prepare(params, X, Y, spec, algorithm="e-prop", h0=h0, mask=mask, lengths=lengths,
                    steps=steps)
    check_single_layer(spec, "e-prop", _WHY)
    F = feedback_matrix(feedback, feedback_seed, spec, batch.dtype, "e-prop")
    return batch, EpropTracker(spec, batch, d), F


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
    feedback: ArrayLike | str = "symmetric",
    feedback_seed: int = 0,
    decay: float = 0.0,
) -> tuple[float, network.Gradients, network.Output]:
    """Loss, the e-prop update direction and outputs (eqs. 41, 54-55).

    Parameters
    ----------
    params, X, Y, spec, h0, mask, lengths, steps
        As for :func:`rnnlab.network.value_and_grad`; one unidirectional layer.
    feedback : "symmetric", "random" or (O, H) array
        The matrix ``F`` of the learning signal ``G_t = (dL/dz_t) F`` (eq. 44): ``W_hyᵀ``
        (symmetric e-prop, the default), a fixed random matrix drawn from
        ``numpy.random.default_rng(feedback_seed)`` (random e-prop), or a given matrix.
    feedback_seed : int
        Fixes the random feedback matrix.
    decay : float in [0, 1)
        The membrane's retention of eq. (54); 0 (the default) is rnnlab's vanilla cell.

    Returns
    -------
    loss : float
        The exact loss of the network (eq. 54's for ``decay > 0``).
    grads : Gradients
        ``params``: e-prop's direction (the head's gradient is exact); ``X`` None; ``h0`` zeros.
    out : Output
    """
    p = dict(params)
    batch, tracker, F = _setup(p, X, Y, spec, h0, mask, lengths, steps, feedback,
                               feedback_seed, decay)
    loss, grads, out = walk(tracker, p, batch, feedback=F)
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
    feedback: ArrayLike | str = "symmetric",
    feedback_seed: int = 0,
    decay: float = 0.0,
    every: int = 1,
) -> tuple[float, network.Output]:
    """Online e-prop (eq. 42): an optimizer step every ``every`` steps; ``params`` and
    ``opt_state`` are updated in place.  Arguments as :func:`value_and_grad` and
    :func:`rnnlab.rtrl.online_update`; returns ``(loss, out)``."""
    e = check_every(every)
    batch, tracker, F = _setup(params, X, Y, spec, h0, mask, lengths, steps, feedback,
                               feedback_seed, decay)
    loss, _, out = walk(tracker, params, batch, feedback=F, opt=opt, opt_state=opt_state,
                        lr=lr, every=e)
    return loss, out
