"""Figures from run directories alone: valid PNG and SVG files, clear errors for bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
            for seed in (0, 1):
                cfg = ExperimentConfig().with_overrides({
                    "name": f"{label}-{T}" + (f"-s{seed}" if seed else ""), "label": label,
                    "model.nonlinearity": nonlin, "T": T, "hidden": 8, "epochs": 3,
                    "batch_size": 128, "lr": 1e-2, "seed": seed})
                experiments.run(cfg, root / cfg.name, progress="off")
    return root


def drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    return fig


def assert_legend_outside(fig, ax) -> list[str]:
    leg = ax.get_legend()
    assert leg is not None
    drawn(fig)
    assert leg.get_window_extent().x0 >= ax.get_window_extent().x1 - 1     # right of the axes
    return [t.get_text() for t in leg.get_texts()]


def test_sweep_learning_curves_aggregate_seeds_with_named_lines(runs):
    fig = plots.learning_curves_figure([runs])
    loss_ax, acc_ax = fig.axes
    texts = assert_legend_outside(fig, acc_ax)
    assert texts == ["relu, T=2 (2 seeds)", "relu, T=8 (2 seeds)", "tanh, T=2 (2 seeds)",
                     "tanh, T=8 (2 seeds)", "train", "validation"]
    # one mean line per (label, T) and split, not one per run; a band for the seeds' spread
    assert len(loss_ax.get_lines()) == 4 * 2
    assert len(loss_ax.collections) == 4 * 2
    mean = loss_ax.get_lines()[0].get_ydata()
    r0 = plots.load_run(runs / "relu-2").metrics
    r1 = plots.load_run(runs / "relu-2-s1").metrics
    np.testing.assert_allclose(mean, [(a["train_loss"] + b["train_loss"]) / 2
                                      for a, b in zip(r0, r1, strict=True)])
    one = plots.learning_curves_figure([runs / "tanh-2"])
    assert [t.get_text() for t in one.axes[-1].get_legend().get_texts()][0] == "tanh"
    assert not one.axes[0].collections                            # one run: no band
    names = plots.line_labels([plots.load_run(runs / "tanh-2"), plots.load_run(runs / "tanh-8")])
    assert names[0] == ["T=2", "T=8"]


def test_figures_name_what_they_show(runs):
    fig = plots.accuracy_vs_steps_figure([runs], metric="test_loss")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "test loss" and "test loss against" in ax.get_title()
    assert "accuracy" not in ax.get_title() + ax.get_ylabel()
    assert_legend_outside(fig, ax)
    fig = plots.accuracy_vs_steps_figure([runs])
    assert fig.axes[0].get_ylabel() == "test accuracy (prediction after the last step)"
    g = drawn(plots.gradient_norms_figure([runs], label="tanh"))
    ax = g.axes[0]
    assert ax.get_ylabel() == "||dL/dh_t||, layer 1"
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert_legend_outside(g, g.axes[-1])
    a = drawn(plots.activations_figure(runs / "tanh-2"))
    assert a.axes[1].get_ylabel() == "hidden unit, layer 1"
    assert all(float(t).is_integer() for t in a.axes[1].get_xticks())
    assert plots.layer_name("l0") == "layer 1"
    assert plots.layer_name("l1r") == "layer 2, reverse direction"


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
    with pytest.raises(ValueError, match=r"no finished run records 'test_mse'; the runs record "
                                         r"\['test_accuracy'\]"):
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


def test_a_figure_saved_twice_gives_the_same_bytes(runs, tmp_path):
    """No creation date and no random element ids: regenerating a figure changes its file only
    when the figure changed (docs/results.md's figures are regenerated from cached runs)."""
    first = plots.learning_curves([runs / "tanh-2"], tmp_path / "a" / "curves")
    second = plots.learning_curves([runs / "tanh-2"], tmp_path / "b" / "curves")
    assert [p.name for p in first] == [p.name for p in second] == ["curves.png", "curves.svg"]
    for p, q in zip(first, second, strict=True):
        assert p.read_bytes() == q.read_bytes()
    assert b"<dc:date>" not in first[1].read_bytes()
