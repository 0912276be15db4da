"""Run directories, sweep cells, the seed-000 experiment and the gradient-check experiment."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from rnnlab import experiments
from rnnlab.config import ExperimentConfig, load_config
from rnnlab.sweep import cell_name

pytest.importorskip("sklearn")


def tiny(**over) -> ExperimentConfig:
    base = {"T": 4, "hidden": 8, "epochs": 2, "batch_size": 64, "lr": 1e-2,
            "train.progress": "off"}
    return ExperimentConfig().with_overrides({**base, **over})


def test_run_directory_contents(tmp_path):
    cfg = tiny(name="r1", label="tanh")
    s = experiments.run(cfg, tmp_path / "r1", progress="off")
    d = tmp_path / "r1"
    assert {p.name for p in d.iterdir()} == {"config.toml", "metrics.jsonl", "checkpoints",
                                             "summary.json", "diagnostics.npz"}
    assert {p.name for p in (d / "checkpoints").iterdir()} == {"last.npz", "best.npz"}
    assert json.loads((d / "summary.json").read_text()) == s
    assert s["status"] == "completed" and s["epochs"] == 2 and s["label"] == "tanh"
    assert s["dataset"] == {"name": "digits", "steps": 4, "input_size": 16, "output_size": 10,
                            "task": "sequence_classification", "train": 1294, "val": 144,
                            "test": 359}
    assert s["baselines"]["accuracy_chance"] == 0.1
    assert 0.0 <= s["test"]["test_accuracy"] <= 1.0
    assert s["test"]["test_accuracy_last"] == s["test"]["test_accuracy"]
    assert s["versions"]["numpy"] == np.__version__ and s["wall_time_s"] > 0
    assert [json.loads(x)["epoch"] for x in (d / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2]
    saved = load_config(d / "config.toml")
    assert saved.train.checkpoint_dir == str(d / "checkpoints") and saved.model == cfg.model
    with np.load(d / "diagnostics.npz", allow_pickle=False) as z:
        assert list(z["keys"]) == ["l0"]
        assert z["grad_norm_init"].shape == z["grad_norm_final"].shape == (1, 4)
        assert z["hidden"].shape == (1, 4, 8) and z["x"].shape == (4, 16)
        assert np.all(z["grad_norm_init"] > 0) and np.abs(z["hidden"]).max() <= 1.0


def test_existing_run_directory_needs_resume_or_overwrite(tmp_path):
    cfg = tiny()
    experiments.run(cfg, tmp_path / "r", progress="off")
    with pytest.raises(FileExistsError, match="already exists; pass --resume"):
        experiments.run(cfg, tmp_path / "r", progress="off")
    before = (tmp_path / "r" / "metrics.jsonl").stat().st_mtime_ns
    again = experiments.run(cfg, tmp_path / "r", resume=True, progress="off")
    assert (tmp_path / "r" / "metrics.jsonl").stat().st_mtime_ns == before   # nothing re-ran
    more = experiments.run(cfg.with_overrides({"epochs": 4}), tmp_path / "r", resume=True,
                           progress="off")
    assert more["epochs"] == 4 and again["epochs"] == 2
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 4
    fresh = experiments.run(cfg, tmp_path / "r", overwrite=True, progress="off")
    assert fresh["epochs"] == 2
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        experiments.run(cfg, tmp_path / "x", overwrite=True, progress="off")


def test_label_at_every_step_reports_the_last_step_too(tmp_path):
    s = experiments.run(tiny(**{"model.label_steps": "all", "diagnostics": False}),
                        tmp_path / "r", progress="off")
    assert {"test_accuracy", "test_accuracy_last", "test_loss_last"} <= set(s["test"])
    assert not (tmp_path / "r" / "diagnostics.npz").exists()


def test_divergence_is_a_summary_not_a_crash(tmp_path):
    cfg = tiny(**{"model.nonlinearity": "identity", "model.init": "keras", "optimizer": "sgd",
                  "lr": 1e6, "diagnostics": False})
    s = experiments.run(cfg, tmp_path / "r", progress="off")
    assert s["status"] == "diverged" and "non-finite" in s["message"] and s["test"] == {}


def test_run_cell_is_picklable_and_resumes(tmp_path):
    fn = experiments.cell_function(tiny(), tmp_path)
    fn = pickle.loads(pickle.dumps(fn))
    cell = {"label": "a", "train.seed": 1}
    s = fn(cell)
    assert s["name"] == cell_name(cell) and s["config"]["train"]["seed"] == 1
    assert (tmp_path / "runs" / cell_name(cell) / "summary.json").exists()
    assert fn(cell) == s                                  # a second attempt reuses the run


def test_timesteps_experiment_small(tmp_path):
    printed: list[str] = []
    res = experiments.timesteps(steps=[1, 4], methods=["tanh", "every-step"], seeds=[0, 1],
                                epochs=1, hidden_size=8, jobs=1, out=tmp_path / "t",
                                echo=printed.append)
    text = "\n".join(printed)
    assert "test accuracy (prediction after the last step)" in text
    table = res["table"].splitlines()
    assert "tanh, label at the last step" in table[0] and "tanh, label at every step" in table[0]
    assert [row.split()[:2] for row in table[2:]] == [["1", "64"], ["4", "16"]]
    assert all(row.count("(n=2)") == 2 for row in table[2:])
    names = {p.name for p in res["figures"]}
    assert names == {"accuracy_vs_T.png", "accuracy_vs_T.svg", "gradient_norms.png",
                     "gradient_norms.svg"}
    assert len((tmp_path / "t" / "results.jsonl").read_text().splitlines()) == 8
    again = experiments.timesteps(steps=[1, 4], methods=["tanh", "every-step"], seeds=[0, 1],
                                  epochs=1, hidden_size=8, jobs=1, out=tmp_path / "t",
                                  echo=printed.append)
    assert again["report"].ran == 0 and again["table"] == res["table"]
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['lstm'\]"):
        experiments.timesteps_cells([1], ["lstm"], [0])


def test_format_table_mean_and_std():
    def summ(label, T, acc):
        return {"label": label, "dataset": {"steps": T, "input_size": 64 // T},
                "test": {"test_accuracy_last": acc}}

    rows = experiments.format_table([summ("a", 2, 0.5), summ("a", 2, 0.7), summ("b", 2, 0.9),
                                     summ("a", 8, 0.4)]).splitlines()
    assert rows[2].split()[:2] == ["2", "32"]
    assert "0.600 ± 0.100 (n=2)" in rows[2] and "0.900 ± 0.000 (n=1)" in rows[2]
    assert "0.400 ± 0.000 (n=1)" in rows[3] and rows[3].rstrip().endswith("-")


@pytest.mark.parametrize("kw", [
    {},
    {"nonlinearity": "relu", "setup": "many_to_many", "layers": 2, "bidirectional": True,
     "masked": True},
    {"label_steps": "all", "loss": "sigmoid_bce", "masked": True},
    {"nonlinearity": "sigmoid", "setup": "one_to_many", "feed": "first", "loss": "identity_mse"},
])
def test_gradient_check(kw):
    rows, notes = experiments.gradient_check(**kw)
    layers = kw.get("layers", 1) * (2 if kw.get("bidirectional") else 1)
    assert len(rows) == 3 * layers + 4                    # W_xh, W_hh, b_h per layer; head; X; h0
    assert all(r["fd"] < 1e-6 for r in rows), rows
    torch_ok = kw.get("nonlinearity", "tanh") in ("tanh", "relu") and \
        kw.get("setup") != "one_to_many"
    try:
        import torch  # noqa: F401
    except ImportError:
        torch_ok = False
    if torch_ok:
        assert all(r["torch"] is not None and r["torch"] < 1e-10 for r in rows), rows
    else:
        assert all(r["torch"] is None for r in rows) and any("not compared" in n for n in notes)
