"""The fast engine's time loops (rnnlab.fast.loops) compute what the reference cell computes."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import activations, cell
from rnnlab.fast import loops
from rnnlab.fast.pool import Runner

from conftest import assert_close
from conftest import cell_problem as _cell_problem


def _in_slots(A: np.ndarray, reverse: bool) -> np.ndarray:
    """A state buffer whose step slots hold the projections ``A`` (what the fast network
    writes before the loop)."""
    buf = np.full((A.shape[0] + 1,) + A.shape[1:], np.nan)
    cell.outputs(buf, reverse)[...] = A
    return buf


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid", "identity"])
@pytest.mark.parametrize("block", [1, 3, 1 << 16])
@pytest.mark.parametrize("with_dH", [False, True])
def test_loops_in_place_and_blocked_equal_the_reference_cell(reverse: bool, masked: bool,
                                                             act: str, block: int,
                                                             with_dH: bool) -> None:
    """The projection in the state slots, dZ into a given buffer and f' computed a block of
    steps at a time give the reference cell's numbers."""
    a = activations.get(act)
    A, W, h0, dH, mask = _cell_problem()
    m = mask if masked else None
    dh_last = np.random.default_rng(1).standard_normal(h0.shape)
    ref = cell.forward(A, W, a, h0, reverse=reverse, mask=m)
    buf = _in_slots(A, reverse)
    got = loops.forward_into(buf, W, a, h0, reverse=reverse, mask=m)
    assert got is buf
    assert_close(got, ref, 1e-14, "states")
    dZ_ref, dh0_ref = cell.backward(dH if with_dH else None, ref, W, a, reverse=reverse, mask=m,
                                    dh_last=dh_last)
    loops.FPRIME_BLOCK, saved = block * A.shape[1] * A.shape[2], loops.FPRIME_BLOCK
    try:
        out = np.full_like(A, np.nan)
        dZ, dh0 = loops.backward_into(dH if with_dH else None, ref, W, a, reverse=reverse,
                                      mask=m, dh_last=dh_last, out=out)
    finally:
        loops.FPRIME_BLOCK = saved
    assert dZ is out
    assert_close(dZ, dZ_ref, 1e-13, "dZ")
    assert_close(dh0, dh0_ref, 1e-13, "dh0")


@pytest.mark.parametrize("B,H", [(1, 4), (3, 1), (1, 1)])
def test_loops_take_single_rows_and_units(B: int, H: int) -> None:
    """B = 1 or H = 1: a dimension of size 1 may have any stride; the in-place loop does not
    depend on it."""
    a = activations.get("sigmoid")
    A, W, h0, dH, mask = _cell_problem(B=B, H=H)
    ref = cell.forward(A, W, a, h0, mask=mask)
    got = loops.forward_into(_in_slots(A, False), W, a, h0, mask=mask)
    assert_close(got, ref, 1e-14)


@pytest.mark.parametrize("reverse", [False, True])
def test_backward_stops_exactly_where_the_gradient_is_zero(reverse: bool) -> None:
    a = activations.get("tanh")
    A, W, h0, _, mask = _cell_problem(T=40)
    Hbuf = cell.forward(A, W, a, h0, reverse=reverse, mask=mask)
    dZ, dh0 = loops.backward_into(None, Hbuf, W, a, reverse=reverse, mask=mask,
                                  out=np.full_like(A, np.nan))
    assert not dZ.any() and not dh0.any()                      # nothing arrives: all zero
    dl = np.random.default_rng(3).standard_normal(h0.shape)
    W0 = np.zeros_like(W)                                       # dnext = dZ W^T = 0 after 1 step
    Hz = cell.forward(A, W0, a, h0, reverse=reverse)
    loops.FPRIME_BLOCK, saved = 4 * 5, loops.FPRIME_BLOCK      # one step per block
    try:
        dZ, dh0 = loops.backward_into(None, Hz, W0, a, reverse=reverse, dh_last=dl,
                                      out=np.full_like(A, np.nan))
    finally:
        loops.FPRIME_BLOCK = saved
    last = 0 if reverse else -1
    np.testing.assert_array_equal(dZ[last], dl * (1 - cell.outputs(Hz, reverse)[last] ** 2))
    rest = dZ[1:] if reverse else dZ[:-1]
    assert not rest.any() and not dh0.any()


def test_split_recurrence_changes_no_bit_of_the_states() -> None:
    """The rows of a batch never interact: the loops cut by rows give the same states and dZ
    (bit for bit with NumPy's OpenBLAS at these shapes)."""
    rng = np.random.default_rng(5)
    T, B, H = 6, 40, 32
    act = activations.get("tanh")
    W = rng.standard_normal((H, H)) / np.sqrt(H)
    A = rng.standard_normal((T, B, H))
    h0 = rng.standard_normal((B, H))
    whole = loops.forward_into(_in_slots(A, False), W, act, h0)
    pieces = _in_slots(A, False)
    Runner(None, split=2).recurrence(B, lambda lo, hi: loops.forward_into(
        pieces[:, lo:hi], W, act, h0[lo:hi]))
    np.testing.assert_array_equal(pieces, whole)
    dH = rng.standard_normal((T, B, H))
    dZ, dh0 = loops.backward_into(dH, whole, W, act, out=np.empty_like(A))
    dZp, dh0p = np.empty_like(dZ), np.empty_like(dh0)

    def back(lo: int, hi: int) -> None:
        _, dh0p[lo:hi] = loops.backward_into(dH[:, lo:hi], whole[:, lo:hi], W, act,
                                             out=dZp[:, lo:hi])

    Runner(None, split=2).recurrence(B, back)
    np.testing.assert_array_equal(dZp, dZ)
    np.testing.assert_array_equal(dh0p, dh0)
