"""The splits :func:`rnnlab.fit` reads, and the spec a dataset calls for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..core import network
from ..core.inputs import check_targets, make_mask, target_lead, time_first
from ..core.params import Params
from ..core.spec import RNNSpec
from ..data.base import Dataset

__all__ = ["TrainData", "as_data", "check_fits", "spec_for_dataset"]


@dataclass(frozen=True, eq=False)
class TrainData:
    """One split as :func:`rnnlab.fit` reads it: inputs, targets and an optional mask, rows
    aligned."""

    X: NDArray[Any]
    y: NDArray[Any]
    mask: NDArray[np.bool_] | None
    weight: NDArray[np.floating] | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def take(self, idx: Any) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.bool_] | None]:
        return self.X[idx], self.y[idx], None if self.mask is None else self.mask[idx]

    def take_weight(self, idx: Any) -> NDArray[np.floating] | None:
        return None if self.weight is None else self.weight[idx]

    def with_weight(self, sample_weight: Any) -> TrainData:
        """This split with loss weights: ``(N,)`` per sequence or ``(N, T)`` per step, finite and
        ``>= 0`` (docs/derivation.md, eq. 15w)."""
        if sample_weight is None:
            return self
        w = np.asarray(sample_weight)
        if w.dtype == object or not (np.issubdtype(w.dtype, np.number) or w.dtype == np.bool_) \
                or np.issubdtype(w.dtype, np.complexfloating):
            raise TypeError(f"sample_weight must be a real numeric array; got dtype {w.dtype}")
        n = len(self)
        T = self.X.shape[1] if self.X.ndim >= 2 else None
        if w.shape != (n,) and not (T is not None and w.shape == (n, T)):
            raise ValueError(f"sample_weight must have shape ({n},), one weight per training "
                             f"sequence{f', or ({n}, {T}) per step' if T else ''}; got "
                             f"{w.shape}")
        w = w.astype(np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("sample_weight must be finite and >= 0")
        if not (w > 0).any():
            raise ValueError("sample_weight is 0 for every training sequence: nothing to learn "
                             "from")
        return TrainData(self.X, self.y, self.mask, w)


def as_data(obj: Any, name: str) -> TrainData | None:
    """A Dataset split, a ``Split`` or an ``(X, y[, mask])`` tuple as :class:`TrainData` (None for
    None, or an empty split other than ``"train"``)."""
    if obj is None:
        return None
    if hasattr(obj, "X") and hasattr(obj, "y"):
        X, y, mask = obj.X, obj.y, getattr(obj, "mask", None)
    elif isinstance(obj, tuple | list) and len(obj) in (2, 3):
        X, y, mask = obj[0], obj[1], obj[2] if len(obj) == 3 else None
    else:
        raise TypeError(f"{name} must be a Dataset, a Split or a tuple (X, y[, mask]); got "
                        f"{type(obj).__name__}")
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: X and y must have the same number of sequences (first axis); "
                         f"got X {X.shape} and y {y.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.ndim != 2 or mask.shape[0] != X.shape[0]:
            raise ValueError(f"{name}: mask must be (N, T) bool with N = {X.shape[0]}; got "
                             f"{mask.shape} {mask.dtype}")
    if X.shape[0] == 0:
        if name == "train":
            raise ValueError("the train split has no sequences")
        return None
    return TrainData(X, y, mask)


def spec_for_dataset(ds: Dataset, hidden_size: int, **kwargs: Any) -> RNNSpec:
    """The :class:`RNNSpec` that fits ``ds``: sizes, input kind, set-up and loss from its task.

    ``sequence_*`` tasks read the last step (many-to-one), ``step_*`` tasks every step
    (many-to-many); classification uses the dataset's loss, regression its ``sigmoid_bce`` or
    ``identity_mse``.  ``kwargs`` go to RNNSpec (num_layers, nonlinearity, ...).
    """
    setup = "many_to_one" if ds.task.startswith("sequence") else "many_to_many"
    loss = ds.loss
    if ds.task.endswith("regression") and ds.loss != "sigmoid_bce":
        loss = "identity_mse"
    return RNNSpec(input_size=ds.input_size, hidden_size=hidden_size,
                   output_size=ds.output_size, setup=kwargs.pop("setup", setup),
                   loss=kwargs.pop("loss", loss), input_kind=ds.input_kind, **kwargs)


CHECK_ROWS = 4096
"""Sequences validated at a time by :func:`check_fits` (bounds the memory of the check)."""


def check_fits(params: Params, spec: RNNSpec, data: TrainData, name: str) -> None:
    """Validate every sequence of ``data`` for the model, before training starts.

    Every input, target and mask row is checked as a training step would check it
    (:mod:`rnnlab.core.inputs`: shapes, finite values, ids and class labels in range, soft targets
    that are distributions), a block of :data:`CHECK_ROWS` sequences at a time, and the model is
    run on one sequence, so that a mismatch anywhere in the split surfaces before the first
    step, naming the split and the sequences, not minutes into training.
    """
    X, y, mask = data.take(slice(0, 1))
    steps = y.shape[1] if spec.setup == "one_to_many" else None
    dtype = params["W_hy"].dtype
    try:
        out, _ = network.forward(params, X, spec, mask=mask, steps=steps)
        network.loss_and_grad(spec, out, y, mask=mask)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"the {name} split does not fit the model ({spec.setup}, "
                        f"loss={spec.loss}): {exc}") from None
    n = len(data)
    for lo in range(0, n, CHECK_ROWS):
        hi = min(n, lo + CHECK_ROWS)
        X, y, mask = data.take(slice(lo, hi))
        try:
            _, B, T = time_first(X, spec, dtype, steps)
            make_mask(B, T, mask=mask)
            check_targets(y, spec, target_lead(spec, B, T), dtype)
        except (ValueError, TypeError) as exc:
            where = f"sequence {lo}" if hi - lo == 1 else f"sequences {lo}..{hi - 1}"
            raise type(exc)(f"the {name} split ({where} of {n}) does not fit the model "
                            f"({spec.setup}, loss={spec.loss}): {exc}") from None
