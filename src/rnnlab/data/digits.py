"""scikit-learn's bundled 8 x 8 digits (no download) as sequences.

1797 images of 64 pixels with values 0..16.  ``T`` divides 64 (1, 2, 4, 8, 16, 32, 64); ``T = 8``
reads row by row.  The source has no split: a fixed test set (``test_fraction``, drawn from
``default_rng(0)`` so it is the same for every run seed) is set aside, then validation is carved
from the rest with ``default_rng(seed)``.  Needs the optional scikit-learn
(``pip install 'rnnlab[data]'``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .base import Dataset, Split, check_fraction, validation_indices
from .images import check_steps, sequence_view

INSTALL_HINT = "pip install 'rnnlab[data]'  (or: pip install scikit-learn)"
TEST_SPLIT_SEED = 0


def _load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            f"the 'digits' dataset needs scikit-learn, an optional dependency: {INSTALL_HINT}"
        ) from exc
    bunch: Any = load_digits()
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def load_digits_dataset(
    *,
    steps: int = 8,
    seed: int = 0,
    scale: Literal["unit", "standard"] = "unit",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """The bundled digits as a sequence classification dataset.

    Parameters
    ----------
    steps : int
        ``T`` in {1, 2, 4, 8, 16, 32, 64}; ``D = 64 / T``.
    seed : int
        Seeds the validation carve.
    scale : {"unit", "standard"}
        ``x / 16`` in [0, 1], or standardised by the training split's mean and std.
    val_fraction, test_fraction : float

    Returns
    -------
    Dataset
        ``X`` ``(N, T, 64 / T)`` float32, ``y`` ``(N,)`` int64, 10 classes.
    """
    if scale not in ("unit", "standard"):
        raise ValueError(f"scale must be 'unit' or 'standard'; got {scale!r}")
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction)
    d = check_steps(steps, 64, "an 8x8 digit")
    images, labels = _load_digits_arrays()
    x = (images.reshape(len(images), 64) / 16.0).astype(np.float32)
    fixed = np.random.default_rng(TEST_SPLIT_SEED)
    rest, test_idx = validation_indices(len(x), test_fraction, fixed)
    tr, va = validation_indices(len(rest), val_fraction, np.random.default_rng(seed))
    train_idx, val_idx = rest[tr], rest[va]
    mean, std = float(x[train_idx].mean()), float(x[train_idx].std())

    def make(idx: np.ndarray) -> Split:
        xs = x[idx]
        if scale == "standard":
            xs = (xs - np.float32(mean)) / np.float32(std)
        return Split(np.ascontiguousarray(sequence_view(xs, steps), np.float32), labels[idx])

    return Dataset(
        name="digits",
        train=make(train_idx),
        val=make(val_idx),
        test=make(test_idx),
        input_size=d,
        output_size=10,
        task="sequence_classification",
        loss="softmax_ce",
        baselines={"accuracy_chance": 0.1, "ce_chance": float(np.log(10))},
        meta={
            "steps": steps,
            "features_per_step": d,
            "image_shape": (8, 8),
            "classes": tuple(str(i) for i in range(10)),
            "scale": scale,
            "pixel_mean": mean,
            "pixel_std": std,
            "test_split_seed": TEST_SPLIT_SEED,
            "seed": seed,
        },
    )
