"""Random-feedback local online learning, RFLO (Murray 2019; docs/derivation.md, section 14,
eqs. 52-53).

Murray's network is made of leaky units with time constant ``τ``; with ``α = Δt/τ`` (Marschall
et al. 2020's notation)::

    H_t = (1 - α) H_{t-1} + α f(Z_t),      Z_t = X_t W_xh + H_{t-1} W_hh + b_h       (eq. 52)

so ``α = 1`` is rnnlab's vanilla cell (eqs. 5-6) and ``α < 1`` a leakier network.  RFLO drops
every path through ``W_hh`` from the influence matrix (the Jacobian ``∂H_t/∂H_{t-1}`` is replaced
by its leak ``(1 - α) I``), which leaves one local trace per weight and sequence, and replaces
``W_hyᵀ`` in the learning signal by a fixed feedback matrix (random, or the symmetric ``W_hyᵀ``)::

    P_t = (1 - α) P_{t-1} + α u_t ⊗ f'(Z_t),    ĝ = Σ_t Σ_b P_t[b] ⊙ G_t[b]           (eq. 53)

with ``u_t = [H_{t-1} | X_t | 1]`` (eq. 40), ``P`` ``(B, H + D + 1, H)`` in the joint layout
(eq. 39) and ``G_t = (dL/dz_t) F`` (eq. 44).  ``O(B H (H + D))`` time and memory per step.  With
``α = 1`` the trace is memoryless, ``P_t = u_t ⊗ f'(Z_t)``, kept as its two factors (the
contraction is then one ``(H + D + 1, B) x (B, H)`` product); RFLO with symmetric feedback is then
truncated BPTT(1; 1), and equal to e-prop with ``decay = 0`` (:mod:`rnnlab.learning.eprop`).
Defined for one recurrent layer.

The trainer (:func:`rnnlab.fit`) and the rest of rnnlab compute the vanilla cell, ``α = 1``; a
leaky network (``alpha < 1``) is available through these functions, which run eq. (52) themselves
(their loss and outputs are the leaky network's), but ``fit`` refuses it.
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

__all__ = ["RFLOTracker", "check_alpha", "online_update", "value_and_grad"]

_WHY = "Murray's traces are local to the synapses of one recurrent population"


def check_alpha(alpha: object) -> float:
    """``α = Δt/τ`` in ``(0, 1]``."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.integer | np.floating):
        raise TypeError(f"RFLO: alpha (= Δt/τ, the leak) must be a number in (0, 1]; got "
                        f"{type(alpha).__name__} {alpha!r}")
    a = float(alpha)
    if not (math.isfinite(a) and 0.0 < a <= 1.0):
        raise ValueError(f"RFLO: alpha (= Δt/τ, the leak) must be in (0, 1] (1 is the vanilla "
                         f"cell); got {a!r}")
    return a


class RFLOTracker(Tracker):
    """The traces ``P`` of eq. (53) (and, for ``α < 1``, the leaky forward step of eq. 52)."""

    def __init__(self, spec: RNNSpec, batch: Batch, alpha: float) -> None:
        super().__init__(spec, batch)
        B, H, D, dt = batch.B, spec.hidden_size, spec.input_size, batch.dtype
        self.alpha = alpha
        # α = 1: the trace is u_t ⊗ f'(Z_t) itself; keep its two factors, not the product
        shape = (B, H + D + 1, 0 if alpha == 1.0 else H)
        self.P = np.zeros(shape, dt)
        self.imm = np.empty(shape, dt)
        self.ubuf = np.empty((B, H + D + 1), dt)
        self.ut = np.zeros((B, H + D + 1), dt)

    def forward(self, params: Mapping[str, Array], x_t: NDArray[Any], pad: Rows | None) -> None:
        if self.alpha == 1.0:
            return super().forward(params, x_t, pad)                 # the vanilla cell
        W_xh = params["l0.W_xh"]
        z = W_xh[x_t] if x_t.ndim == 1 else x_t @ W_xh
        z += params["l0.b_h"]
        h_old = self.h[0]
        z += h_old @ params["l0.W_hh"]                                # Z_t, eq. (52)
        r = self.act.f(z, out=z)
        fp = self.act.grad_from_output(r)                             # f'(Z_t)
        h_new = (1.0 - self.alpha) * h_old + self.alpha * r           # eq. (52)
        if pad is not None:
            h_new[pad] = h_old[pad]
            fp[pad] = self.fp[0][pad]
        self.fp[0] = fp
        self.h_prev[0], self.h[0], self.inp[0] = h_old, h_new, x_t

    def update(self, params: Mapping[str, Array], pad: Rows | None) -> None:
        u = self.u(0, self.ubuf)
        if self.alpha == 1.0:                                         # P_t = u_t ⊗ f'(Z_t)
            if pad is not None:                                       # eq. (30); f' is carried
                u[pad] = self.ut[pad]
            self.ut, self.ubuf = u, self.ut
            return
        keep = None if pad is None else self.P[pad].copy()
        np.multiply(u[:, :, None], self.fp[0][:, None, :], out=self.imm)   # u_t ⊗ f'(Z_t)
        self.P *= 1.0 - self.alpha                                    # eq. (53)
        self.imm *= self.alpha
        self.P += self.imm
        if pad is not None:                                           # eq. (30)
            assert keep is not None
            self.P[pad] = keep

    def contract(self, G: Array, grads: Params) -> None:
        if self.alpha == 1.0:                                         # Σ_b u ⊗ (G ⊙ f'): a GEMM
            unpack_joint(self.ut.T @ (G * self.fp[0]), 0, self.H, grads)
            return
        unpack_joint(np.einsum("bij,bj->ij", self.P, G), 0, self.H, grads)   # eq. (53)


def _setup(params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike, spec: RNNSpec,
           h0: ArrayLike | None, mask: ArrayLike | None, lengths: ArrayLike | None,
           steps: int | None, feedback: object, feedback_seed: object, alpha: object
           ) -> tuple[Batch, RFLOTracker, Array | None]:
    a = check_alpha(alpha)
    batch = prepare(params, X, Y, spec, algorithm="RFLO", h0=h0, mask=mask, lengths=lengths,
                    steps=steps)
    check_single_layer(spec, "RFLO", _WHY)
    F = feedback_matrix(feedback, feedback_seed, spec, batch.dtype, "RFLO")
    return batch, RFLOTracker(spec, batch, a), F


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
    feedback: ArrayLike | str = "random",
    feedback_seed: int = 0,
    alpha: float = 1.0,
) -> tuple[float, network.Gradients, network.Output]:
    """Loss, the RFLO update direction and outputs (eqs. 41, 52-53).

    Parameters
    ----------
    params, X, Y, spec, h0, mask, lengths, steps
        As for :func:`rnnlab.network.value_and_grad`; one unidirectional layer.
    feedback : "random", "symmetric" or (O, H) array
        The matrix ``F`` of the learning signal ``G_t = (dL/dz_t) F`` (eq. 44): Murray's fixed
        random feedback (:func:`rnnlab.learning.walk.random_feedback` drawn from
        ``numpy.random.default_rng(feedback_seed)``, the same at every call), ``W_hyᵀ``, or a
        given matrix.
    feedback_seed : int
        Fixes the random feedback matrix.
    alpha : float in (0, 1]
        ``Δt/τ`` of eq. (52); 1 (the default) is rnnlab's vanilla cell.

    Returns
    -------
    loss : float
        The exact loss of the (leaky, for ``alpha < 1``) network.
    grads : Gradients
        ``params``: RFLO's direction (the head's gradient is exact); ``X`` None; ``h0`` zeros.
    out : Output
    """
    p = dict(params)
    batch, tracker, F = _setup(p, X, Y, spec, h0, mask, lengths, steps, feedback,
                               feedback_seed, alpha)
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
    feedback: ArrayLike | str = "random",
    feedback_seed: int = 0,
    alpha: float = 1.0,
    every: int = 1,
) -> tuple[float, network.Output]:
    """Online RFLO (Murray's algorithm, eq. 42): an optimizer step every ``every`` steps;
    ``params`` and ``opt_state`` are updated in place.  Arguments as :func:`value_and_grad` and
    :func:`rnnlab.rtrl.online_update`; returns ``(loss, out)``."""
    e = check_every(every)
    batch, tracker, F = _setup(params, X, Y, spec, h0, mask, lengths, steps, feedback,
                               feedback_seed, alpha)
    loss, _, out = walk(tracker, params, batch, feedback=F, opt=opt, opt_state=opt_state,
                        lr=lr, every=e)
    return loss, out
