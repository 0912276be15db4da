"""Slow, explicit references for the approximate forward-mode rules (docs/derivation.md, section
14): one sequence at a time, flat parameter vectors, and the Jacobians of one step taken by
PyTorch autograd (not by rnnlab), so the rules are checked against their papers' definitions and
not against their own batched algebra.

The flat parameter vector of a layer is its joint matrix ``[W_hh; W_xh; b_h]`` (eq. 39) in C
order, layers one after another.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from rnnlab import RNNSpec
from rnnlab import network as net

torch.set_default_dtype(torch.float64)

TORCH_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
    "identity": lambda z: z,
}


def flat_params(params: dict, spec: RNNSpec) -> np.ndarray:
    """The recurrent parameters as one vector (joint layout per layer)."""
    parts = []
    for layer in range(spec.num_layers):
        p = f"l{layer}"
        joint = np.concatenate([params[f"{p}.W_hh"], params[f"{p}.W_xh"],
                                params[f"{p}.b_h"][None]], axis=0)
        parts.append(joint.ravel())
    return np.concatenate(parts)


def unflat(g: np.ndarray, params: dict, spec: RNNSpec) -> dict:
    """A flat recurrent gradient back to the parameter keys (the head: zeros)."""
    out = {k: np.zeros_like(v) for k, v in params.items()}
    H, o = spec.hidden_size, 0
    for layer in range(spec.num_layers):
        p = f"l{layer}"
        D = params[f"{p}.W_xh"].shape[0]
        n = (H + D + 1) * H
        joint = g[o:o + n].reshape(H + D + 1, H)
        out[f"{p}.W_hh"], out[f"{p}.W_xh"], out[f"{p}.b_h"] = joint[:H], joint[H:H + D], joint[-1]
        o += n
    return out


def step_function(spec: RNNSpec, params: dict) -> Callable[..., torch.Tensor]:
    """``F(s_prev, theta, x) -> s``: one step of the stacked network for one sequence."""
    H, L = spec.hidden_size, spec.num_layers
    dims = [params[f"l{layer}.W_xh"].shape[0] for layer in range(L)]
    f = TORCH_ACT[spec.nonlinearity]

    def F(s_prev: torch.Tensor, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out, o, inp = [], 0, x
        for layer in range(L):
            n = (H + dims[layer] + 1) * H
            W = theta[o:o + n].reshape(H + dims[layer] + 1, H)
            u = torch.cat([s_prev[layer * H:(layer + 1) * H], inp, torch.ones(1)])
            h = f(u @ W)
            out.append(h)
            inp, o = h, o + n
        return torch.cat(out)
    return F


def jacobians(F: Callable[..., torch.Tensor], s_prev: np.ndarray, theta: np.ndarray,
              x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, J, M)``: the next state, ``J = dF/ds_prev`` ``(S, S)`` and the immediate influence
    ``M = dF/dtheta`` ``(S, P)`` (rows: state entries)."""
    sp, th, xx = (torch.tensor(a) for a in (s_prev, theta, x))
    J, M = torch.autograd.functional.jacobian(lambda a, b: F(a, b, xx), (sp, th))
    return F(sp, th, xx).detach().numpy(), J.numpy(), M.numpy()


class Walk:
    """The exact forward pass and learning signals of a batch, laid out for the references."""

    def __init__(self, params: dict, spec: RNNSpec, X: np.ndarray, Y: np.ndarray,
                 mask: np.ndarray | None, h0: np.ndarray | None, steps: int | None = None):
        out, cache = net.forward(params, X, spec, h0=h0, mask=mask, steps=steps)
        res = net.loss_and_grad(spec, out, Y, mask=mask)
        B, T, H, L = cache.batch_size, cache.steps, spec.hidden_size, spec.num_layers
        self.B, self.T, self.H, self.L = B, T, H, L
        x = cache.inputs[0]
        if x.ndim == 2:                                             # ids: one-hot
            x = np.eye(spec.input_size)[x]
        self.x = x                                                  # (T, B, D)
        self.s = np.stack([np.concatenate([cache.hbufs[layer][t] for layer in range(L)], axis=1)
                           for t in range(T + 1)])                 # (T + 1, B, L H)
        self.real = np.ones((T, B), bool) if cache.mask is None else cache.mask
        dz = res.dz
        G = np.zeros((T, B, L * H))                                 # dL/ds_t|direct
        if spec.per_step_output:
            G[:, :, -H:] = np.einsum("bto,ho->tbh", dz, params["W_hy"])
        else:
            G[T - 1, :, -H:] = dz @ params["W_hy"].T
        self.G = G
        self.F = step_function(spec, params)
        self.theta = flat_params(params, spec)

    def step(self, t: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(J, M)`` of step ``t`` of sequence ``b`` (checking the state against rnnlab's)."""
        s, J, M = jacobians(self.F, self.s[t, b], self.theta, self.x[t, b])
        np.testing.assert_allclose(s, self.s[t + 1, b], rtol=1e-12, atol=1e-12)
        return J, M


def signs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """The draw the rules make: independent ±1."""
    return (rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1).astype(np.float64)


EPS = 1e-7


# ----------------------------------------------------------------------------- unbiasedness


def rec_keys(spec: RNNSpec) -> list[str]:
    return [f"l{layer}.{n}" for layer in range(spec.num_layers) for n in ("W_xh", "W_hh", "b_h")]


def flat(g: dict, spec: RNNSpec) -> np.ndarray:
    return np.concatenate([g[k].ravel() for k in rec_keys(spec)])


def convergence(draws: np.ndarray, target: np.ndarray, ns: tuple[int, ...]) -> np.ndarray:
    """``‖mean of the first n draws - target‖ / sqrt(tr Σ / n)`` for each ``n``: about 1 (a
    chi-like variable of mean ~1) for an unbiased estimator, growing like sqrt(n) for a biased
    one."""
    var = draws.var(axis=0, ddof=1).sum()
    return np.array([np.linalg.norm(draws[:n].mean(axis=0) - target) / np.sqrt(var / n)
                     for n in ns])


def draws_of(module, params, X, Y, spec, mask, h0, n: int, seed: int, copies: int = 32,
             **kw) -> np.ndarray:
    """``n`` independent estimates, each the batch's estimate on ``copies`` replicas of the batch
    (with the "mean" reduction the replicated batch has the same gradient, and its estimate is
    the mean of ``copies`` independent ones: one vectorised call instead of ``copies``)."""
    assert spec.reduction == "mean"
    rng = np.random.default_rng(seed)
    Xr, Yr = np.concatenate([X] * copies), np.concatenate([Y] * copies)
    mr = None if mask is None else np.concatenate([mask] * copies)
    hr = None if h0 is None else np.concatenate([h0] * copies, axis=1)
    return np.stack([flat(module.value_and_grad(params, Xr, Yr, spec, h0=hr, mask=mr, rng=rng,
                                                **kw)[1].params, spec) for _ in range(n)])


# ----------------------------------------------------------------------------- references


def uoro_reference(w: Walk, rng: np.random.Generator) -> np.ndarray:
    """Tallec and Ollivier (2018), Algorithm 1, per sequence, with autograd's J and M."""
    P = w.theta.size
    sv = np.zeros((w.B, w.L * w.H))
    th = np.zeros((w.B, P))
    g = np.zeros(P)
    for t in range(w.T):
        nu_all = signs(rng, (w.B, w.L, w.H))
        for b in range(w.B):
            if not w.real[t, b]:
                continue
            J, M = w.step(t, b)
            js = J @ sv[b]                                  # forward-mode product
            nu = nu_all[b].ravel()
            dth = nu @ M                                    # backward product
            rho0 = np.sqrt(np.linalg.norm(th[b]) / (np.linalg.norm(js) + EPS)) + EPS
            rho1 = np.sqrt(np.linalg.norm(dth) / (np.linalg.norm(nu) + EPS)) + EPS
            sv[b] = rho0 * js + rho1 * nu
            th[b] = th[b] / rho0 + dth / rho1
        for b in range(w.B):
            g += (w.G[t, b] @ sv[b]) * th[b]
    return g


def kf_reference(w: Walk, rng: np.random.Generator) -> np.ndarray:
    """Mujika et al. (2018): the influence matrix as ``u ⊗ A`` with two random signs a step.

    Checks on the way that autograd's immediate influence is the Kronecker product of eq. (40):
    ``M[k, (i, j)] = u[i] δ_jk f'_k``.
    """
    H = w.H
    n_in = w.theta.size // H
    ut = np.zeros((w.B, n_in))
    A = np.zeros((w.B, H, H))
    g = np.zeros(w.theta.size)
    for t in range(w.T):
        c_all = signs(rng, (w.B, 2))
        for b in range(w.B):
            if not w.real[t, b]:
                continue
            J, M = w.step(t, b)
            u = np.concatenate([w.s[t, b], w.x[t, b], [1.0]])
            Mk = M.reshape(H, n_in, H)                      # [k, i, j]
            fp = np.array([Mk[k, -1, k] for k in range(H)])   # the bias row: u = 1
            np.testing.assert_allclose(Mk, np.einsum("i,jk,k->kij", u, np.eye(H), fp),
                                       atol=1e-13)
            Ap = A[b] @ J.T                                 # S_new[(i, j), :] = S[(i, j), :] Jᵀ
            c1, c2 = c_all[b]
            p1 = np.sqrt(np.linalg.norm(Ap) / (np.linalg.norm(ut[b]) + EPS)) + EPS
            p2 = np.sqrt(np.linalg.norm(fp) / (np.linalg.norm(u) + EPS)) + EPS
            ut[b] = c1 * p1 * ut[b] + c2 * p2 * u
            A[b] = c1 * Ap / p1 + c2 * np.diag(fp) / p2
        for b in range(w.B):
            g += np.outer(ut[b], A[b] @ w.G[t, b]).ravel()
    return g


def exact_reference(w: Walk, keep: np.ndarray | None = None) -> np.ndarray:
    """RTRL with the full influence matrix ``S`` ``(P, S)`` per sequence; with ``keep`` (a
    ``(P, S)`` bool pattern) the entries outside it are dropped after every step (SnAp)."""
    P, Sdim = w.theta.size, w.L * w.H
    S = np.zeros((w.B, P, Sdim))
    g = np.zeros(P)
    for t in range(w.T):
        for b in range(w.B):
            if not w.real[t, b]:
                continue
            J, M = w.step(t, b)
            S[b] = S[b] @ J.T + M.T
            if keep is not None:
                S[b] *= keep
        for b in range(w.B):
            g += S[b] @ w.G[t, b]
    return g
