"""The results harness (python -m benchmarks.results): the PyTorch twin follows rnnlab's
trajectory exactly, and a quick run writes the page, its tables and its figures."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")
results = pytest.importorskip("benchmarks.results")

from benchmarks import results_experiments as rx  # noqa: E402
from benchmarks.results_run import (  # noqa: E402
    Cell,
    Setup,
    initial_params,
    load_data,
    model_spec,
    run_torch,
    train_config,
)

from rnnlab import fit  # noqa: E402

SETUPS = [
    Setup("digits", 8, hidden=12, train={"epochs": 2, "batch_size": 64, "lr": 3e-3,
                                         "clip_norm": 0.5}),
    Setup("digits", 4, hidden=12, nonlinearity="relu", init="keras", label_steps="all",
          n_train=300, train={"epochs": 3, "lr": 1e-2, "optimizer": "sgd",
                              "optimizer_kwargs": {"momentum": 0.9}, "clip_norm": 1.0}),
    Setup("xor", None, hidden=6, init="keras",
          train={"epochs": 2, "lr": 1e-2, "schedule": "cosine",
                 "schedule_kwargs": {"total_steps": 40}}),
    Setup("reber", None, hidden=6, train={"epochs": 2, "batch_size": 16, "lr": 1e-2}),
    Setup("adding", 12, hidden=8, init="irnn", nonlinearity="relu",
          data={"n_train": 300, "n_test": 50}, train={"epochs": 2, "lr": 1e-3}),
    Setup("digits", 8, hidden=10, init="keras", bidirectional=True,
          train={"epochs": 2, "batch_size": 64, "lr": 3e-3, "clip_norm": 1.0}),
    Setup("digits", 4, hidden=7, num_layers=2, bidirectional=True, label_steps="all",
          n_train=300, train={"epochs": 2, "lr": 3e-3}),
    Setup("xor", None, hidden=6, init="keras", num_layers=2, train={"epochs": 2, "lr": 1e-2}),
]


def _id(s: Setup) -> str:
    return (f"{s.dataset}-{s.nonlinearity}" + (f"-{s.num_layers}layers" if s.num_layers > 1
                                               else "") + ("-bidir" if s.bidirectional else ""))


@pytest.mark.parametrize("setup", SETUPS, ids=_id)
def test_torch_twin_follows_rnnlab_in_float64(setup: Setup) -> None:
    """Same weights, batches, loss, clipping, optimizer, schedule and best-epoch restore: in
    float64 the trained parameters agree to rounding (a different batch order, bias
    parametrisation or clipping rule would move them by orders of magnitude more)."""
    ds = load_data(setup)
    spec = model_spec(setup, ds)
    params = initial_params(setup, spec, seed=3, dtype=np.float64)
    start = {k: v.copy() for k, v in params.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = fit(params, spec, ds, train_config(setup, 3))
    twin = run_torch(setup, 3, dtype=np.float64)
    moved = max(float(np.max(np.abs(params[k] - start[k]))) for k in params)
    err = max(float(np.max(np.abs(params[k] - twin["params"][k]))) for k in params)
    assert moved > 1e-3
    assert err < 1e-12 * max(1.0, moved), err
    assert twin["weights_epoch"] == h.weights_epoch
    for k, v in h.test.items():
        assert twin["test"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    if "test_accuracy" in twin["test_own"]:
        assert twin["test_own"]["test_accuracy"] == pytest.approx(h.test["test_accuracy"])


def test_cells_are_keyed_by_their_whole_configuration() -> None:
    a = Setup("digits", 8, train={"lr": 1e-3})
    assert a == Setup("digits", 8, train={"lr": 1e-3})
    assert a.key() != a.replace(train={"lr": 2e-3}).key()
    assert Cell(a, 0, "rnnlab").key() != Cell(a, 1, "rnnlab").key()
    assert Cell(a, 0, "rnnlab").key() != Cell(a, 0, "torch").key()
    assert Cell.from_dict(Cell(a, 2, "torch").to_dict()) == Cell(a, 2, "torch")
    # layers and directions are part of the key; at their defaults they are left out of it, so
    # the keys of the configurations that ran before the fields existed are unchanged
    assert "bidirectional" not in a.to_dict() and "num_layers" not in a.to_dict()
    assert a == Setup("digits", 8, train={"lr": 1e-3}, num_layers=1, bidirectional=False)
    assert a.key() != a.replace(bidirectional=True).key() != a.replace(num_layers=2).key()
    b = a.replace(num_layers=2, bidirectional=True)
    assert Setup.from_dict(b.to_dict()) == b and Setup.from_dict(a.to_dict()) == a
    # so is the way a seed draws the initial weights
    assert "init_draw" not in a.to_dict() and a.key() != a.replace(init_draw="child").key()
    with pytest.raises(ValueError, match="init_draw must be 'direct' or 'child'"):
        a.replace(init_draw="sequence")


def test_a_child_draw_gives_rnnlab_trains_initial_weights(tmp_path: Path) -> None:
    """init_draw="child" draws a seed's weights as `rnnlab train --seed s` does (its first
    checkpoint holds them); "direct" as RNN(seed=s) does."""
    from benchmarks import results_run as rr

    import rnnlab
    from rnnlab.checkpoint import load
    from rnnlab.lab.config import ExperimentConfig
    from rnnlab.lab.experiments import run

    s = Setup("digits", 8, hidden=6, init="keras", train={"epochs": 1})
    ds = rr.load_data(s)
    spec = rr.model_spec(s, ds)
    cfg = ExperimentConfig.from_dict({
        "name": "d", "model": {"hidden_size": 6, "init": "keras"},
        "data": {"dataset": "digits", "steps": 8},
        "train": {"epochs": 1, "seed": 3, "lr": 1e-9, "optimizer": "sgd", "progress": "off"}})
    run(cfg, tmp_path / "d")
    first = load(tmp_path / "d" / "checkpoints" / "last.npz").params
    child = rr.initial_params(s.replace(init_draw="child"), spec, 3)
    direct = rr.initial_params(s, spec, 3)
    for k, v in child.items():         # lr 1e-9 of SGD moves no float32 weight
        np.testing.assert_allclose(first[k], v, atol=1e-6)
    assert not np.allclose(direct["W_hy"], child["W_hy"])
    np.testing.assert_array_equal(direct["W_hy"],
                                  rnnlab.RNN(8, 6, output_size=10, seed=3).params["W_hy"])


def test_every_experiment_plans_explicit_settings(tmp_path: Path) -> None:
    for name, exp in rx.EXPERIMENTS.items():
        if name in ("defaults", "recipes-main-job"):   # lab.sweep runs, not harness cells
            continue
        for quick in (True, False):
            plan = exp.plan(quick, tmp_path / name)
            if plan.skipped:
                continue
            assert plan.cells, name
            for c in plan.cells:
                tr = c.setup.train
                for k in ("epochs", "batch_size", "optimizer", "lr"):
                    assert k in tr, (name, k)
                assert c.lib in ("rnnlab", "torch", "keras-jax", "keras-torch")


def _tables(md: str) -> list[list[str]]:
    """Markdown tables as lists of lines."""
    out, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def test_quick_run_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = results.main(["--quick", "--only", "xor,reber", "--out", str(out),
                       "--work", str(tmp_path / "work"), "--jobs", "1"])
    assert rc == 0
    page = (out / "results.md").read_text()
    assert page.startswith("# Results")
    assert "python -m benchmarks.results" in page
    assert "Quick (smoke-test) results" in page
    for name in ("xor", "reber"):
        title = rx.EXPERIMENTS[name].title
        assert f"## {title}" in page
        res = json.loads((out / "results" / name / "result.json").read_text())
        assert res["quick"] is True and res["cells"] > 0 and res["wall_s"] > 0
        for b in res["blocks"]:
            if b["kind"] == "figure":
                for ext in ("png", "svg"):
                    f = out / "results" / name / f"{b['file']}.{ext}"
                    assert f.stat().st_size > 1000
                    assert f"results/{name}/{b['file']}.{ext}" in page
    # every table is well formed: a header, a separator, rows of the header's width
    tables = _tables(page)
    assert len(tables) >= 6
    for t in tables:
        width = t[0].count("|")
        assert re.fullmatch(r"\|( --- \|)+", t[1])
        assert all(line.count("|") == width for line in t[2:]), t
    # the XOR table has both libraries and the optimum, with percentages
    xor = next(t for t in tables if "a XOR b" in t[0])
    assert any(line.startswith("| rnnlab |") for line in xor)
    assert any(line.startswith("| torch |") for line in xor)
    # and Keras with its defaults on both backends: measured, or skipped without Keras
    for lib in ("keras-jax", "keras-torch"):
        assert any(line.startswith(f"| {lib} defaults |") for line in xor), lib
    assert all("%" in line or "| skipped: " in line for line in xor[2:])
    # the targets table names both experiments
    targets = next(t for t in tables if t[0].startswith("| experiment | what |"))
    assert any("Temporal XOR" in line for line in targets)
    assert any("Reber" in line for line in targets)
    # running again reuses the finished cells and keeps the page, and the times of the run
    # that trained them
    first = json.loads((out / "results" / "xor" / "result.json").read_text())
    capsys.readouterr()
    argv = ["--quick", "--only", "xor", "--out", str(out), "--work", str(tmp_path / "work"),
            "--jobs", "1"]
    assert results.main(argv) == 0
    page2 = (out / "results.md").read_text()
    assert "## Embedded Reber grammar" in page2 and "## Temporal XOR" in page2
    assert "rnnlab " not in capsys.readouterr().out        # no cell was trained again
    again = json.loads((out / "results" / "xor" / "result.json").read_text())
    assert again["started"] == first["started"] and again["cell_set"] == first["cell_set"]
    # a previous report of other runs (as after a default changed) lends them no times: the
    # page gives the runs' own time
    stale = {**again, "cell_set": "0" * 16, "started": "2000-01-01T00:00:00+0000"}
    (out / "results" / "xor" / "result.json").write_text(json.dumps(stale))
    assert results.main(argv) == 0
    third = json.loads((out / "results" / "xor" / "result.json").read_text())
    assert third["started"] != stale["started"] and third["reused"] is True


def test_cells_are_reused_from_other_experiments_read_only(tmp_path: Path) -> None:
    """A plan's ``reuse`` directories (other experiments' work) provide finished cells: nothing
    is trained and nothing is written there; a failed cell there does not count."""
    a, b = Cell(Setup("digits", 8, train={"lr": 1e-3}), 0, "rnnlab"), \
        Cell(Setup("digits", 8, train={"lr": 2e-3}), 0, "rnnlab")
    other, work = tmp_path / "other", tmp_path / "mine"
    (other / "cells").mkdir(parents=True)
    done = {"status": "completed", "test": {"test_accuracy": 0.5}}
    results._cache_path(other, a).write_text(json.dumps(done))
    results._cache_path(other, b).write_text(json.dumps({"status": "failed"}))
    before = sorted(p.name for p in (other / "cells").iterdir())

    class NoWorkers:
        jobs = 2

        def pool(self):  # pragma: no cover - would mean a cell was trained
            raise AssertionError("a reused cell was trained again")

    out, trained = results.run_cells([a], work=work, workers=NoWorkers(), threads=1,
                                     fresh=False, echo=print, reuse=[other])
    assert trained == 0 and out[a.key()] == done
    assert sorted(p.name for p in (other / "cells").iterdir()) == before
    assert not work.exists()
    # the failed one is not reused: it would be trained (here: the pool is asked for)
    with pytest.raises(AssertionError, match="trained again"):
        results.run_cells([b], work=work, workers=NoWorkers(), threads=1, fresh=False,
                          echo=print, reuse=[other])


def test_epoch_noise_reads_the_runs_own_validation_curves() -> None:
    """The noise of one run's outcome: the pooled median swing of the validation accuracy
    between consecutive epochs over each run's second half, over 0.954; NaN without curves."""
    a, b = Cell(Setup("digits", 8, train={"lr": 1e-3}), 0, "rnnlab"), \
        Cell(Setup("digits", 8, train={"lr": 1e-3}), 0, "torch")

    def run(vals: list[float]) -> dict[str, object]:
        return {"epochs": [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate(vals)]}

    # the swings into the epochs of the second half: a (epochs 3-5) 0.4 0.2 0.1, b (3-4) 0.1 0
    res = {a.key(): run([0.1, 0.9, 0.5, 0.7, 0.6]), b.key(): run([0.2, 0.4, 0.3, 0.3])}
    assert rx.epoch_noise(res, [a, b]) == pytest.approx(0.1 / 0.954)
    assert rx.epoch_noise(res, [b]) == pytest.approx(0.05 / 0.954)
    assert rx.epoch_noise(res, [a]) == pytest.approx(0.2 / 0.954)
    assert np.isnan(rx.epoch_noise({}, [a]))
