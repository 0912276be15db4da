"""Metrics of a network on a split, accumulated in float64, and early stopping.

The metrics a spec supports (:func:`metric_names`):

==============  ==============================================  ================================
name            meaning                                         when
==============  ==============================================  ================================
``loss``        the spec's loss and reduction over the split     always
``accuracy``    argmax over classes at scored steps (labels or   ``softmax_ce``; ``sigmoid_bce``
                soft targets); ``sigmoid_bce``: ``y_hat > 0.5``  (element-wise, targets > 0.5)
                against ``target > 0.5``, element-wise
``perplexity``  ``exp(mean cross-entropy)`` per scored step       ``softmax_ce`` and a per-step
                                                                 set-up (language models)
``mse``         mean of ``(y_hat - target)^2`` over elements      ``identity_mse``, ``relu_mse``
==============  ==============================================  ================================

"Scored" entries are those the loss sees (docs/derivation.md, eq. 15): every (sequence, step)
with a target that the mask keeps.  With ``reduction="mean"`` the loss of a split is the mean over
all its scored entries (exactly what one batch holding the whole split would give); with
``reduction="sum"`` it is the sum over the split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core import losses, network
from ..core.inputs import check_targets, target_lead
from ..core.params import check_params
from ..core.spec import RNNSpec
from ..data.base import Dataset
from ..fast.workspace import Workspace

__all__ = [
    "METRICS",
    "Accumulator",
    "EarlyStopping",
    "INFERENCE_ENGINES",
    "evaluate",
    "inference_forward",
    "metric_names",
    "predict",
    "resolve_mode",
    "scored_rows",
    "task_metrics",
]

METRICS: tuple[str, ...] = ("loss", "accuracy", "perplexity", "mse")
MODES: tuple[str, ...] = ("auto", "min", "max")


def metric_names(spec: RNNSpec) -> tuple[str, ...]:
    """The metrics :class:`Accumulator` reports for ``spec``, ``"loss"`` first."""
    names = ["loss"]
    if spec.loss in ("softmax_ce", "sigmoid_bce"):
        names.append("accuracy")
    if spec.loss == "softmax_ce" and spec.setup != "many_to_one":
        names.append("perplexity")
    if spec.loss in ("identity_mse", "relu_mse"):
        names.append("mse")
    return tuple(names)


def scored_rows(
    spec: RNNSpec, logits: NDArray[Any], y: NDArray[Any], mask: NDArray[np.bool_] | None
) -> tuple[NDArray[Any], NDArray[Any]]:
    """The scored ``(N, O)`` logits and their ``(N,)`` labels or ``(N, O)`` targets.

    Mirrors :func:`rnnlab.network.loss_and_grad`: per-step outputs are flattened over
    ``(B, T)`` (a many-to-one sequence target scored at every step is repeated), and masked
    steps are dropped.
    """
    if not spec.per_step_output:
        return logits, y
    B, T = logits.shape[:2]
    if spec.setup == "many_to_one":
        y = np.broadcast_to(y[:, None], (B, T) + y.shape[1:])
    if mask is None:
        return logits.reshape(B * T, -1), y.reshape((B * T,) + y.shape[2:])
    return logits[mask], y[mask]


@dataclass
class Accumulator:
    """Running sums (float64 / int) from which the metrics of a split are computed.

    ``add(logits, y, mask)`` once per batch, then ``result()``.  ``state_dict`` /
    ``from_state`` round-trip the sums exactly through JSON (used by mid-epoch checkpoints).
    """

    spec: RNNSpec
    loss_sum: float = 0.0
    rows: int = 0          # scored (sequence, step) entries
    elements: int = 0      # scored entries x outputs
    correct: int = 0
    judged: int = 0        # entries (or elements, for sigmoid_bce) accuracy is counted over
    sq_sum: float = 0.0

    def add(self, logits: NDArray[Any], y: ArrayLike, mask: ArrayLike | None = None, *,
            loss: bool = True) -> None:
        """Accumulate one batch: ``logits`` as in ``Output.logits``, targets as for the loss.

        ``loss=False`` skips the loss sum (the trainer takes it from the gradient call).
        """
        m = None if mask is None else np.asarray(mask, dtype=bool)
        z, t = scored_rows(self.spec, logits, np.asarray(y), m)
        z = z.astype(np.float64, copy=False)
        name = self.spec.loss
        integer = np.issubdtype(t.dtype, np.integer)
        t64 = t if integer else t.astype(np.float64, copy=False)
        if loss:
            self.loss_sum += losses.loss_and_grad(name, z, t64, "sum").value
        self.rows += z.shape[0]
        self.elements += z.size
        if name == "softmax_ce":
            truth = t if integer else t.argmax(axis=-1)
            self.correct += int((z.argmax(axis=-1) == truth).sum())
            self.judged += z.shape[0]
        elif name == "sigmoid_bce":
            self.correct += int(((z > 0.0) == (t64 > 0.5)).sum())
            self.judged += z.size
        else:
            y_hat = z if name == "identity_mse" else np.maximum(z, 0.0)
            d = y_hat - t64
            self.sq_sum += float(np.einsum("ij,ij->", d, d))

    def result(self) -> dict[str, float]:
        """``{metric: value}`` for :func:`metric_names`; NaN when nothing was accumulated."""
        out: dict[str, float] = {}
        names = metric_names(self.spec)
        nan = math.nan
        if self.spec.reduction == "sum":
            out["loss"] = self.loss_sum if self.rows else nan
        else:
            denom = self.rows if self.spec.loss == "softmax_ce" else self.elements
            out["loss"] = self.loss_sum / denom if denom else nan
        if "accuracy" in names:
            out["accuracy"] = self.correct / self.judged if self.judged else nan
        if "perplexity" in names:
            out["perplexity"] = _exp(self.loss_sum / self.rows) if self.rows else nan
        if "mse" in names:
            out["mse"] = self.sq_sum / self.elements if self.elements else nan
        return out

    def state_dict(self) -> dict[str, float | int]:
        return {"loss_sum": self.loss_sum, "rows": self.rows, "elements": self.elements,
                "correct": self.correct, "judged": self.judged, "sq_sum": self.sq_sum}

    @classmethod
    def from_state(cls, spec: RNNSpec, state: Mapping[str, Any]) -> Accumulator:
        acc = cls(spec)
        for key, value in state.items():
            if key not in acc.state_dict():
                raise ValueError(f"unknown accumulator entry {key!r}")
            setattr(acc, key, value)
        return acc


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def evaluate(
    params: Mapping[str, NDArray[np.floating]],
    spec: RNNSpec,
    X: ArrayLike,
    y: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    batch_size: int = 256,
    steps: int | None = None,
    engine: str | Workspace = "fast",
) -> dict[str, float]:
    """The metrics of ``params`` on a whole split, in batches of ``batch_size`` sequences.

    Parameters
    ----------
    params, spec
        The network.
    X : (N, T, D) floats, (N, T) ids, or (N, D) for one-to-many
    y : targets as for :func:`rnnlab.network.loss_and_grad`, N rows
    mask : (N, T) bool, optional
    batch_size : int
        Sequences per forward pass (memory, not results: sums are float64).
    steps : int, optional
        T for ``setup="one_to_many"``.
    engine : {"fast", "reference"} or Workspace
        What runs the forward pass (:data:`INFERENCE_ENGINES`): the fast engine (a
        :class:`rnnlab.Workspace`, made for the call, or the one given, whose buffers are then
        reused) or the reference pass (:func:`rnnlab.network.forward`).  The same numbers to
        rounding (float32: the compiled kernels' ``tanh`` is eq. 38's, within a few ulp).

    Returns
    -------
    dict
        ``{name: value}`` for every name in :func:`metric_names`.

    Raises
    ------
    ValueError, TypeError
        Before any forward pass, for targets the loss would refuse (as
        :func:`rnnlab.network.loss_and_grad` checks them): class labels outside ``[0, O)``,
        float labels, soft targets that are not distributions, non-finite values, wrong shapes.
    """
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    Xa, ya = np.asarray(X), np.asarray(y)
    n = Xa.shape[0] if Xa.ndim else 0
    if ya.ndim == 0 or ya.shape[0] != n:
        raise ValueError(f"X and y must have the same number of sequences; got X {Xa.shape} "
                         f"and y {ya.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    dtype = check_params(params, spec)
    if spec.setup == "one_to_many":
        T = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
    else:
        T = Xa.shape[1] if Xa.ndim >= 2 else None
    if T is not None or not spec.per_step_output:
        # the targets of the whole split, checked once as the loss checks a batch's (a label
        # of -1 is not "the last class", a label of O not an IndexError)
        check_targets(ya, spec, target_lead(spec, n, T or 0), dtype)
    ma = None if mask is None else np.asarray(mask)
    logits_of = inference_forward(params, spec, engine)
    acc = Accumulator(spec)
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        mb = None if ma is None else ma[sl]
        acc.add(logits_of(Xa[sl], mb, steps), ya[sl], mb)
    return acc.result()


INFERENCE_ENGINES = ("fast", "reference")
"""What :func:`evaluate`, :func:`predict` and :meth:`rnnlab.RNN.predict` may run a forward pass
on (or a :class:`rnnlab.Workspace` to reuse)."""

Logits = Callable[[NDArray[Any], "NDArray[Any] | None", "int | None"], NDArray[np.floating]]


def inference_forward(params: Mapping[str, NDArray[np.floating]], spec: RNNSpec,
                      engine: str | Workspace = "fast") -> Logits:
    """``f(X, mask, steps) -> logits`` of a batch on ``engine`` (see :func:`evaluate`); the
    logits may be a view of a workspace's buffer, valid until the next call.  An empty batch
    (no sequences) goes to the reference pass, whose error (or result) defines what it gives."""
    if isinstance(engine, Workspace):
        if engine.spec != spec:
            raise ValueError(f"the workspace was made for {engine.spec}; the network is {spec}")
        ws: Workspace | None = engine
    elif isinstance(engine, str) and engine in INFERENCE_ENGINES:
        ws = Workspace(spec) if engine == "fast" else None
    else:
        raise ValueError(f"engine must be one of {list(INFERENCE_ENGINES)} or a Workspace; "
                         f"got {engine!r}")

    def logits_of(X: NDArray[Any], mask: NDArray[Any] | None, steps: int | None
                  ) -> NDArray[np.floating]:
        if ws is not None and X.shape[0] > 0:
            return ws.forward(params, X, mask=mask, steps=steps)
        out, _ = network.forward(params, X, spec, mask=mask, steps=steps)
        return out.logits

    return logits_of


def predict(
    params: Mapping[str, NDArray[np.floating]],
    spec: RNNSpec,
    X: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    batch_size: int = 256,
    steps: int | None = None,
    engine: str | Workspace = "fast",
) -> NDArray[np.floating]:
    """The network's predictions ``y = g(z)`` on a whole split, in batches: ``(N, O)`` or
    ``(N, T, O)`` (probabilities for the classification losses, values for MSE); ``engine`` as
    for :func:`evaluate`."""
    Xa = np.asarray(X)
    if Xa.ndim == 0:
        raise ValueError(f"X must be an array of sequences; got {X!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    ma = None if mask is None else np.asarray(mask)
    logits_of = inference_forward(params, spec, engine)
    parts = []
    for start in range(0, max(Xa.shape[0], 1), batch_size):
        sl = slice(start, start + batch_size)
        # g(z) is a new array (the logits may be a view of the engine's buffer)
        parts.append(losses.output(spec.loss, logits_of(Xa[sl], None if ma is None
                                                         else ma[sl], steps)))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def task_metrics(
    params: Mapping[str, NDArray[np.floating]],
    spec: RNNSpec,
    ds: Dataset,
    split: str = "test",
    *,
    batch_size: int = 256,
    engine: str | Workspace = "fast",
) -> dict[str, float]:
    """The task's own metrics of the network on a split of ``ds``
    (:meth:`rnnlab.data.Dataset.task_metrics`: strict Reber success, XOR error by position,
    MSE against the baseline, ...); ``{}`` when the task defines none."""
    if ds.scorer is None:
        return {}
    s = getattr(ds, split)
    steps = s.y.shape[1] if spec.setup == "one_to_many" else None
    y = predict(params, spec, s.X, s.mask, batch_size=batch_size, steps=steps, engine=engine)
    return ds.task_metrics(split, y)


# ----------------------------------------------------------------------------- early stopping


def resolve_mode(monitor: str, mode: str) -> str:
    """``"min"`` or ``"max"``; ``"auto"`` is ``"max"`` for accuracies, ``"min"`` otherwise."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {list(MODES)}")
    if mode != "auto":
        return mode
    return "max" if monitor.endswith("accuracy") else "min"


@dataclass
class EarlyStopping:
    """Track the best value of a monitored metric and count evaluations without improvement.

    An evaluation improves when ``value < best - min_delta`` (mode ``"min"``) or
    ``value > best + min_delta`` (``"max"``); NaN never improves.  Training should stop once
    ``patience`` evaluations in a row have not improved (never, when ``patience`` is None).
    """

    monitor: str
    mode: str = "auto"
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0

    def __post_init__(self) -> None:
        self.mode = resolve_mode(self.monitor, self.mode)

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` seen after ``epoch``; return True if it is a new best."""
        v = float(value)
        if math.isnan(v):
            better = False
        elif self.best is None:
            better = True
        elif self.mode == "min":
            better = v < self.best - self.min_delta
        else:
            better = v > self.best + self.min_delta
        if better:
            self.best, self.best_epoch, self.wait = v, epoch, 0
        else:
            self.wait += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.wait >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = None if state.get("best") is None else float(state["best"])
        self.best_epoch = state.get("best_epoch")
        self.wait = int(state.get("wait", 0))
