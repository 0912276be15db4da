"""Output layers fused with their losses (docs/derivation.md, eqs. 8-14).

Every function here works on the *scored rows* only: ``logits`` is ``(N, O)``, one row per
(sequence, step) pair that carries a target, already gathered by the network.  Targets are either
integer class labels ``(N,)`` (``softmax_ce`` only) or float arrays ``(N, O)``.

The pairs, with ``z`` the logits and ``y_hat = g(z)``:

==============  ===========  ==========================================  ==========================
name            g            per-element loss                            dL/dz (before reduction)
==============  ===========  ==========================================  ==========================
softmax_ce      softmax      ``lse(z) - z[label]`` (eq. 9)               ``y_hat - y``    (eq. 10)
sigmoid_bce     sigmoid      ``max(z,0) - z y + log1p(exp(-|z|))`` (11)  ``y_hat - y``    (eq. 12)
identity_mse    identity     ``(z - y)^2``                 (eq. 13)      ``2 (z - y)``
relu_mse        ReLU         ``(relu(z) - y)^2``           (eq. 14)      ``2 (y_hat - y) [z > 0]``
==============  ===========  ==========================================  ==========================

Reduction (eq. 15): ``"sum"`` adds every element; ``"mean"`` divides by the number of scored rows
for ``softmax_ce`` (one distribution per row) and by rows x outputs for the element-wise losses,
which is exactly ``torch.nn.functional.{cross_entropy, binary_cross_entropy_with_logits,
mse_loss}`` with the same reduction.

Row weights (eq. 15w): with ``weight`` ``w`` (one per row, ``>= 0``) each row's loss counts
``w_r`` times, and ``"mean"`` divides by ``k * sum(w)`` instead of ``k * N``: the weighted mean,
which is ``cross_entropy(..., weight=class_weight)`` of PyTorch when ``w_r`` is the weight of row
``r``'s class.  All-one weights give the unweighted numbers; if every weight is 0 the loss and its
gradient are 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]
LossName = Literal["softmax_ce", "sigmoid_bce", "identity_mse", "relu_mse"]
Reduction = Literal["mean", "sum"]
LOSSES: tuple[str, ...] = ("softmax_ce", "sigmoid_bce", "identity_mse", "relu_mse")
REDUCTIONS: tuple[str, ...] = ("mean", "sum")


def log_softmax(z: Array) -> Array:
    """Row-wise log-softmax by log-sum-exp, eq. (8); ``z`` is ``(N, O)``."""
    m = z.max(axis=-1, keepdims=True)
    s = z - m
    s -= np.log(np.exp(s).sum(axis=-1, keepdims=True))
    return s


def softmax(z: Array) -> Array:
    """Row-wise softmax with max subtraction, eq. (8); ``z`` is ``(N, O)``."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def sigmoid(z: Array) -> Array:
    """``1 / (1 + exp(-z))`` computed as ``(1 + tanh(z / 2)) / 2``, which never overflows."""
    out = np.tanh(z * 0.5)
    out += 1.0
    out *= 0.5
    return out


def output(name: str, z: Array) -> Array:
    """The network's prediction ``y_hat = g(z)`` for the output/loss pair ``name``."""
    if name == "softmax_ce":
        return softmax(z)
    if name == "sigmoid_bce":
        return sigmoid(z)
    if name == "identity_mse":
        return z.copy()
    if name == "relu_mse":
        return np.maximum(z, 0.0)
    raise ValueError(f"unknown loss {name!r}; expected one of {list(LOSSES)}")


@dataclass(frozen=True)
class LossResult:
    """Value and fused gradient of a loss on the scored rows.

    Attributes
    ----------
    value : float
        The reduced loss.
    dz : ndarray, (N, O)
        ``dL/dz`` for the same rows, reduction included.
    """

    value: float
    dz: Array


def denominator(name: str, z: Array, reduction: str) -> float:
    if reduction == "sum":
        return 1.0
    n_rows, n_out = z.shape
    return float(n_rows if name == "softmax_ce" else n_rows * n_out)


def softmax_ce_labels(z: Array, y: NDArray[Any], denom: float, dz: Array, tmp: Array) -> float:
    """Softmax cross-entropy against labels, eqs. (8)-(10) and (15), into buffers.

    Writes ``dL/dz`` into ``dz`` and returns the reduced loss; ``tmp`` (shaped like ``z``) is
    scratch.  The operations are those of :func:`log_softmax` and :func:`loss_and_grad`, so the
    numbers are the same; only the temporaries are reused.
    """
    m = z.max(axis=-1, keepdims=True)
    logp = np.subtract(z, m, out=tmp)
    np.exp(logp, out=dz)
    lse = dz.sum(axis=-1, keepdims=True)
    logp -= np.log(lse, out=lse)                                # log y_hat, eq. (8)
    np.exp(logp, out=dz)                                        # y_hat
    rows = np.arange(z.shape[0])
    value = -float(logp[rows, y].sum())                         # eq. (9)
    dz[rows, y] -= 1.0                                          # eq. (10): y_hat - onehot(y)
    if denom != 1.0:
        dz /= denom
    return value / denom


def row_losses(name: str, z: Array, y: NDArray[Any]) -> tuple[Array, Array]:
    """Unreduced: each row's loss ``l_r`` (summed over its outputs, eqs. 9-14) ``(N,)`` and
    ``dl_r/dz`` ``(N, O)``."""
    if name == "softmax_ce":
        logp = log_softmax(z)                                   # eq. (8)
        dz = np.exp(logp)                                       # y_hat
        if y.ndim == 1:
            rows = np.arange(z.shape[0])
            per_row = -logp[rows, y]                            # eq. (9)
            dz[rows, y] -= 1.0                                  # eq. (10)
        else:
            per_row = -(y * logp).sum(axis=1)                   # eq. (9), soft targets
            dz *= y.sum(axis=-1, keepdims=True)                 # eq. (10): (sum_k y_k) y_hat - y
            dz -= y
        return per_row, dz
    if name == "sigmoid_bce":
        per_row = (np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))).sum(axis=1)  # (11)
        dz = sigmoid(z)
        dz -= y                                                 # eq. (12)
        return per_row, dz
    if name == "identity_mse":
        diff = z - y
        return (diff * diff).sum(axis=1), 2.0 * diff            # eq. (13)
    if name == "relu_mse":
        diff = np.maximum(z, 0.0) - y
        return (diff * diff).sum(axis=1), 2.0 * diff * (z > 0)  # eq. (14)
    raise ValueError(f"unknown loss {name!r}; expected one of {list(LOSSES)}")


def weighted_loss_and_grad(name: str, z: Array, y: NDArray[Any], reduction: str,
                           weight: Array) -> LossResult:
    """Eq. (15w): ``L = sum_r w_r l_r / D`` with ``D = 1`` (``"sum"``) or ``k * sum_r w_r``
    (``"mean"``; ``k`` = 1 for cross-entropy, ``O`` otherwise), and ``dL/dz_r = w_r dl_r/dz / D``.
    ``weight`` is ``(N,)``, validated by the caller (finite, ``>= 0``)."""
    per_row, dz = row_losses(name, z, y)
    w = weight.astype(z.dtype, copy=False)
    if reduction == "sum":
        denom = 1.0
    else:
        k = 1 if name == "softmax_ce" else z.shape[1]
        denom = float(k * w.sum(dtype=np.float64))
    if denom == 0.0:                        # every weight 0: nothing is scored
        return LossResult(0.0, np.zeros_like(z))
    dz *= w[:, None]
    if denom != 1.0:
        dz /= denom
    return LossResult(float((w * per_row).sum(dtype=np.float64)) / denom, dz)


def loss_and_grad(name: str, z: Array, y: NDArray[Any], reduction: str,
                  weight: Array | None = None) -> LossResult:
    """Loss value and ``dL/dz`` of an output/loss pair (eqs. 9-15).

    Parameters
    ----------
    name : {"softmax_ce", "sigmoid_bce", "identity_mse", "relu_mse"}
    z : ndarray, (N, O)
        Logits of the scored rows.
    y : ndarray
        ``(N,)`` integer labels in ``[0, O)`` for ``softmax_ce``, or ``(N, O)`` floats (soft labels
        for ``softmax_ce``, probabilities in [0, 1] for ``sigmoid_bce``, values for the MSE pairs).
        Validated by the caller (``network``).
    reduction : {"mean", "sum"}
    weight : ndarray, (N,), optional
        A weight ``>= 0`` per row (eq. 15w, :func:`weighted_loss_and_grad`).
    """
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, O) rows; got shape {z.shape}")
    if weight is not None:
        return weighted_loss_and_grad(name, z, y, reduction, weight)
    denom = denominator(name, z, reduction)
    if name == "softmax_ce":
        if y.ndim == 1:
            dz = np.empty_like(z)
            return LossResult(softmax_ce_labels(z, y, denom, dz, np.empty_like(z)), dz)
        logp = log_softmax(z)                                   # (N, O), eq. (8)
        dz = np.exp(logp)                                       # y_hat
        value = -float((y * logp).sum())                        # eq. (9), soft targets
        dz *= y.sum(axis=-1, keepdims=True)                     # eq. (10): (sum_k y_k) y_hat - y
        dz -= y
    elif name == "sigmoid_bce":
        value = float((np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))).sum())  # (11)
        dz = sigmoid(z)
        dz -= y                                                 # eq. (12)
    elif name == "identity_mse":
        diff = z - y
        value = float((diff * diff).sum())                      # eq. (13)
        dz = np.multiply(diff, 2.0, out=diff)
    elif name == "relu_mse":
        yhat = np.maximum(z, 0.0)
        diff = yhat - y
        value = float((diff * diff).sum())                      # eq. (14)
        dz = 2.0 * diff * (z > 0)
    else:
        raise ValueError(f"unknown loss {name!r}; expected one of {list(LOSSES)}")
    if denom != 1.0:
        dz /= denom
    return LossResult(value / denom, dz)


def scored_loss(loss: str, logits: Array, y: NDArray[Any], m: NDArray[np.bool_] | None
                ) -> tuple[float, Array, int]:
    """Summed loss of the scored entries and its gradient (eqs. 9-15 with ``"sum"``): what the
    rules that walk time forwards score at a step or a chunk of steps (:mod:`rnnlab.learning`,
    :mod:`rnnlab.fast.rules`).

    Parameters
    ----------
    logits : (..., O)
        Any leading shape (e.g. ``(B, O)`` or ``(T, B, O)``).
    y : (...) labels or (..., O)
    m : (...) bool or None
        Which entries are scored (None: all).

    Returns
    -------
    value : float
    dz : like ``logits``, zero at unscored entries
    n : int
        The number of scored entries.
    """
    O = logits.shape[-1]
    if m is None:
        flat_y = y.reshape((-1,) + y.shape[logits.ndim - 1:])
        res = loss_and_grad(loss, logits.reshape(-1, O), flat_y, "sum")
        return res.value, res.dz.reshape(logits.shape), logits.size // O
    n = int(m.sum())
    dz = np.zeros_like(logits)
    if n == 0:
        return 0.0, dz, 0
    res = loss_and_grad(loss, logits[m], y[m], "sum")
    dz[m] = res.dz
    return res.value, dz, n
