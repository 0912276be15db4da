"""Figures from run directories alone: valid PNG and SVG files, clear errors for bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
pytest.importorskip("sklearn")

from rnnlab import experiments, plots  # noqa: E402
from rnnlab.config import ExperimentConfig  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def assert_figures(paths: list[Path], stem: Path) -> None:
    assert [p.name for p in paths] == [f"{stem.name}.png", f"{stem.name}.svg"]
    png, svg = paths
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
    head = svg.read_text()[:400]
    assert head.startswith("<?xml") and "<svg" in head


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Four real runs: two labels x T in {2, 8}, a few epochs each."""
    root = tmp_path_factory.mktemp("runs")
    for label, nonlin in (("tanh", "tanh"), ("relu", "relu")):
        for T in (2, 8):
            cfg = ExperimentConfig().with_overrides({
                "name": f"{label}-{T}", "label": label, "model.nonlinearity": nonlin,
                "T": T, "hidden": 8, "epochs": 3, "batch_size": 128, "lr": 1e-2})
            experiments.run(cfg, root / cfg.name, progress="off")
    return root


def test_learning_curves(runs, tmp_path):
    out = tmp_path / "curves"
    assert_figures(plots.learning_curves([runs / "tanh-2", runs / "relu-8"], out), out)


def test_accuracy_vs_steps_from_a_directory_of_runs(runs, tmp_path):
    out = tmp_path / "sub" / "acc.png"              # a suffix is replaced by both formats
    assert_figures(plots.accuracy_vs_steps([runs], out), tmp_path / "sub" / "acc")


def test_gradient_norms(runs, tmp_path):
    out = tmp_path / "g"
    assert_figures(plots.gradient_norms([runs], out, label="relu"), out)
    assert_figures(plots.gradient_norms([runs], out, when="final"), out)
    with pytest.raises(ValueError, match=r"no run with label 'lstm'; labels: \['relu', 'tanh'\]"):
        plots.gradient_norms([runs], out, label="lstm")
    with pytest.raises(ValueError, match=r"layer must be in \[0, 1\); got 3"):
        plots.gradient_norms([runs], out, layer=3)
    with pytest.raises(ValueError, match="when must be"):
        plots.gradient_norms([runs], out, when="later")


def test_activations(runs, tmp_path):
    for name in ("tanh-8", "relu-2"):
        out = tmp_path / name
        assert_figures(plots.activations(runs / name, out), out)


def test_timesteps_figure_needs_only_summaries(tmp_path):
    """The seed-000 figure is drawn from summary.json files, nothing else."""
    for label in ("a", "b"):
        for T in (1, 4, 16):
            for seed in (0, 1):
                d = tmp_path / f"{label}{T}{seed}"
                d.mkdir()
                (d / "summary.json").write_text(json.dumps({
                    "label": label, "dataset": {"name": "digits", "steps": T,
                                                "input_size": 64 // T},
                    "baselines": {"accuracy_chance": 0.1},
                    "test": {"test_accuracy": 0.9 - 0.01 * T + 0.01 * seed}}))
    out = tmp_path / "fig"
    assert_figures(plots.accuracy_vs_steps([tmp_path], out), out)
    with pytest.raises(ValueError, match="no finished run records 'test_mse'"):
        plots.accuracy_vs_steps([tmp_path], out, metric="test_mse")


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory '.*nope' does not exist"):
        plots.learning_curves([tmp_path / "nope"], tmp_path / "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no run directories in"):
        plots.learning_curves([empty], tmp_path / "x")
    with pytest.raises(ValueError, match="is not a run directory"):
        plots.activations(empty, tmp_path / "x")
    fresh = tmp_path / "fresh"                    # created, but no epoch recorded yet
    fresh.mkdir()
    (fresh / "config.toml").write_text('name = "fresh"\n')
    (fresh / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="has no recorded epochs"):
        plots.learning_curves([fresh], tmp_path / "x")
    with pytest.raises(ValueError, match="has no diagnostics.npz"):
        plots.activations(fresh, tmp_path / "x")
    with pytest.raises(ValueError, match="none of the run directories has a summary.json"):
        plots.accuracy_vs_steps([fresh], tmp_path / "x")
    with pytest.raises(ValueError, match="none of the run directories has a diagnostics.npz"):
        plots.gradient_norms([fresh], tmp_path / "x")
    assert not list(tmp_path.glob("x.*"))
