"""benchmarks.defaults: the rank table that chose the defaults (ties share their mean rank)."""

from __future__ import annotations

import math

import pytest

d = pytest.importorskip("benchmarks.defaults")


def test_tied_ranks_share_the_mean_of_the_ranks_they_span():
    assert d.tied_ranks([0.5, 0.5, 0.7, math.nan]) == [2.5, 2.5, 1.0, 4.0]
    assert d.tied_ranks([1.0, 1.0, 1.0]) == [2.0, 2.0, 2.0]
    assert d.tied_ranks([3.0, 2.0, 1.0]) == [1.0, 2.0, 3.0]
    assert d.tied_ranks([math.nan, 2.0, math.nan]) == [2.5, 1.0, 2.5]


def _records(scores: dict[str, list[float]], metric: str) -> list[dict]:
    return [{"cell": {"label": lb}, "summary": {"test": {metric: v}}}
            for lb, vs in scores.items() for v in vs]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_tie_favours_no_candidate_by_its_place_in_the_round(monkeypatch, order):
    labels = ["first", "second"]
    labels = [labels[i] for i in order]
    monkeypatch.setitem(d.ROUNDS, 99, [{"label": lb} for lb in labels])
    # xor ties; on digits8 "second" is better, on adding (lower better) "first" is
    results = {"xor": _records({"first": [0.0, 0.0], "second": [0.0, 0.0]}, "test_error_xor"),
               "digits8": _records({"first": [0.90, 0.92], "second": [0.95, 0.95]},
                                   "test_accuracy"),
               "adding": _records({"first": [0.01], "second": [0.02]}, "test_mse_ratio")}
    rows = {ln.split(" | ")[0].strip(): ln.split(" | ")
            for ln in d.table(results, 99).splitlines()[2:]}
    assert float(rows["first"][2]) == pytest.approx(0.91, abs=1e-4)   # the mean over seeds
    assert float(rows["first"][-1]) == float(rows["second"][-1]) == pytest.approx(1.5)
