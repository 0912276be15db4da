"""Figures from run directories alone (:mod:`rnnlab.experiments`): nothing is re-trained.

* :func:`learning_curves`: loss and accuracy per epoch, train (solid) and validation (dashed);
  runs that differ only in their seed are one line, the mean over seeds with a band from the
  lowest to the highest, and each line is named by what sets it apart (its label and the varying
  settings: ``tanh, T=16 (3 seeds)``).
* :func:`accuracy_vs_steps`: seed 000's figure, a test metric against ``T`` with one line per
  label (method) and error bars (standard deviation) over seeds.
* :func:`gradient_norms`: ``||dL/dh_t||`` against ``t`` on a log scale, one line per ``T``, at
  initialisation and after training: vanishing (or exploding) gradients.
* :func:`activations`: a heat map of one test sequence's hidden states over time.

Every function writes PNG and SVG (``out`` without a suffix, or with either) and returns the paths;
the ``*_figure`` functions return the :class:`matplotlib.figure.Figure` itself.  Legends sit
outside the axes, to the right.  Figures are built on :class:`matplotlib.figure.Figure` directly,
so no GUI backend is involved.
"""

from __future__ import annotations

import json
import os
import tomllib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunData", "accuracy_vs_steps", "accuracy_vs_steps_figure", "activations",
           "activations_figure", "find_runs", "gradient_norms", "gradient_norms_figure",
           "layer_name", "learning_curves", "learning_curves_figure", "line_labels", "load_run",
           "write_figure"]

FORMATS: tuple[str, ...] = ("png", "svg")
RUN_FILES: tuple[str, ...] = ("config.toml", "summary.json", "metrics.jsonl")
METRIC_LABELS = {"test_accuracy_last": "test accuracy (prediction after the last step)",
                 "test_loss_last": "test loss (prediction after the last step)",
                 "test_accuracy": "test accuracy", "test_loss": "test loss",
                 "test_perplexity": "test perplexity", "test_mse": "test mean squared error"}
# config keys that never tell runs apart in a legend (paths, names, the seed: averaged over)
_NOT_IN_LEGEND = ("name", "train.seed", "train.checkpoint_dir", "train.log_path",
                  "train.tracking_dir", "train.progress", "data.data_dir")


def layer_name(key: str) -> str:
    """``l0`` -> ``layer 1``, ``l1r`` -> ``layer 2, reverse direction`` (the diagnostics' keys)."""
    if key.startswith("l") and key[1:].rstrip("r").isdigit():
        n = int(key[1:].rstrip("r")) + 1
        return f"layer {n}" + (", reverse direction" if key.endswith("r") else "")
    return key


def _legend_outside(ax: Any, **kw: Any) -> Any:
    """The legend to the right of the axes, never over the data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     fontsize=kw.pop("fontsize", 8), **kw)


def _figure(**kw: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'rnnlab[cli]'") from None
    return Figure(**kw)


def write_figure(fig: Any, target: str | os.PathLike[str], fmt: str, dpi: int = 120) -> None:
    """Save ``fig`` as ``fmt`` so that the same figure gives the same bytes: an SVG without
    its creation date and with element ids from a fixed salt (matplotlib draws them at
    random), so that regenerating a figure changes its file only when the figure changed."""
    from matplotlib import rc_context

    meta = {"Date": None} if fmt == "svg" else None
    with rc_context({"svg.hashsalt": "rnnlab"}):
        fig.savefig(target, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)


def _save(fig: Any, out: str | os.PathLike[str], formats: Sequence[str] = FORMATS) -> list[Path]:
    p = Path(out)
    if p.suffix.lower().lstrip(".") in FORMATS:
        p = p.with_suffix("")
    p.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        target = p.with_name(f"{p.name}.{fmt}")
        write_figure(fig, target, fmt)
        paths.append(target)
    return paths


# ----------------------------------------------------------------------------- reading runs


@dataclass
class RunData:
    """What a run directory holds (``summary`` and ``diagnostics`` may be missing)."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    metrics: list[dict[str, Any]]

    def flat_config(self) -> dict[str, Any]:
        """The config under dotted keys (``data.steps``, ``train.seed``, ...), with the
        label and the number of steps the run really had."""
        out: dict[str, Any] = {}
        for k, v in self.config.items():
            if isinstance(v, dict) and k in ("model", "data", "train"):
                out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                out[k] = v
        out["label"] = self.label if (self.summary or self.config).get("label") else None
        if self.steps is not None:
            out["data.steps"] = self.steps
        return out

    @property
    def label(self) -> str:
        for d in (self.summary or {}, self.config):
            if d.get("label"):
                return str(d["label"])
        return str(self.config.get("name") or self.path.name)

    @property
    def steps(self) -> int | None:
        if self.summary:
            return int(self.summary["dataset"]["steps"])
        steps = self.config.get("data", {}).get("steps")
        return None if steps is None else int(steps)

    def diagnostics(self) -> dict[str, np.ndarray]:
        f = self.path / "diagnostics.npz"
        if not f.exists():
            raise ValueError(f"run {str(self.path)!r} has no diagnostics.npz (it was run with "
                             "diagnostics = false, or it has not finished)")
        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def load_run(path: str | os.PathLike[str]) -> RunData:
    """Read a run directory; a clear error if it is missing or is not one."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"run directory {str(p)!r} does not exist")
    if not p.is_dir() or not any((p / f).exists() for f in RUN_FILES):
        raise ValueError(f"{str(p)!r} is not a run directory (it has none of "
                         f"{', '.join(RUN_FILES)})")
    config: dict[str, Any] = {}
    summary = None
    try:
        if (p / "summary.json").exists():
            summary = json.loads((p / "summary.json").read_text(encoding="utf-8"))
            config = dict(summary.get("config") or {})
        if not config and (p / "config.toml").exists():
            config = tomllib.loads((p / "config.toml").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"run directory {str(p)!r} holds a corrupt file: {exc}") from None
    metrics = []
    if (p / "metrics.jsonl").exists():
        for line in (p / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    metrics.append(json.loads(line))
                except json.JSONDecodeError:
                    break                     # a line being written: stop there
    return RunData(p, config, summary, metrics)


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Run directories: each path itself if it is one, else every run directory below it."""
    found: list[Path] = []
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"run directory {str(p)!r} does not exist")
        if p.is_dir() and any((p / f).exists() for f in RUN_FILES):
            found.append(p)
            continue
        below = sorted({f.parent for name in RUN_FILES for f in p.rglob(name)})
        if not below:
            raise ValueError(f"no run directories in {str(p)!r} (a run directory holds "
                             f"{' or '.join(RUN_FILES)})")
        found.extend(below)
    if not found:
        raise ValueError("no run directories given")
    return found


def _runs(run_dirs: Iterable[str | os.PathLike[str]]) -> list[RunData]:
    return [load_run(p) for p in find_runs(run_dirs)]


# ----------------------------------------------------------------------------- figures


def line_labels(runs: Sequence[RunData]) -> tuple[list[str], dict[int, str]]:
    """Group runs that differ only in their seed: ``(line names in order, run index -> name)``.

    A line's name is its label and the settings that vary between lines and do not follow from
    the label (``tanh, T=16``), in the short names of :data:`rnnlab.lab.sweep.SHORT_KEYS`.
    """
    from .sweep import SHORT_KEYS, shown_keys

    flats = [{k: v for k, v in r.flat_config().items() if k not in _NOT_IN_LEGEND}
             for r in runs]
    keys = ["label"] + sorted({k for f in flats for k in f} - {"label"})
    ordered = [{k: f.get(k) for k in keys} for f in flats]
    varying = [k for k in shown_keys(ordered)
               if len({json.dumps(o.get(k), sort_keys=True, default=str) for o in ordered}) > 1]
    names: dict[int, str] = {}
    for i, (r, o) in enumerate(zip(runs, ordered, strict=True)):
        parts = []
        for k in varying:
            if k == "label":
                parts.append(str(o["label"]))
            else:
                parts.append(f"{SHORT_KEYS.get(k, k.rsplit('.', 1)[-1])}={o.get(k)}")
        names[i] = ", ".join(parts) or (r.label if len(runs) == 1 else "runs")
    return list(dict.fromkeys(names.values())), names


def _per_epoch(runs: Sequence[RunData], key: str) -> tuple[list[int], np.ndarray]:
    """Epochs and a ``(runs, epochs)`` array of ``key`` (NaN where a run lacks it)."""
    epochs = sorted({int(m["epoch"]) for r in runs for m in r.metrics
                     if m.get(key) is not None})
    col = {e: j for j, e in enumerate(epochs)}
    vals = np.full((len(runs), len(epochs)), np.nan)
    for i, r in enumerate(runs):
        for m in r.metrics:
            if m.get(key) is not None:
                vals[i, col[int(m["epoch"])]] = float(m[key])
    return epochs, vals


def learning_curves_figure(run_dirs: Iterable[str | os.PathLike[str]]) -> Any:
    """The figure of :func:`learning_curves`."""
    runs = _runs(run_dirs)
    for r in runs:
        if not r.metrics:
            raise ValueError(f"run {str(r.path)!r} has no recorded epochs (metrics.jsonl is "
                             "missing or empty)")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    lines, of_run = line_labels(runs)
    groups = {name: [r for i, r in enumerate(runs) if of_run[i] == name] for name in lines}
    names = ["loss"] + (["accuracy"] if any("train_accuracy" in m for r in runs
                                             for m in r.metrics) else [])
    fig = _figure(figsize=(4.6 * len(names) + 2.6, 3.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    colors = _colors(len(lines), "tab10" if len(lines) <= 10 else "viridis")
    for ax, name in zip(axes, names, strict=True):
        for line, c in zip(lines, colors, strict=True):
            members = groups[line]
            for split, style in (("train", "-"), ("val", "--")):
                epochs, vals = _per_epoch(members, f"{split}_{name}")
                if not epochs:
                    continue
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)   # an epoch no run has
                    mean = np.nanmean(vals, axis=0)
                    lo, hi = np.nanmin(vals, axis=0), np.nanmax(vals, axis=0)
                ax.plot(epochs, mean, style, color=c, lw=1.4,
                        marker="o" if len(epochs) < 15 else None, ms=3)
                if len(members) > 1:
                    ax.fill_between(epochs, lo, hi, color=c, alpha=0.18, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        values = [v for r in runs for m in r.metrics for k, v in m.items()
                  if k.endswith("_loss") and isinstance(v, int | float)]
        if name == "loss" and values and min(values) > 0 and max(values) > 20 * min(values):
            ax.set_yscale("log")                # losses spanning decades
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, lw=2,
                      label=line + (f" ({len(groups[line])} seeds)" if len(groups[line]) > 1
                                    else ""))
               for line, c in zip(lines, colors, strict=True)]
    handles += [Line2D([], [], color="0.3", ls="-", label="train"),
                Line2D([], [], color="0.3", ls="--", label="validation")]
    _legend_outside(axes[-1], handles=handles, fontsize=7)
    band = " (mean over seeds, band: lowest to highest)" if any(
        len(g) > 1 for g in groups.values()) else ""
    fig.suptitle(f"learning curves{band}", fontsize=10)
    return fig


def learning_curves(run_dirs: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str]
                    ) -> list[Path]:
    """Loss (and accuracy, where recorded) per epoch: solid train, dashed validation; runs that
    differ only in their seed are one line (mean, band from lowest to highest)."""
    return _save(learning_curves_figure(run_dirs), out)


def _colors(n: int, cmap: str = "tab10") -> list[Any]:
    from matplotlib import colormaps

    cm = colormaps[cmap]
    if cmap == "tab10":
        return [cm(i % 10) for i in range(n)]
    return [cm(x) for x in np.linspace(0.0, 0.9, max(n, 1))][:n]


def accuracy_vs_steps(run_dirs: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str],
                      *, metric: str | None = None) -> list[Path]:
    """Seed 000's figure: test ``metric`` against ``T``, a line per label, std over seeds.

    ``metric`` defaults to ``test_accuracy_last`` (the prediction after the whole sequence) where
    the summaries have it, else ``test_accuracy``; the axis and the title name the metric shown.
    """
    return _save(accuracy_vs_steps_figure(run_dirs, metric=metric), out)


def accuracy_vs_steps_figure(run_dirs: Iterable[str | os.PathLike[str]], *,
                             metric: str | None = None) -> Any:
    """The figure of :func:`accuracy_vs_steps`."""
    runs = [r for r in _runs(run_dirs) if r.summary is not None]
    if not runs:
        raise ValueError("none of the run directories has a summary.json (no finished runs)")
    if metric is None:
        metric = ("test_accuracy_last" if all("test_accuracy_last" in (r.summary or {})
                                              .get("test", {}) for r in runs)
                  else "test_accuracy")
    by_label: dict[str, dict[int, list[float]]] = {}
    d_of: dict[int, int] = {}
    for r in runs:
        assert r.summary is not None
        v = (r.summary.get("test") or {}).get(metric)
        T = r.steps
        if v is None or T is None:
            continue
        by_label.setdefault(r.label, {}).setdefault(T, []).append(float(v))
        d_of[T] = int(r.summary["dataset"]["input_size"])
    if not by_label:
        recorded = sorted({k for r in runs for k in (r.summary or {}).get("test", {})})
        raise ValueError(f"no finished run records {metric!r}; the runs record {recorded}")
    fig = _figure(figsize=(8.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for (label, vals), c in zip(sorted(by_label.items()), _colors(len(by_label)), strict=True):
        Ts = sorted(vals)
        mean = [float(np.mean(vals[T])) for T in Ts]
        std = [float(np.std(vals[T])) for T in Ts]
        n = max(len(vals[T]) for T in Ts)
        ax.errorbar(Ts, mean, yerr=std, marker="o", ms=4, capsize=3, color=c,
                    label=f"{label} (n={n})")
    chance = (runs[0].summary or {}).get("baselines", {}).get("accuracy_chance")
    if chance is not None and "accuracy" in metric:
        ax.axhline(chance, color="0.5", ls=":", lw=1, label="chance")
    Ts = sorted(d_of)
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts)
    ax.set_xticklabels([f"{T}\n{d_of[T]}" for T in Ts])
    ax.set_xlabel("time steps T  /  inputs per step D")
    what = METRIC_LABELS.get(metric, metric.replace("_", " "))
    ax.set_ylabel(what)
    if "accuracy" in metric:
        ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    dataset = (runs[0].summary or {}).get("dataset", {}).get("name", "")
    short = what.split(" (")[0]
    ax.set_title(f"{dataset}: {short} against sequence length (mean ± std over seeds)",
                 fontsize=10)
    return fig


def gradient_norms(run_dirs: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str],
                   *, label: str | None = None, when: str = "both", layer: int = 0
                   ) -> list[Path]:
    """``||dL/dh_t||`` against ``t`` (log scale), one line per ``T`` (geometric mean over the
    runs that share it), at initialisation and/or after training.

    Parameters
    ----------
    label : str, optional
        Only runs with this label (default: the first label found).
    when : {"both", "init", "final"}
    layer : int
        Row of the diagnostics (layers and directions in PyTorch's order: l0, l0r, l1, ...).
    """
    return _save(gradient_norms_figure(run_dirs, label=label, when=when, layer=layer), out)


def gradient_norms_figure(run_dirs: Iterable[str | os.PathLike[str]], *,
                          label: str | None = None, when: str = "both", layer: int = 0) -> Any:
    """The figure of :func:`gradient_norms`."""
    from matplotlib.ticker import MaxNLocator

    if when not in ("both", "init", "final"):
        raise ValueError(f"when must be 'both', 'init' or 'final'; got {when!r}")
    runs = [r for r in _runs(run_dirs) if (r.path / "diagnostics.npz").exists()]
    if not runs:
        raise ValueError("none of the run directories has a diagnostics.npz")
    labels = sorted({r.label for r in runs})
    if label is None:
        label = labels[0]
    elif label not in labels:
        raise ValueError(f"no run with label {label!r}; labels: {labels}")
    by_T: dict[int, dict[str, list[np.ndarray]]] = {}
    key = ""
    for r in runs:
        if r.label != label:
            continue
        d = r.diagnostics()
        rows = d["grad_norm_init"].shape[0]
        if not 0 <= layer < rows:
            raise ValueError(f"layer must be in [0, {rows}); got {layer}")
        key = str(d["keys"][layer])
        T = d["grad_norm_init"].shape[1]
        for w in ("init", "final"):
            by_T.setdefault(T, {}).setdefault(w, []).append(d[f"grad_norm_{w}"][layer])
    panels = ["init", "final"] if when == "both" else [when]
    fig = _figure(figsize=(4.8 * len(panels) + 1.4, 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    Ts = sorted(by_T)
    colors = _colors(len(Ts), "viridis")
    for ax, w in zip(axes, panels, strict=True):
        for T, c in zip(Ts, colors, strict=True):
            g = np.stack(by_T[T][w])
            geo = np.exp(np.mean(np.log(np.maximum(g, 1e-300)), axis=0))
            ax.plot(np.arange(T), geo, color=c, marker="o" if T < 4 else None, ms=3,
                    label=f"T = {T}")
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("at initialisation" if w == "init" else "after training", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(f"||dL/dh_t||, {layer_name(key)}")
    _legend_outside(axes[-1], fontsize=7)
    fig.suptitle(f"gradient reaching the hidden state at step t: {label}", fontsize=11)
    return fig


def activations(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                layer: int | None = None) -> list[Path]:
    """Heat map of one test sequence's hidden states (units x time), its input above it."""
    return _save(activations_figure(run_dir, layer=layer), out)


def activations_figure(run_dir: str | os.PathLike[str], *, layer: int | None = None) -> Any:
    """The figure of :func:`activations`."""
    from matplotlib.ticker import MaxNLocator

    r = load_run(run_dir)
    d = r.diagnostics()
    hidden = d["hidden"]                                    # (L * ndir, T, H)
    rows = hidden.shape[0]
    row = rows - 1 if layer is None else layer
    if not 0 <= row < rows:
        raise ValueError(f"layer must be in [0, {rows}); got {layer}")
    h = hidden[row].T                                       # (H, T)
    x = d["x"]
    nonlin = str((r.summary or {}).get("spec", {}).get("nonlinearity")
                 or r.config.get("model", {}).get("nonlinearity", "tanh"))
    fig = _figure(figsize=(max(6.0, min(14.0, 2.0 + 0.12 * h.shape[1])), 5.2))
    axes = fig.subplots(2, 1, height_ratios=[1, 3], sharex=True)
    if x.ndim == 2:
        axes[0].imshow(x.T, aspect="auto", cmap="Greys", interpolation="nearest")
        axes[0].set_ylabel("input\nfeature")
    else:
        axes[0].imshow(np.atleast_2d(x), aspect="auto", cmap="tab20", interpolation="nearest")
        axes[0].set_yticks([])
        axes[0].set_ylabel("input id")
    if nonlin in ("tanh", "identity"):
        lim = max(float(np.abs(h).max()), 1e-12) if nonlin == "identity" else 1.0
        im = axes[1].imshow(h, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                            interpolation="nearest")
    else:
        im = axes[1].imshow(h, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=axes, shrink=0.8, label=f"h_t ({nonlin})")
    axes[1].set_xlabel("time step t")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_ylabel(f"hidden unit, {layer_name(str(d['keys'][row]))}")
    logits = d["logits"]
    last = logits[-1] if logits.ndim == 2 else logits
    y = d["y"]
    title = f"{r.label}: hidden activations of one test sequence"
    if y.ndim == 0 and logits.shape[-1] > 1:
        title += f" (label {int(y)}, predicted {int(np.argmax(last))})"
    fig.suptitle(title, fontsize=10)
    return fig

