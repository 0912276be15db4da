"""Bad inputs at every public boundary: each is refused with a clear error that names what was
expected and what came, never a wrong number, an IndexError or a traceback.

One row per (boundary, input); every defect of this kind found later becomes a row. The command
line's rows run ``rnnlab.cli.main`` in-process: one line on stderr, the documented exit code.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnlab
from rnnlab import RNNSpec, TrainConfig, Workspace, init_params, rtrl, tbptt
from rnnlab import network as net
from rnnlab.learning.diagnostics import finite_difference
from rnnlab.train import checkpoint, metrics

SPEC = RNNSpec(3, 4, 3)
P = init_params(SPEC, np.random.default_rng(0), dtype=np.float64)
X = np.random.default_rng(1).standard_normal((4, 5, 3))
LABELS = np.array([0, 1, 2, 1])
MODEL = rnnlab.RNN.from_spec(SPEC, {k: v.astype(np.float32) for k, v in P.items()})


def _soft(sums: float) -> np.ndarray:
    y = np.full((4, 3), 1 / 3)
    y[2] *= sums
    return y


# (id, call, exception, message regex)
CASES: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    # point 4: labels RNN.evaluate and metrics.evaluate scored silently or crashed on
    ("RNN.evaluate label -1", lambda: MODEL.evaluate(X, np.array([0, 1, 2, -1])), ValueError,
     r"class labels must lie in \[0, 3\) \(output_size\); got range \[-1, 2\]"),
    ("RNN.evaluate label O", lambda: MODEL.evaluate(X, np.array([0, 1, 2, 3])), ValueError,
     r"class labels must lie in \[0, 3\).*got range \[0, 3\]"),
    ("RNN.evaluate float labels", lambda: MODEL.evaluate(X, LABELS.astype(float)), ValueError,
     r"class labels must be integers; got dtype float64"),
    ("RNN.evaluate NaN label", lambda: MODEL.evaluate(X, np.array([0, 1, np.nan, 1])),
     ValueError, r"class labels must be integers"),
    ("metrics.evaluate label -1", lambda: metrics.evaluate(P, SPEC, X, np.array([0, 1, 2, -1])),
     ValueError, r"class labels must lie in \[0, 3\)"),
    ("metrics.evaluate targets shape", lambda: metrics.evaluate(P, SPEC, X, np.zeros((4, 2))),
     ValueError, r"targets must be class labels of shape \(4,\) or floats of shape \(4, 3\)"),
    # point 2: soft targets that are not distributions
    ("loss_and_grad soft targets sum 0.6",
     lambda: net.loss_and_grad(SPEC, net.forward(P, X, SPEC)[0], _soft(0.6)),
     ValueError, r"softmax_ce soft targets must be distributions over the 3 classes .*row \(2,\) "
                 r"sums to 0\.6"),
    ("value_and_grad soft targets sum 2",
     lambda: net.value_and_grad(P, X, np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0.]]),
                                SPEC), ValueError, r"row \(0,\) sums to 2"),
    ("Workspace soft targets", lambda: Workspace(SPEC).value_and_grad(P, X, _soft(0.5)),
     ValueError, r"soft targets must be distributions"),
    ("tbptt soft targets", lambda: tbptt.value_and_grad(P, X, _soft(0.5), SPEC, k1=2, k2=5),
     ValueError, r"soft targets must be distributions"),
    ("rtrl soft targets", lambda: rtrl.value_and_grad(P, X, _soft(1.5), SPEC),
     ValueError, r"soft targets must be distributions"),
    ("RNN.evaluate soft targets", lambda: MODEL.evaluate(X, _soft(0.5)),
     ValueError, r"soft targets must be distributions"),
    ("fit soft targets", lambda: rnnlab.fit({k: v.copy() for k, v in P.items()}, SPEC,
                                            (X, _soft(0.5)), TrainConfig(progress="off")),
     ValueError, r"the train split .*soft targets must be distributions"),
    # point 3 at the boundaries the other module does not cover
    ("RNN.forward NaN", lambda: MODEL.forward(np.where(X > 2, np.nan, X)), ValueError,
     r"X contains NaN or inf \(first at index"),
    ("RNN.predict inf", lambda: MODEL.predict(np.full((2, 5, 3), np.inf)), ValueError,
     r"X contains NaN or inf"),
    ("fit NaN val", lambda: rnnlab.fit({k: v.copy() for k, v in P.items()}, SPEC, (X, LABELS),
                                       TrainConfig(progress="off"),
                                       val=(np.full_like(X, np.nan), LABELS)),
     ValueError, r"the val split .*X contains NaN or inf"),
    ("check_fit bidirectional tbptt",
     lambda: rnnlab.train.check_fit(init_params(RNNSpec(3, 4, 3, bidirectional=True),
                                                np.random.default_rng(0)),
                                    RNNSpec(3, 4, 3, bidirectional=True), (X, LABELS),
                                    TrainConfig(algorithm="tbptt", k1=2)),
     ValueError, r"algorithm 'tbptt' walks time forwards"),
    ("finite_difference of a strided array",
     lambda: finite_difference(lambda: 0.0, np.zeros((4, 4))[:, ::2]),
     ValueError, r"x must be C-contiguous"),
]


@pytest.mark.parametrize("call,error,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_a_clear_error(call: Callable[[], Any], error: type[BaseException],
                                    match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_soft_targets_that_are_distributions_get_the_exact_gradient() -> None:
    """Rows within the rounding slack are accepted, and the gradient is that of the loss as
    computed, ``(sum y) softmax - y`` (docs/derivation.md eq. 10), checked by finite
    differences."""
    y = _soft(1.0)
    y[1] *= 1 + 4e-4                      # rounding slack: accepted (within 1e-3)
    out, _ = net.forward(P, X, SPEC)
    res = net.loss_and_grad(SPEC, out, y)
    z = out.logits.copy()
    eps = 1e-6
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += eps
        zm[i] -= eps
        fp = net.loss_and_grad(SPEC, out._replace(logits=zp), y).value
        fm = net.loss_and_grad(SPEC, out._replace(logits=zm), y).value
        assert abs((fp - fm) / (2 * eps) - res.dz[i]) < 1e-8, i


def test_an_idx_file_of_27x27_images_is_refused(tmp_path: Path) -> None:
    """Point 4: 27 x 27 images in the MNIST files trained silently as T = 27."""
    from rnnlab.data import registry
    from rnnlab.data.idx import IDXError, write_idx
    from rnnlab.data.images import ROLES

    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (20, 27, 27), dtype=np.uint8),
              "train_labels": (np.arange(20) % 10).astype(np.uint8),
              "test_images": rng.integers(0, 256, (10, 27, 27), dtype=np.uint8),
              "test_labels": (np.arange(10) % 10).astype(np.uint8)}
    for role, a in arrays.items():
        write_idx(tmp_path / (ROLES[role] + ".gz"), a)
    for name in ("mnist", "fashion-mnist", "permuted-mnist"):
        with pytest.raises(IDXError, match=r"t.*-images-idx3-ubyte.gz: expected 28x28 images, "
                                           r"found 27x27 \(shape \(\d+, 27, 27\)\)"):
            registry.load(name, data_dir=tmp_path, steps=28)
    # and T = 27 is refused for what the set is, before any file is read
    with pytest.raises(ValueError, match=r"steps=27 does not divide the 784 values of a 28x28"):
        registry.load("mnist", data_dir=tmp_path / "nowhere", steps=27)


def test_a_checkpoint_member_that_is_a_pickle_is_refused(tmp_path: Path) -> None:
    """Point 10: never unpickled (np.load hands a raw member back as bytes), and refused at load
    with one line naming the member, not a traceback later."""
    path = checkpoint.save(tmp_path / "c.npz", params={"a": np.ones(3)}, epoch=0, step=0,
                           config={})
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(path) as z, zipfile.ZipFile(bad, "w") as w:
        for name in z.namelist():
            w.writestr(name, pickle.dumps(np.ones(3)) if name == "params/a.npy" else z.read(name))
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"member 'params/a' is not an \.npy array .*never loaded") as e:
        checkpoint.load(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(checkpoint.CheckpointError, match="is not an .npy array"):
        rnnlab.RNN.load(bad)
