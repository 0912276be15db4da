"""scikit-learn's bundled 8 x 8 digits (no download) as sequences.

1797 images of 64 pixels with values 0..16.  ``T`` divides 64 (1, 2, 4, 8, 16, 32, 64); ``T = 8``
reads row by row.  The source has no split: a fixed test set (``test_fraction``, drawn from
``default_rng(0)`` so it is the same for every run seed) is set aside, then validation is carved
from the rest with ``default_rng(seed)``.  Needs the optional scikit-learn
(``pip install 'rnnlab[data]'``).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .base import Dataset, Split, check_fraction, validation_indices
from .images import check_steps, sequence_view

INSTALL_HINT = "pip install 'rnnlab[data]'  (or: pip install scikit-learn)"
TEST_SPLIT_SEED = 0
BUNDLED = "digits.csv.gz"       # scikit-learn's file, in sklearn/datasets/data/


def _bundled_file() -> Path | None:
    """scikit-learn's own copy of the digits (``sklearn/datasets/data/digits.csv.gz``, what
    ``load_digits`` reads), found without importing scikit-learn; None when scikit-learn or the
    file is not there."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ValueError, AttributeError):         # blocked: sys.modules["sklearn"] is None
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / BUNDLED
    return path if path.is_file() else None


def _read_bundled(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The images ``(1797, 8, 8)`` and labels of the bundled file, parsed as ``load_digits``
    parses it (comma-separated rows of 64 pixels and the label); None when the file does not
    hold that."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
    except (OSError, ValueError, EOFError):
        return None
    if not (table.ndim == 2 and table.shape == (1797, 65) and np.all(table == np.round(table))
            and table[:, :-1].min() >= 0 and table[:, :-1].max() <= 16
            and set(np.unique(table[:, -1])) <= set(range(10))):
        return None
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``load_digits`` gives them: read from scikit-learn's bundled file directly
    (importing scikit-learn took 1.3-2.0 s of a fresh process's start, the file 0.03 s), or
    through ``load_digits`` when the file is not where it has always been."""
    path = _bundled_file()
    if path is not None:
        found = _read_bundled(path)
        if found is not None:
            return np.asarray(found[0], dtype=np.float64), found[1]
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
