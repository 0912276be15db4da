"""The sweep that chose rnnlab's default training settings (issue 14), as one command.

    python -m benchmarks.defaults                 # every task, every candidate; resumable
    python -m benchmarks.defaults --tasks digits8,xor --jobs 2 --out runs/defaults

Every candidate of a round (``--round``: 1 initialiser x Adam learning rate x gradient clipping,
2 learning rate x schedule, 3 hidden size, 4 clipping, 5 weight decay and batch size, 6 round 2's
learning rate x schedule again) trains every task of the suite as ``rnnlab train --dataset NAME``
does (hidden size 64, 50 epochs (round 1: 10), Adam; Fashion-MNIST: 3 epochs, one seed), on the
seeds given, with what the candidate does not set as it was when rounds 1-4 ran: batch 32 and no
clipping.  Each task is one resumable sweep (``rnnlab.lab.sweep``) under ``--out``; run again to
continue.  The table gives each candidate's mean test score per task and its mean rank over the
tasks (1 = best; tied scores share the mean of their ranks); docs/training.md, "Defaults",
carries the tables and the choices.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    steps: int | None
    metric: str           # a key of summary["test"]
    higher: bool          # whether a larger value is better
    epochs: int | None = None
    seeds: tuple[int, ...] = (0, 1)


TASKS: dict[str, Task] = {
    "digits8": Task("digits8", "digits", 8, "test_accuracy", True),
    "digits64": Task("digits64", "digits", 64, "test_accuracy", True),
    "mnist1d": Task("mnist1d", "mnist1d", None, "test_accuracy", True),
    "fashion": Task("fashion", "fashion-mnist", 28, "test_accuracy", True, epochs=3, seeds=(0,)),
    "adding": Task("adding", "adding", 50, "test_mse_ratio", False, seeds=(0,)),
    "reber": Task("reber", "reber", None, "test_strict_accuracy", True),
    "xor": Task("xor", "xor", None, "test_error_xor", False),
}

EARLIER_DEFAULTS: dict[str, Any] = {"clip_norm": None, "batch_size": 32, "lr": 1e-3,
                                    "schedule": "constant"}
"""TrainConfig's training defaults when rounds 1-4 ran and the results harness was written (round
4 chose clip "auto", 1.0; round 5 batch 16; round 6 lr 2e-3 with a cosine decay): what a round's
candidate and a results ``Setup`` that do not name them train with."""

ROUNDS: dict[int, list[dict[str, Any]]] = {
    # round 1 (2026-11-29, at the then default of 10 epochs): initialiser x lr x clipping
    1: [{"label": f"{init} init, Adam {lr:g}, clip {clip if clip else 'none'}",
         "model.init": init, "train.lr": lr, **({"train.clip_norm": clip} if clip else {})}
        for init in ("pytorch", "keras") for lr in (1e-3, 3e-3) for clip in (None, 1.0)],
    # round 2 (2026-11-30, at the default of 50 epochs): round 1's initialiser, lr x schedule
    2: [{"label": f"keras init, Adam {lr:g}, {sched}", "model.init": "keras", "train.lr": lr,
         "train.schedule": sched}
        for lr in (1e-3, 2e-3, 3e-3) for sched in ("constant", "cosine")],
    # round 3 (2026-11-30, at the default of 50 epochs): round 2's winner, the hidden size
    3: [{"label": f"keras init, Adam 0.001, constant, H={h}", "model.init": "keras",
         "train.lr": 1e-3, "train.schedule": "constant", "model.hidden_size": h}
        for h in (64, 128, 256)],
    # round 4 (2026-11-30, at the default of 50 epochs): round 3's choice, gradient clipping
    # (round 1 tried it at 10 epochs; MNIST-1D's default runs blew up later, at epochs 16-28)
    4: [{"label": f"keras init, Adam 0.001, constant, clip {clip if clip else 'none'}",
         "model.init": "keras", "train.lr": 1e-3, "train.schedule": "constant",
         **({"train.clip_norm": clip} if clip else {})}
        for clip in (None, 1.0, 10.0)],
    # round 5 (2026-11-30, at the default of 50 epochs): round 4's choice (clip 1), decoupled
    # weight decay (AdamW: 0.01 is PyTorch's default) and the batch size (Keras' 32 against 16)
    5: [{"label": f"keras init, {opt}, constant, clip 1.0, batch {batch}", "model.init": "keras",
         "train.lr": 1e-3, "train.schedule": "constant", "train.clip_norm": 1.0,
         "train.batch_size": batch,
         **({"train.optimizer": "adamw", "train.optimizer_kwargs": {"weight_decay": wd}}
            if wd else {})}
        for opt, wd, batch in (("Adam 0.001", 0.0, 32), ("AdamW 0.001 wd 0.01", 0.01, 32),
                               ("AdamW 0.001 wd 0.1", 0.1, 32), ("Adam 0.001", 0.0, 16))],
    # round 6 (2026-11-30, at the default of 50 epochs): round 5's choice (clip 1, batch 16)
    # and round 2's learning rate x schedule again: counted with tied ranks shared, round 2's
    # Adam 1e-3 constant and 2e-3 cosine tie (3.21), and rounds 3 to 5 were built on the first
    6: [{"label": f"keras init, Adam {lr:g}, {sched}, clip 1.0, batch 16", "model.init": "keras",
         "train.lr": lr, "train.schedule": sched, "train.clip_norm": 1.0, "train.batch_size": 16}
        for lr, sched in ((1e-3, "constant"), (1e-3, "cosine"), (2e-3, "cosine"))],
}
CANDIDATES = ROUNDS[2]
"""The current round's candidates (``--round`` chooses)."""


def run_task(task: Task, out: Path, jobs: int, echo: Any, round_: int = 2
             ) -> list[dict[str, Any]]:
    from rnnlab.lab import experiments, sweep
    from rnnlab.lab.config import ExperimentConfig

    base = ExperimentConfig.from_dict({
        "name": f"defaults-{task.name}",
        "data": {"dataset": task.dataset, "steps": task.steps},
        # EARLIER_DEFAULTS unless a candidate sets them: a round's base config is part of its
        # sweep's identity (sweep.json), so every round reruns and resumes as it ran
        "train": {"progress": "off", **EARLIER_DEFAULTS,
                  **({"epochs": task.epochs} if task.epochs
                     else {"epochs": 10} if round_ == 1 else {})},
        "diagnostics": False,
    })
    cells = sweep.config_cells(base, {"train.seed": list(task.seeds)}, ROUNDS[round_])
    where = out / task.name if round_ == 2 else out / f"round{round_}" / task.name
    report = sweep.run_sweep(experiments.cell_function(base, where), cells, where, jobs=jobs,
                             echo=echo, meta={"base": base.to_dict(), "experiment": "defaults"})
    return [r for r in report.records if r["status"] == "done"]


def tied_ranks(key: list[float]) -> list[float]:
    """Rank 1 for the largest of ``key``; equal values share the mean of the ranks they span
    (``scipy.stats.rankdata(method="average")``), so a tie favours no candidate by its place in
    the list; NaN (a task a candidate did not finish) ranks last."""
    import numpy as np
    from scipy.stats import rankdata

    k = np.asarray(key, dtype=float)
    return [float(r) for r in rankdata(np.where(np.isnan(k), np.inf, -k), method="average")]


def table(results: dict[str, list[dict[str, Any]]], round_: int = 2) -> str:
    labels = [c["label"] for c in ROUNDS[round_]]
    score: dict[tuple[str, str], float] = {}
    for name, records in results.items():
        task = TASKS[name]
        for lb in labels:
            vals = [r["summary"]["test"].get(task.metric) for r in records
                    if r["cell"].get("label") == lb]
            vals = [math.nan if v is None else float(v) for v in vals]
            score[(lb, name)] = statistics.fmean(vals) if vals else math.nan
    ranks: dict[str, list[float]] = {lb: [] for lb in labels}
    for name in results:
        task = TASKS[name]
        key = [(score[(lb, name)] if task.higher else -score[(lb, name)]) for lb in labels]
        for lb, r in zip(labels, tied_ranks(key), strict=True):
            ranks[lb].append(r)
    names = list(results)
    head = ["candidate", *[f"{n} ({TASKS[n].metric.removeprefix('test_')}"
                           f"{'' if TASKS[n].higher else ', lower better'})" for n in names],
            "mean rank"]
    lines = [[lb, *[f"{score[(lb, n)]:.4f}" for n in names],
              f"{statistics.fmean(ranks[lb]):.2f}"] for lb in labels]
    lines.sort(key=lambda ln: float(ln[-1]))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    rows = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
            "-|-".join("-" * w for w in widths)]
    rows += [" | ".join(str(x).ljust(w) for x, w in zip(ln, widths, strict=True))
             for ln in lines]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.defaults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default="runs/defaults")
    ap.add_argument("--round", type=int, choices=sorted(ROUNDS), default=2,
                    help="the candidates: 1 = initialiser x lr x clipping at 10 epochs "
                         "(2026-11-29), 2 = lr x schedule at the default epochs (default), "
                         "3 = the hidden size (64, 128, 256) with round 2's choice, "
                         "4 = gradient clipping (none, 1, 10) with round 3's, "
                         "5 = AdamW weight decay (0, 0.01, 0.1) and batch 16 with round 4's, "
                         "6 = Adam 1e-3 / 2e-3 x constant / cosine with round 5's")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    bad = [n for n in names if n not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}; expected some of {list(TASKS)}")
    out = Path(args.out)
    results = {}
    for n in names:
        try:
            results[n] = run_task(TASKS[n], out, args.jobs, echo=print, round_=args.round)
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"skipping {n}: {exc}", file=sys.stderr)
    print()
    print(table(results, args.round))
    return 0


if __name__ == "__main__":
    sys.exit(main())
