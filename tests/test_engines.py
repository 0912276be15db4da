"""Two engines, one contract (rnnlab.core.engine): the reference engine and the fast engine take
the same batch and return the same loss, gradients, logits, final states and dL/dh0, on the
shared grid of configurations; fit runs either."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnlab import Reference, RNNSpec, TrainConfig, Workspace, fit, init_params
from rnnlab import network as net
from rnnlab.train.steps import ENGINES

from conftest import ACTS, SETUPS, assert_close, assert_grads_close, problem

ENGINE_MAKERS = {
    "reference": lambda spec: Reference(spec, input_grad=True),
    "fast-numpy": lambda spec: Workspace(spec, input_grad=True, kernels=False),
    "fast": lambda spec: Workspace(spec, input_grad=True),
}


@pytest.mark.parametrize("engine", sorted(ENGINE_MAKERS))
@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
@pytest.mark.parametrize("act", ACTS)
def test_engines_keep_the_contract(engine: str, setup: int, act: str) -> None:
    for layers, bidir, masked, dtype in itertools.product(
            (1, 2), (False, True), (False, True), (np.float64, np.float32)):
        spec = RNNSpec(3, 5, 4, num_layers=layers, bidirectional=bidir, nonlinearity=act,
                       loss="softmax_ce" if act != "identity" else "identity_mse",
                       **SETUPS[setup])
        params, X, Y, mask, h0 = problem(spec, 7 + layers, 5, 6, masked)
        steps = 6 if spec.setup == "one_to_many" else None
        loss, g, out = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=steps)
        p = {k: v.astype(dtype) for k, v in params.items()}
        eng = ENGINE_MAKERS[engine](spec)
        eloss, grads = eng.value_and_grad(p, X, Y, h0=h0, mask=mask, steps=steps)
        tol = 1e-11 if dtype == np.float64 else 2e-5
        what = f"{engine} {spec} {np.dtype(dtype)}"
        assert eloss == pytest.approx(loss, rel=10 * tol), what
        assert_grads_close(grads, g.params, dtype, what)
        assert all(grads[k].dtype == dtype for k in grads), what
        assert_close(eng.h0_grad, g.h0, tol, what)
        assert_close(eng.input_grad, g.X, tol, what)
        valid = (slice(None),) if mask is None or not spec.per_step_output else (mask,)
        assert_close(eng.logits[valid], out.logits[valid], tol, what)
        assert_close(eng.h_n(), out.h_n, tol, what)


def test_every_engine_name_fit_accepts_is_an_engine() -> None:
    spec = RNNSpec(2, 3, 2)
    for name, make in ENGINES.items():
        eng = make(spec)
        for attr in ("value_and_grad", "h_n", "logits", "h0_grad", "input_grad"):
            assert hasattr(eng, attr), (name, attr)
    with pytest.raises(ValueError, match=r"unknown engine 'gpu'; expected one of"):
        TrainConfig(engine="gpu")


def test_fit_with_either_engine_follows_the_same_trajectory() -> None:
    """float64 training: the reference and the fast engine give the same losses to rounding."""
    spec = RNNSpec(3, 8, 3, setup="many_to_many")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 3))
    y = rng.integers(0, 3, (40, 6))
    losses = {}
    for engine in ("reference", "fast"):
        params = init_params(spec, np.random.default_rng(1), dtype=np.float64)
        cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-2, engine=engine, progress="off")
        h = fit(params, spec, (X, y), cfg)
        losses[engine] = np.array(h.step_losses)
    np.testing.assert_allclose(losses["fast"], losses["reference"], rtol=1e-9)
    assert losses["fast"][-1] < losses["fast"][0]


def test_reference_engine_before_a_call() -> None:
    eng = Reference(RNNSpec(2, 3, 2))
    assert eng.logits is None
    with pytest.raises(RuntimeError, match="value_and_grad call first"):
        eng.h_n()
    with pytest.raises(TypeError, match="spec must be an RNNSpec"):
        Reference("spec")                                     # type: ignore[arg-type]
