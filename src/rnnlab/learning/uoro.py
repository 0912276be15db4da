"""Unbiased Online Recurrent Optimization (Tallec and Ollivier 2018; docs/derivation.md, section 14,
eqs. 45-47).

UORO keeps a rank-one estimate of the influence matrix of each sequence,
``S_t[b] ≈ θ̃_t[b] ⊗ ṽ_t[b]``: a tangent ``ṽ`` over the states of every layer ``(B, L, H)``, and
a vector ``θ̃`` over every recurrent parameter (per layer in the joint layout of eq. 39,
``(B, H + D_l + 1, H)``).  At every step, with independent random signs ``ν`` ``(B, L, H)``::

    ṽ ← ρ0 · J_t ṽ + ρ1 · ν              J_t ṽ: the forward-mode product through one step (eq. 45)
    θ̃ ← θ̃ / ρ0 + (νᵀ ∂F/∂θ) / ρ1         νᵀ ∂F/∂θ: the backward product through one step

and ``E[θ̃ ⊗ ṽ] = S_t`` exactly (eq. 47), so the gradient estimate ``Σ_t (G_t · ṽ_t) θ̃_t`` is
unbiased.  Both products are the ones BPTT and RTRL do for one step, so a step costs
``O(B (H^2 + |θ|))`` and the memory is ``O(B |θ|)``, like BPTT's for one step.  UORO is defined for
any state transition, so stacked layers are supported (the state is every layer's ``H^l_t``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core import network
from ..core.params import Params
from ..core.spec import RNNSpec
from .batch import Batch, prepare
from .walk import (
    EPS,
    Optimizer,
    Rows,
    Tracker,
    check_every,
    check_rng,
    gradients,
    random_signs,
    unpack_joint,
    walk,
)

Array = NDArray[np.floating]

__all__ = ["FOLD", "UOROTracker", "online_update", "value_and_grad"]

FOLD = 1e8
"""The scale ``c`` of ``θ̃ = c Θ`` is folded back into ``Θ`` when it leaves ``[1/FOLD, FOLD]``."""


class UOROTracker(Tracker):
    """The rank-one estimate ``θ̃ ⊗ ṽ`` of every sequence, eqs. (45)-(46).

    ``θ̃`` is kept as ``c Θ`` with a scale ``c`` per sequence, so that dividing it by ``ρ0`` is
    one multiplication of ``c``, and adding ``δθ / ρ1`` (an outer product ``u ⊗ δ`` per layer) is
    one pass over ``Θ``; ``‖δθ‖ = (Σ_l ‖u^l‖² ‖δ^l‖²)^(1/2)`` needs no pass at all.
    """

    def __init__(self, spec: RNNSpec, batch: Batch, rng: np.random.Generator) -> None:
        super().__init__(spec, batch)
        L, B, H, dt = spec.num_layers, batch.B, spec.hidden_size, batch.dtype
        self.rng = rng
        self.v = np.zeros((B, L, H), dt)                      # ṽ_{-1} = 0: S_{-1} = 0 (eq. 29)
        self.v_new = np.empty((B, L, H), dt)
        self.theta = [np.zeros((B, H + D + 1, H), dt) for D in self.D]     # Θ
        self.c = np.ones(B, dt)                                # θ̃ = c Θ
        self.buf = [np.empty((B, H + D + 1, H), dt) for D in self.D]
        self.ubuf = [np.empty((B, H + D + 1), dt) for D in self.D]

    def update(self, params: Mapping[str, Array], pad: Rows | None) -> None:
        L, B, H, fp = self.spec.num_layers, self.B, self.H, self.fp
        v, v_new = self.v, self.v_new
        for layer in range(L):                                # J_t ṽ, bottom up (eq. 45)
            p = f"l{layer}"
            jv = v[:, layer] @ params[f"{p}.W_hh"]
            if layer > 0:
                jv += v_new[:, layer - 1] @ params[f"{p}.W_xh"]
            np.multiply(jv, fp[layer], out=v_new[:, layer])
        nu = random_signs(self.rng, (B, L, H), self.dtype)
        deltas: list[Array] = [nu[:, 0]] * L                  # νᵀ ∂F/∂θ, top down (eq. 45):
        delta = nu[:, L - 1] * fp[L - 1]                      # δθ^l = u^l ⊗ δ^l
        us = [self.u(layer, self.ubuf[layer]) for layer in range(L)]
        sq_dtheta = np.zeros(B, self.dtype)
        for layer in range(L - 1, -1, -1):
            deltas[layer] = delta
            sq_dtheta += np.einsum("bi,bi->b", us[layer], us[layer]) * np.einsum(
                "bh,bh->b", delta, delta)
            if layer > 0:
                delta = (nu[:, layer - 1] + delta @ params[f"l{layer}.W_xh"].T) * fp[layer - 1]
        norm_theta = np.abs(self.c) * np.sqrt(sum(np.einsum("bij,bij->b", t, t)
                                                  for t in self.theta))
        norm_v = np.sqrt(np.einsum("blh,blh->b", v_new, v_new))
        rho0 = np.sqrt(norm_theta / (norm_v + EPS)) + EPS     # eq. (46)
        rho1 = np.sqrt(np.sqrt(sq_dtheta) / (np.sqrt(L * H) + EPS)) + EPS
        c_new = self.c / rho0                                 # θ̃ / ρ0
        a = 1.0 / (rho1 * c_new)                              # + δθ / ρ1 = c_new (Θ + a δθ)
        v_new *= rho0[:, None, None]
        nu *= rho1[:, None, None]
        v_new += nu
        if pad is not None:                                   # eq. (30): padded rows carry it
            v_new[pad] = v[pad]
            a[pad] = 0.0
            c_new[pad] = self.c[pad]
        for t, buf, u, d in zip(self.theta, self.buf, us, deltas, strict=True):
            np.multiply((a[:, None] * u)[:, :, None], d[:, None, :], out=buf)
            t += buf
        far = np.flatnonzero((np.abs(c_new) > FOLD) | (np.abs(c_new) < 1.0 / FOLD))
        if far.size:                                          # fold the scale back in
            for t in self.theta:
                t[far] *= c_new[far, None, None]
            c_new[far] = 1.0
        self.c = c_new
        self.v, self.v_new = v_new, v

    def contract(self, G: Array, grads: Params) -> None:
        c = np.einsum("bh,bh->b", G, self.v[:, -1]) * self.c  # (G_t · ṽ_t) c, eq. (41)
        for layer, t in enumerate(self.theta):
            unpack_joint(np.tensordot(c, t, axes=1), layer, self.H, grads)


def _batch(params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike, spec: RNNSpec,
           h0: ArrayLike | None, mask: ArrayLike | None, lengths: ArrayLike | None,
           steps: int | None) -> Batch:
    return prepare(params, X, Y, spec, algorithm="UORO", h0=h0, mask=mask, lengths=lengths,
                   steps=steps)


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
    rng: np.random.Generator | None = None,
) -> tuple[float, network.Gradients, network.Output]:
    """Loss, UORO's unbiased estimate of the gradient, and outputs (eqs. 41, 45-47).

    Parameters
    ----------
    params, X, Y, spec, h0, mask, lengths, steps
        As for :func:`rnnlab.network.value_and_grad`; ``spec`` must be unidirectional (stacked
        layers are fine).
    rng : numpy.random.Generator
        The source of the random signs (required): each sequence of the batch draws its own,
        so the batch's estimate is the mean of ``B`` independent ones.

    Returns
    -------
    loss : float
        The exact loss (eq. 15): only the gradient is estimated.
    grads : Gradients
        ``params``: the estimate (the head's gradient is exact); ``X`` None; ``h0`` zeros (not
        estimated).  Its expectation over ``rng`` is the exact gradient
        (:func:`rnnlab.rtrl.value_and_grad`).
    out : Output
    """
    gen = check_rng(rng, "UORO")
    p = dict(params)
    batch = _batch(p, X, Y, spec, h0, mask, lengths, steps)
    loss, grads, out = walk(UOROTracker(spec, batch, gen), p, batch)
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
    rng: np.random.Generator | None = None,
    every: int = 1,
) -> tuple[float, network.Output]:
    """Online UORO (eq. 42): an optimizer step every ``every`` steps, as the sequence is read.

    ``params`` and ``opt_state`` are updated in place; the rank-one estimate computed under the
    earlier parameters is carried across the updates (Tallec and Ollivier's online algorithm).
    Other arguments as :func:`value_and_grad` and :func:`rnnlab.rtrl.online_update`.

    Returns
    -------
    loss : float
        Eq. (15) over the predictions made along the walk.
    out : Output
    """
    gen = check_rng(rng, "UORO")
    k = check_every(every)
    batch = _batch(params, X, Y, spec, h0, mask, lengths, steps)
    loss, _, out = walk(UOROTracker(spec, batch, gen), params, batch, opt=opt,
                        opt_state=opt_state, lr=lr, every=k)
    return loss, out
