"""Correctness never depends on an ``assert``: the library under ``python -O`` (which drops
them) and the source, read for asserts that do more than narrow a type.

Issue 13, point 1: ``Workspace(RNNSpec(2, 4, 2, nonlinearity="sigmoid")).value_and_grad(p, X,
[0])`` with ``X`` ``(1, 5, 2)`` float32 raised ``AssertionError: A may alias only outputs`` with
numba installed, and under ``python -O`` returned 0.7495 instead of 0.7263 with gradients off by
up to 100 %.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rnnlab

from conftest import full_run

SRC = Path(rnnlab.__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parents[1]

# the reproduction, then random float32 configurations of the fast engine against the
# reference engine in float64; prints one JSON line
PROGRAM = r"""
import json, sys
import numpy as np
from rnnlab import RNNSpec, Workspace, init_params, value_and_grad
from rnnlab.fast import kernels
from adversarial.cases import random_case

assert_dropped = True
try:
    assert False
except AssertionError:
    assert_dropped = False
out = {"optimize": sys.flags.optimize, "assert_dropped": assert_dropped,
       "kernels": kernels.available(), "issue": [], "worst": 0.0, "cases": 0}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1.0))


# the issue's exact call, and the other sizes of one (B = 1, H = 1, both)
for B, H in ((1, 4), (3, 1), (1, 1)):
    spec = RNNSpec(2, H, 2, nonlinearity="sigmoid")
    # the issue's parameters: drawn by the initialiser that was the default then
    p = init_params(spec, np.random.default_rng(0), scheme="pytorch")
    X = np.random.default_rng(1).standard_normal((B, 5, 2)).astype(np.float32)
    Y = [0] * B
    loss, grads = Workspace(spec).value_and_grad(p, X, Y)
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    ref, g, _ = value_and_grad(p64, X.astype(np.float64), Y, spec)
    out["issue"].append({"B": B, "H": H, "loss": float(loss), "ref": float(ref),
                         "grad": max(rel(grads[k], g.params[k]) for k in grads)})

for seed in SEEDS:
    c = random_case(seed)
    spec = c["spec"]
    P32 = {k: v.astype(np.float32) for k, v in c["params"].items()}
    X = c["X"] if spec.input_kind == "index" else np.asarray(c["X"], np.float32)
    labels = np.issubdtype(np.asarray(c["Y"]).dtype, np.integer)
    Y = c["Y"] if labels else np.asarray(c["Y"], np.float32)
    h0 = None if c["h0"] is None else c["h0"].astype(np.float32)
    kw = dict(h0=h0, mask=c["mask"], steps=c["steps"])
    ws = Workspace(spec)
    loss, grads = ws.value_and_grad(P32, X, Y, **kw)
    P64 = {k: v.astype(np.float64) for k, v in P32.items()}
    X64 = X if spec.input_kind == "index" else X.astype(np.float64)
    ref, g, _ = value_and_grad(P64, X64, Y if labels else Y.astype(np.float64), spec,
                               h0=None if h0 is None else h0.astype(np.float64),
                               mask=c["mask"], steps=c["steps"])
    worst = max([rel(loss, ref)] + [rel(grads[k], g.params[k]) for k in grads])
    out["worst"] = max(out["worst"], worst)
    out["cases"] += 1
print(json.dumps(out))
"""


def _run(optimize: bool, seeds: list[int]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), env.get("PYTHONPATH", "")])
    code = PROGRAM.replace("SEEDS", repr(seeds))
    proc = subprocess.run([sys.executable, *(["-O"] if optimize else []), "-c", code],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("optimize", [
    pytest.param(False, id="python", marks=pytest.mark.slow),   # in-process tests cover it
    pytest.param(True, id="python -O"),
])
def test_workspace_b1_h1_and_random_float32_cases(optimize: bool,
                                                  request: pytest.FixtureRequest) -> None:
    """A subprocess (a few seconds of compiling the kernels): the issue's call and random
    float32 configurations, with asserts dropped."""
    pytest.importorskip("numba")
    seeds = list(range(60)) if full_run(request.config) else [3, 17, 42]
    out = _run(optimize, seeds)
    assert out["optimize"] == int(optimize) and out["assert_dropped"] == optimize
    assert out["kernels"], "numba is installed, so the compiled kernels must be in use"
    for r in out["issue"]:
        assert abs(r["loss"] - r["ref"]) <= 2e-6 * max(1.0, abs(r["ref"])), r
        assert r["grad"] <= 2e-5, r
    # the reproduction's loss is the reference's 0.7263..., not the 0.7495 of the defect
    assert abs(out["issue"][0]["loss"] - 0.72632) < 1e-4
    assert out["cases"] == len(seeds) and out["worst"] <= 2e-4, out


# ----------------------------------------------------------------------------- the source


def _narrowing(test: ast.expr) -> bool:
    """``x is not None`` (possibly joined by ``and``): a note for the type checker, whose failure
    under ``python -O`` is an AttributeError/TypeError at once, never a wrong number."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return all(_narrowing(v) for v in test.values)
    return (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.IsNot) and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value is None)


def test_no_assert_that_correctness_depends_on() -> None:
    """Every ``assert`` in src/rnnlab only narrows a type (``x is not None``): preconditions,
    shapes, aliasing and kernel operands are checked with real errors, which ``python -O`` keeps
    (the class of point 1)."""
    found = []
    for path in sorted((SRC / "rnnlab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assert) and not _narrowing(node.test):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node.test)}")
    assert not found, "asserts doing a check's work:\n" + "\n".join(found)


def test_kernel_operands_are_checked_not_asserted() -> None:
    """The compiled kernels read raw addresses: operands they cannot read safely raise
    KernelUsageError (kept under ``python -O``) instead of reaching them."""
    np = pytest.importorskip("numpy")
    from rnnlab.fast import kernels
    if not kernels.available():
        pytest.skip("the compiled kernels are not available")
    Hb = np.zeros((3, 2, 4), np.float32)
    with pytest.raises(kernels.KernelUsageError, match="float32 block"):
        kernels.forward(Hb.astype(np.float64), np.zeros((4, 4), np.float32), "tanh", False)
    with pytest.raises(kernels.KernelUsageError, match="C-contiguous float32 \\(H, H\\)"):
        kernels.forward(Hb, np.zeros((4, 4), np.float32).T[:, :3], "tanh", False)
    with pytest.raises(kernels.KernelUsageError, match="a job is an int64"):
        kernels.run(np.zeros(kernels.JOB_SIZE, np.int64))
    with pytest.raises(kernels.KernelUsageError, match="ids must lie in"):
        kernels.scatter_rows(np.array([0, 5]), np.zeros((2, 3)), np.zeros((4, 3)))
    with pytest.raises(kernels.KernelUsageError, match="dnext must be"):
        kernels.backward(Hb, np.zeros((2, 2, 4), np.float32), None,
                         np.zeros((4, 4), np.float32), np.zeros((2, 3), np.float32), "tanh",
                         False)
