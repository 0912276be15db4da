"""The state of each forward-mode rule on buffers: its estimate of the influence matrix
``dH_t/dθ`` (RTRL's exact one, UORO's rank-one, KF-RTRL's Kronecker factors, SnAp-n's sparse
pattern, RFLO's and e-prop's eligibility traces), advanced one step at a time and contracted with
a learning signal (docs/derivation.md, section 14; docs/online.md, "On the fast path").

:class:`rnnlab.fast.rules.FastRule` runs them: it owns the batch, the forward pass and the
optimizer steps; each estimate here owns only its buffers, :meth:`Estimate.update` and
:meth:`Estimate.contract`.  Tested against the reference rules of :mod:`rnnlab.learning` through
``FastRule`` (tests/fast/test_rules.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from ..core.sparsity import pattern_layout
from ..core.spec import RNNSpec

Array = NDArray[np.floating]
Rows = NDArray[np.intp]

__all__ = ["EPS", "FOLD", "Estimate", "KFEstimate", "RTRLEstimate", "SnApEstimate",
           "TraceEstimate", "UOROEstimate"]

EPS = 1e-7
"""UORO's and KF-RTRL's ``ε`` (:data:`rnnlab.learning.walk.EPS`)."""
FOLD = 1e8
"""UORO's scale folding bound (:data:`rnnlab.learning.uoro.FOLD`)."""


def _diag(S: Array, start: int, n: int) -> Array:
    """Writable ``(B, n, H)`` view ``V[b, i, j] = S[b, start + i H + j, j]``."""
    B, _, H = S.shape
    sB, sR, sH = S.strides
    return as_strided(S[:, start:start + n * H], shape=(B, n, H), strides=(sB, H * sR, sR + sH))


def _signs(rng: np.random.Generator, shape: tuple[int, ...], out: Array) -> Array:
    """``±1`` into ``out``: the draws of :func:`rnnlab.learning.walk.random_signs`."""
    np.multiply(rng.integers(0, 2, size=shape, dtype=np.int8), 2, out=out)
    out -= 1.0
    return out


def _rowdot(a: Array, out: Array) -> Array:
    """``out[b] = Σ a[b]²`` over every axis but the first (one pass)."""
    flat = a.reshape(a.shape[0], -1)
    return np.einsum("bi,bi->b", flat, flat, out=out)


# ----------------------------------------------------------------------------- the estimates


class Estimate:
    """One rule's state (its estimate of ``dH_t/dθ``) on buffers.

    :meth:`update` advances it by one step from the joint inputs ``u[l]`` ``(B, R_l)`` and the
    derivatives ``fp[l]`` ``(B, H)`` of every layer (``pad``: rows that carry, eq. 30);
    :meth:`contract` adds ``Σ_b G[b] · S̃_t[b]`` into the joint gradients ``gj[l]`` ``(R_l, H)``.
    """

    def __init__(self, spec: RNNSpec, B: int, dtype: np.dtype) -> None:
        self.spec, self.B, self.dtype = spec, B, dtype
        self.H = spec.hidden_size
        self.L = spec.num_layers
        self.D = [spec.input_size] + [self.H] * (self.L - 1)
        self.R = [self.H + d + 1 for d in self.D]
        self.pool: ThreadPoolExecutor | None = None     # set by FastRule.threads
        self.pieces: list[tuple[int, int]] = [(0, B)]

    def _each(self, fn: Any) -> None:
        """``fn(b0, b1)`` for every piece of the sequences, the pieces at once on the pool's
        threads (one BLAS thread each; a piece's numbers do not depend on the cut)."""
        if self.pool is None or len(self.pieces) == 1:
            fn(0, self.B)
            return
        futures = [self.pool.submit(fn, b0, b1) for b0, b1 in self.pieces[1:]]
        fn(*self.pieces[0])
        for f in futures:
            f.result()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, params: Mapping[str, Array], u: list[Array], fp: list[Array],
               pad: Rows | None) -> None:
        raise NotImplementedError

    def contract(self, params: Mapping[str, Array], G: Array, gj: list[Array]) -> None:
        raise NotImplementedError

    def step(self, params: Mapping[str, Array], u: list[Array], fp: list[Array],
             pad: Rows | None, G: Array | None, gj: list[Array] | None) -> None:
        """:meth:`update`, then (``G`` given: a scored step) :meth:`contract`."""
        self.update(params, u, fp, pad)
        if G is not None:
            assert gj is not None
            self.contract(params, G, gj)


class RTRLEstimate(Estimate):
    """Exact sensitivities in the joint layout, kept before the scaling by ``f'`` (see the
    module's docstring); ``with_h0``: rows for every layer's initial state (the batch form)."""

    def __init__(self, spec: RNNSpec, B: int, dtype: np.dtype, with_h0: bool) -> None:
        super().__init__(spec, B, dtype)
        H = self.H
        self.with_h0 = with_h0
        self.offset, self.size = [], []
        o = 0
        for r in self.R:
            n = r * H + (H if with_h0 else 0)
            self.offset.append(o)
            self.size.append(n)
            o += n
        self.rows = [o + s for o, s in zip(self.offset, self.size, strict=True)]
        self.P = [np.empty((B, r, H), dtype) for r in self.rows]
        self.P_new = [np.empty((B, r, H), dtype) for r in self.rows]
        self.dprev = [np.empty((B, H), dtype) for _ in range(self.L)]   # f'_{t-1} of each layer
        self.Wt = np.empty((B, H, H), dtype)
        self.below = np.empty((B, self.rows[-2], H), dtype) if self.L > 1 else None
        self.acc = np.zeros((B, self.rows[-1]), dtype)
        self.tmp = np.empty((B, self.rows[-1], 1), dtype)
        self.g = np.empty((B, H, 1), dtype)

    def _bmm(self, A: Array, W: Array, out: Array) -> None:
        """``out[b] = A[b] W[b]`` for every sequence, one product each, in pieces."""
        self._each(lambda b0, b1: np.matmul(A[b0:b1], W[b0:b1], out=out[b0:b1]))

    def reset(self) -> None:
        H = self.H
        for layer in range(self.L):
            self.P[layer].fill(0.0)
            self.dprev[layer].fill(1.0)          # P_{-1} = S_{-1}: no scaling before step 0
            if self.with_h0:                     # S_{-1} = dh0/dh0 = I, eq. (29)
                o = self.offset[layer] + self.size[layer] - H
                _diag(self.P[layer], o, 1)[:, 0] += 1.0
        self.acc.fill(0.0)

    def update(self, params: Mapping[str, Array], u: list[Array], fp: list[Array],
               pad: Rows | None) -> None:
        for layer in range(self.L):
            p = f"l{layer}"
            P_old, P_new, dprev = self.P[layer], self.P_new[layer], self.dprev[layer]
            # S_{t-1} W_hh = P_{t-1} (diag f'_{t-1} W_hh): one product per sequence (eq. 27)
            np.multiply(dprev[:, :, None], params[f"{p}.W_hh"], out=self.Wt)
            self._bmm(P_old, self.Wt, P_new)
            if layer > 0:                        # S^{l-1}_t W_xh, the layer below (eq. 27)
                assert self.below is not None
                Rb = self.rows[layer - 1]
                below = self.below[:, :Rb]
                np.multiply(fp[layer - 1][:, :, None], params[f"{p}.W_xh"], out=self.Wt)
                self._bmm(self.P[layer - 1], self.Wt, below)
                P_new[:, :Rb] += below
            _diag(P_new, self.offset[layer], self.R[layer])[...] += u[layer][:, :, None]  # E_t
            if pad is not None:                  # eq. (30): S_t = S_{t-1} on padded rows
                P_new[pad] = P_old[pad]
                f = fp[layer].copy()
                f[pad] = dprev[pad]
                dprev[...] = f
            else:
                dprev[...] = fp[layer]
            self.P[layer], self.P_new[layer] = P_new, P_old

    def contract(self, params: Mapping[str, Array], G: Array, gj: list[Array]) -> None:
        # G_t S_t = (f'_t ⊙ G_t) P_t, summed per sequence (eq. 31)
        np.multiply(G, self.dprev[-1], out=self.g[:, :, 0])
        self._bmm(self.P[-1], self.g, self.tmp)
        self.acc += self.tmp[:, :, 0]

    def finish(self, gj: list[Array]) -> Array:
        """Unpack the accumulated rows into ``gj``; returns ``dL/dh0`` ``(L, B, H)`` (zeros
        without ``with_h0``)."""
        H = self.H
        rows = self.acc.sum(axis=0)
        dh0 = np.zeros((self.L, self.B, H), self.dtype)
        for layer in range(self.L):
            o = self.offset[layer]
            gj[layer] += rows[o:o + self.R[layer] * H].reshape(self.R[layer], H)
            if self.with_h0:
                e = o + self.size[layer]
                dh0[layer] = self.acc[:, e - H:e]
        return dh0


class UOROEstimate(Estimate):
    """:class:`rnnlab.learning.uoro.UOROTracker` on buffers.

    The pass over ``Θ`` (``(B, R_l, H)`` per layer, the rule's memory) is one read and one write
    per step: the rank-one update ``Θ += a u ⊗ δ``, the squared norm that the next step's
    ``ρ0`` needs (eq. 46) and the contraction with the step's learning signal (eq. 41) run on
    chunks of sequences small enough to stay in the cache (:data:`CHUNK_BYTES`), where the
    reference makes three passes and a temporary as large as ``Θ``.
    """

    CHUNK_BYTES = 1 << 20

    def __init__(self, spec: RNNSpec, B: int, dtype: np.dtype, rng: np.random.Generator
                 ) -> None:
        super().__init__(spec, B, dtype)
        L, H = self.L, self.H
        self.rng = rng
        self.v = np.zeros((B, L, H), dtype)
        self.v_new = np.empty((B, L, H), dtype)
        self.theta = [np.zeros((B, r, H), dtype) for r in self.R]
        per_seq = sum(self.R) * H * np.dtype(dtype).itemsize
        self.chunk = max(1, min(B, self.CHUNK_BYTES // per_seq))
        self.buf = [np.empty((self.chunk, r, H), dtype) for r in self.R]
        self.c = np.ones(B, dtype)
        self.nu = np.empty((B, L, H), dtype)
        self.delta = [np.empty((B, H), dtype) for _ in range(L)]
        self.jv = np.empty((B, H), dtype)
        self.jx = np.empty((B, H), dtype)
        self.au = [np.empty((B, r), dtype) for r in self.R]
        self.s1 = np.empty(B, dtype)
        self.s2 = np.empty(B, dtype)
        self.sq = np.empty(B, dtype)
        self.nt = np.zeros(B, dtype)              # Σ_l ‖Θ_l[b]‖², kept from the last step
        self.part = np.empty(self.chunk, dtype)

    def reset(self) -> None:
        self.v.fill(0.0)
        for t in self.theta:
            t.fill(0.0)
        self.c.fill(1.0)
        self.nt.fill(0.0)

    def update(self, params: Mapping[str, Array], u: list[Array], fp: list[Array],
               pad: Rows | None) -> None:
        self.step(params, u, fp, pad, None, None)

    def contract(self, params: Mapping[str, Array], G: Array, gj: list[Array]) -> None:
        c = np.einsum("bh,bh->b", G, self.v[:, -1]) * self.c  # (G_t · ṽ_t) c, eq. (41)
        for layer, t in enumerate(self.theta):
            gj[layer] += np.tensordot(c, t, axes=1)

    def step(self, params: Mapping[str, Array], u: list[Array], fp: list[Array],
             pad: Rows | None, G: Array | None, gj: list[Array] | None) -> None:
        L = self.L
        v, v_new = self.v, self.v_new
        for layer in range(L):                                # J_t ṽ, bottom up (eq. 45)
            p = f"l{layer}"
            np.matmul(v[:, layer], params[f"{p}.W_hh"], out=self.jv)
            if layer > 0:
                np.matmul(v_new[:, layer - 1], params[f"{p}.W_xh"], out=self.jx)
                self.jv += self.jx
            np.multiply(self.jv, fp[layer], out=v_new[:, layer])
        nu = _signs(self.rng, (self.B, L, self.H), self.nu)
        np.multiply(nu[:, L - 1], fp[L - 1], out=self.delta[L - 1])     # νᵀ ∂F/∂θ, top down
        sq = self.sq
        sq.fill(0.0)
        for layer in range(L - 1, -1, -1):
            d = self.delta[layer]
            np.einsum("bi,bi->b", u[layer], u[layer], out=self.s1)
            np.einsum("bh,bh->b", d, d, out=self.s2)
            self.s1 *= self.s2
            sq += self.s1
            if layer > 0:
                below = self.delta[layer - 1]
                np.matmul(d, params[f"l{layer}.W_xh"].T, out=below)
                below += nu[:, layer - 1]
                below *= fp[layer - 1]
        norm_theta = np.abs(self.c) * np.sqrt(self.nt)
        norm_v = np.sqrt(_rowdot(v_new, self.s2))
        rho0 = np.sqrt(norm_theta / (norm_v + EPS)) + EPS     # eq. (46)
        rho1 = np.sqrt(np.sqrt(sq) / (np.sqrt(L * self.H) + EPS)) + EPS
        c_new = self.c / rho0
        a = 1.0 / (rho1 * c_new)
        v_new *= rho0[:, None, None]
        nu *= rho1[:, None, None]
        v_new += nu
        if pad is not None:                                   # eq. (30)
            v_new[pad] = v[pad]
            a[pad] = 0.0
            c_new[pad] = self.c[pad]
        for ul, au in zip(u, self.au, strict=True):
            np.multiply(a[:, None], ul, out=au)
        cc = None
        if G is not None:                                     # (G_t · ṽ_t) c_t, eq. (41)
            cc = np.einsum("bh,bh->b", G, v_new[:, -1]) * c_new
        nt = self.nt
        nt.fill(0.0)
        for b0 in range(0, self.B, self.chunk):               # Θ += a u ⊗ δ, chunk by chunk
            b1 = min(b0 + self.chunk, self.B)
            n = b1 - b0
            part = self.part[:n]
            for layer, (t, buf) in enumerate(zip(self.theta, self.buf, strict=True)):
                th, bf = t[b0:b1], buf[:n]
                np.multiply(self.au[layer][b0:b1, :, None], self.delta[layer][b0:b1, None, :],
                            out=bf)
                th += bf
                flat = th.reshape(n, -1)
                nt[b0:b1] += np.einsum("bi,bi->b", flat, flat, out=part)
                if cc is not None:
                    assert gj is not None
                    gj[layer] += np.tensordot(cc[b0:b1], th, axes=1)
        far = np.flatnonzero((np.abs(c_new) > FOLD) | (np.abs(c_new) < 1.0 / FOLD))
        if far.size:                                          # fold the scale back in
            nt[far] = 0.0
            for t in self.theta:
                t[far] *= c_new[far, None, None]
                nt[far] += _rowdot(t[far], self.s1[:far.size])
            c_new[far] = 1.0
        self.c = c_new
        self.v, self.v_new = v_new, v


class KFEstimate(Estimate):
    """:class:`rnnlab.learning.kf_rtrl.KFTracker` on buffers."""

    def __init__(self, spec: RNNSpec, B: int, dtype: np.dtype, rng: np.random.Generator
                 ) -> None:
        super().__init__(spec, B, dtype)
        H, R = self.H, self.R[0]
        self.rng = rng
        self.ut = np.zeros((B, R), dtype)
        self.A = np.zeros((B, H, H), dtype)
        self.A_new = np.empty((B, H, H), dtype)
        self.c = np.empty((B, 2), dtype)
        self.diag = np.arange(H)
        self.AG = np.empty((B, H, 1), dtype)
        self.n = np.empty((4, B), dtype)

    def reset(self) -> None:
        self.ut.fill(0.0)
        self.A.fill(0.0)

    def update(self, params: Mapping[str, Array], u: list[Array], fp: list[Array],
               pad: Rows | None) -> None:
        B, H, f, u0 = self.B, self.H, fp[0], u[0]
        A, A_new = self.A, self.A_new
        W = params["l0.W_hh"]
        self._each(lambda b0, b1: np.matmul(A[b0:b1].reshape(-1, H), W,
                                             out=A_new[b0:b1].reshape(-1, H)))
        A_new *= f[:, None, :]                                      # Ã W_hh ⊙ f'_t
        c = _signs(self.rng, (B, 2), self.c)
        n = self.n
        _rowdot(A_new, n[0])
        _rowdot(self.ut, n[1])
        _rowdot(f, n[2])
        _rowdot(u0, n[3])
        np.sqrt(n, out=n)
        p1 = np.sqrt(n[0] / (n[1] + EPS)) + EPS                    # eq. (48)
        p2 = np.sqrt(n[2] / (n[3] + EPS)) + EPS
        a1, a2 = c[:, 0] / p1, c[:, 1] / p2
        keep_u = None if pad is None else self.ut[pad].copy()
        keep_A = None if pad is None else A[pad].copy()
        self.ut *= (c[:, 0] * p1)[:, None]
        self.ut += (c[:, 1] * p2)[:, None] * u0
        A_new *= a1[:, None, None]
        A_new[:, self.diag, self.diag] += a2[:, None] * f
        if pad is not None:                                         # eq. (30)
            assert keep_u is not None and keep_A is not None
            self.ut[pad] = keep_u
            A_new[pad] = keep_A
        self.A, self.A_new = A_new, A

    def contract(self, params: Mapping[str, Array], G: Array, gj: list[Array]) -> None:
        np.matmul(self.A, G[:, :, None], out=self.AG)              # Ã_t G_tᵀ
        gj[0] += self.ut.T @ self.AG[:, :, 0]                       # Σ_b ũ[b] ⊗ (Ã G)[b]


class SnApEstimate(Estimate):
    """:class:`rnnlab.learning.snap.SnApTracker` on buffers (``P``: the pattern of eq. 50,
    ``conn`` the connections)."""

    def __init__(self, spec: RNNSpec, B: int, dtype: np.dtype, conn: NDArray[np.bool_],
                 P: NDArray[np.bool_]) -> None:
        super().__init__(spec, B, dtype)
        H, R = self.H, self.R[0]
        self.conn = conn
        self.sparse = not bool(conn.all())
        self.idx, self.valid, self.pos = pattern_layout(P)
        self.p = p = self.idx.shape[1]
        self.full = p == H and bool(self.valid.all())
        self.units = np.arange(H)
        self.chunk = max(1, min(B, UOROEstimate.CHUNK_BYTES // (R * H * np.dtype(dtype).itemsize)))
        shape = (B, R, H) if p == 1 else (H, B, R, p)
        self.S = np.zeros(shape, dtype)
        self.S_new = np.empty(shape if p > 1 else (0,), dtype)   # SnAp-1 updates in place
        self.w = np.empty(H, dtype)
        self.mask2 = (self.valid[:, :, None] & self.valid[:, None, :]).astype(dtype)
        self.flat = (self.idx[:, :, None] * H + self.idx[:, None, :]).ravel()
        self.W_sub = np.empty((H, p, p), dtype)
        self.f = np.empty((B, H, p), dtype)
        self.Gt = np.empty((H, B, p, 1), dtype)
        self.g = np.empty((H, B, R, 1), dtype) if p > 1 else np.empty((0,), dtype)

    def reset(self) -> None:
        self.S.fill(0.0)

    def step(self, params: Mapping[str, Array], u: list[Array], fp: list[Array],
             pad: Rows | None, G: Array | None, gj: list[Array] | None) -> None:
        """SnAp-1 in place, chunk by chunk (the update of eq. 51 and the contraction of eq. 41
        while a chunk of sequences is in the cache: one read and one write of ``s`` per step);
        SnAp-n as :meth:`update` and :meth:`contract`."""
        if self.p != 1:
            return super().step(params, u, fp, pad, G, gj)
        S, f, uu = self.S, fp[0], u[0]
        np.copyto(self.w, np.diagonal(params["l0.W_hh"]))
        keep = None if pad is None else S[pad].copy()
        acc = None if G is None else np.zeros(S.shape[1:], S.dtype)
        for b0 in range(0, self.B, self.chunk):
            b1 = min(b0 + self.chunk, self.B)
            s = S[b0:b1]
            s *= self.w                                  # only W_hh[j, j] survives
            s += uu[b0:b1, :, None]                      # u_t ⊗ I on the diagonal
            s *= f[b0:b1, None, :]
            if keep is not None:                         # eq. (30): padded rows carry
                assert pad is not None
                inside = (pad >= b0) & (pad < b1)
                s[pad[inside] - b0] = keep[inside]
            if acc is not None:
                assert G is not None
                acc += np.einsum("bij,bj->ij", s, G[b0:b1])
        if acc is not None:
            assert gj is not None
            if self.sparse:
                acc[:self.H] *= self.conn
            gj[0] += acc
        return None

    def update(self, params: Mapping[str, Array], u: list[Array], fp: list[Array],
               pad: Rows | None) -> None:
        W = params["l0.W_hh"]
        S, S_new = self.S, self.S_new
        if self.p == 1:                                  # SnAp-1: in place, in chunks
            self.step(params, u, fp, pad, None, None)
            return
        H, B, R, p = S.shape
        if self.full:                                    # the pattern is everything: RTRL
            np.matmul(S.reshape(H * B * R, H), W, out=S_new.reshape(H * B * R, H))
        else:
            np.take(W.reshape(-1), self.flat, out=self.W_sub.reshape(-1))
            self.W_sub *= self.mask2
            np.matmul(S.reshape(H, B * R, p), self.W_sub, out=S_new.reshape(H, B * R, p))
        S_new[self.units, :, :, self.pos] += u[0]        # u_t ⊗ I (eq. 40)
        np.take(fp[0], self.idx, axis=1, out=self.f)     # (B, H, p)
        S_new *= self.f.transpose(1, 0, 2)[:, :, None, :]
        if pad is not None:
            S_new[:, pad] = S[:, pad]
        self.S, self.S_new = S_new, S

    def contract(self, params: Mapping[str, Array], G: Array, gj: list[Array]) -> None:
        H = self.H
        if self.p == 1:
            g1 = np.einsum("bij,bj->ij", self.S, G)              # Σ_b s[b] ⊙ G[b]
            if self.sparse:
                g1[:H] *= self.conn
            gj[0] += g1
            return
        self.Gt[..., 0] = np.take(G, self.idx, axis=1).transpose(1, 0, 2)   # (H, B, p)
        np.matmul(self.S, self.Gt, out=self.g)
        g = self.g[..., 0].sum(axis=1)                                      # (H, R)
        gT = g.T
        if self.sparse:
            gT = gT.copy()
            gT[:H] *= self.conn
        gj[0] += gT


class TraceEstimate(Estimate):
    """RFLO with ``alpha = 1`` and e-prop with ``decay = 0``: the trace ``u_t ⊗ f'(Z_t)`` kept
    as its factors (eqs. 53, 55), online form."""

    def __init__(self, spec: RNNSpec, B: int, dtype: np.dtype) -> None:
        super().__init__(spec, B, dtype)
        self.ut = np.zeros((B, self.R[0]), dtype)
        self.ft = np.zeros((B, self.H), dtype)
        self.gf = np.empty((B, self.H), dtype)

    def reset(self) -> None:
        self.ut.fill(0.0)
        self.ft.fill(0.0)

    def update(self, params: Mapping[str, Array], u: list[Array], fp: list[Array],
               pad: Rows | None) -> None:
        if pad is None:
            self.ut[...] = u[0]
            self.ft[...] = fp[0]
        else:
            keep = np.ones(self.B, bool)
            keep[pad] = False
            self.ut[keep] = u[0][keep]
            self.ft[keep] = fp[0][keep]

    def contract(self, params: Mapping[str, Array], G: Array, gj: list[Array]) -> None:
        np.multiply(G, self.ft, out=self.gf)
        gj[0] += self.ut.T @ self.gf
