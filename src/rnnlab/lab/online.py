"""The online learning rules compared in one command (``rnnlab experiment online-rules``;
docs/online.md).

Every learning rule of :mod:`rnnlab.learning` trains the same network (one tanh layer) on the Add
and Mimic task families of Marschall, Cho and Savin (2020) and on the temporal XOR, with the same
optimizer, and is measured on the way:

* **learning curves**: the validation loss after every epoch, beside the task's baselines;
* **gradient alignment** (docs/derivation.md eq. 43): before training and after every epoch, the
  cosine between the rule's gradient estimate and the exact BPTT gradient of the same batch (a
  fixed probe batch of the validation split) over the recurrent weights;
* **time and memory per step**: one window's gradient by the rule (as the trainer computes it),
  the median wall time divided by ``T`` and the peak of ``tracemalloc`` (NumPy reports its arrays
  to it) during one call from a fresh start, beside the leading terms of eq. (56).

The Add and Mimic tasks are streams read in consecutive windows of ``T`` steps with the state
carried across them (``TrainConfig(stateful=True)``), the way their authors train online;
the temporal XOR is a set of independent sequences.  By default every rule makes one update per
window (its batch form: the parameters fixed over the window, so the gradient quality is the only
difference between the rules); ``online=True`` gives the rules that have one their online form
instead, an update at every step (eq. 42).

The runs are cells of a sweep (:func:`rnnlab.sweep.run_sweep`: resumable, parallel), whose
results hold every curve, so the tables and figures are made from ``results.jsonl`` alone.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..core import network
from ..core.params import init_params
from ..core.spec import RNNSpec
from ..data import registry
from ..learning import RULES, STOCHASTIC
from ..train import TrainConfig, spec_for_dataset
from ..train import fit as train_fit
from ..train.steps import gradient_function
from . import plots

__all__ = [
    "METHODS",
    "TASKS",
    "Method",
    "Task",
    "cost_formula",
    "online_rules",
    "run_online_cell",
    "settings_for",
]


@dataclass(frozen=True)
class Task:
    """A task of the comparison: a registered dataset and how it is read."""

    title: str
    dataset: str
    steps: int
    options: Mapping[str, Any] = field(default_factory=dict)
    stateful: bool = True
    baselines: tuple[str, ...] = ()         # the dataset's baselines drawn in the figure


TASKS: dict[str, Task] = {
    "add": Task("Add task, t1 = 3, t2 = 8 (Marschall et al.)", "add-task", 20,
                {"t1": 3, "t2": 8}, True, ("ce_mean", "ce_first_lag", "ce_optimal")),
    "mimic": Task("Mimic task, teacher radius 0.9 (Marschall et al.)", "mimic", 20,
                  {"radius": 0.9}, True, ("mse_mean", "mse_memoryless")),
    "xor": Task("temporal XOR (Elman; rnnlab's xor)", "xor", 30, {}, False,
                ("ce_chance", "ce_optimal")),
}


@dataclass(frozen=True)
class Method:
    """A line of the comparison: a learning rule with its options."""

    label: str
    algorithm: str                           # a batch rule of rnnlab.learning.RULES
    options: Mapping[str, Any] = field(default_factory=dict)
    online: str | None = None                # its online form, if it has one
    k1: int | None = None                    # truncated BPTT's windows
    k2: int | None = None


METHODS: dict[str, Method] = {
    "bptt": Method("BPTT", "bptt"),
    "tbptt": Method("truncated BPTT(4; 4)", "tbptt", k1=4, k2=4),
    "rtrl": Method("RTRL", "rtrl", online="rtrl_online"),
    "uoro": Method("UORO", "uoro", online="uoro_online"),
    "kf_rtrl": Method("KF-RTRL", "kf_rtrl", online="kf_rtrl_online"),
    "snap1": Method("SnAp-1", "snap", {"n": 1}, online="snap_online"),
    "rflo": Method("RFLO (random feedback)", "rflo", {"feedback": "random"},
                   online="rflo_online"),
    "eprop": Method("e-prop (symmetric)", "eprop", {"feedback": "symmetric"},
                    online="eprop_online"),
}
"""SnAp-2 is RTRL on these dense networks (eq. 50) and e-prop with random feedback is RFLO on
rnnlab's cell (eq. 55), so neither is a line of its own."""


def settings_for(quick: bool, *, epochs: int | None = None, hidden_size: int = 32,
                 batch_size: int = 16, lr: float | None = None, online: bool = False
                 ) -> dict[str, Any]:
    """The settings every cell shares (the ``--quick`` variant: fewer and shorter streams).

    ``lr`` defaults to 5e-3 for one update per window and 5e-4 for an update at every step.
    """
    if lr is None:
        lr = 5e-4 if online else 5e-3
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not (
            math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    return {
        "epochs": epochs if epochs is not None else (4 if quick else 25),
        "n_train": 160 if quick else 320,          # windows per epoch (batch_size streams)
        "n_val": 32, "n_test": 64,
        "hidden_size": hidden_size, "batch_size": batch_size, "lr": float(lr),
        "optimizer": "adam", "online": online, "dtype": "float32",
    }


# ----------------------------------------------------------------------------- cost formulas


def cost_formula(method: str, H: int, D: int, T: int) -> tuple[float, float]:
    """Leading terms of eq. (56) per sequence and step: ``(flops, entries kept)``, one layer,
    the forward step ``2 |θ|`` included."""
    theta = (H + D + 1) * H
    fwd = 2.0 * theta
    m = METHODS[method]
    if m.algorithm == "bptt":
        return fwd + 4.0 * theta, (T + 1) * H
    if m.algorithm == "tbptt":
        k1, k2 = m.k1 or 1, m.k2 or 1
        return fwd + 4.0 * theta * k2 / k1, (k1 + k2) * H
    if m.algorithm == "rtrl":
        return fwd + 2.0 * H * H * (theta + 2 * H), 2.0 * H * (theta + H)
    if m.algorithm == "uoro":
        return fwd + 2.0 * theta + 2.0 * H * H + 4.0 * theta, 2.0 * theta + 2 * H
    if m.algorithm == "kf_rtrl":
        return fwd + 2.0 * H**3 + 2.0 * theta, 2.0 * H * H + H + D + 1
    if m.algorithm == "snap":
        return fwd + 4.0 * theta, 2.0 * theta
    return fwd + 2.0 * theta, H + D + 1.0                     # e-prop, and RFLO with α = 1


# ----------------------------------------------------------------------------- one cell


def _recurrent(grads: Mapping[str, np.ndarray], spec: RNNSpec) -> np.ndarray:
    keys = [k for k in grads if k.startswith("l")]
    return np.concatenate([np.asarray(grads[k], np.float64).ravel() for k in sorted(keys)])


def _dataset(task: Task, settings: Mapping[str, Any], seed: int) -> Any:
    return registry.load(task.dataset, steps=task.steps, seed=seed,
                         n_train=settings["n_train"], n_val=settings["n_val"],
                         n_test=settings["n_test"], **dict(task.options))


def _rule_call(method: Method, seed: int) -> Callable[..., Any]:
    """``f(params, X, Y, spec) -> Gradients``: the rule's batch estimate on a probe batch (its
    own Generator for the random signs, independent of training's)."""
    rule = RULES[method.algorithm]
    kw: dict[str, Any] = dict(method.options)
    if method.algorithm == "tbptt":
        kw.update(k1=method.k1, k2=method.k2)
    if method.algorithm in STOCHASTIC:
        kw["rng"] = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(29,)))

    def call(params: Any, X: Any, Y: Any, spec: RNNSpec) -> Any:
        return rule(params, X, Y, spec, **kw)[1]
    return call


def _alignment(params: Mapping[str, np.ndarray], spec: RNNSpec, probe: tuple[Any, Any],
               call: Callable[..., Any], exact_too: bool) -> dict[str, float]:
    """Eq. (43) on the probe batch, in float64, and the norm ratio ``‖ĝ‖ / ‖g‖``."""
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    X, Y = probe
    _, g, _ = network.value_and_grad(p64, X, Y, spec)
    exact = _recurrent(g.params, spec)
    est = exact if not exact_too else _recurrent(call(p64, X, Y, spec).params, spec)
    ne, ng = float(np.linalg.norm(est)), float(np.linalg.norm(exact))
    cos = float(est @ exact) / (ne * ng) if ne > 0 and ng > 0 else math.nan
    cos = min(1.0, max(-1.0, cos)) if math.isfinite(cos) else cos       # rounding past ±1
    return {"alignment": cos, "norm_ratio": ne / ng if ng > 0 else math.nan}


def _cost(cfg: TrainConfig, params: Mapping[str, np.ndarray], spec: RNNSpec, X: Any, Y: Any,
          T: int, repeats: int) -> tuple[float, int]:
    """Median seconds per step of one window's gradient, and the peak bytes of a first call."""
    p = {k: v.copy() for k, v in params.items()}
    fresh = gradient_function(cfg)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fresh(p, X, Y, spec, None, None, None)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fresh(p, X, Y, spec, None, None, None)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / T, int(peak)


def run_online_cell(cell: Mapping[str, Any], *, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Train one method on one task with one seed; plain data back (the sweep's result)."""
    task, method = TASKS[cell["task"]], METHODS[cell["method"]]
    seed = int(cell["seed"])
    ds = _dataset(task, settings, seed)
    H = int(settings["hidden_size"])
    spec = spec_for_dataset(ds, hidden_size=H)
    dtype = np.dtype(settings["dtype"])
    params = init_params(spec, np.random.default_rng(seed), dtype=dtype)
    online = bool(settings["online"]) and method.online is not None
    algorithm = method.online if online and method.online else method.algorithm
    cfg = TrainConfig(
        epochs=int(settings["epochs"]), batch_size=int(settings["batch_size"]),
        optimizer=str(settings["optimizer"]), lr=float(settings["lr"]), schedule="constant",
        algorithm=algorithm,
        algorithm_kwargs=dict(method.options), k1=method.k1, k2=method.k2,
        stateful=task.stateful, shuffle=not task.stateful, seed=seed, progress="off",
        eval_batch_size=int(settings["batch_size"]),
        clip_norm=None)      # no method clips: the online rules cannot (they update mid-sequence)
    B = cfg.batch_size
    probe = (np.asarray(ds.val.X[:B], np.float64), ds.val.y[:B])
    call = _rule_call(method, seed)
    exact_too = method.algorithm != "bptt"
    curve: list[dict[str, Any]] = [{"epoch": 0,
                                    **_alignment(params, spec, probe, call, exact_too)}]

    def record(rec: dict[str, Any]) -> None:
        curve.append({"epoch": rec["epoch"], "train_loss": rec.get("train_loss"),
                      "val_loss": rec.get("val_loss"),
                      **_alignment(params, spec, probe, call, exact_too)})

    t0 = time.perf_counter()
    h = train_fit(params, spec, ds, cfg, callback=record)
    wall = time.perf_counter() - t0
    batch_cfg = cfg.replace(algorithm=method.algorithm)
    X, Y = ds.train.X[:B], ds.train.y[:B]
    sec, peak = _cost(batch_cfg, params, spec, X, Y, task.steps, 3 if settings["epochs"] < 10
                      else 7)
    flops, entries = cost_formula(cell["method"], H, spec.input_size, task.steps)
    return {
        "task": cell["task"], "method": cell["method"], "label": method.label,
        "algorithm": algorithm, "seed": seed, "status": h.status, "curve": curve,
        "test": h.test, "baselines": {k: ds.baselines[k] for k in task.baselines},
        "updates": h.step, "wall_s": wall, "sec_per_step": sec, "peak_bytes": peak,
        "formula_flops": flops * B, "formula_bytes": entries * B * dtype.itemsize,
        "B": B, "H": H, "T": task.steps,
    }


# ----------------------------------------------------------------------------- tables


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return math.nan, math.nan
    return float(np.mean(v)), float(np.std(v))


def _by(summaries: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    out: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for s in summaries:
        out.setdefault((s["task"], s["method"]), []).append(s)
    return out


def _final_loss(s: Mapping[str, Any]) -> float:
    vals = [p.get("val_loss") for p in s["curve"] if p.get("val_loss") is not None]
    if not vals:
        return math.nan
    tail = vals[-max(1, len(vals) // 5):]           # the mean over the last fifth of training
    return float(np.mean(tail))


def _mean_alignment(s: Mapping[str, Any]) -> float:
    vals = [p["alignment"] for p in s["curve"][1:] if p.get("alignment") is not None
            and math.isfinite(p["alignment"])]
    return float(np.mean(vals)) if vals else math.nan


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def tables(summaries: Sequence[Mapping[str, Any]], tasks: Sequence[str], methods: Sequence[str]
           ) -> dict[str, str]:
    """The comparison's tables as Markdown: losses with the ranking, alignment, cost."""
    by = _by(summaries)
    out: dict[str, str] = {}
    head = ["method"] + [TASKS[t].title.split(" (")[0] for t in tasks]
    rows, ranks = [], {}
    for t in tasks:
        finals = {m: _mean_std([_final_loss(s) for s in by.get((t, m), [])])[0]
                  for m in methods}
        order = sorted((m for m in methods if math.isfinite(finals[m])), key=lambda m: finals[m])
        ranks[t] = {m: i + 1 for i, m in enumerate(order)}
    for m in methods:
        cells = []
        for t in tasks:
            mu, sd = _mean_std([_final_loss(s) for s in by.get((t, m), [])])
            rank = ranks[t].get(m)
            cells.append("-" if not math.isfinite(mu) else f"{mu:.4f} ± {sd:.4f} (#{rank})")
        rows.append([METHODS[m].label] + cells)
    base_rows = []
    for t in tasks:
        any_s = next((s for s in summaries if s["task"] == t), None)
        if any_s:
            base_rows.append(f"{TASKS[t].title}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in any_s["baselines"].items()))
    out["loss"] = (_md_table(head, rows) + "\n\nValidation loss over the last fifth of the "
                   "epochs, mean ± std over seeds (#rank per task). Baselines: "
                   + "; ".join(base_rows))
    rows = []
    for m in methods:
        cells = []
        for t in tasks:
            ss = by.get((t, m), [])
            mu, sd = _mean_std([_mean_alignment(s) for s in ss])
            init, _ = _mean_std([s["curve"][0]["alignment"] for s in ss])
            cells.append("-" if not math.isfinite(mu) else f"{mu:.3f} ± {sd:.3f} (init "
                         f"{init:.3f})")
        rows.append([METHODS[m].label] + cells)
    out["alignment"] = (_md_table(head, rows) + "\n\nCosine with the exact BPTT gradient (eq. "
                        "43) on a fixed probe batch, mean over the epochs of training (and at "
                        "initialisation), mean ± std over seeds.")
    rows = []
    for m in methods:
        ss = by.get((tasks[0], m), [])                # the cost is measured on the first task
        if not ss:
            continue
        s0 = ss[0]
        ms = statistics.median(s["sec_per_step"] for s in ss) * 1e3
        gflops = s0["formula_flops"] / (ms / 1e3) / 1e9
        mib = statistics.median(s["peak_bytes"] for s in ss) / 2**20
        fmib = s0["formula_bytes"] / 2**20
        rows.append([METHODS[m].label, f"{ms:.3f}", f"{s0['formula_flops'] / 1e6:.2f}",
                     f"{gflops:.2f}", f"{mib:.3f}", f"{fmib:.3f}",
                     f"{mib / fmib:.1f}" if fmib > 0 else "-"])
    s0 = next((s for s in summaries if s["task"] == tasks[0]), summaries[0] if summaries else {})
    out["cost"] = (_md_table(["method", "ms/step", "MFLOP/step (eq. 56)", "GFLOP/s",
                              "peak MiB", "formula MiB", "peak / formula"], rows)
                   + f"\n\nOne window's gradient (B = {s0.get('B')}, H = {s0.get('H')}, "
                   f"T = {s0.get('T')}, float32, one BLAS thread), median over runs of the "
                   "median call; peak = tracemalloc during a first call (every array the call "
                   "makes, the network's states and outputs included); the formula counts the "
                   "entries the rule keeps (eq. 56).")
    return out


# ----------------------------------------------------------------------------- figures


def figure(summaries: Sequence[Mapping[str, Any]], tasks: Sequence[str], methods: Sequence[str],
           out: str | os.PathLike[str], *, dpi: int = 110,
           formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Learning curves (top row) and gradient alignment (bottom row), one column per task,
    mean over seeds with the range shaded; writes ``out`` in ``formats``."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the figure needs matplotlib: pip install 'rnnlab[cli]'") from None
    by = _by(summaries)
    fig = Figure(figsize=(5.0 * len(tasks), 8.0))
    axes = fig.subplots(2, len(tasks), squeeze=False)
    colors = [f"C{i}" for i in range(len(methods))]
    for j, t in enumerate(tasks):
        top, bottom = axes[0][j], axes[1][j]
        for m, c in zip(methods, colors, strict=True):
            ss = by.get((t, m), [])
            if not ss:
                continue
            n = min(len(s["curve"]) for s in ss)
            ep = [p["epoch"] for p in ss[0]["curve"][:n]]
            for key, ax, start in (("val_loss", top, 1), ("alignment", bottom, 0)):
                vals = np.array([[np.nan if p.get(key) is None else p[key]
                                  for p in s["curve"][start:n]] for s in ss], dtype=float)
                if vals.size == 0:
                    continue
                x = ep[start:n]
                ax.plot(x, np.nanmean(vals, axis=0), color=c, label=METHODS[m].label)
                if len(ss) > 1:
                    ax.fill_between(x, np.nanmin(vals, axis=0), np.nanmax(vals, axis=0),
                                    color=c, alpha=0.15, linewidth=0)
        any_s = next((s for s in summaries if s["task"] == t), None)
        if any_s:
            for k, v in any_s["baselines"].items():
                top.axhline(v, color="0.5", linestyle=":", linewidth=1)
                top.annotate(k, (1.0, v), xycoords=("axes fraction", "data"), fontsize=7,
                             color="0.4", ha="right", va="bottom")
        top.set_title(TASKS[t].title, fontsize=10)
        top.set_xlabel("epoch")
        top.set_ylabel("validation loss")
        bottom.set_xlabel("epoch")
        bottom.set_ylabel("cos(estimate, BPTT gradient)")
        bottom.set_ylim(-0.2, 1.05)
        bottom.axhline(0.0, color="0.6", linewidth=0.8)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        target = p.with_name(f"{p.name}.{fmt}")
        plots.write_figure(fig, target, fmt, dpi)
        paths.append(target)
    return paths


# ----------------------------------------------------------------------------- the experiment


def online_rules(
    *,
    tasks: Sequence[str] = tuple(TASKS),
    methods: Sequence[str] = tuple(METHODS),
    seeds: Sequence[int] = (0, 1, 2),
    quick: bool = False,
    epochs: int | None = None,
    online: bool = False,
    lr: float | None = None,
    jobs: int = 2,
    cluster: str | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the comparison (resumable: run it again to finish), print and save its tables and
    write ``online_rules.png/.svg``.

    Returns
    -------
    dict
        ``tables`` (Markdown text by name), ``figures`` (paths), ``report`` (the sweep's),
        ``out`` (the directory).
    """
    from .sweep import run_sweep

    bad_t = [t for t in tasks if t not in TASKS]
    bad_m = [m for m in methods if m not in METHODS]
    if bad_t or bad_m:
        raise ValueError(f"unknown task(s) {bad_t} or method(s) {bad_m}; tasks: {list(TASKS)}, "
                         f"methods: {list(METHODS)}")
    if not tasks or not methods or not seeds:
        raise ValueError("online-rules needs at least one task, one method and one seed")
    settings = settings_for(quick, epochs=epochs, online=online, lr=lr)
    name = "online-rules" + ("-quick" if quick else "") + ("-online" if online else "")
    out_dir = Path(out) if out is not None else Path("runs") / name
    # RTRL first: the longest cells start early, so the workers finish together
    order = sorted(methods, key=lambda m: m != "rtrl")
    cells = [{"task": t, "method": m, "seed": int(s)} for m in order for t in tasks
             for s in seeds]
    echo(f"online rules: tasks {list(tasks)}, methods {list(methods)}, seeds {list(seeds)}: "
         f"{len(cells)} runs of {settings['epochs']} epochs x {settings['n_train']} windows "
         f"(H={settings['hidden_size']}, B={settings['batch_size']}, Adam "
         f"lr={settings['lr']}, {'online updates' if online else 'one update per window'}) "
         f"on {cluster or f'{jobs} local process(es)'} -> {out_dir}")
    t0 = time.perf_counter()
    report = run_sweep(partial(run_online_cell, settings=settings), cells, out_dir, jobs=jobs,
                       cluster=cluster, overwrite=overwrite, echo=echo,
                       meta={"settings": settings, "experiment": "online-rules"})
    summaries = [r["summary"] for r in report.records if r["status"] == "done"]
    if report.failed:
        echo(f"{len(report.failed)} run(s) failed: " + "; ".join(
            f"{r['cell']}: {r.get('error', '')}" for r in report.failed))
    if not summaries:
        raise RuntimeError("no run finished; nothing to tabulate")
    tabs = tables(summaries, tasks, methods)
    text = "\n\n".join(f"## {k}\n\n{v}" for k, v in tabs.items())
    (out_dir / "tables.md").write_text(text + "\n", encoding="utf-8")
    echo("\n" + text)
    figs = figure(summaries, tasks, methods, out_dir / "online_rules")
    echo("figures: " + ", ".join(str(p) for p in figs) + f"; tables: {out_dir / 'tables.md'}")
    echo(f"wall time {time.perf_counter() - t0:.0f} s ({report.skipped} of {len(cells)} runs "
         "already done)")
    return {"tables": tabs, "figures": figs, "report": report, "out": out_dir}
