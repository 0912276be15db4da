"""Kronecker-factored RTRL (Mujika, Meier and Steger 2018; docs/derivation.md, section 14,
eqs. 48-49).

For one vanilla layer the immediate influence of the joint weights ``W = [W_hh; W_xh; b_h]`` (eq.
39) is a Kronecker product, ``u_t ⊗ diag f'(Z_t)`` with ``u_t = [H_{t-1} | X_t | 1]`` (eq. 40),
and one step of RTRL maps ``ũ ⊗ Ã`` to ``ũ ⊗ (Ã W_hh ⊙ f'_t)``.  KF-RTRL keeps, per sequence,
one such product ``S_t[b] ≈ ũ_t[b] ⊗ Ã_t[b]`` (``ũ`` ``(B, H + D + 1)``, ``Ã`` ``(B, H, H)``)
and folds the sum of the two Kronecker products into one with two random signs ``c1, c2``::

    ũ ← c1 p1 ũ + c2 p2 u_t,      Ã ← c1 (Ã W_hh ⊙ f'_t) / p1 + c2 diag(f'_t) / p2      (eq. 48)

which is unbiased (eq. 49) with a variance that, unlike UORO's, does not grow with the number of
parameters.  A step costs ``O(B H^3)`` (the ``(B H, H) x (H, H)`` product of ``Ã W_hh``) and the
memory is ``O(B H^2)``.  Defined for one recurrent layer.
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
    check_single_layer,
    gradients,
    random_signs,
    unpack_joint,
    walk,
)

Array = NDArray[np.floating]

__all__ = ["KFTracker", "online_update", "value_and_grad"]

_WHY = ("Mujika et al. factor the influence matrix of a single layer's weights as u_t ⊗ A_t; "
        "a layer above would need the product of the factors of the layers below")


class KFTracker(Tracker):
    """The Kronecker-factored estimate ``ũ ⊗ Ã`` of every sequence, eq. (48)."""

    def __init__(self, spec: RNNSpec, batch: Batch, rng: np.random.Generator) -> None:
        super().__init__(spec, batch)
        B, H, D, dt = batch.B, spec.hidden_size, spec.input_size, batch.dtype
        self.rng = rng
        self.ut = np.zeros((B, H + D + 1), dt)      # ũ_{-1} ⊗ Ã_{-1} = 0 = S_{-1} (eq. 29)
        self.A = np.zeros((B, H, H), dt)
        self.A_new = np.empty((B, H, H), dt)
        self.ubuf = np.empty((B, H + D + 1), dt)
        self.diag = np.arange(H)

    def update(self, params: Mapping[str, Array], pad: Rows | None) -> None:
        B, H, fp = self.B, self.H, self.fp[0]
        A, A_new = self.A, self.A_new
        np.matmul(A.reshape(B * H, H), params["l0.W_hh"], out=A_new.reshape(B * H, H))
        A_new *= fp[:, None, :]                                     # Ã W_hh ⊙ f'_t
        u = self.u(0, self.ubuf)
        c = random_signs(self.rng, (B, 2), self.dtype)
        n_A = np.sqrt(np.einsum("bjk,bjk->b", A_new, A_new))
        n_ut = np.sqrt(np.einsum("bi,bi->b", self.ut, self.ut))
        n_D = np.sqrt(np.einsum("bk,bk->b", fp, fp))               # ‖diag f'_t‖
        n_u = np.sqrt(np.einsum("bi,bi->b", u, u))
        p1 = np.sqrt(n_A / (n_ut + EPS)) + EPS                      # eq. (48)
        p2 = np.sqrt(n_D / (n_u + EPS)) + EPS
        a1, a2 = c[:, 0] / p1, c[:, 1] / p2
        keep_u = None if pad is None else self.ut[pad].copy()
        keep_A = None if pad is None else A[pad].copy()
        self.ut *= (c[:, 0] * p1)[:, None]
        self.ut += (c[:, 1] * p2)[:, None] * u
        A_new *= a1[:, None, None]
        A_new[:, self.diag, self.diag] += a2[:, None] * fp
        if pad is not None:                                         # eq. (30)
            assert keep_u is not None and keep_A is not None
            self.ut[pad] = keep_u
            A_new[pad] = keep_A
        self.A, self.A_new = A_new, A

    def contract(self, G: Array, grads: Params) -> None:
        AG = np.matmul(self.A, G[:, :, None])[:, :, 0]             # (B, H): Ã_t G_tᵀ
        unpack_joint(self.ut.T @ AG, 0, self.H, grads)              # Σ_b ũ[b] ⊗ (Ã G)[b]


def _batch(params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike, spec: RNNSpec,
           h0: ArrayLike | None, mask: ArrayLike | None, lengths: ArrayLike | None,
           steps: int | None) -> Batch:
    batch = prepare(params, X, Y, spec, algorithm="KF-RTRL", h0=h0, mask=mask, lengths=lengths,
                    steps=steps)
    check_single_layer(spec, "KF-RTRL", _WHY)
    return batch


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
    """Loss, KF-RTRL's unbiased estimate of the gradient, and outputs (eqs. 41, 48-49).

    Parameters
    ----------
    params, X, Y, spec, h0, mask, lengths, steps
        As for :func:`rnnlab.network.value_and_grad`; ``spec`` must have one unidirectional layer.
    rng : numpy.random.Generator
        The source of the random signs (required; two per sequence and step).

    Returns
    -------
    loss : float
        The exact loss (eq. 15).
    grads : Gradients
        ``params``: the estimate (exact for the head), whose expectation over ``rng`` is the
        exact gradient; ``X`` None; ``h0`` zeros (not estimated).
    out : Output
    """
    gen = check_rng(rng, "KF-RTRL")
    p = dict(params)
    batch = _batch(p, X, Y, spec, h0, mask, lengths, steps)
    loss, grads, out = walk(KFTracker(spec, batch, gen), p, batch)
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
    """Online KF-RTRL (eq. 42): an optimizer step every ``every`` steps; ``params`` and
    ``opt_state`` are updated in place.  Arguments as :func:`value_and_grad` and
    :func:`rnnlab.rtrl.online_update`; returns ``(loss, out)``."""
    gen = check_rng(rng, "KF-RTRL")
    k = check_every(every)
    batch = _batch(params, X, Y, spec, h0, mask, lengths, steps)
    loss, _, out = walk(KFTracker(spec, batch, gen), params, batch, opt=opt,
                        opt_state=opt_state, lr=lr, every=k)
    return loss, out
