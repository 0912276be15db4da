"""The forward-mode learning rules of :mod:`rnnlab.learning` on the fast path (docs/online.md,
"On the fast path").

RTRL, UORO, KF-RTRL, SnAp-n, RFLO and e-prop compute here what their reference implementations
in :mod:`rnnlab.learning` compute (the derivation in code, on the reference cell, allocating as
it goes), on arrays made once per batch shape and reused, with the products in place and the
batch inside each product:

* the **batch form** (one gradient per window, the parameters fixed) reads the states of every
  step from the fast engine's forward pass (:meth:`rnnlab.fast.workspace.Workspace.forward_loss`:
  the states, ``dL/dz`` of every step; no backward pass), takes the learning signals ``G_t =
  (dL/dz_t) F`` (eq. 44) of the whole window in one product and the head's gradient (eq. 19) in
  another; then the rule's own recursion runs over the steps on its buffers, reading the joint
  inputs ``u_t = [H_{t-1} | X_t | 1]`` (eq. 40) and ``f'(Z_t)`` from the states;
* the **online form** (an optimizer step every ``every`` steps, eq. 42) steps the network with the
  current parameters, on buffers, the input projection of each block of ``every`` steps (whose
  parameters are fixed) one product.

Per rule (docs/derivation.md, section 14):

* **RTRL** (eqs. 26-31) keeps the sensitivities in the joint layout of eq. (39) (rows ``[W_hh;
  W_xh; b_h]`` of every layer, then its ``h0``) *before* the column scaling by ``f'``:
  ``P_t = S_{t-1} W_hh + S^{l-1}_t W_xh + E_t`` and ``S_t = P_t diag f'_t``, so one step is
  ``P_t = P_{t-1} (diag f'_{t-1} W_hh) + ...``, one product per sequence with the scaled
  ``(H, H)`` matrix, and the element-wise pass ``S ⊙ f'`` over the ``(B, R, H)`` array
  disappears (the contraction reads ``P_t (f'_t ⊙ G_t)``);
* **UORO, KF-RTRL** run the reference's updates on preallocated buffers (the random signs drawn
  from the Generator in the same order and shapes, so the same draws give the same estimate);
  UORO's pass over ``Θ`` makes the rank-one update, the norm of eq. (46) and the contraction in
  one read and one write, a chunk of sequences at a time;
* **SnAp-n, RFLO** (``alpha = 1``) **and e-prop** (``decay = 0``), in the batch form, accumulate
  the window backwards: their update is linear in the immediate terms ``u_t`` and maps every row
  of them alike, so ``Σ_t G_t · S̃_t = Σ_t u_tᵀ D_t`` with a signal ``D`` from one backward
  recursion over ``(B, H)`` vectors: ``D_t = G_t ⊙ f'_t`` for RFLO and e-prop (memoryless
  traces); for SnAp-1 ``λ_t = G_t + a_{t+1} λ_{t+1}``, ``a_t = W_jj f'_t``, ``D_t = f'_t λ_t``;
  for SnAp-n the adjoint over each unit's pattern row (``O(B H p²)`` per step where eq. 51 costs
  ``O(B (H + D) H p²)``).  ``Σ_t u_tᵀ D_t`` is three products over the window's rows (with the
  states, the inputs, a sum for ``b_h``).  The same gradient (to rounding), at about a BPTT
  step's cost, keeping the window's states as BPTT does.  The online forms keep the forward
  recursion (SnAp-1's trace updated in place, in chunks); dense SnAp-n (``n >= 2``) is RTRL and
  runs as the fast RTRL.

The leaky networks (RFLO's ``alpha < 1``, e-prop's ``decay > 0``) are not the fast engine's cell:
they stay with :mod:`rnnlab.learning` (``fit`` trains the vanilla cell only).  The options arrive
resolved (a feedback matrix, a connectivity matrix): :mod:`rnnlab.train.steps` checks them with
the reference rules' own functions, so both paths refuse the same things.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core import activations, losses
from ..core.inputs import check_h0, check_targets, make_mask, target_lead, time_first
from ..core.network import Gradients, Output
from ..core.params import Params, check_params
from ..core.sparsity import pattern_layout
from ..core.spec import RNNSpec
from .cpu import BLAS
from .estimates import (
    EPS,
    FOLD,
    Estimate,
    KFEstimate,
    RTRLEstimate,
    SnApEstimate,
    TraceEstimate,
    UOROEstimate,
)
from .workspace import Workspace

Array = NDArray[np.floating]
Rows = NDArray[np.intp]

__all__ = ["EPS", "FAST_RULES", "FOLD", "FastRule", "Optimizer"]

FAST_RULES = frozenset({"rtrl", "uoro", "kf_rtrl", "snap", "rflo", "eprop"})
"""The rules with a fast implementation (each in its batch form and its ``_online`` form)."""

_STACKED = frozenset({"rtrl", "uoro"})


class Optimizer(Protocol):
    """What the online form needs of an optimizer (:class:`rnnlab.optim.Optimizer` is one)."""

    def update_(self, params: Params, grads: Mapping[str, NDArray[Any]], state: dict[str, Any],
                lr: float | None = None) -> None: ...


# ----------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class _Batch:
    """A validated batch, time first (the reference rules' ``learning.batch.Batch``)."""

    B: int
    T: int
    dtype: np.dtype
    x: NDArray[Any]
    mask: NDArray[np.bool_] | None
    h0: Array
    y: NDArray[Any]
    denom: float


def _prepare(params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike, spec: RNNSpec,
             algorithm: str, h0: ArrayLike | None, mask: ArrayLike | None,
             lengths: ArrayLike | None, steps: int | None) -> _Batch:
    _check_spec(spec, algorithm)
    dtype = check_params(params, spec)
    x, B, T = time_first(X, spec, dtype, steps)
    m_bt = make_mask(B, T, mask=mask, lengths=lengths)
    h0_arr = check_h0(h0, spec, B, dtype)
    O = spec.output_size
    y = check_targets(Y, spec, target_lead(spec, B, T), dtype)
    if spec.per_step_output:
        if spec.setup == "many_to_one":
            y = np.broadcast_to(y[:, None], (B, T) + y.shape[1:])
        y = np.moveaxis(y, 1, 0)
    n_scored = (B * T if m_bt is None else int(m_bt.sum())) if spec.per_step_output else B
    k = 1 if spec.loss == "softmax_ce" else O
    denom = 1.0 if spec.reduction == "sum" else float(n_scored * k)
    m_tb = None if m_bt is None else np.ascontiguousarray(m_bt.T)
    return _Batch(B, T, dtype, x, m_tb, h0_arr, y, denom)


_DISPLAY = {"rtrl": "RTRL", "uoro": "UORO", "kf_rtrl": "KF-RTRL", "snap": "SnAp",
            "rflo": "RFLO", "eprop": "e-prop"}


def _check_spec(spec: RNNSpec, algorithm: str) -> None:
    """The reference rules' refusals (``learning.batch.prepare``, ``walk.check_single_layer``),
    with their messages."""
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    name = _DISPLAY.get(algorithm, algorithm)
    if spec.bidirectional:
        raise ValueError(
            f"{name} needs a unidirectional network (spec.bidirectional=False): it walks "
            "time forwards, carrying the state (and, for RTRL, the sensitivities dH_t/dtheta) "
            "from step t-1 to t, but a reverse-direction layer's state at step t depends on every "
            "later input, so nothing can be carried forward; use full BPTT "
            "(rnnlab.network.value_and_grad) for bidirectional networks"
        )
    if spec.num_layers != 1 and algorithm not in _STACKED:
        raise ValueError(
            f"{name} is defined for one recurrent layer; got num_layers={spec.num_layers}. For "
            "stacked layers use 'uoro' (defined for any state transition), 'rtrl' or BPTT")


def _joint(h_prev: Array, x_t: NDArray[Any], D: int, out: Array) -> Array:
    """``[H_{t-1} | X_t | 1]`` into ``out`` (eq. 40; ids one-hot), any leading shape."""
    H = h_prev.shape[-1]
    out[..., :H] = h_prev
    if x_t.ndim == out.ndim - 1:                             # ids
        out[..., H:H + D] = 0.0
        flat = out.reshape(-1, out.shape[-1])
        flat[np.arange(flat.shape[0]), H + x_t.reshape(-1)] = 1.0
    else:
        out[..., H:H + D] = x_t
    out[..., H + D] = 1.0
    return out


def _unpack(gj: list[Array], H: int, grads: Params) -> None:
    for layer, g in enumerate(gj):
        p = f"l{layer}"
        grads[f"{p}.W_hh"] += g[:H]
        grads[f"{p}.W_xh"] += g[H:-1]
        grads[f"{p}.b_h"] += g[-1]


# ----------------------------------------------------------------------------- the rules


class FastRule:
    """One learning rule on the fast path, for one spec: buffers made once per batch shape.

    ``rule(params, X, Y, spec, *, h0, mask, lengths, steps)`` (a batch rule: ``(loss, Gradients,
    Output)``) or ``rule(params, X, Y, spec, *, opt, opt_state, lr, h0, mask, lengths, steps)``
    (an online rule, ``algorithm`` ending in ``_online``: ``(loss, Output)``), the signatures of
    :data:`rnnlab.learning.RULES` / :data:`~rnnlab.learning.ONLINE`; equal to the reference rule
    to rounding (float64 within ``1e-12`` relative; float32 within float32 rounding), the random
    ones (UORO, KF-RTRL) with the same draws from the same Generator (tests/fast/test_rules.py).

    Parameters
    ----------
    spec : RNNSpec
        Unidirectional; one layer except for RTRL and UORO.
    algorithm : str
        ``"rtrl"``, ``"uoro"``, ``"kf_rtrl"``, ``"snap"``, ``"rflo"``, ``"eprop"`` or one of them
        with ``"_online"``.
    rng : numpy.random.Generator, optional
        UORO's and KF-RTRL's random signs (required for them).
    feedback : (O, H) array, optional
        RFLO's and e-prop's feedback matrix ``F`` (None: ``W_hyᵀ``).
    connectivity, pattern : bool (H, H) arrays, optional
        SnAp's connections and its pattern ``P_n`` (eq. 50); None: dense, SnAp-1's diagonal.
    every : int
        The online form's update period.
    """

    def __init__(self, spec: RNNSpec, algorithm: str, *, rng: np.random.Generator | None = None,
                 feedback: Array | None = None, connectivity: NDArray[np.bool_] | None = None,
                 pattern: NDArray[np.bool_] | None = None, every: int = 1) -> None:
        name = algorithm.removesuffix("_online")
        if name not in FAST_RULES:
            raise ValueError(f"no fast implementation of {algorithm!r}; expected one of "
                             f"{sorted(FAST_RULES)} (or with '_online')")
        _check_spec(spec, name)
        if name in ("uoro", "kf_rtrl") and not isinstance(rng, np.random.Generator):
            raise TypeError(f"{name} needs rng=, a numpy.random.Generator; got {rng!r}")
        if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
            raise ValueError(f"every must be an int >= 1 (time steps between updates); got "
                             f"{every!r}")
        H = spec.hidden_size
        self.spec, self.name = spec, name
        self.online = algorithm.endswith("_online")
        self.rng, self.feedback, self.every = rng, feedback, int(every)
        self.conn = np.ones((H, H), bool) if connectivity is None else np.asarray(connectivity,
                                                                                   bool)
        self.pattern = np.eye(H, dtype=bool) if pattern is None else np.asarray(pattern, bool)
        self.act = activations.get(spec.nonlinearity)
        self.ws: Workspace | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._est: dict[tuple[int, np.dtype], Estimate] = {}
        self._win: dict[tuple[int, int, np.dtype], dict[str, Any]] = {}

    # -------------------------------------------------------------- threads

    @contextmanager
    def threads(self, est: Estimate | None, budget: int) -> Iterator[None]:
        """The rule's own work on a BLAS budget of ``budget`` threads: with more than one, on
        one BLAS thread, the large per-sequence products (RTRL's, KF-RTRL's ``Ã W_hh``) cut
        into ``budget`` pieces of sequences that run at once on a pool.  Small products on a
        budget of threads (and beside the fast engine's workers) synchronise at every step: on
        the shared machine e-prop's batch form ran ten times slower on two BLAS threads than on
        one (docs/online.md)."""
        if budget < 2:
            yield
            return
        split = isinstance(est, RTRLEstimate | KFEstimate) and est.B >= 2
        if split:
            assert est is not None
            n = min(budget, est.B)
            if self._pool is None or self._pool_size != n:
                if self._pool is not None:
                    self._pool.shutdown()
                self._pool, self._pool_size = ThreadPoolExecutor(n - 1), n
            cuts = np.linspace(0, est.B, n + 1).astype(int)
            est.pool = self._pool
            est.pieces = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        try:
            with BLAS.limit(1):
                yield
        finally:
            if split:
                assert est is not None
                est.pool, est.pieces = None, [(0, est.B)]

    def close(self) -> None:
        """Stop the threads of :meth:`threads` (made again when needed)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -------------------------------------------------------------- buffers

    def _estimate(self, B: int, dtype: np.dtype) -> Estimate:
        key = (B, np.dtype(dtype))
        est = self._est.get(key)
        if est is None:
            if len(self._est) >= 3:
                self._est.clear()
            spec, name = self.spec, self.name
            if name == "rtrl":
                est = RTRLEstimate(spec, B, dtype, with_h0=not self.online)
            elif name == "uoro":
                assert self.rng is not None
                est = UOROEstimate(spec, B, dtype, self.rng)
            elif name == "kf_rtrl":
                assert self.rng is not None
                est = KFEstimate(spec, B, dtype, self.rng)
            elif name == "snap" and bool(self.pattern.all()) and bool(self.conn.all()):
                # a full pattern on a dense W_hh (n >= 2) keeps the whole influence matrix:
                # SnAp-n is RTRL (Menick et al., section 3), run as RTRL (joint layout, before
                # the scaling by f')
                est = RTRLEstimate(spec, B, dtype, with_h0=False)
            elif name == "snap":
                est = SnApEstimate(spec, B, dtype, self.conn, self.pattern)
            else:
                est = TraceEstimate(spec, B, dtype)
            self._est[key] = est
        if isinstance(est, UOROEstimate | KFEstimate):
            assert self.rng is not None
            est.rng = self.rng                   # the Generator the rule holds now
        est.reset()
        return est

    def _window_bufs(self, B: int, T: int, dtype: np.dtype) -> dict[str, Any]:
        """The batch form's arrays, made on first use for ``(B, T, dtype)`` and kept: the
        learning signals ``G`` of every scored step, ``f'`` of every step (``FP``, the rules
        whose window is one product), a step's joint inputs ``u`` and ``f'`` per layer."""
        key = (B, T, np.dtype(dtype))
        w = self._win.get(key)
        if w is None:
            if len(self._win) >= 3:
                self._win.clear()
            spec, H = self.spec, self.spec.hidden_size
            D = [spec.input_size] + [H] * (spec.num_layers - 1)
            w = {"G": np.empty((T, B, H) if spec.per_step_output else (B, H), dtype),
                 "u": [np.empty((B, H + d + 1), dtype) for d in D],
                 "fp": [np.empty((B, H), dtype) for _ in D]}
            self._win[key] = w
        if "FP" not in w and self._backwards():
            w["FP"] = np.empty((T, B, self.spec.hidden_size), dtype)
            if not self.spec.per_step_output and self.name == "snap":
                w["FP2"] = np.empty((T, B, self.spec.hidden_size), dtype)
        return w

    # -------------------------------------------------------------- calls

    def __call__(self, params: Params, X: ArrayLike, Y: ArrayLike, spec: RNNSpec, *,
                 opt: Optimizer | None = None, opt_state: dict[str, Any] | None = None,
                 lr: float | None = None, h0: ArrayLike | None = None,
                 mask: ArrayLike | None = None, lengths: ArrayLike | None = None,
                 steps: int | None = None) -> Any:
        if spec != self.spec:
            raise ValueError(f"this FastRule was made for {self.spec}; got {spec}")
        if self.online:
            if opt is None or opt_state is None:
                raise TypeError(f"{self.name}_online needs opt= and opt_state=")
            return self.online_update(params, X, Y, opt=opt, opt_state=opt_state, lr=lr, h0=h0,
                                      mask=mask, lengths=lengths, steps=steps)
        return self.value_and_grad(params, X, Y, h0=h0, mask=mask, lengths=lengths, steps=steps)

    def value_and_grad(self, params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike, *,
                       h0: ArrayLike | None = None, mask: ArrayLike | None = None,
                       lengths: ArrayLike | None = None, steps: int | None = None
                       ) -> tuple[float, Gradients, Output]:
        """The batch form: ``(loss, Gradients, Output)`` of the reference rule's
        ``value_and_grad``, the states from the fast engine's forward pass."""
        spec, name = self.spec, self.name
        _check_spec(spec, name)
        if self.ws is None:
            self.ws = Workspace(spec, reproducible=True)
        ws = self.ws
        budget = BLAS.get() or 1
        loss, dz = ws.forward_loss(params, X, Y, h0=h0, mask=mask, lengths=lengths, steps=steps)
        with self.threads(None, budget):
            return self._window(params, ws, float(loss), dz, budget)

    def _window(self, params: Mapping[str, Array], ws: Workspace, loss: float, dz: Array,
                budget: int) -> tuple[float, Gradients, Output]:
        """The batch form after the forward pass: the head, the signals, the rule."""
        spec, H, name = self.spec, self.spec.hidden_size, self.name
        cache = ws.cache
        assert cache is not None
        T, B = cache.steps, cache.batch_size
        dtype = dz.dtype
        m = cache.mask
        per_step = spec.per_step_output
        O = spec.output_size
        W_hy = params["W_hy"]
        F = W_hy.T if self.feedback is None else self.feedback
        top = cache.top
        grads: Params = {k: np.zeros_like(p) for k, p in params.items()}
        if per_step:                                              # eq. (19), the head
            np.matmul(top.reshape(T * B, H).T, dz.reshape(T * B, O), out=grads["W_hy"])
        else:
            np.matmul(top.T, dz, out=grads["W_hy"])
        grads["b_y"][...] = dz.reshape(-1, O).sum(axis=0)
        w = self._window_bufs(B, T, dtype)
        G = w["G"]
        np.matmul(dz.reshape(-1, O), F, out=G.reshape(-1, H))   # G_t = (dL/dz_t) F, eq. (44)
        dh0: Array | None = None
        if self._backwards():
            FP = w["FP"]
            self.act.grad_from_output(cache.hbufs[0][1:], out=FP)   # f'(Z_t) from H_t
            if name == "snap" and self.pattern.sum(axis=1).max() == 1:
                D = self._snap1_signal(params, FP, G, m)
            elif name == "snap":
                D = self._snapn_signal(params, FP, G, m)
            else:
                D = self._trace_signal(FP, G)
            self._window_product(D, cache, m, grads)
            if name == "snap" and not bool(self.conn.all()):
                grads["l0.W_hh"] *= self.conn
        else:
            dh0 = self._walk(params, cache, G, m, grads, budget)
        if dh0 is None:
            dh0 = np.zeros((spec.num_layers, B, H), dtype)
        logits = np.array(ws.logits)
        y = losses.output(spec.loss, logits.reshape(-1, O)).reshape(logits.shape)
        return loss, Gradients(grads, None, dh0), Output(y=y, logits=logits, h_n=ws.h_n())

    def _walk(self, params: Mapping[str, Array], cache: Any, G: Array,
              m: NDArray[np.bool_] | None, grads: Params, budget: int) -> Array:
        """The rule's recursion over the window (RTRL, UORO, KF-RTRL, SnAp-n), reading the
        states of the forward pass: per step the joint inputs and ``f'`` into small buffers.
        Returns ``dL/dh0`` (RTRL; zeros for the others)."""
        spec, H = self.spec, self.spec.hidden_size
        T, B, dtype = cache.steps, cache.batch_size, G.dtype
        L = spec.num_layers
        D = [spec.input_size] + [H] * (L - 1)
        per_step = spec.per_step_output
        w = self._window_bufs(B, T, dtype)
        u, fp = w["u"], w["fp"]
        est = self._estimate(B, dtype)
        scored = np.ones(T, bool) if per_step else np.arange(T) == T - 1
        if m is not None and per_step:
            scored &= m.any(axis=1)
        gj = [np.zeros((H + d + 1, H), dtype) for d in D]
        with self.threads(est, budget):
            for t in range(T):
                pad = None
                if m is not None and not m[t].all():
                    pad = np.flatnonzero(~m[t])
                for layer in range(L):
                    hb = cache.hbufs[layer]
                    _joint(hb[t], cache.inputs[layer][t], D[layer], u[layer])   # eq. (40)
                    self.act.grad_from_output(hb[t + 1], out=fp[layer])         # f'(Z_t)
                Gt = (G[t] if per_step else G) if scored[t] else None
                est.step(params, u, fp, pad, Gt, gj)                            # eq. (41)
        dh0 = est.finish(gj) if isinstance(est, RTRLEstimate) else np.zeros((L, B, H), dtype)
        _unpack(gj, H, grads)
        return dh0

    def _trace_signal(self, FP: Array, G: Array) -> Array:
        """RFLO (alpha = 1), e-prop (decay = 0): the signal ``G_t ⊙ f'_t`` of every step whose
        product with ``u_t`` is the gradient (eqs. 53, 55), in ``G``'s buffer."""
        if G.ndim == 2:
            return np.multiply(G, FP[-1], out=G)
        return np.multiply(G, FP, out=G)

    def _backwards(self) -> bool:
        """Whether the batch form accumulates the window backwards: the rules whose update is
        local and linear in the immediate terms (e-prop, RFLO, SnAp-n on a pattern that is not
        full); RTRL (and dense SnAp-n, which is RTRL) and the random rules walk forwards."""
        if self.name in ("rflo", "eprop"):
            return True
        return self.name == "snap" and not (bool(self.pattern.all()) and bool(self.conn.all()))

    def _snapn_signal(self, params: Mapping[str, Array], FP: Array, G: Array,
                      m: NDArray[np.bool_] | None) -> Array:
        """SnAp-n's window accumulated backwards.  Eq. (51) maps each joint input row the same
        way: for unit ``j`` the pattern row ``x_t = (x_{t-1} W_j + u_t[i] e_j) ⊙ f'_t[P_j]``
        (``W_j`` the ``(p, p)`` block of ``W_hh`` on the pattern), so ``Σ_t G_t[P_j] · x_t =
        Σ_t u_t[i] f'_t[j] λ_t[j]`` with the adjoint ``λ_t = G_t[P_j] + W_j (f'_{t+1}[P_j] ⊙
        λ_{t+1})`` (``λ_t = G_t[P_j] + λ_{t+1}`` past a padded step, eq. 30): ``O(B H p²)``
        per step where the forward recursion costs ``O(B (H + D) H p²)``.  The signal
        ``m_t f'_t[j] λ_t[j, pos_j]`` of every step, in a ``(T, B, H)`` buffer."""
        T, B, H = FP.shape
        idx, valid, pos = pattern_layout(self.pattern)
        p = idx.shape[1]
        W = params["l0.W_hh"]
        mask2 = (valid[:, :, None] & valid[:, None, :]).astype(FP.dtype)
        WT = np.ascontiguousarray((W[idx[:, :, None], idx[:, None, :]] * mask2)
                                  .transpose(0, 2, 1))            # (H, p, p): W_jᵀ
        lam = np.zeros((H, B, p), FP.dtype)
        tmp = np.empty((H, B, p), FP.dtype)
        fb = np.empty((B, H, p), FP.dtype)
        out = G if G.ndim == 3 else self._window_bufs(B, T, FP.dtype)["FP2"]
        last = None if G.ndim == 3 else G.copy()
        units = np.arange(H)
        for t in range(T - 1, -1, -1):
            if t < T - 1:                                         # W_j (f'_{t+1} ⊙ λ_{t+1})
                np.take(FP[t + 1], idx, axis=1, out=fb)
                np.multiply(lam, fb.transpose(1, 0, 2), out=tmp)
                nxt = np.matmul(tmp, WT)
                if m is not None and not m[t + 1].all():
                    pad = ~m[t + 1]
                    nxt[:, pad] = lam[:, pad]                     # a padded step carries
                lam = nxt
            Gt = G[t] if G.ndim == 3 else (last if t == T - 1 else None)
            if Gt is not None:
                lam += np.take(Gt, idx, axis=1).transpose(1, 0, 2)
            np.multiply(lam[units, :, pos].T, FP[t], out=out[t])  # f'_t[j] λ_t[j, pos_j]
            if m is not None:
                out[t][~m[t]] = 0.0
        return out

    def _snap1_signal(self, params: Mapping[str, Array], FP: Array, G: Array,
                      m: NDArray[np.bool_] | None) -> Array:
        """SnAp-1's window accumulated backwards (module docstring): ``λ_t = G_t + a_{t+1}
        λ_{t+1}`` with ``a_t = W_jj f'_t`` (1 on padded rows, which carry), and the signal
        ``m_t f'_t λ_t`` of every step whose product with ``u_t`` is the gradient, in ``G``'s
        buffer (a ``(T, B, H)`` one for a many-to-one spec)."""
        T, B, H = FP.shape
        w = np.ascontiguousarray(np.diagonal(params["l0.W_hh"]))
        lam = np.zeros((B, H), FP.dtype)
        a = np.empty((B, H), FP.dtype)
        if G.ndim == 2:
            last = G
            G = self._window_bufs(B, T, FP.dtype)["FP2"]
            G[:-1] = 0.0
            G[-1] = last
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                np.multiply(FP[t + 1], w, out=a)
                if m is not None and not m[t + 1].all():
                    a[~m[t + 1]] = 1.0
                lam *= a
            lam += G[t]
            np.multiply(lam, FP[t], out=G[t])
            if m is not None:
                G[t][~m[t]] = 0.0
        return G

    def _window_product(self, S: Array, cache: Any, m: NDArray[np.bool_] | None,
                        grads: Params) -> None:
        """``Σ_t u_tᵀ S_t`` for a signal ``S`` ``(T, B, H)`` (or ``(B, H)`` at the last step)
        into the first layer's gradients, ``u_t = [H_{t-1} | X_t | 1]`` (eq. 40) never built:
        one product each for ``W_hh`` (with the states), ``W_xh`` (with the inputs; rows of
        the ids) and ``b_h``.  Padded rows of the last step read the joint input of their last
        real step (eq. 30)."""
        spec, H = self.spec, self.spec.hidden_size
        T, B = cache.steps, cache.batch_size
        hb, x = cache.hbufs[0], cache.inputs[0]
        gW, gX, gb = grads["l0.W_hh"], grads["l0.W_xh"], grads["l0.b_h"]
        if S.ndim == 2:                                     # many-to-one: u of the last step
            rows = np.arange(B)
            t_of = np.full(B, T - 1)
            if m is not None:
                last = np.where(m, np.arange(T)[:, None], -1).max(axis=0)
                t_of = np.maximum(last, 0)
                S = S.copy()
                S[last < 0] = 0.0                           # never a real step: no trace
            np.matmul(hb[t_of, rows].T, S, out=gW)
            xs = x[t_of, rows]
            if x.ndim == 2:
                np.add.at(gX, xs, S)
            else:
                np.matmul(xs.T, S, out=gX)
            gb[...] = S.sum(axis=0)
            return
        S2 = S.reshape(T * B, H)
        np.matmul(hb[:-1].reshape(T * B, H).T, S2, out=gW)
        if x.ndim == 2:                                     # ids: rows of W_xh (eq. 21)
            np.add.at(gX, x.reshape(-1), S2)
        else:
            np.matmul(x.reshape(T * B, spec.input_size).T, S2, out=gX)
        gb[...] = S2.sum(axis=0)

    def online_update(self, params: Params, X: ArrayLike, Y: ArrayLike, *, opt: Optimizer,
                      opt_state: dict[str, Any], lr: float | None = None,
                      h0: ArrayLike | None = None, mask: ArrayLike | None = None,
                      lengths: ArrayLike | None = None, steps: int | None = None
                      ) -> tuple[float, Output]:
        """The online form: ``(loss, Output)`` of the reference rule's ``online_update``;
        ``params`` and ``opt_state`` updated in place."""
        spec, name = self.spec, self.name
        batch = _prepare(params, X, Y, spec, name, h0, mask, lengths, steps)
        B, T, dtype = batch.B, batch.T, batch.dtype
        L, H, O = spec.num_layers, spec.hidden_size, spec.output_size
        D = [spec.input_size] + [H] * (L - 1)
        act = self.act
        est = self._estimate(B, dtype)
        per_step = spec.per_step_output
        k = 1 if spec.loss == "softmax_ce" else O
        h = [batch.h0[layer].copy() for layer in range(L)]
        h_new = [np.empty((B, H), dtype) for _ in range(L)]
        fp = [np.zeros((B, H), dtype) for _ in range(L)]
        fp_new = [np.empty((B, H), dtype) for _ in range(L)]
        u = [np.empty((B, H + d + 1), dtype) for d in D]
        z = np.empty((B, H), dtype)
        zz = np.empty((B, H), dtype)
        gj = [np.zeros((H + d + 1, H), dtype) for d in D]
        grads: Params = {key: np.zeros_like(p) for key, p in params.items()}
        logits = np.empty((B, O), dtype)
        logits_tb = np.empty((T, B, O), dtype) if per_step else None
        F_fixed = self.feedback
        dense = batch.x.ndim == 3
        proj = np.empty((min(self.every, T), B, H), dtype) if dense else None
        total, n_block = 0.0, 0
        with self.threads(est, BLAS.get() or 1):
            for t in range(T):
                j = t % self.every
                if proj is not None and j == 0:                      # the block's projections
                    t1 = min(t + self.every, T)
                    xs = batch.x[t:t1]
                    np.matmul(xs.reshape(-1, D[0]), params["l0.W_xh"],
                              out=proj[:t1 - t].reshape(-1, H))
                    proj[:t1 - t] += params["l0.b_h"]
                pad = None
                if batch.mask is not None:
                    r = np.flatnonzero(~batch.mask[t])
                    pad = r if r.size else None
                inp: NDArray[Any] = batch.x[t]
                for layer in range(L):                               # eqs. (5)-(7)
                    p = f"l{layer}"
                    if layer == 0:
                        if proj is not None:
                            np.copyto(z, proj[j])
                        else:
                            np.take(params[f"{p}.W_xh"], inp, axis=0, out=z)
                            z += params[f"{p}.b_h"]
                    else:
                        np.matmul(inp, params[f"{p}.W_xh"], out=z)
                        z += params[f"{p}.b_h"]
                    np.matmul(h[layer], params[f"{p}.W_hh"], out=zz)
                    z += zz
                    hn = act.f(z, out=h_new[layer])
                    fn = act.grad_from_output(hn, out=fp_new[layer])
                    if pad is not None:
                        hn[pad] = h[layer][pad]
                        fn[pad] = fp[layer][pad]
                    _joint(h[layer], inp, D[layer], u[layer])
                    h[layer], h_new[layer] = hn, h[layer]
                    fp[layer], fp_new[layer] = fn, fp[layer]
                    inp = hn
                Gt = None                                            # the signal, if scored
                if per_step or t == T - 1:
                    W_hy = params["W_hy"]
                    top = h[-1]
                    np.matmul(top, W_hy, out=logits)
                    logits += params["b_y"]                          # eq. (8)
                    if logits_tb is not None:
                        logits_tb[t] = logits
                    mt = None if batch.mask is None or not per_step else batch.mask[t]
                    yt = batch.y[t] if per_step else batch.y
                    value, dzt, n = losses.scored_loss(spec.loss, logits, yt, mt)
                    if n:
                        total += value
                        n_block += n
                        grads["W_hy"] += top.T @ dzt                 # eq. (19)
                        grads["b_y"] += dzt.sum(axis=0)
                        F = W_hy.T if F_fixed is None else F_fixed
                        Gt = dzt @ F                                 # eq. (44)
                est.step(params, u, fp, pad, Gt, gj)                 # the estimate; eq. (41)
                if n_block and ((t + 1) % self.every == 0 or t == T - 1):
                    if isinstance(est, RTRLEstimate):
                        est.finish(gj)
                        est.acc.fill(0.0)
                    _unpack(gj, H, grads)
                    if spec.reduction == "mean":
                        for g in grads.values():
                            g /= n_block * k
                    opt.update_(params, grads, opt_state, lr=lr)     # eq. (42)
                    for g in grads.values():
                        g.fill(0.0)
                    for g in gj:
                        g.fill(0.0)
                    n_block = 0
        out_logits = logits.copy() if logits_tb is None else np.ascontiguousarray(
            logits_tb.transpose(1, 0, 2))
        y = losses.output(spec.loss, out_logits.reshape(-1, O)).reshape(out_logits.shape)
        return total / batch.denom, Output(y=y, logits=out_logits, h_n=np.stack(h))
