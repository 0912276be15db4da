"""The registry: names, options, errors; the no-download image sets (digits, MNIST-1D)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rnnlab import data

REQUIRED = ["digits", "mnist1d", "mnist", "fashion-mnist", "permuted-mnist", "xor", "adding",
            "copy", "reber", "sine", "parity", "text"]


def test_names() -> None:
    assert set(REQUIRED) <= set(data.names())
    assert data.names() == sorted(data.names())
    for name in data.names():
        assert data.describe(name)
        assert isinstance(data.options(name), dict)


def test_unknown_name_lists_valid() -> None:
    with pytest.raises(ValueError,
                       match=r"unknown dataset 'cifar'; valid names: add-task, adding, copy"):
        data.load("cifar")


def test_unknown_option_lists_valid() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) colour for dataset 'adding'; "
                                         r"valid options: n_train=10000"):
        data.load("adding", colour="red")
    with pytest.raises(ValueError, match="permutation_seed=0"):
        data.load("mnist", bogus=1)
    assert "source" in data.options("permuted-mnist")
    assert "permute" not in data.options("mnist")
    assert "path" in data.options("text")


def test_aliases_and_case() -> None:
    assert data.load("XOR", n_train=5, n_test=5).name == "xor"
    assert data.registry.canonical_name("Fashion_MNIST") == "fashion-mnist"
    assert data.registry.canonical_name("pmnist") == "permuted-mnist"


def test_steps_reach_the_loader() -> None:
    assert data.load("parity", steps=7, n_train=4, n_test=2).steps == 7
    assert data.load("copy", steps=7, n_train=4, n_test=2).steps == 27


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sklearn_digits() -> None:
    pytest.importorskip("sklearn")


@pytest.mark.parametrize("steps", [1, 2, 4, 8, 16, 32, 64])
def test_digits_views(sklearn_digits: None, steps: int) -> None:
    ds = data.load("digits", steps=steps, seed=1)
    assert ds.train.X.shape[1:] == (steps, 64 // steps) and ds.input_size == 64 // steps
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert 0.0 <= ds.train.X.min() and ds.train.X.max() <= 1.0


def test_digits_splits(sklearn_digits: None) -> None:
    from sklearn.datasets import load_digits

    a = data.load("digits", seed=1)
    b = data.load("digits", seed=2)
    np.testing.assert_array_equal(a.test.X, b.test.X)  # fixed test set
    assert not np.array_equal(a.val.y, b.val.y)  # the seed moves the validation carve
    rows = data.load("digits", steps=8)
    images = load_digits().images / 16.0
    # each test sequence is an 8x8 image read row by row
    flat = {im.astype(np.float32).tobytes() for im in images}
    assert all(x.tobytes() in flat for x in rows.test.X)
    with pytest.raises(ValueError, match=r"steps=3 does not divide the 64 values.*\[1, 2, 4, 8"):
        data.load("digits", steps=3)


def test_missing_optional_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"needs scikit-learn.*pip install 'rnnlab\[data\]'"):
        data.load("digits")
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r"needs the mnist1d package.*rnnlab\[data\]"):
        data.load("mnist1d")


# --------------------------------------------------------------------------- MNIST-1D


def test_mnist1d(monkeypatch: pytest.MonkeyPatch) -> None:
    mnist1d_data = pytest.importorskip("mnist1d.data")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pickle download must never be used")

    monkeypatch.setattr(mnist1d_data, "get_dataset", no_download)
    requests = sys.modules.get("requests")
    if requests is not None:
        monkeypatch.setattr(requests, "get", no_download)
    state = str(np.random.get_state(legacy=False))  # noqa: NPY002
    ds = data.load("mnist1d", seed=0)
    assert str(np.random.get_state(legacy=False)) == state  # noqa: NPY002
    assert ds.train.X.shape == (3600, 40, 1) and ds.test.X.shape == (1000, 40, 1)
    assert len(ds.val) == 400 and set(np.unique(ds.test.y)) == set(range(10))
    reference = data.mnist1d.generate_mnist1d()  # make_dataset, global RNG state restored
    np.testing.assert_allclose(ds.test.X[:, :, 0], reference["x_test"], rtol=1e-6)
    short = data.load("mnist1d", steps=8)
    assert short.train.X.shape[1:] == (8, 5)
    with pytest.raises(ValueError, match="steps=7 does not divide the 40 values"):
        data.load("mnist1d", steps=7)
