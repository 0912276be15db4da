"""rnnlab.data.digits: scikit-learn's bundled digits, read without importing scikit-learn."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnlab.data import digits

pytest.importorskip("sklearn")

SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_bundled_file_gives_load_digits_arrays_exactly() -> None:
    from sklearn.datasets import load_digits

    path = digits._bundled_file()
    assert path is not None and path.name == "digits.csv.gz"
    images, labels = digits._load_digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    assert images.dtype == np.float64 and labels.dtype == np.int64


def test_a_fresh_process_loads_digits_without_importing_scikit_learn() -> None:
    code = ("import sys\nfrom rnnlab import data\nds = data.load('digits', steps=8)\n"
            "print(len(ds.train.X) + len(ds.val.X) + len(ds.test.X), 'sklearn' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1797", "False"]


def test_a_file_that_is_not_the_digits_falls_back_to_load_digits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing, unreadable or altered file is not trusted: ``load_digits`` runs instead."""
    from sklearn.datasets import load_digits

    good = digits._bundled_file()
    assert good is not None
    rows = gzip.open(good, "rt").read().splitlines()
    bad = {
        "missing": None,
        "not gzip": b"not a gzip file",
        "cut short": "\n".join(rows[:100]).encode(),
        "a pixel of 17": "\n".join(["17" + rows[0][rows[0].index(","):]] + rows[1:]).encode(),
        "a label of 10": "\n".join([rows[0][:rows[0].rindex(",")] + ",10"] + rows[1:]).encode(),
    }
    expected = load_digits()
    for what, content in bad.items():
        path = tmp_path / f"{len(what)}.csv.gz"
        if content is not None:
            path.write_bytes(content if what == "not gzip" else gzip.compress(content))
        if content is None:
            monkeypatch.setattr(digits, "_bundled_file", lambda: None)
        else:
            assert digits._read_bundled(path) is None, what
            monkeypatch.setattr(digits, "_bundled_file", lambda p=path: p)
        images, labels = digits._load_digits_arrays()
        np.testing.assert_array_equal(images, expected.images)
        np.testing.assert_array_equal(labels, expected.target)
