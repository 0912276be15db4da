"""One policy for non-finite values at every entry point (docs/derivation.md, "Non-finite
values"): finite in (a NaN or inf argument is a ValueError naming it), IEEE out (an overflow
inside returns inf/NaN, never raises), and fit applies no non-finite update.

Issue 13, point 3: ``forward``/``loss_and_grad``, the Workspace and RTRL returned NaN silently,
while ``backward`` and ``tbptt`` raised "dlogits contains NaN or inf" (tbptt's caller never gave
dlogits), so ``fit(algorithm="tbptt")`` crashed where every other algorithm stopped cleanly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import rnnlab
from rnnlab import RNNSpec, TrainConfig, Workspace, init_params, rtrl, tbptt
from rnnlab import network as net
from rnnlab.learning.diagnostics import per_step_gradients
from rnnlab.optim import make as make_optimizer

SPEC = RNNSpec(3, 4, 3, nonlinearity="identity", setup="many_to_many", num_layers=2)


def _overflowing(dtype: type) -> dict[str, np.ndarray]:
    """Finite parameters whose forward pass overflows (identity units, weights of 1e30 in
    float32 / 1e200 in float64)."""
    p = init_params(SPEC, np.random.default_rng(0), dtype=dtype)
    big = 1e30 if dtype == np.float32 else 1e200
    return {k: np.full_like(v, big) for k, v in p.items()}


X = np.ones((2, 5, 3))
Y = np.zeros((2, 5), dtype=np.int64)


def _entry_points() -> dict[str, Callable[[dict[str, np.ndarray], Any, Any], float]]:
    def forward(p: Any, x: Any, y: Any) -> float:
        out, _ = net.forward(p, x, SPEC)
        return float(np.abs(out.logits).max())

    def loss_and_grad(p: Any, x: Any, y: Any) -> float:
        out, _ = net.forward(p, x, SPEC)
        return net.loss_and_grad(SPEC, out, y).value

    def backward(p: Any, x: Any, y: Any) -> float:
        out, cache = net.forward(p, x, SPEC)
        g = net.backward(p, net.loss_and_grad(SPEC, out, y).dz, cache)
        return float(np.abs(g.params["l0.W_hh"]).max())

    def online(p: Any, x: Any, y: Any) -> float:
        opt = make_optimizer("sgd", lr=0.1)
        q = {k: v.copy() for k, v in p.items()}
        return rtrl.online_update(q, x, y, SPEC, opt=opt, opt_state=opt.init(q))[0]

    return {
        "forward": forward,
        "loss_and_grad": loss_and_grad,
        "backward": backward,
        "value_and_grad": lambda p, x, y: net.value_and_grad(p, x, y, SPEC)[0],
        "Reference": lambda p, x, y: rnnlab.Reference(SPEC).value_and_grad(p, x, y)[0],
        "Workspace": lambda p, x, y: Workspace(SPEC).value_and_grad(p, x, y)[0],
        "Workspace kernels=False": lambda p, x, y: Workspace(SPEC, kernels=False)
        .value_and_grad(p, x, y)[0],
        "tbptt": lambda p, x, y: tbptt.value_and_grad(p, x, y, SPEC, k1=2, k2=3)[0],
        "rtrl": lambda p, x, y: rtrl.value_and_grad(p, x, y, SPEC)[0],
        "rtrl.online_update": online,
        "per_step_gradients": lambda p, x, y: per_step_gradients(p, x, y, SPEC).loss,
    }


ENTRY = _entry_points()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ENTRY))
def test_an_overflow_comes_back_non_finite_and_never_raises(name: str, dtype: type) -> None:
    p = _overflowing(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # NumPy's own, the policy allows it
        value = ENTRY[name](p, X.astype(dtype), Y)
    assert not math.isfinite(value), (name, value)


@pytest.mark.parametrize("name", list(ENTRY))
@pytest.mark.parametrize("bad", ["X", "params", "targets", "h0"])
def test_a_non_finite_argument_is_a_value_error_naming_it(name: str, bad: str) -> None:
    p = init_params(SPEC, np.random.default_rng(0), dtype=np.float64)
    x, y = X.copy(), np.zeros((2, 5, 3))
    if bad == "X":
        x[1, 2, 0] = np.nan
        match = r"X contains NaN or inf \(first at index \(1, 2, 0\): nan\)"
    elif bad == "params":
        p["l1.W_hh"][0, 1] = np.inf
        match = r"params\['l1.W_hh'\] contains NaN or inf"
    elif bad == "targets":
        if name == "forward":
            pytest.skip("forward reads no targets")
        y = np.full((2, 5, 3), 1 / 3)
        y[0, 4, 2] = np.nan
        match = r"targets contains NaN or inf \(first at index \(0, 4, 2\)"
    else:
        h0 = np.zeros((2, 2, 4))
        h0[1, 0, 3] = -np.inf
        fn = {"value_and_grad": lambda: net.value_and_grad(p, x, Y, SPEC, h0=h0),
              "Workspace": lambda: Workspace(SPEC).value_and_grad(p, x, Y, h0=h0),
              "tbptt": lambda: tbptt.value_and_grad(p, x, Y, SPEC, k1=2, k2=3, h0=h0),
              "rtrl": lambda: rtrl.value_and_grad(p, x, Y, SPEC, h0=h0),
              "forward": lambda: net.forward(p, x, SPEC, h0=h0)}.get(name)
        if fn is None:
            pytest.skip("takes no h0 here")
        with pytest.raises(ValueError, match=r"h0 contains NaN or inf \(first at index "
                                              r"\(1, 0, 3\): -inf\)"):
            fn()
        return
    with pytest.raises(ValueError, match=match):
        ENTRY[name](p, x, y if bad == "targets" else Y)


@pytest.mark.parametrize("algorithm", ["bptt", "tbptt", "rtrl", "rtrl_online"])
@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_fit_stops_or_skips_a_diverging_step_for_every_algorithm(algorithm: str, engine: str,
                                                                  tmp_path: Any) -> None:
    """tbptt used to crash with "dlogits contains NaN or inf" instead of stopping."""
    if engine == "reference" and algorithm != "bptt":
        pytest.skip("the engine runs bptt only")
    spec = RNNSpec(3, 4, 3, nonlinearity="identity", setup="many_to_many")
    p = init_params(spec, np.random.default_rng(0), dtype=np.float32)
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((8, 6, 3)) * 100, rng.integers(0, 3, (8, 6)))
    kw: dict[str, Any] = {"algorithm": algorithm, "engine": engine, "optimizer": "sgd",
                          "lr": 1e12, "batch_size": 4, "epochs": 2, "progress": "off"}
    if algorithm == "tbptt":
        kw.update(k1=2, k2=3)
    before = {k: v.copy() for k, v in p.items()}
    with pytest.raises(rnnlab.DivergenceError, match="training diverged: non-finite"):
        rnnlab.fit(p, spec, data, TrainConfig(**kw))
    assert all(np.isfinite(v).all() for v in p.values())     # no non-finite update applied
    q = {k: v.copy() for k, v in before.items()}
    h = rnnlab.fit(q, spec, data, TrainConfig(**kw, on_nonfinite="skip"))
    assert h.skipped >= 1 and all(np.isfinite(v).all() for v in q.values())


def test_fit_checks_every_sequence_before_the_first_step(tmp_path: Any) -> None:
    """A NaN in the 300th sequence of a split is refused up front, naming the split and where,
    not minutes into training (and not at all for a validation split, before)."""
    spec = RNNSpec(3, 4, 3)
    p = init_params(spec, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((400, 5, 3)), rng.integers(0, 3, 400)
    bad = X.copy()
    bad[300, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"the train split \(sequences 0\.\.399 of 400\).*"
                                         r"X contains NaN or inf \(first at index \(300, 1, 2\)"):
        rnnlab.fit(p, spec, (bad, y), TrainConfig(epochs=1, progress="off"))
    yv = y.copy()
    yv[399] = -1
    with pytest.raises(ValueError, match=r"the val split .*class labels must lie in \[0, 3\)"):
        rnnlab.fit(p, spec, (X, y), TrainConfig(epochs=1, progress="off"), val=(X, yv))
    assert not (tmp_path / "ck").exists()
