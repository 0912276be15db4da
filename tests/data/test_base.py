"""Split / Dataset validation: shapes, dtypes, task/loss pairing, label ranges."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.data.base import Dataset, Split, carve_validation, one_hot


def dense(n: int = 4, t: int = 3, d: int = 2) -> np.ndarray:
    return np.zeros((n, t, d), np.float32)


def ds(split: Split, **kw: object) -> Dataset:
    args: dict[str, object] = dict(
        name="toy", train=split, val=split, test=split, input_size=2, output_size=3,
        task="sequence_classification", loss="softmax_ce",
    )
    args.update(kw)
    return Dataset(**args)  # type: ignore[arg-type,unused-ignore]


def test_split_accepts_each_layout() -> None:
    assert len(Split(dense(), np.zeros(4, np.int64))) == 4
    assert Split(dense(), np.zeros((4, 3), np.int64)).steps == 3
    Split(dense(), np.zeros((4, 5), np.float32))
    Split(dense(), np.zeros((4, 3, 5), np.float32))
    Split(np.zeros((4, 3), np.int64), np.zeros(4, np.int64), np.ones((4, 3), bool))


@pytest.mark.parametrize(
    "X, y, mask, match",
    [
        (np.zeros((4, 3, 2)), np.zeros(4, np.int64), None, r"\(N, T, D\) float32.*float64"),
        (np.zeros((4, 3), np.int32), np.zeros(4, np.int64), None, r"shape \(4, 3\) dtype int32"),
        (dense(), np.zeros(5, np.int64), None, "N = 4 rows"),
        (dense(), np.zeros((4, 2), np.int64), None, r"\(N, T\) = \(4, 3\)"),
        (dense(), np.zeros(4, np.float32), None, r"\(N, O\) or \(N, T, O\)"),
        (dense(), np.zeros((4, 2, 1), np.float32), None, "T = 3"),
        (dense(), np.zeros(4, np.uint8), None, "int64 class labels or float32"),
        (dense(), np.zeros(4, np.int64), np.ones((4, 3), np.int64), r"\(N, T\) = \(4, 3\) bool"),
        (dense(), np.zeros(4, np.int64), np.ones((4, 2), bool), r"got shape \(4, 2\)"),
    ],
)
def test_split_rejects(X: np.ndarray, y: np.ndarray, mask: np.ndarray | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Split(X, y, mask)


def test_split_type_error() -> None:
    with pytest.raises(TypeError, match="numpy arrays"):
        Split([[0.0]], np.zeros(1, np.int64))  # type: ignore[arg-type,unused-ignore]


def test_dataset_checks() -> None:
    ok = Split(dense(), np.array([0, 1, 2, 0], np.int64))
    assert ds(ok).summary().startswith("toy: train/val/test = 4/4/4, T = 3")
    bad_label = Split(dense(), np.array([0, 1, 3, 0], np.int64))
    with pytest.raises(
        ValueError,
        match=r"toy train split: labels must lie in \[0, output_size = 3\); found \[0, 3\]",
    ):
        ds(bad_label)
    with pytest.raises(ValueError, match="labels must lie"):
        ds(Split(dense(), np.array([0, -1, 2, 0], np.int64)))
    with pytest.raises(ValueError, match="D = input_size = 5"):
        ds(ok, input_size=5)
    with pytest.raises(ValueError, match="needs y \\(N, T\\) int64"):
        ds(ok, task="step_classification")
    with pytest.raises(ValueError, match="needs a classification task"):
        ds(Split(dense(), np.zeros((4, 3), np.float32)), task="sequence_regression")
    with pytest.raises(ValueError, match="needs float targets"):
        ds(ok, loss="identity_mse")
    with pytest.raises(ValueError, match="unknown task"):
        ds(ok, task="ranking")
    with pytest.raises(ValueError, match="input_size must be an int >= 1"):
        ds(ok, input_size=0)
    idx = Split(np.array([[0, 1, 2]] * 4, np.int64), np.zeros(4, np.int64))
    ds(idx, input_kind="index", input_size=3)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, input_size = 2\)"):
        ds(idx, input_kind="index")
    reg = Split(dense(), np.full((4, 3), 0.5, np.float32))
    ds(reg, task="sequence_regression", loss="sigmoid_bce")
    with pytest.raises(ValueError, match=r"sigmoid_bce targets must lie in \[0, 1\]"):
        ds(Split(dense(), np.full((4, 3), 2.0, np.float32)), task="sequence_regression",
           loss="sigmoid_bce")


def test_carve_validation() -> None:
    s = Split(np.arange(40, dtype=np.float32).reshape(20, 2, 1), np.arange(20, dtype=np.int64))
    tr, va = carve_validation(s, 0.25, np.random.default_rng(0))
    assert (len(tr), len(va)) == (15, 5)
    assert sorted(tr.y.tolist() + va.y.tolist()) == list(range(20))
    tr2, va2 = carve_validation(s, 0.25, np.random.default_rng(0))
    np.testing.assert_array_equal(va.y, va2.y)
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \(0, 1\)"):
        carve_validation(s, 1.0, np.random.default_rng(0))
    tiny = Split(dense(n=1), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="need at least 2"):
        carve_validation(tiny, 0.5, np.random.default_rng(0))


def test_one_hot() -> None:
    out = one_hot(np.array([[0, 2], [1, 1]]), 3)
    assert out.dtype == np.float32 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out.argmax(-1), [[0, 2], [1, 1]])
    np.testing.assert_array_equal(out.sum(-1), 1)
