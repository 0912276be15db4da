"""The online-rules comparison (rnnlab.lab.online, docs/online.md): one small run end to end,
resumed, its measurements checked against what they measure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnlab import RNNSpec
from rnnlab.cli import main
from rnnlab.lab import online


def test_small_comparison(tmp_path, capsys):
    out = tmp_path / "cmp"
    res = online.online_rules(tasks=["add", "xor"], methods=["tbptt", "uoro", "eprop", "rtrl"],
                              seeds=[0], quick=True, epochs=2, jobs=1, out=out,
                              echo=lambda s: None)
    assert not res["report"].failed and res["report"].ran == 8
    assert {p.suffix for p in res["figures"]} == {".png", ".svg"}
    assert all(p.stat().st_size > 1000 for p in res["figures"])
    text = (out / "tables.md").read_text()
    for label in ("RTRL", "UORO", "e-prop (symmetric)", "truncated BPTT(4; 4)", "ce_first_lag"):
        assert label in text
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by = {(r["cell"]["task"], r["cell"]["method"]): r["summary"] for r in recs}
    for s in by.values():
        assert [p["epoch"] for p in s["curve"]] == [0, 1, 2]
        assert s["updates"] == 2 * 160 // 16
        assert all(-1.0 <= p["alignment"] <= 1.0 for p in s["curve"])
        assert s["sec_per_step"] > 0 and s["peak_bytes"] > 0
    # RTRL is exact: aligned with BPTT to rounding, at every epoch
    for task in ("add", "xor"):
        assert all(p["alignment"] > 1 - 1e-9 for p in by[(task, "rtrl")]["curve"])
        assert all(abs(p["norm_ratio"] - 1) < 1e-6 for p in by[(task, "rtrl")]["curve"])
    # RTRL keeps 2 B H |θ| entries: tracemalloc sees them
    s = by[("add", "rtrl")]
    assert s["peak_bytes"] >= s["formula_bytes"]
    again = online.online_rules(tasks=["add", "xor"], methods=["tbptt", "uoro", "eprop", "rtrl"],
                                seeds=[0], quick=True, epochs=2, jobs=1, out=out,
                                echo=lambda s: None)
    assert again["report"].ran == 0 and again["report"].skipped == 8


def test_cost_formula_and_refusals():
    H, D, T = 32, 2, 20
    theta = (H + D + 1) * H
    flops, entries = online.cost_formula("rtrl", H, D, T)
    assert flops == 2 * theta + 2 * H * H * (theta + 2 * H)
    assert entries == 2 * H * (theta + H)
    assert online.cost_formula("eprop", H, D, T)[1] == H + D + 1
    assert online.cost_formula("bptt", H, D, T)[1] == (T + 1) * H
    assert online.cost_formula("kf_rtrl", H, D, T)[0] > online.cost_formula("uoro", H, D, T)[0]
    with pytest.raises(ValueError, match="unknown task.*method"):
        online.online_rules(methods=["sgd"], echo=lambda s: None)
    assert set(online.METHODS) >= {"bptt", "tbptt", "rtrl", "uoro", "kf_rtrl", "snap1", "rflo",
                                   "eprop"}


def test_alignment_measures_the_cosine():
    spec = RNNSpec(2, 4, 2, setup="many_to_many")
    rng = np.random.default_rng(0)
    from rnnlab import init_params, network

    params = init_params(spec, rng, dtype=np.float32)
    X, Y = rng.standard_normal((3, 5, 2)), rng.integers(0, 2, (3, 5))

    def flipped(p, X, Y, spec):                      # minus the exact gradient
        g = network.value_and_grad(p, X, Y, spec)[1]
        return g._replace(params={k: -v for k, v in g.params.items()})
    a = online._alignment(params, spec, (X, Y), flipped, True)
    assert a["alignment"] == pytest.approx(-1.0) and a["norm_ratio"] == pytest.approx(1.0)


def test_cli_runs_and_refuses(tmp_path, capsys):
    rc = main(["experiment", "online-rules", "--quick", "--tasks", "add", "--methods",
               "eprop", "--epochs", "1", "-j", "1", "--out", str(tmp_path / "c")])
    assert rc == 0
    assert "e-prop (symmetric)" in capsys.readouterr().out
    rc = main(["experiment", "online-rules", "--methods", "bogus", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown task(s) [] or method(s) ['bogus']" in err


def test_the_sweep_file_of_the_add_task():
    from pathlib import Path

    from rnnlab.lab.sweep import config_cells, load_sweep

    path = Path(__file__).resolve().parents[2] / "configs" / "add-task-rules.toml"
    base, axes, variants, _ = load_sweep(path)
    cells = config_cells(base, axes, variants)
    assert len(cells) == 16
    algos = {c["train.algorithm"] for c in cells}
    assert algos == {"bptt", "rtrl", "uoro", "kf_rtrl", "snap", "rflo", "eprop", "uoro_online"}
    cfg = base.with_overrides(cells[-1])
    assert cfg.train.algorithm_kwargs == {"every": 5} and cfg.train.stateful
