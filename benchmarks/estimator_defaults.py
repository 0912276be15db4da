"""The measurement behind the scikit-learn estimators' defaults (issue 14), as one command.

    python -m benchmarks.estimator_defaults                     # four tasks, seeds 0 and 1
    python -m benchmarks.estimator_defaults --tasks digits8 --seeds 0

Each candidate is a set of ``RNNClassifier`` / ``RNNRegressor`` arguments; everything else stays
at its default, as a user who gives nothing gets it.  Each estimator is fitted on a task's
training and validation splits together (an estimator holds nothing out unless told) and
scored on its test split: accuracy for the classification tasks, mean squared error for the
adding problem.  The table gives each candidate's mean over the seeds and its mean rank over
the tasks (1 = best; tied means share their ranks, as in benchmarks.defaults); docs/training.md
("Estimators") carries it and the choice.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
import warnings
from typing import Any

import numpy as np

from benchmarks.defaults import tied_ranks

CANDIDATES: dict[str, dict[str, Any]] = {
    "lr 3e-3, 30 ep, no clip": {"lr": 3e-3, "epochs": 30, "clip_norm": None, "batch_size": 32},
    "lr 3e-3, 30 ep, clip auto": {"lr": 3e-3, "epochs": 30, "clip_norm": "auto",
                                  "batch_size": 32},
    "lr 3e-3, 50 ep, clip auto": {"lr": 3e-3, "epochs": 50, "clip_norm": "auto",
                                  "batch_size": 32},
    "lr 1e-3, 50 ep, clip auto": {"lr": 1e-3, "epochs": 50, "clip_norm": "auto",
                                  "batch_size": 32},
    "lr 1e-3, 50 ep, clip auto, batch 16": {"lr": 1e-3, "epochs": 50, "clip_norm": "auto",
                                            "batch_size": 16},
    "lr 2e-3, 50 ep, clip auto, batch 16": {"lr": 2e-3, "epochs": 50, "clip_norm": "auto",
                                            "batch_size": 16},
    "lr 2e-3 cosine, 50 ep, clip auto, batch 16": {"lr": 2e-3, "schedule": "cosine",
                                                   "epochs": 50, "clip_norm": "auto",
                                                   "batch_size": 16},
}
"""The estimators' defaults until 2026-11-30 (first); TrainConfig's until round 5 of
benchmarks.defaults (fourth); with round 5's batch 16 (fifth); with round 6's lr 2e-3 at a
constant rate (sixth) and with its cosine decay (last, TrainConfig's defaults since round 6).
Every candidate names its batch size and the schedule is the estimators' constant one unless
it names another, so each row means what it meant when it ran."""

TASKS: dict[str, tuple[str, int | None]] = {
    "digits8": ("digits", 8), "digits64": ("digits", 64), "mnist1d": ("mnist1d", None),
    "adding50": ("adding", 50)}


@functools.cache
def _task_data(task: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """The task's dataset and its training + validation splits together (loaded once: every
    candidate and seed fits the same arrays)."""
    from rnnlab import data

    name, steps = TASKS[task]
    ds = data.load(name, seed=0, **({"steps": steps} if steps else {}))
    return ds, np.concatenate([ds.train.X, ds.val.X]), np.concatenate([ds.train.y, ds.val.y])


def score(task: str, kw: dict[str, Any], seed: int) -> float:
    from rnnlab.estimators import RNNClassifier, RNNRegressor

    name = TASKS[task][0]
    ds, X, y = _task_data(task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "adding":
            reg = RNNRegressor(random_state=seed, **kw).fit(X, y.reshape(len(y), -1))
            pred = reg.predict(ds.test.X).reshape(-1)
            return float(np.mean((pred - ds.test.y.reshape(-1)) ** 2))
        return float(RNNClassifier(random_state=seed, **kw).fit(X, y).score(ds.test.X,
                                                                           ds.test.y))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.estimator_defaults",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}; expected some of {list(TASKS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    means: dict[str, list[float]] = {}
    for label, kw in CANDIDATES.items():
        means[label] = []
        for t in tasks:
            t0 = time.perf_counter()
            vals = [score(t, kw, s) for s in seeds]
            print(f"{label:<28} {t:<9} {' '.join(f'{v:.4f}' for v in vals)} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            means[label].append(statistics.fmean(vals))
    # rank 1 = the best mean on a task (accuracy: highest, MSE: lowest); ties share their ranks
    ranks: dict[str, list[float]] = {label: [] for label in means}
    for i, t in enumerate(tasks):
        sign = -1.0 if TASKS[t][0] == "adding" else 1.0
        for label, r in zip(means, tied_ranks([sign * m[i] for m in means.values()]),
                            strict=True):
            ranks[label].append(r)
    rows = [[label, *[f"{v:.4f}" for v in m], f"{statistics.fmean(ranks[label]):.2f}"]
            for label, m in means.items()]
    head = ["candidate", *[f"{t} ({'MSE' if TASKS[t][0] == 'adding' else 'accuracy'})"
                           for t in tasks], "mean rank"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print()
    for r in [head, ["-" * w for w in widths], *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
