"""The one small interface every dataset sits behind: :class:`Split` and :class:`Dataset`.

A :class:`Dataset` is three validated :class:`Split` s (train / validation / test) plus what the
training loop needs to build a matching network: the input size ``D`` (or the vocabulary size for
index inputs), the output size, the task kind, the natural output/loss pairing, analytic baselines
to report beside results, and free-form metadata.

Shapes (``N`` sequences, ``T`` steps, ``D`` features, ``O`` regression outputs):

=======================  ============================  =================================
task                     ``y``                         dtype
=======================  ============================  =================================
sequence_classification  ``(N,)``                      int64, labels in ``[0, output_size)``
step_classification      ``(N, T)``                    int64, labels in ``[0, output_size)``
sequence_regression      ``(N, O)``                    float32
step_regression          ``(N, T, O)``                 float32
=======================  ============================  =================================

``X`` is ``(N, T, D)`` float32 for ``input_kind="dense"`` and ``(N, T)`` int64 indices for
``input_kind="index"``.  ``mask`` is ``(N, T)`` bool (True = a real step) or None (every step real).

This module imports nothing from the rest of rnnlab.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

TaskKind = Literal[
    "sequence_classification", "step_classification", "sequence_regression", "step_regression"
]
LossName = Literal["softmax_ce", "sigmoid_bce", "identity_mse"]
InputKind = Literal["dense", "index"]

TASK_KINDS: tuple[str, ...] = (
    "sequence_classification",
    "step_classification",
    "sequence_regression",
    "step_regression",
)
LOSSES: tuple[str, ...] = ("softmax_ce", "sigmoid_bce", "identity_mse")
INPUT_KINDS: tuple[str, ...] = ("dense", "index")


def _describe(a: np.ndarray) -> str:
    return f"shape {a.shape} dtype {a.dtype}"


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: inputs, targets and an optional step mask.

    Parameters
    ----------
    X : ndarray
        ``(N, T, D)`` float32 dense inputs, or ``(N, T)`` int64 indices (``input_kind="index"``).
    y : ndarray
        ``(N,)`` int64 (sequence classification), ``(N, T)`` int64 (step classification),
        ``(N, O)`` float32 (sequence regression) or ``(N, T, O)`` float32 (step regression).
    mask : ndarray or None
        ``(N, T)`` bool, True where a step is real (variable-length sets such as padded Reber
        strings); None means every step is real.
    """

    X: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        X, y, mask = self.X, self.y, self.mask
        if not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray):
            raise TypeError(
                f"Split.X and Split.y must be numpy arrays; got {type(X).__name__} and "
                f"{type(y).__name__}"
            )
        if X.dtype == np.float32 and X.ndim == 3:
            pass
        elif X.dtype == np.int64 and X.ndim == 2:
            pass
        else:
            raise ValueError(
                "Split.X must be (N, T, D) float32 dense inputs or (N, T) int64 indices; "
                f"got {_describe(X)}"
            )
        n, t = X.shape[0], X.shape[1]
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(
                f"Split.y must have N = {n} rows like X ({_describe(X)}); got {_describe(y)}"
            )
        if y.dtype == np.int64:
            if y.ndim not in (1, 2):
                raise ValueError(
                    f"integer Split.y must be (N,) or (N, T) = ({n}, {t}); got {_describe(y)}"
                )
            if y.ndim == 2 and y.shape[1] != t:
                raise ValueError(
                    f"per-step labels Split.y must be (N, T) = ({n}, {t}); got {_describe(y)}"
                )
        elif y.dtype == np.float32:
            if y.ndim not in (2, 3):
                raise ValueError(
                    f"float Split.y must be (N, O) or (N, T, O) with N = {n}, T = {t}; "
                    f"got {_describe(y)}"
                )
            if y.ndim == 3 and y.shape[1] != t:
                raise ValueError(
                    f"per-step targets Split.y must be (N, T, O) with T = {t}; got {_describe(y)}"
                )
        else:
            raise ValueError(
                "Split.y must be int64 class labels or float32 regression targets; "
                f"got {_describe(y)}"
            )
        if mask is not None:
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n, t):
                got = _describe(mask) if isinstance(mask, np.ndarray) else type(mask).__name__
                raise ValueError(f"Split.mask must be (N, T) = ({n}, {t}) bool; got {got}")

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def steps(self) -> int:
        """``T``, the number of time steps."""
        return int(self.X.shape[1])

    def subset(self, index: np.ndarray) -> Split:
        """The rows ``index`` (an int array or a boolean ``(N,)`` mask) as a new Split."""
        mask = None if self.mask is None else self.mask[index]
        return Split(self.X[index], self.y[index], mask)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset: three splits plus what a network and a trainer need to use it.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"fashion-mnist"``.
    train, val, test : Split
    input_size : int
        ``D`` for dense inputs, the vocabulary size for index inputs.
    output_size : int
        Number of classes, or of regression outputs ``O``.
    task : {"sequence_classification", "step_classification", "sequence_regression",
            "step_regression"}
    loss : {"softmax_ce", "sigmoid_bce", "identity_mse"}
        The natural output + loss pairing.
    input_kind : {"dense", "index"}
    baselines : Mapping[str, float]
        Analytic baselines, e.g. ``{"mse_predict_1": 1/6}``.
    meta : Mapping[str, Any]
        Steps, class names, vocabulary, permutation seed, ...
    scorer : callable, optional
        ``scorer(dataset, split_name, y_pred) -> dict[str, float]``: the task's own metrics
        (strict Reber success, XOR error by position, MSE against the task's baseline, ...)
        of a network's predictions ``y_pred`` (probabilities or values, shaped like the
        network's output on that split); see :meth:`task_metrics`.  A module-level function,
        so that a dataset pickles.
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_size: int
    output_size: int
    task: TaskKind
    loss: LossName
    input_kind: InputKind = "dense"
    baselines: Mapping[str, float] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    scorer: Callable[[Dataset, str, np.ndarray], dict[str, float]] | None = None

    def task_metrics(self, split: str, y_pred: np.ndarray) -> dict[str, float]:
        """The task's own metrics of predictions on ``split`` (``"train"``, ``"val"`` or
        ``"test"``); ``{}`` for a task that defines none beyond loss and accuracy."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test'; got {split!r}")
        if self.scorer is None:
            return {}
        y = np.asarray(y_pred)
        n = getattr(self, split).y.shape[0]
        if y.shape[:1] != (n,):
            raise ValueError(f"y_pred must hold the {n} sequences of the {split} split; got "
                             f"shape {y.shape}")
        return self.scorer(self, split, y)

    def __post_init__(self) -> None:
        if self.task not in TASK_KINDS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {list(TASK_KINDS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {list(LOSSES)}")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(
                f"unknown input_kind {self.input_kind!r}; expected one of {list(INPUT_KINDS)}"
            )
        for attr in ("input_size", "output_size"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{attr} must be an int >= 1; got {value!r}")
        classification = self.task.endswith("classification")
        if self.loss == "softmax_ce" and not classification:
            raise ValueError(f"loss 'softmax_ce' needs a classification task; got {self.task!r}")
        if self.loss in ("identity_mse", "sigmoid_bce") and classification:
            raise ValueError(
                f"loss {self.loss!r} needs float targets (a regression task); got {self.task!r}"
            )
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if not isinstance(split, Split):
                raise TypeError(f"{split_name} must be a Split; got {type(split).__name__}")
            self._check_split(split_name, split)

    def _check_split(self, name: str, s: Split) -> None:
        where = f"{self.name} {name} split"
        if self.input_kind == "dense":
            if s.X.ndim != 3 or s.X.shape[2] != self.input_size:
                raise ValueError(
                    f"{where}: dense X must be (N, T, D) float32 with D = input_size = "
                    f"{self.input_size}; got {_describe(s.X)}"
                )
        else:
            if s.X.ndim != 2:
                raise ValueError(f"{where}: index X must be (N, T) int64; got {_describe(s.X)}")
            if s.X.size and (s.X.min() < 0 or s.X.max() >= self.input_size):
                raise ValueError(
                    f"{where}: indices must lie in [0, input_size = {self.input_size}); "
                    f"found [{s.X.min()}, {s.X.max()}]"
                )
        y, c = s.y, self.output_size
        expected = {
            "sequence_classification": (1, np.int64, "(N,) int64"),
            "step_classification": (2, np.int64, "(N, T) int64"),
            "sequence_regression": (2, np.float32, f"(N, O) float32 with O = {c}"),
            "step_regression": (3, np.float32, f"(N, T, O) float32 with O = {c}"),
        }[self.task]
        ndim, dtype, text = expected
        if y.ndim != ndim or y.dtype != dtype or (y.dtype == np.float32 and y.shape[-1] != c):
            raise ValueError(f"{where}: task {self.task!r} needs y {text}; got {_describe(y)}")
        if y.dtype == np.int64 and y.size and (y.min() < 0 or y.max() >= c):
            raise ValueError(
                f"{where}: labels must lie in [0, output_size = {c}); found "
                f"[{y.min()}, {y.max()}]; check the labels or raise output_size"
            )
        if self.loss == "sigmoid_bce" and y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{where}: sigmoid_bce targets must lie in [0, 1]")

    @property
    def splits(self) -> dict[str, Split]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def steps(self) -> int:
        """``T`` of the training split."""
        return self.train.steps

    def summary(self) -> str:
        """One line: name, sizes, shapes, task and loss."""
        return (
            f"{self.name}: train/val/test = {len(self.train)}/{len(self.val)}/{len(self.test)}, "
            f"T = {self.steps}, input_size = {self.input_size} ({self.input_kind}), "
            f"output_size = {self.output_size}, task = {self.task}, loss = {self.loss}"
        )


def carve_validation(
    split: Split, fraction: float, rng: np.random.Generator
) -> tuple[Split, Split]:
    """Split ``split`` into (train, validation) by a random permutation from ``rng``.

    Parameters
    ----------
    split : Split
        The source training split, ``N`` sequences.
    fraction : float
        Share of the ``N`` sequences that goes to validation, in ``(0, 1)``; at least one
        sequence goes to each side.
    rng : numpy.random.Generator
        The explicit source of randomness.

    Returns
    -------
    (Split, Split)
        ``(train, val)`` with ``N - n_val`` and ``n_val = round(fraction * N)`` sequences.
    """
    train_idx, val_idx = validation_indices(len(split), fraction, rng)
    return split.subset(train_idx), split.subset(val_idx)


def validation_indices(
    n: int, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_index, val_index)`` partitioning ``range(n)``; see :func:`carve_validation`.
    """
    check_fraction("val_fraction", fraction)
    if n < 2:
        raise ValueError(f"cannot carve a validation split from {n} sequence(s); need at least 2")
    n_val = min(max(1, round(fraction * n)), n - 1)
    order = rng.permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def check_fraction(name: str, value: float) -> None:
    """Raise ValueError unless ``0 < value < 1``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}")


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``; raise a clear error otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def one_hot(indices: np.ndarray, size: int) -> np.ndarray:
    """``(...,)`` int indices in ``[0, size)`` -> ``(..., size)`` float32 one-hot vectors."""
    out = np.zeros((*indices.shape, size), dtype=np.float32)
    np.put_along_axis(out, indices[..., None].astype(np.intp), 1.0, axis=-1)
    return out


def three(splits: list[Split]) -> tuple[Split, Split, Split]:
    """``[train, val, test]`` as a typed triple (for ``Dataset(name, *three(splits), ...)``)."""
    train, val, test = splits
    return train, val, test
