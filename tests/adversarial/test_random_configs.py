"""Random configurations against an independent float64 reference (tests/adversarial/
reference.py: the network again in PyTorch, step by step, gradients by autograd).

Every engine and rule that computes a gradient: the public functions, the fast engine in
float64 and float32 (with the compiled kernels when numba is installed), truncated BPTT with
``k2 >= T`` and RTRL (both exactly BPTT then). A seeded sample of ``FULL_CASES`` runs by default;
``--adversarial-full`` runs all of them (tests/adversarial/README.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import Workspace, rtrl, tbptt
from rnnlab import network as net

from .cases import close, random_case
from .reference import reference

TOL64 = 1e-10     # float64 against the float64 reference, relative to each array's scale
TOL32 = 2e-4      # float32 (the compiled tanh of eq. 38, float32 rounding) against float64


def _check(what: str, got: dict, ref: dict, tol: float, *, X: bool = True, h0: bool = True,
           seed: int = -1) -> None:
    errs = {"loss": close(got["loss"], ref["loss"], tol)}
    for k, v in ref["grads"].items():
        errs[k] = close(got["grads"][k], v, tol)
    if X and ref["X"] is not None:
        errs["X"] = close(got["X"], ref["X"], tol)
    if h0:
        errs["h0"] = close(got["h0"], ref["h0"], tol)
    if "logits" in got:
        errs["logits"] = close(got["logits"], ref["logits"], tol)
    bad = {k: e for k, e in errs.items() if not e <= tol}
    assert not bad, f"{what}, case {seed}: relative errors above {tol:g}: {bad}"


def test_public_functions_and_fast_engine_float64(case_seed: int) -> None:
    c = random_case(case_seed)
    spec, P = c["spec"], c["params"]
    kw = {"h0": c["h0"], "mask": c["mask"], "steps": c["steps"]}
    ref = reference(spec, P, c["X"], c["Y"], **kw)
    loss, g, out = net.value_and_grad(P, c["X"], c["Y"], spec, **kw)
    _check("network.value_and_grad", {"loss": loss, "grads": g.params, "X": g.X, "h0": g.h0,
                                      "logits": out.logits}, ref, TOL64, seed=case_seed)
    assert close(out.h_n, ref["h_n"], TOL64) <= TOL64
    ws = Workspace(spec, input_grad=True)
    loss, grads = ws.value_and_grad(P, c["X"], c["Y"], **kw)
    _check("Workspace float64", {"loss": loss, "grads": grads, "X": ws.input_grad,
                                 "h0": ws.h0_grad, "logits": ws.logits}, ref, TOL64,
           seed=case_seed)
    assert close(ws.h_n(), ref["h_n"], TOL64) <= TOL64


def test_fast_engine_float32(case_seed: int) -> None:
    c = random_case(case_seed)
    spec = c["spec"]
    P32 = {k: v.astype(np.float32) for k, v in c["params"].items()}
    X = c["X"] if spec.input_kind == "index" else np.asarray(c["X"], np.float32)
    h0 = None if c["h0"] is None else c["h0"].astype(np.float32)
    labels = np.issubdtype(np.asarray(c["Y"]).dtype, np.integer)
    Y = c["Y"] if labels else np.asarray(c["Y"], np.float32)
    # the reference of the float32-rounded problem, in float64
    ref = reference(spec, {k: v.astype(np.float64) for k, v in P32.items()},
                    X if spec.input_kind == "index" else np.asarray(X, np.float64),
                    Y if labels else Y.astype(np.float64),
                    h0=None if h0 is None else h0.astype(np.float64), mask=c["mask"],
                    steps=c["steps"])
    for kernels in ("auto", False):
        ws = Workspace(spec, input_grad=True, kernels=kernels)
        loss, grads = ws.value_and_grad(P32, X, Y, h0=h0, mask=c["mask"], steps=c["steps"])
        assert all(v.dtype == np.float32 for v in grads.values())
        _check(f"Workspace float32 kernels={kernels}", {
            "loss": loss, "grads": grads, "X": ws.input_grad, "h0": ws.h0_grad,
            "logits": ws.logits}, ref, TOL32, seed=case_seed)


def test_truncated_bptt_and_rtrl_equal_bptt(case_seed: int) -> None:
    c = random_case(case_seed)
    spec, P = c["spec"], c["params"]
    if spec.bidirectional:
        pytest.skip("truncated BPTT and RTRL walk time forwards (unidirectional only)")
    T = c["steps"] or np.asarray(c["X"]).shape[1]
    kw = {"h0": c["h0"], "mask": c["mask"], "steps": c["steps"]}
    ref = reference(spec, P, c["X"], c["Y"], **kw)
    k1 = int(np.random.default_rng(case_seed).integers(1, T + 1))
    loss, g, out = tbptt.value_and_grad(P, c["X"], c["Y"], spec, k1=k1, k2=T, **kw)
    _check(f"tbptt k1={k1} k2=T", {"loss": loss, "grads": g.params, "X": g.X, "h0": g.h0,
                                   "logits": out.logits}, ref, TOL64, seed=case_seed)
    loss, g, out = rtrl.value_and_grad(P, c["X"], c["Y"], spec, **kw)
    _check("rtrl", {"loss": loss, "grads": g.params, "h0": g.h0, "logits": out.logits}, ref,
           TOL64, X=False, seed=case_seed)


def test_the_reference_is_independent_and_right() -> None:
    """The reference itself against finite differences of its own loss, so that agreement with
    it means something (a case with every feature: two bidirectional layers, a mask, h0)."""
    from rnnlab import RNNSpec, init_params
    spec = RNNSpec(2, 3, 2, num_layers=2, bidirectional=True, nonlinearity="sigmoid",
                   setup="many_to_many", loss="sigmoid_bce")
    rng = np.random.default_rng(3)
    P = init_params(spec, rng, dtype=np.float64)
    X = rng.standard_normal((2, 4, 2))
    Y = rng.uniform(size=(2, 4, 2))
    mask = np.array([[1, 1, 0, 1], [1, 1, 1, 0]], bool)
    h0 = rng.standard_normal((4, 2, 3))
    ref = reference(spec, P, X, Y, h0=h0, mask=mask)
    eps = 1e-6
    for key in ("l1r.W_hh", "l0.W_xh", "W_hy"):
        i = (0,) * P[key].ndim
        Pp = {k: v.copy() for k, v in P.items()}
        Pm = {k: v.copy() for k, v in P.items()}
        Pp[key][i] += eps
        Pm[key][i] -= eps
        fd = (reference(spec, Pp, X, Y, h0=h0, mask=mask)["loss"]
              - reference(spec, Pm, X, Y, h0=h0, mask=mask)["loss"]) / (2 * eps)
        assert abs(fd - ref["grads"][key][i]) < 1e-7 * max(1.0, abs(fd)), key
