"""MNIST-1D, generated locally with the ``mnist1d`` package's ``make_dataset`` (never its pickle
download).

Default arguments of the package (4000 train / 1000 test signals of length 40, its seed 42), so the
set is the standard one.  ``make_dataset`` seeds NumPy's and Python's *global* generators; this
module saves and restores both around the call, so loading leaves global random state untouched.
Validation is carved from the 4000 training signals with ``default_rng(seed)``.  Needs the
optional ``mnist1d`` package (``pip install 'rnnlab[data]'``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from .base import Dataset, Split, check_fraction, validation_indices
from .images import check_steps, sequence_view

INSTALL_HINT = "pip install 'rnnlab[data]'  (or: pip install mnist1d)"
LENGTH = 40


def generate_mnist1d(**overrides: Any) -> dict[str, Any]:
    """Call ``mnist1d.data.make_dataset`` with its default args (plus ``overrides``).

    Returns
    -------
    dict
        The package's dict: ``x`` ``(4000, 40)``, ``y`` ``(4000,)``, ``x_test``, ``y_test``, ...
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ImportError(
            f"the 'mnist1d' dataset needs the mnist1d package, an optional dependency: "
            f"{INSTALL_HINT}"
        ) from exc
    args = get_dataset_args()
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise ValueError(f"mnist1d has no dataset argument {key!r}")
        setattr(args, key, value)
    np_state = np.random.get_state()  # noqa: NPY002 (restored below)
    py_state = random.getstate()
    try:
        return dict(make_dataset(args))
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


def load_mnist1d(*, steps: int = LENGTH, seed: int = 0, val_fraction: float = 0.1) -> Dataset:
    """MNIST-1D as a sequence classification dataset.

    Parameters
    ----------
    steps : int
        ``T``, a divisor of 40 (default 40: one value per step).
    seed : int
        Seeds the validation carve.
    val_fraction : float

    Returns
    -------
    Dataset
        ``X`` ``(N, T, 40 / T)`` float32 (already standardised by the package), ``y`` ``(N,)``
        int64, 10 classes.
    """
    check_fraction("val_fraction", val_fraction)
    d = check_steps(steps, LENGTH, "an MNIST-1D signal")
    data = generate_mnist1d()
    x = np.asarray(data["x"], dtype=np.float32)
    y = np.asarray(data["y"], dtype=np.int64)
    x_test = np.asarray(data["x_test"], dtype=np.float32)
    y_test = np.asarray(data["y_test"], dtype=np.int64)
    train_idx, val_idx = validation_indices(len(x), val_fraction, np.random.default_rng(seed))

    def make(xs: np.ndarray, ys: np.ndarray) -> Split:
        return Split(np.ascontiguousarray(sequence_view(xs, steps), np.float32), ys)

    return Dataset(
        name="mnist1d",
        train=make(x[train_idx], y[train_idx]),
        val=make(x[val_idx], y[val_idx]),
        test=make(x_test, y_test),
        input_size=d,
        output_size=10,
        task="sequence_classification",
        loss="softmax_ce",
        baselines={"accuracy_chance": 0.1, "ce_chance": float(np.log(10))},
        meta={"steps": steps, "features_per_step": d, "length": LENGTH, "seed": seed},
    )
