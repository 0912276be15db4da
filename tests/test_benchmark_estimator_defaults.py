"""benchmarks.estimator_defaults: each candidate's scores per task, and the table."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")
ed = pytest.importorskip("benchmarks.estimator_defaults")


def test_table_has_a_row_per_candidate_and_a_column_per_task(monkeypatch, capsys):
    monkeypatch.setattr(ed, "CANDIDATES", {"tiny": {"epochs": 1, "hidden_size": 4},
                                           "tiny, lr 1e-2": {"epochs": 1, "hidden_size": 4,
                                                             "lr": 1e-2}})
    assert ed.main(["--tasks", "digits8", "--seeds", "0,1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("candidate"))
    assert "digits8 (accuracy)" in lines[head]
    rows = [ln.split(" | ") for ln in lines[head + 2:]]
    assert [r[0].strip() for r in rows] == ["tiny", "tiny, lr 1e-2"]
    # the table's mean is the mean of the per-seed scores printed above it
    per_seed = [float(x) for x in lines[0].split()[2:4]]
    assert float(rows[0][1]) == pytest.approx(sum(per_seed) / 2, abs=1e-4)
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows)
    # one task, two candidates: ranks 1 and 2, or 1.5 each on a tie, the better one first
    assert lines[head].rstrip().endswith("mean rank")
    ranks = [float(r[-1]) for r in rows]
    assert sum(ranks) == 3.0 and set(ranks) <= {1.0, 1.5, 2.0}
    better = 0 if float(rows[0][1]) > float(rows[1][1]) else 1
    assert ranks[better] == min(ranks)


def test_unknown_task_is_an_error(capsys):
    with pytest.raises(SystemExit):
        ed.main(["--tasks", "digits9"])
    assert "unknown task(s) ['digits9']" in capsys.readouterr().err
