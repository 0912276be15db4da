"""The fast engine's second-round paths against the reference (issue 18), in float64 and with the
compiled kernels in float32: the forward pass alone (:meth:`Workspace.forward`, what inference and
fit's validation run), truncated BPTT on the workspace
(:meth:`Workspace.truncated_value_and_grad` against :func:`rnnlab.learning.tbptt.value_and_grad`,
the definition), the gradients as one flat array, and a reproducible workspace whose numbers do
not depend on where its pieces run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rnnlab import RNNSpec
from rnnlab import network as net
from rnnlab.fast import kernels
from rnnlab.fast.workspace import Workspace
from rnnlab.learning import tbptt

from conftest import SETUPS as GRID
from conftest import assert_close, assert_grads_close, problem

SETUPS = GRID + [dict(setup="many_to_many", input_kind="index"),
                 dict(setup="many_to_one", input_kind="index")]
IDS = ["-".join(s.values()) for s in SETUPS]


def _spec(setup: dict, **kw) -> RNNSpec:
    D = 7 if setup.get("input_kind") == "index" else 3
    return RNNSpec(D, 5, 4, **setup, **kw)


def _steps(spec: RNNSpec, T: int) -> int | None:
    return T if spec.setup == "one_to_many" else None


@pytest.mark.parametrize("setup", SETUPS, ids=IDS)
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_forward_alone_is_the_reference_forward(setup: dict, act: str) -> None:
    """Logits and final states of :meth:`Workspace.forward` against the reference forward pass,
    for layers, directions, masks and h0, in float64 (NumPy loops and kernels="auto") and with
    the kernels in float32; between training calls of other shapes (its buffers are its own)."""
    B, T = 5, 6
    for layers, bidir, masked, dtype, kern in itertools.product(
            (1, 2), (False, True), (False, True), (np.float64, np.float32), (False, "auto")):
        spec = _spec(setup, num_layers=layers, bidirectional=bidir, nonlinearity=act)
        params, X, Y, mask, h0 = problem(spec, layers + 2 * bidir, B, T, masked)
        out, _ = net.forward(params, X, spec, h0=h0, mask=mask, steps=_steps(spec, T))
        p = {k: v.astype(dtype) for k, v in params.items()}
        ws = Workspace(spec, kernels=kern)
        tol = 1e-12 if dtype == np.float64 else 2e-5
        for _ in range(2):
            logits = ws.forward(p, X, h0=h0, mask=mask, steps=_steps(spec, T))
            assert logits.dtype == dtype
            assert_close(logits, out.logits, tol, f"{spec} logits")
            assert_close(ws.h_n(), out.h_n, tol, f"{spec} h_n")
            # a training call on another batch size in between leaves the next forward exact
            ws.value_and_grad(p, X[:3], Y[:3], mask=None if mask is None else mask[:3],
                              steps=_steps(spec, T))
        assert ws.flat_grad is not None


# k1 < k2 (overlapping windows), k1 = k2 (tiles), k1 > k2 (many-to-one only), the last window
# shorter than the others, one window covering everything
K = [(2, 3), (3, 3), (2, 5), (4, 2), (6, 6), (4, 4)]


@pytest.mark.parametrize("setup", SETUPS, ids=IDS)
@pytest.mark.parametrize("k1,k2", K)
def test_truncated_bptt_on_the_workspace_is_the_definition(setup: dict, k1: int, k2: int) -> None:
    """Loss, truncated gradients, dL/dh0 and dL/dX of BPTT(k2; k1) on the workspace against
    :func:`rnnlab.learning.tbptt.value_and_grad` in float64 (1e-11 of each array's scale), for
    one and two layers, masks and h0; and with the kernels in float32 (the joint buffer)."""
    B, T = 5, 7
    for layers, masked, act in itertools.product((1, 2), (False, True), ("tanh", "relu")):
        spec = _spec(setup, num_layers=layers, nonlinearity=act)
        if spec.per_step_output and k2 < k1:
            with pytest.raises(ValueError, match="k2 .* must be >= k1"):
                tbptt.scored_windows(T, k1, k2, spec)
            return
        params, X, Y, mask, h0 = problem(spec, layers + 3 * masked, B, T, masked)
        steps = _steps(spec, T)
        val, g, _ = tbptt.value_and_grad(params, X, Y, spec, k1=k1, k2=k2, h0=h0, mask=mask,
                                         steps=steps)
        wins = tbptt.scored_windows(T, k1, k2, spec)
        for dtype, kern in ((np.float64, False), (np.float64, "auto"), (np.float32, "auto")):
            p = {k: v.astype(dtype) for k, v in params.items()}
            ws = Workspace(spec, input_grad=True, kernels=kern)
            for _ in range(2):                         # buffers reused: the same answer
                wl, wg = ws.truncated_value_and_grad(p, X, Y, wins, h0=h0, mask=mask,
                                                     steps=steps)
                assert wl == pytest.approx(val, rel=1e-12 if dtype == np.float64 else 1e-5)
                assert_grads_close(wg, g.params, dtype, f"{spec} k1={k1} k2={k2}")
                tol = 1e-11 if dtype == np.float64 else 2e-5
                assert ws.h0_grad is not None
                assert_close(ws.h0_grad, g.h0, tol, "dh0")
                if g.X is not None:
                    assert ws.input_grad is not None
                    assert_close(ws.input_grad, g.X, tol, "dX")
                # a full BPTT call in between: the windows leave nothing behind
                ws.value_and_grad(p, X, Y, h0=h0, mask=mask, steps=steps)


def test_truncated_windows_are_checked() -> None:
    spec = RNNSpec(3, 4, 2, setup="many_to_many")
    params, X, Y, _, _ = problem(spec, 0, 3, 6, False)
    ws = Workspace(spec)
    for bad in ([], [(0, 0, 3)], [(0, 0, 3), (1, 4, 6)], [(0, 0, 3), (2, 3, 7)],
                [(0, 2, 3), (2, 3, 6)]):
        with pytest.raises(ValueError, match="window|scored ranges"):
            ws.truncated_value_and_grad(params, X, Y, bad)
    bi = RNNSpec(3, 4, 2, setup="many_to_many", bidirectional=True)
    with pytest.raises(ValueError, match="unidirectional"):
        Workspace(bi).truncated_value_and_grad(init_like(bi, params, X), X, Y, [(0, 0, 6)])


def init_like(spec: RNNSpec, params: dict, X: np.ndarray) -> dict:
    return problem(spec, 0, X.shape[0], X.shape[1], False)[0]


def test_the_gradients_are_blocks_of_one_flat_array() -> None:
    """:attr:`Workspace.flat_grad` holds every gradient of the last training call, each key's
    one block in the order :attr:`Workspace.grad_order` names (the joint buffer's too)."""
    for kern, dtype in ((False, np.float64), ("auto", np.float32)):
        spec = RNNSpec(3, 6, 4, num_layers=2, setup="many_to_many")
        params, X, Y, _, _ = problem(spec, 1, 4, 5, False)
        p = {k: v.astype(dtype) for k, v in params.items()}
        ws = Workspace(spec, kernels=kern)
        assert ws.flat_grad is None and ws.grad_order is None
        _, grads = ws.value_and_grad(p, X, Y)
        flat, order = ws.flat_grad, ws.grad_order
        assert flat is not None and order is not None and sorted(order) == sorted(p)
        np.testing.assert_array_equal(flat, np.concatenate([grads[k].ravel() for k in order]))
        assert all(np.shares_memory(grads[k], flat) for k in order)


@pytest.mark.skipif(not kernels.available(), reason="the compiled kernels are not installed")
def test_a_reproducible_workspace_computes_the_same_numbers_wherever_its_pieces_run() -> None:
    """``reproducible=True`` cuts the batch into pieces fixed at construction; the tuner only
    chooses whether they run at once or one after another, so every call gives the same bits
    (and the reference's gradients to float32 rounding)."""
    spec = RNNSpec(8, 128, 4, setup="many_to_many")
    B, T = 32, 5
    params, X, Y, _, _ = problem(spec, 2, B, T, False, with_h0=False)
    p = {k: v.astype(np.float32) for k, v in params.items()}
    _, g, _ = net.value_and_grad(params, X, Y, spec)
    ws = Workspace(spec, threads=2, reproducible=True)
    first = None
    for _ in range(32):                          # the tuner tries both options (20 + 6 calls)
        loss, grads = ws.value_and_grad(p, X, Y)
        got = (loss, {k: v.copy() for k, v in grads.items()})
        if first is None:
            first = got
            assert_grads_close(grads, g.params, np.float32)
        assert got[0] == first[0]
        for k in p:
            np.testing.assert_array_equal(got[1][k], first[1][k])
    tuner = ws._tuner
    assert tuner is not None and len(tuner.options) == 2
    assert all(tuner.times[o] for o in tuner.options)        # both ran, timed
    with pytest.raises(ValueError, match="reproducible=True needs threads"):
        Workspace(spec, threads=None, reproducible=True)
    with pytest.raises(TypeError, match="reproducible must be a bool"):
        Workspace(spec, reproducible=1)                      # type: ignore[arg-type]


@pytest.mark.skipif(not kernels.available(), reason="the compiled kernels are not installed")
def test_column_blocks_are_timed_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loops run their step product on one BLAS thread, so the column blocks are timed on
    one, whatever the caller's count (two threads waiting for a core on a busy machine made a
    fresh process's first step take 1.5 s)."""
    from rnnlab.fast import cpu

    built = kernels._need()
    real, seen = built["products"], []

    def spy(*args: object) -> None:
        seen.append(cpu.BLAS.get())
        real(*args)

    monkeypatch.setitem(built, "products", spy)
    monkeypatch.setattr(kernels, "_blocks", {})
    with cpu.BLAS.limit(2):
        kernels.column_block(16, 64)
    assert seen and set(seen) == {1}


@pytest.mark.skipif(not kernels.available(), reason="the compiled kernels are not installed")
def test_the_first_call_of_an_auto_workspace_runs_on_one_blas_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tuner's untimed first call (it allocates) runs on one BLAS thread, not on the whole
    budget left alone."""
    from rnnlab.fast import cpu

    kernels.compile()                      # (its warm-up calls are not the workspace's)
    real, seen = kernels.run, []

    def spy(job: np.ndarray) -> None:
        seen.append(cpu.BLAS.get())
        real(job)

    monkeypatch.setattr(kernels, "run", spy)
    spec = RNNSpec(3, 16, 2)
    params, X, Y, _, _ = problem(spec, 0, 4, 5, False)
    p = {k: v.astype(np.float32) for k, v in params.items()}
    with cpu.BLAS.limit(2):
        Workspace(spec, threads="auto").value_and_grad(p, X, Y)
    assert seen and set(seen) == {1}
