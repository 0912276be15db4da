"""Embedded Reber grammar: the automaton, the strings, the strict criterion, the baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab import data
from rnnlab.data.reber import (
    INDEX,
    SYMBOLS,
    allowed_sets,
    embedded_reber_string,
    encode_strings,
    is_reber,
    reber_string,
    strict_accuracy,
    strict_correct,
)


@pytest.mark.parametrize(
    "string, ok", [("BTSSXXTVVE", True), ("BPVVE", True), ("BTXSE", True), ("BPTVPSE", True),
                   ("BTXXE", False), ("BPVV", False), ("BTSSXSEE", False), ("TSXSE", False)]
)
def test_plain_grammar_hand_made(string: str, ok: bool) -> None:
    assert is_reber(string, embedded=False) is ok


@pytest.mark.parametrize(
    "string, ok", [("BTBPVVETE", True), ("BPBTXSEPE", True), ("BTBPVVEPE", False),
                   ("BTBPVVET", False), ("BPVVE", False), ("BTBPVVETEE", False)]
)
def test_embedded_grammar_hand_made(string: str, ok: bool) -> None:
    assert is_reber(string, embedded=True) is ok


def test_allowed_sets_hand_made() -> None:
    sets = allowed_sets("BPVVE", embedded=False)
    assert [sorted(s) for s in sets] == [["B"], ["P", "T"], ["T", "V"], ["P", "V"], ["E"]]
    emb = allowed_sets("BTBPVVETE")
    assert [sorted(s) for s in emb] == [["B"], ["P", "T"], ["B"], ["P", "T"], ["T", "V"],
                                       ["P", "V"], ["E"], ["T"], ["E"]]
    with pytest.raises(ValueError, match=r"position 7 is 'P', allowed \['T'\]"):
        allowed_sets("BTBPVVEPE")


def test_generated_strings_accepted() -> None:
    rng = np.random.default_rng(0)
    plain = [reber_string(rng) for _ in range(500)]
    emb = [embedded_reber_string(rng) for _ in range(500)]
    assert all(is_reber(s, embedded=False) for s in plain)
    assert all(is_reber(s) for s in emb)
    assert all(s[1] == s[-2] for s in emb)
    assert abs(np.mean([s[1] == "T" for s in emb]) - 0.5) < 0.07
    assert len(set(plain)) > 50  # the loops make many distinct strings
    # transition frequencies: every branch is a fair coin, e.g. after "BT" comes S or X
    after_bt = [s[2] for s in plain if s[1] == "T"]
    assert abs(np.mean([c == "S" for c in after_bt]) - 0.5) < 0.1


def test_encode_strings() -> None:
    x, y, mask, allowed = encode_strings(["BPVVE", "BTSSXXTVVE"], embedded=False)
    assert x.shape == y.shape == mask.shape == (2, 9) and allowed.shape == (2, 9, 7)
    assert mask.sum(1).tolist() == [4, 9]
    assert "".join(SYMBOLS[i] for i in x[0, :4]) == "BPVV"
    assert "".join(SYMBOLS[i] for i in y[0, :4]) == "PVVE"
    assert not allowed[0, 4:].any() and np.all(y[0, 4:] == 0)
    rows, steps = np.nonzero(mask)
    assert np.all(allowed[rows, steps, y[rows, steps]])  # the true next symbol is always allowed


def scores_for(allowed_steps: list[str], values: dict[str, float] | None = None) -> np.ndarray:
    """(1, T, 7) scores: 0.4 for each allowed symbol (or given values), 0.01 elsewhere."""
    out = np.full((1, len(allowed_steps), 7), 0.01)
    for t, chars in enumerate(allowed_steps):
        for ch in chars:
            out[0, t, INDEX[ch]] = 0.4
    for key, v in (values or {}).items():
        step, ch = key.split(":")
        out[0, int(step), INDEX[ch]] = v
    return out


def allowed_for(allowed_steps: list[str]) -> np.ndarray:
    out = np.zeros((1, len(allowed_steps), 7), bool)
    for t, chars in enumerate(allowed_steps):
        out[0, t, [INDEX[c] for c in chars]] = True
    return out


def test_strict_criterion_hand_made() -> None:
    steps = ["TP", "B", "TV", "T"]
    allowed = allowed_for(steps)
    assert strict_correct(scores_for(steps), allowed).tolist() == [True]
    # one allowed symbol ranked below a disallowed one fails top_k, passes argmax
    s = scores_for(steps, {"2:V": 0.05, "2:S": 0.2})
    assert strict_correct(s, allowed).tolist() == [False]
    assert strict_correct(s, allowed, criterion="argmax").tolist() == [True]
    # a tie between an allowed and a disallowed symbol fails top_k
    assert strict_correct(scores_for(steps, {"3:P": 0.4}), allowed).tolist() == [False]
    # the argmax on a disallowed symbol fails both
    s = scores_for(steps, {"1:E": 0.9})
    assert strict_correct(s, allowed, criterion="argmax").tolist() == [False]
    # a wrong step outside the mask is not judged
    mask = np.array([[True, False, True, True]])
    assert strict_correct(s, allowed, mask).tolist() == [True]
    batch = np.concatenate([scores_for(steps), s])
    assert strict_accuracy(batch, np.concatenate([allowed, allowed])) == 0.5
    with pytest.raises(ValueError, match="criterion must be"):
        strict_correct(s, allowed, criterion="loose")
    with pytest.raises(ValueError, match="no allowed symbol"):
        strict_correct(s, np.zeros_like(allowed))


def test_dataset_oracles_meet_baselines() -> None:
    ds = data.load("reber", seed=3, n_train=100, n_test=300)
    assert ds.task == "step_classification" and ds.input_size == ds.output_size == 7
    test, allowed = ds.test, ds.meta["allowed"]["test"]
    assert test.mask is not None and test.X.shape[:2] == test.mask.shape
    np.testing.assert_array_equal(test.X.argmax(-1)[test.mask], _inputs(ds)[test.mask])
    oracle = allowed / allowed.sum(-1, keepdims=True).clip(1)  # uniform over allowed symbols
    assert strict_accuracy(oracle, allowed, test.mask) == 1.0
    rows, steps = np.nonzero(test.mask)
    ce = -np.mean(np.log(oracle[rows, steps, test.y[rows, steps]]))
    assert ce == pytest.approx(ds.baselines["ce_optimal"], rel=1e-12)
    # forgetting the embedded symbol: a coin at the penultimate step
    forgetful = oracle.copy()
    last = test.mask.sum(1) - 2
    n = np.arange(len(test))
    forgetful[n, last, INDEX["T"]] = forgetful[n, last, INDEX["P"]] = 0.5
    assert strict_accuracy(forgetful, allowed, test.mask) == 0.0  # ties fail
    ce2 = -np.mean(np.log(forgetful[rows, steps, test.y[rows, steps]]))
    assert ce2 == pytest.approx(ds.baselines["ce_no_long_memory"], rel=1e-12)
    assert ce2 - ce == pytest.approx(math.log(2) * len(test) / test.mask.sum())


def _inputs(ds: data.Dataset) -> np.ndarray:
    x, _, _, _ = encode_strings(ds.meta["strings"]["test"], True, ds.steps)
    return x


def test_reber_index_and_plain() -> None:
    ds = data.load("reber", input_kind="index", embedded=False, n_train=20, n_test=20)
    assert ds.input_kind == "index" and ds.train.X.dtype == np.int64
    assert all(is_reber(s, embedded=False) for s in ds.meta["strings"]["train"])
    assert "ce_no_long_memory" not in ds.baselines
    with pytest.raises(ValueError, match="takes no steps"):
        data.load("reber", steps=10)
