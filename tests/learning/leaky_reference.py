"""Closed forms of RFLO's and e-prop's traces (docs/derivation.md, eqs. 52-55), written as the
explicit double sums over time, on leaky networks run by a plain loop (not by rnnlab)."""

from __future__ import annotations

import numpy as np

from rnnlab import RNNSpec, activations, losses


def leaky_forward(params: dict, spec: RNNSpec, X: np.ndarray, *, alpha: float = 1.0,
                  decay: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, U, FP)``: states ``(T + 1, B, H)`` (``H[0] = 0``), joint inputs ``u_t``
    ``(T, B, H + D + 1)`` and derivatives ``(T, B, H)`` of RFLO's leaky units (``alpha``) or
    e-prop's leaky membrane (``decay``), one sequence step at a time."""
    act = activations.get(spec.nonlinearity)
    B, T, _ = X.shape
    Hn = spec.hidden_size
    Hs = np.zeros((T + 1, B, Hn))
    V = np.zeros((B, Hn))
    U, FP = [], []
    for t in range(T):
        u = np.concatenate([Hs[t], X[:, t], np.ones((B, 1))], axis=1)
        z = u @ np.concatenate([params["l0.W_hh"], params["l0.W_xh"], params["l0.b_h"][None]])
        if decay:
            V = decay * V + z
            r = act.f(V.copy())
            Hs[t + 1] = r
        else:
            r = act.f(z.copy())
            Hs[t + 1] = (1 - alpha) * Hs[t] + alpha * r
        U.append(u)
        FP.append(act.grad_from_output(r))
    return Hs, np.stack(U), np.stack(FP)


def head_dz(params: dict, spec: RNNSpec, Hs: np.ndarray, Y: np.ndarray
            ) -> tuple[float, np.ndarray]:
    """Loss and ``dL/dz_t`` ``(T, B, O)`` of a many-to-many network with states ``Hs``."""
    T, B = Hs.shape[0] - 1, Hs.shape[1]
    z = Hs[1:] @ params["W_hy"] + params["b_y"]
    y = np.swapaxes(Y, 0, 1).reshape((T * B,) + Y.shape[2:])
    res = losses.loss_and_grad(spec.loss, z.reshape(T * B, -1), y, spec.reduction)
    return res.value, res.dz.reshape(T, B, -1)


def closed_form(params: dict, spec: RNNSpec, X: np.ndarray, Y: np.ndarray, F: np.ndarray, *,
                alpha: float = 1.0, decay: float = 0.0) -> tuple[float, dict]:
    """The loss and RFLO's (``decay = 0``) or e-prop's (``decay > 0``) direction::

        RFLO:   P_t = Σ_{s≤t} α (1-α)^{t-s} u_s ⊗ f'_s,     ĝ = Σ_t Σ_b P_t[b] ⊙ G_t[b]
        e-prop: ε_t = Σ_{s≤t} decay^{t-s} u_s,              ĝ = Σ_t Σ_b ε_t[b] ⊗ (G_t ⊙ f'_t)[b]

    with ``G_t = (dL/dz_t) F``; the head's gradient is exact.
    """
    Hs, U, FP = leaky_forward(params, spec, X, alpha=alpha, decay=decay)
    value, dz = head_dz(params, spec, Hs, Y)
    T = U.shape[0]
    G = dz @ F
    g = np.zeros((U.shape[2], spec.hidden_size))
    for t in range(T):
        for s in range(t + 1):
            if decay:
                g += decay ** (t - s) * np.einsum("bi,bj->ij", U[s], G[t] * FP[t])
            else:
                w = alpha * (1 - alpha) ** (t - s)
                g += w * np.einsum("bi,bj,bj->ij", U[s], FP[s], G[t])
    Hn = spec.hidden_size
    grads = {"l0.W_hh": g[:Hn], "l0.W_xh": g[Hn:-1], "l0.b_h": g[-1],
             "W_hy": np.einsum("tbh,tbo->ho", Hs[1:], dz), "b_y": dz.sum(axis=(0, 1))}
    return value, grads
