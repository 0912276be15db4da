"""The forward walk shared by the approximate forward-mode rules (docs/derivation.md, section 14,
eqs. 40-44).

UORO, KF-RTRL, SnAp, RFLO and e-prop all read the sequence forwards like RTRL (section 12), carry
an *estimate* of the influence matrix ``S_t = dH_t/dtheta`` (eq. 26) instead of the matrix itself,
and contract it with the learning signal of every scored step (eq. 31).  This module is what they
have in common:

* :class:`Tracker`: the network's states and one rule's estimate, advanced one step at a time
  (:meth:`Tracker.step`: the forward step of eqs. 5-7, then the rule's own update), and the
  contraction of the estimate with a learning signal (:meth:`Tracker.contract`);
* :func:`walk`: the time loop: the head and loss of every scored step (eqs. 8-15), the head's exact
  gradient (eq. 19), the learning signal ``G_t = (dL/dz_t) F`` with ``F = W_hyᵀ`` (or a fixed
  feedback matrix, eq. 44), and either one gradient for the whole window (the parameters fixed:
  ``value_and_grad``) or an optimizer step every ``every`` steps (``online_update``, eq. 42).

A rule's gradient of the recurrent weights is kept in the *joint* layout of eq. (39): one
``(H + D + 1, H)`` matrix per layer whose rows are ``[W_hh; W_xh; b_h]``, the rows that the joint
input ``u_t = [H_{t-1} | X_t | 1]`` (eq. 40) multiplies.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ..core import activations, cell, losses, network
from ..core.params import Params
from ..core.spec import RNNSpec
from .batch import Batch, scored_loss

Array = NDArray[np.floating]
Rows = NDArray[np.intp]

__all__ = [
    "EPS",
    "Optimizer",
    "Rows",
    "Tracker",
    "check_every",
    "check_rng",
    "check_single_layer",
    "feedback_matrix",
    "joint_input",
    "random_feedback",
    "random_signs",
    "gradients",
    "unpack_joint",
    "walk",
]

EPS = 1e-7
"""The ``ε`` of UORO's and KF-RTRL's variance-reduction factors (eqs. 46 and 48): it keeps them
finite when a norm is 0 (at the first step, where the estimate starts from 0) and changes neither
the expectation nor, in practice, the variance."""


class Optimizer(Protocol):
    """What the online form needs of an optimizer (:class:`rnnlab.optim.Optimizer` is one)."""

    def update_(self, params: Params, grads: Mapping[str, NDArray[Any]], state: dict[str, Any],
                lr: float | None = None) -> None: ...


# ----------------------------------------------------------------------------- checks


def check_rng(rng: object, algorithm: str) -> np.random.Generator:
    """``rng`` if it is a ``numpy.random.Generator``; a TypeError naming ``algorithm`` otherwise."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{algorithm} draws random signs at every step and needs rng=, a "
            f"numpy.random.Generator (e.g. numpy.random.default_rng(0)); got "
            f"{type(rng).__name__} {rng!r}")
    return rng


def check_single_layer(spec: RNNSpec, algorithm: str, why: str) -> None:
    """Refuse a stacked network for a rule defined for one recurrent layer."""
    if spec.num_layers != 1:
        raise ValueError(
            f"{algorithm} is defined for one recurrent layer ({why}); got num_layers="
            f"{spec.num_layers}. For stacked layers use 'uoro' (defined for any state "
            "transition), 'rtrl' or BPTT")


def check_every(every: object) -> int:
    """The online update period, an int >= 1."""
    if isinstance(every, bool) or not isinstance(every, int | np.integer):
        raise TypeError(f"every must be an int >= 1 (time steps between updates); got "
                        f"{type(every).__name__} {every!r}")
    if every < 1:
        raise ValueError(f"every must be an int >= 1 (time steps between updates); got {every}")
    return int(every)


def random_signs(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """Independent ``±1`` with probability 1/2 each (zero mean, unit variance)."""
    return (rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1).astype(dtype)


# ----------------------------------------------------------------------------- feedback


def random_feedback(spec: RNNSpec, rng: np.random.Generator, dtype: Any = np.float64) -> Array:
    """A fixed random feedback matrix ``F`` ``(O, H)`` for RFLO and e-prop (eq. 44).

    Entries ``N(0, 1/H)``: the learning signal ``G = (dL/dz) F`` then has the size that the
    symmetric ``W_hyᵀ`` has with the usual ``1/sqrt(H)`` initialisations of the head.  Draw it once
    and pass the same matrix to every call (feedback alignment needs a *fixed* matrix).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    H = spec.hidden_size
    return (rng.standard_normal((spec.output_size, H)) / math.sqrt(H)).astype(dtype)


def feedback_matrix(feedback: object, feedback_seed: object, spec: RNNSpec, dtype: np.dtype,
                    algorithm: str) -> Array | None:
    """The feedback option of RFLO and e-prop as a matrix (None: symmetric, ``W_hyᵀ``).

    ``"symmetric"``; ``"random"``: :func:`random_feedback` drawn from
    ``numpy.random.default_rng(feedback_seed)`` (the same matrix at every call with the same seed);
    or an ``(O, H)`` array.
    """
    O, H = spec.output_size, spec.hidden_size
    if isinstance(feedback, str):
        if feedback == "symmetric":
            return None
        if feedback == "random":
            if isinstance(feedback_seed, bool) or not isinstance(feedback_seed, int | np.integer):
                raise TypeError(f"{algorithm}: feedback_seed must be an int (it fixes the random "
                                f"feedback matrix); got {feedback_seed!r}")
            return random_feedback(spec, np.random.default_rng(int(feedback_seed)), dtype)
        raise ValueError(f"{algorithm}: feedback must be 'symmetric', 'random' or an (O, H) = "
                         f"({O}, {H}) array; got {feedback!r}")
    arr = np.asarray(feedback)
    real = np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    if arr.shape != (O, H) or not real:
        raise ValueError(f"{algorithm}: a feedback matrix must be a real (O, H) = ({O}, {H}) "
                         f"array (it maps dL/dz to the hidden units); got {arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{algorithm}: the feedback matrix contains NaN or inf")
    return np.ascontiguousarray(arr, dtype=dtype)


# ----------------------------------------------------------------------------- the joint layout


def joint_input(h_prev: Array, x_t: NDArray[Any], D: int, out: Array) -> Array:
    """``u_t = [H_{t-1} | X_t | 1]`` ``(B, H + D + 1)`` into ``out`` (eq. 40; ids: one-hot)."""
    H = h_prev.shape[1]
    out[:, :H] = h_prev
    if x_t.ndim == 1:                                      # index inputs: one-hot X_t (eq. 21)
        out[:, H:H + D] = 0.0
        out[np.arange(x_t.shape[0]), H + x_t] = 1.0
    else:
        out[:, H:H + D] = x_t
    out[:, H + D] = 1.0
    return out


def unpack_joint(g: Array, layer: int, H: int, out: Params) -> None:
    """Add a joint ``(H + D + 1, H)`` gradient (rows ``[W_hh; W_xh; b_h]``) into ``out``."""
    p = f"l{layer}"
    out[f"{p}.W_hh"] += g[:H]
    out[f"{p}.W_xh"] += g[H:-1]
    out[f"{p}.b_h"] += g[-1]


# ----------------------------------------------------------------------------- the tracker


class Tracker(ABC):
    """The states of every layer and one rule's estimate of ``dH_t/dtheta``.

    :meth:`step` runs the forward step (:meth:`forward`, eqs. 5-7, the shared cell) and then the
    rule's :meth:`update`; after it, for each layer ``l``, ``self.h[l]`` is ``H^l_t``,
    ``self.h_prev[l]`` is ``H^l_{t-1}``, ``self.inp[l]`` the layer's input ``X^l_t`` and
    ``self.fp[l]`` the derivative ``f'(Z^l_t)``.  Padded rows (``pad``) carry their state and
    its ``f'`` (eq. 7) and must carry their estimate too (eq. 30).
    """

    def __init__(self, spec: RNNSpec, batch: Batch) -> None:
        L, B, H = spec.num_layers, batch.B, spec.hidden_size
        self.spec, self.B, self.H, self.dtype = spec, B, H, batch.dtype
        self.act = activations.get(spec.nonlinearity)
        self.h: list[Array] = [batch.h0[layer].copy() for layer in range(L)]
        self.h_prev: list[Array] = [np.empty((B, H), batch.dtype) for _ in range(L)]
        self.inp: list[NDArray[Any]] = [np.empty(0) for _ in range(L)]
        self.fp: list[Array] = [np.zeros((B, H), batch.dtype) for _ in range(L)]
        self.D = [spec.input_size] + [H] * (L - 1)

    def forward(self, params: Mapping[str, Array], x_t: NDArray[Any], pad: Rows | None) -> None:
        """Eqs. (5)-(7) for every layer, keeping what the estimate's update reads."""
        inp: NDArray[Any] = x_t
        for layer in range(self.spec.num_layers):
            p = f"l{layer}"
            W_xh = params[f"{p}.W_xh"]
            a = W_xh[inp] if inp.ndim == 1 else inp @ W_xh             # (B, D) x (D, H)
            a += params[f"{p}.b_h"]
            h_old = self.h[layer]
            h_new = cell.step(a, h_old, params[f"{p}.W_hh"], self.act)   # eqs. (5)-(6)
            fp = self.act.grad_from_output(h_new)                        # f'(Z_t), eqs. (2)-(4)
            if pad is not None:                                          # eq. (7): padded rows
                h_new[pad] = h_old[pad]                                  # keep H_{t-1} and the
                fp[pad] = self.fp[layer][pad]                            # f' they were made with
            self.fp[layer] = fp
            self.h_prev[layer], self.h[layer], self.inp[layer] = h_old, h_new, inp
            inp = h_new

    @abstractmethod
    def update(self, params: Mapping[str, Array], pad: Rows | None) -> None:
        """Advance the estimate from step ``t - 1`` to ``t`` (after :meth:`forward`)."""

    @abstractmethod
    def contract(self, G: Array, grads: Params) -> None:
        """Add ``Σ_b G[b] · S̃_t[b]`` (eq. 31 with the estimate) into the recurrent ``grads``;
        ``G`` ``(B, H)`` is the learning signal at the top layer's state."""

    def step(self, params: Mapping[str, Array], x_t: NDArray[Any], pad: Rows | None) -> Array:
        """One step of the walk; returns the top layer's state ``(B, H)``."""
        self.forward(params, x_t, pad)
        self.update(params, pad)
        return self.h[-1]

    def u(self, layer: int, out: Array) -> Array:
        """The joint input ``u^l_t = [H^l_{t-1} | X^l_t | 1]`` of eq. (40) into ``out``."""
        return joint_input(self.h_prev[layer], self.inp[layer], self.D[layer], out)


# ----------------------------------------------------------------------------- the walk


def _pad_rows(batch: Batch, t: int) -> Rows | None:
    if batch.mask is None:
        return None
    pad = np.flatnonzero(~batch.mask[t])
    return pad if pad.size else None


def walk(
    tracker: Tracker,
    params: Params,
    batch: Batch,
    *,
    feedback: Array | None = None,
    opt: Optimizer | None = None,
    opt_state: dict[str, Any] | None = None,
    lr: float | None = None,
    every: int = 1,
) -> tuple[float, Params, network.Output]:
    """Walk the batch forwards with ``tracker``.

    Parameters
    ----------
    tracker : Tracker
        Built on ``batch`` (its initial states).
    params : dict
        Read at every step; with ``opt`` updated in place every ``every`` steps.
    batch : Batch
        From :func:`rnnlab.learning.batch.prepare`.
    feedback : (O, H) array, optional
        The matrix ``F`` that maps ``dL/dz_t`` to the learning signal ``G_t = (dL/dz_t) F``;
        None for ``W_hyᵀ`` (the exact ``dL/dH_t|direct``).
    opt, opt_state, lr
        The online form (eq. 42): ``opt.update_(params, g, opt_state, lr=lr)`` after every block
        of ``every`` steps that scored a target (and after the last step), with ``g`` the gradient
        of the block's loss (the spec's reduction over the block's targets).
    every : int
        Steps per block (online form only).

    Returns
    -------
    loss : float
        Eq. (15) over every scored target, each predicted by the parameters current at its step.
    grads : dict
        The estimate of the whole window's gradient (eq. 41), divided by the batch's divisor of
        eq. (15); with ``opt``, zeros (the updates were applied).
    out : Output
        The predictions (``h_n``: the final states).
    """
    spec = batch.spec
    T, O = batch.T, spec.output_size
    per_step = spec.per_step_output
    k = 1 if spec.loss == "softmax_ce" else O
    online = opt is not None
    logits_tb = np.empty((T, batch.B, O), dtype=batch.dtype) if per_step else None
    logits = np.empty((batch.B, O), dtype=batch.dtype)
    grads: Params = {key: np.zeros_like(p) for key, p in params.items()}
    total, n_block = 0.0, 0
    for t in range(T):
        top = tracker.step(params, batch.x[t], _pad_rows(batch, t))
        if per_step or t == T - 1:
            W_hy = params["W_hy"]
            np.matmul(top, W_hy, out=logits)
            logits += params["b_y"]                                          # eq. (8)
            if logits_tb is not None:
                logits_tb[t] = logits
            m = None if batch.mask is None or not per_step else batch.mask[t]
            value, dz, n = scored_loss(spec.loss, logits, batch.y[t] if per_step else batch.y, m)
            if n:
                total += value
                if online:
                    n_block += n
                else:
                    dz /= batch.denom
                grads["W_hy"] += top.T @ dz                                  # eq. (19), head
                grads["b_y"] += dz.sum(axis=0)
                F = W_hy.T if feedback is None else feedback                 # eq. (44)
                tracker.contract(dz @ F, grads)                              # eq. (41)
        if online and n_block and ((t + 1) % every == 0 or t == T - 1):
            if spec.reduction == "mean":
                for g in grads.values():
                    g /= n_block * k
            assert opt is not None and opt_state is not None
            opt.update_(params, grads, opt_state, lr=lr)                     # eq. (42)
            grads = {key: np.zeros_like(p) for key, p in params.items()}
            n_block = 0
    if logits_tb is None:
        out_logits = logits
    else:
        out_logits = np.ascontiguousarray(logits_tb.transpose(1, 0, 2))
    y = losses.output(spec.loss, out_logits.reshape(-1, O)).reshape(out_logits.shape)
    out = network.Output(y=y, logits=out_logits, h_n=np.stack(tracker.h))
    return total / batch.denom, grads, out


def gradients(grads: Params, batch: Batch) -> network.Gradients:
    """The batch form's :class:`Gradients`: ``X`` None, ``h0`` zeros (not estimated)."""
    return network.Gradients(grads, None, np.zeros_like(batch.h0))
