"""Experiments: one config -> one run directory, sweep cells, and the seed-000 experiment.

A run directory ``runs/<name>/`` holds everything the plots need, so no figure ever re-trains::

    config.toml        the ExperimentConfig (rnnlab.config)
    metrics.jsonl      one line per epoch, written by rnnlab.train.fit
    checkpoints/       last.npz, best.npz (rnnlab.checkpoint: no pickle)
    diagnostics.npz    per-step gradient norms ||dL/dh_t|| at initialisation and at the end, and
                       one test sequence's hidden activations (np.savez, no object arrays)
    summary.json       status, final test metrics, the dataset's baselines, wall time, versions

:func:`timesteps` is seed 000's experiment: the bundled 8x8 digits read as ``T`` steps of
``64 / T`` pixels for ``T`` in {1, 2, 4, ..., 64}, three methods, several seeds, run as one sweep
(:mod:`rnnlab.sweep`); it prints the table of test accuracy and draws the figure.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..core import network
from ..core.params import init_params, num_parameters
from ..core.spec import RNNSpec
from ..fast import kernels
from ..learning.diagnostics import per_step_gradients
from ..train import DivergenceError, History, spec_for_dataset
from ..train import fit as train_fit
from ..train.files import LOCK_NAME, DirectoryLock, remove_stale_temps
from ..train.loop import check_fit, check_resume
from ..train.metrics import evaluate, metric_names
from ..version import __version__
from .config import ExperimentConfig, load_config, save_config

__all__ = ["METHODS", "RUN_FILES", "cell_dir", "cell_function", "check_cells", "json_safe",
           "run", "run_cell", "run_dir_of", "timesteps", "timesteps_cells", "versions"]

DIAGNOSTIC_SEQUENCES = 128


def versions() -> dict[str, str]:
    """rnnlab, NumPy and Python versions and the platform, for summaries."""
    return {"rnnlab": __version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def json_safe(x: Any) -> Any:
    """Plain JSON data: non-finite floats -> None, numpy scalars and arrays -> Python."""
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


RUN_FILES: tuple[str, ...] = ("config.toml", "metrics.jsonl", "summary.json", "diagnostics.npz",
                              ".config.toml.tmp", ".metrics.jsonl.tmp", ".summary.json.tmp",
                              ".diagnostics.npz.tmp")
"""What :func:`run` writes in a run directory besides ``checkpoints/`` (``--overwrite`` deletes
these and the checkpoints, nothing else)."""
CHECKPOINT_FILES: tuple[str, ...] = ("last.npz", "best.npz")


def _leftovers_only(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds nothing but what a start that failed or was killed before
    writing anything leaves: an empty ``checkpoints/`` and a lock file."""
    for p in run_dir.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.name == "checkpoints" and p.is_dir() and all(
                q.name == LOCK_NAME for q in p.iterdir()):
            continue
        return False
    return True


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a run directory this run may not write (before anything is written)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"run directory {str(run_dir)!r} exists and is not a directory")
    if not run_dir.is_dir() or _leftovers_only(run_dir):
        return
    if not (run_dir / "config.toml").exists():
        what = "overwrite" if overwrite else "write into"
        error = ValueError if overwrite or resume else FileExistsError
        raise error(
            f"refusing to {what} {str(run_dir)!r}: it is not empty and holds no config.toml "
            "(not a run directory); choose another name or runs directory")
    if not (overwrite or resume):
        raise FileExistsError(f"run directory {str(run_dir)!r} already exists; pass --resume "
                              "to continue it or --overwrite to start again")


def _remove_run_files(run_dir: Path) -> None:
    """``--overwrite``: delete what runs write in ``run_dir`` (:data:`RUN_FILES`, the
    checkpoints and their temporary files) and nothing else."""
    ck = run_dir / "checkpoints"
    lock = DirectoryLock(ck, "checkpoint directory") if ck.is_dir() else None
    if lock is not None:
        lock.acquire()                                     # no fit is writing there
    try:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in CHECKPOINT_FILES:
            (ck / name).unlink(missing_ok=True)
        remove_stale_temps(ck)
    finally:
        if lock is not None:
            lock.release()
    if ck.is_dir() and not any(ck.iterdir()):
        ck.rmdir()


def _lost_checkpoint(run_dir: Path) -> str | None:
    """Why resuming ``run_dir`` from scratch would lose training (its last checkpoint is gone),
    or None (there is a checkpoint, or there never was one to lose)."""
    ck = run_dir / "checkpoints"
    if (ck / "last.npz").exists() or not (run_dir / "config.toml").exists():
        return None
    if not ck.is_dir():
        return "its checkpoints/ directory is gone"
    summary = run_dir / "summary.json"
    if summary.exists():
        try:
            epochs = json.loads(summary.read_text(encoding="utf-8")).get("epochs")
        except (OSError, ValueError, AttributeError):
            epochs = None
        if isinstance(epochs, int) and epochs > 0:
            return f"its summary.json reports {epochs} epoch(s) trained"
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        every = load_config(run_dir / "config.toml").train.checkpoint_every
    except (OSError, ValueError, TypeError):
        return None
    if len(lines) >= every:
        return (f"its metrics.jsonl logs {len(lines)} epoch(s), and a checkpoint is written "
                f"every {every}")
    return None


def _same_run(previous: Mapping[str, Any], cfg: ExperimentConfig) -> bool:
    """Whether the summary ``previous`` is of a run of ``cfg`` (what the trainer's progress bar
    and the run directory's own paths do not change)."""
    def key(d: Any) -> Any:
        d = json.loads(json.dumps(json_safe(d)))
        if isinstance(d, dict) and isinstance(d.get("train"), dict):
            for k in ("progress", "checkpoint_dir", "log_path"):
                d["train"].pop(k, None)
        return d
    return key(previous.get("config")) == key(cfg.to_dict())


def _diagnostic_batch(ds: Any) -> tuple[Any, Any, Any]:
    split = ds.test if len(ds.test) else ds.val if len(ds.val) else ds.train
    n = min(DIAGNOSTIC_SEQUENCES, len(split))
    mask = None if split.mask is None else split.mask[:n]
    return split.X[:n], split.y[:n], mask


def _steps_arg(spec: RNNSpec, Y: Any) -> int | None:
    return int(Y.shape[1]) if spec.setup == "one_to_many" else None


def _gradient_norms(params: Any, spec: RNNSpec, batch: tuple[Any, Any, Any]) -> np.ndarray:
    X, Y, M = batch
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sg = per_step_gradients(params, X, Y, spec, mask=M, steps=_steps_arg(spec, Y))
    return np.asarray(sg.dh_norm, dtype=np.float64)


def _hidden_sample(params: Any, spec: RNNSpec, batch: tuple[Any, Any, Any]) -> dict[str, Any]:
    """The first diagnostic sequence's hidden states ``(L * ndir, T, H)`` and its prediction."""
    from ..core import cell

    X, Y, M = batch
    out, cache = network.forward(params, X[:1], spec, mask=None if M is None else M[:1],
                                 steps=_steps_arg(spec, Y))
    hidden = np.stack([cell.outputs(hb, reverse=i % spec.num_directions == 1)[:, 0]
                       for i, hb in enumerate(cache.hbufs)])
    return {"hidden": hidden.astype(np.float32), "x": np.asarray(X[0]),
            "y": np.asarray(Y[0]), "logits": np.asarray(out.logits[0], dtype=np.float32)}


def _last_step_metrics(params: Any, spec: RNNSpec, ds: Any) -> dict[str, float]:
    """Test metrics of the prediction after the whole sequence, for a label scored at every
    step (the same parameters read as a many-to-one network)."""
    last = dataclasses.replace(spec, label_steps="last")
    res = evaluate(params, last, ds.test.X, ds.test.y, ds.test.mask)
    return {f"test_{k}_last": v for k, v in res.items()}


def run(
    cfg: ExperimentConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: str = "auto",
    stream: IO[str] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` and fill ``run_dir`` (module docstring); return the summary.

    One process at a time: the run directory is locked for the whole call
    (:class:`rnnlab.train.files.DirectoryLock`; a second process gets ``LockedError`` naming
    the holder).  Nothing is written before the config, the data and the resume checkpoint have
    been checked, and a start that fails before training leaves nothing behind, so the corrected
    command can simply be run again.

    Parameters
    ----------
    cfg : ExperimentConfig
    run_dir : path
        The run directory; created if needed.  An existing directory that is not a run
        directory (not empty, no ``config.toml``) is never written into.
    resume : bool
        Continue an existing run directory from ``checkpoints/last.npz``: a finished run whose
        summary has this very config returns that summary without training; more epochs train
        on; a config whose trajectory-defining settings differ from the checkpoint's is refused
        (ValueError listing them) and changes nothing.  A run whose checkpoint is missing but
        which had one (its summary or log shows trained epochs) is refused rather than trained
        from scratch.  Without it an existing run directory is an error.
    overwrite : bool
        Start again: delete what an earlier run wrote in the directory (``config.toml``,
        ``metrics.jsonl``, ``summary.json``, ``diagnostics.npz``, the checkpoints), nothing else.
    progress : {"auto", "on", "off"}
        The trainer's progress bar (on ``stream``, default stderr).

    Returns
    -------
    dict
        The contents of ``summary.json``; ``status`` is the trainer's (``"completed"``,
        ``"early_stopped"``, ``"interrupted"``) or ``"diverged"``.
    """
    t_start = time.perf_counter()
    rdir = Path(run_dir)
    _check_run_dir(rdir, resume, overwrite)          # refuse before creating anything
    if cfg.train.engine == "fast":
        kernels.prefetch()        # load the compiled kernels while the data loads
    made = [p for p in (*reversed(rdir.parents), rdir) if not p.exists()]
    rdir.mkdir(parents=True, exist_ok=True)
    try:
        lock = DirectoryLock(rdir, "run directory").acquire()
    except BaseException:
        _remove_empty(made)
        raise
    try:
        return _run_locked(cfg, rdir, made, resume, overwrite, progress, stream, t_start)
    finally:
        lock.release()
        _remove_empty(made)


def _remove_empty(dirs: Sequence[Path]) -> None:
    """Remove the directories of ``dirs`` (made by this call) that are empty, deepest first."""
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            break


def _run_locked(cfg: ExperimentConfig, rdir: Path, made: Sequence[Path], resume: bool,
                overwrite: bool, progress: str, stream: IO[str] | None,
                t_start: float) -> dict[str, Any]:
    _check_run_dir(rdir, resume, overwrite)          # again, now that nobody else writes here
    fresh = overwrite or not (rdir / "config.toml").exists()
    tc = cfg.train.replace(checkpoint_dir=str(rdir / "checkpoints"),
                           log_path=str(rdir / "metrics.jsonl"), progress=progress)
    cfg = cfg.replace(train=tc)
    summary_path = rdir / "summary.json"
    if not fresh:
        remove_stale_temps(rdir, tuple(n for n in RUN_FILES if n.endswith(".tmp")))
        lost = _lost_checkpoint(rdir)
        if lost is not None:
            raise FileNotFoundError(
                f"cannot resume run directory {str(rdir)!r}: checkpoints/last.npz is missing, but "
                f"{lost}; training from scratch would replace that run. Start it again with "
                "--overwrite (or restore the checkpoint)")
        if summary_path.exists():
            try:
                previous = json.loads(summary_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            if isinstance(previous, dict) and previous.get("status") in (
                    "completed", "early_stopped") and _same_run(previous, cfg):
                return dict(previous)
    ds = cfg.data.load()
    spec = spec_for_dataset(ds, cfg.model.hidden_size, **cfg.model.spec_kwargs())
    seed_seq = np.random.SeedSequence(cfg.train.seed)
    params = init_params(spec, np.random.default_rng(seed_seq.spawn(1)[0]),
                         scheme=cfg.model.init, dtype=cfg.model.dtype)
    check_fit(params, spec, ds, tc)                # every split and setting, before any write
    ckpt = rdir / "checkpoints" / "last.npz"
    has_ckpt = not fresh and ckpt.exists()
    if has_ckpt:   # a refused resume must not touch the run: check it before writing config.toml
        check_resume(ckpt, params, spec, tc, ds.train.X.shape)
    if overwrite:
        _remove_run_files(rdir)
    wrote_config = not (rdir / "config.toml").exists()
    batch = _diagnostic_batch(ds)
    try:
        grad_init = _gradient_norms(params, spec, batch) if cfg.diagnostics else None
        save_config(cfg, rdir / "config.toml")
        summary_path.unlink(missing_ok=True)       # it would describe the run before this one
        t_train = time.perf_counter()
        status, message = "completed", ""
        try:
            history = train_fit(params, spec, ds, tc, resume="auto" if has_ckpt else None,
                                stream=stream)
            status, message = history.status, history.message
        except DivergenceError as exc:
            history, status, message = exc.history, "diverged", str(exc)
    except BaseException:
        if fresh and not ckpt.exists():            # a failed start: leave nothing behind
            _undo_start(rdir, wrote_config)
        raise
    train_time = time.perf_counter() - t_train
    test = dict(history.test or {})
    if status in ("completed", "early_stopped") and "accuracy" in metric_names(spec) \
            and spec.setup == "many_to_one":
        if spec.label_steps == "all":
            test.update(_last_step_metrics(params, spec, ds))
        elif "test_accuracy" in test:
            test["test_accuracy_last"] = test["test_accuracy"]
            test["test_loss_last"] = test["test_loss"]
    if cfg.diagnostics and grad_init is not None and np.isfinite(
            np.concatenate([p.ravel() for p in params.values()])).all():
        keys = [k for layer in range(spec.num_layers) for k in spec.layer_keys(layer)]
        tmp = rdir / ".diagnostics.npz.tmp"            # atomic: a kill leaves the old file
        with open(tmp, "wb") as f:
            np.savez(f, keys=np.array(keys), grad_norm_init=grad_init,
                     grad_norm_final=_gradient_norms(params, spec, batch),
                     **_hidden_sample(params, spec, batch))
        os.replace(tmp, rdir / "diagnostics.npz")
    summary = _summary(cfg, ds, spec, params, history, status, message, test,
                       time.perf_counter() - t_start, train_time)
    _write_json(summary_path, summary)
    return summary


def _undo_start(rdir: Path, wrote_config: bool) -> None:
    """Delete what a fresh start wrote before it failed (no checkpoint was written)."""
    names = [n for n in RUN_FILES if n != "config.toml" or wrote_config]
    for name in names:
        (rdir / name).unlink(missing_ok=True)
    ck = rdir / "checkpoints"
    if ck.is_dir():
        remove_stale_temps(ck)
        if not any(ck.iterdir()):
            ck.rmdir()


def _summary(cfg: ExperimentConfig, ds: Any, spec: RNNSpec, params: Any, h: History,
             status: str, message: str, test: Mapping[str, float], wall: float,
             train_time: float) -> dict[str, Any]:
    return json_safe({
        "name": cfg.name,
        "label": cfg.label,
        "status": status,
        "message": message,
        "dataset": {"name": ds.name, "steps": int(ds.train.X.shape[1]),
                    "input_size": ds.input_size, "output_size": ds.output_size,
                    "task": ds.task, "train": len(ds.train), "val": len(ds.val),
                    "test": len(ds.test)},
        "baselines": dict(ds.baselines),
        "spec": spec.to_dict(),
        "num_parameters": num_parameters(params),
        "epochs": h.epoch,
        "steps": h.step,
        "monitor": h.monitor,
        "best_value": h.best_value,
        "best_epoch": h.best_epoch,
        "weights": h.weights,
        "weights_epoch": h.weights_epoch,
        "health": list(h.health),
        "final": h.epochs[-1] if h.epochs else None,
        "test": dict(test),
        "startup_s": h.startup_s,
        "fast_path": "on" if h.fast_path is None else f"off: {h.fast_path}",
        "wall_time_s": wall,
        "train_time_s": train_time,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "versions": versions(),
        "config": cfg.to_dict(),
    })


# ----------------------------------------------------------------------------- sweep cells


def run_cell(cell: Mapping[str, Any], *, base: Mapping[str, Any], out_dir: str) -> dict[str, Any]:
    """Run one sweep cell: ``base`` (an ExperimentConfig as a dict) with the cell's overrides,
    in ``out_dir/runs/<cell name>``, resuming whatever a killed attempt left there.

    This is the function the sweep sends to pool workers and Dask workers, so it takes and
    returns plain data only.
    """
    from .sweep import cell_name

    name = cell_name(cell)
    cfg = ExperimentConfig.from_dict(base).with_overrides(cell).replace(name=name)
    return run(cfg, Path(out_dir) / "runs" / name, resume=True, progress="off")


def cell_function(base: ExperimentConfig, out_dir: str | os.PathLike[str]
                  ) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A picklable ``f(cell) -> summary`` for :func:`rnnlab.sweep.run_sweep`."""
    return partial(run_cell, base=base.to_dict(), out_dir=os.fspath(out_dir))


def run_dir_of(out_dir: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """A finished sweep record's run directory (the name its summary gives, which stays right
    when the naming of cells changes)."""
    from .sweep import cell_name

    summary = record.get("summary")
    name = summary.get("name") if isinstance(summary, Mapping) else None
    return Path(out_dir) / "runs" / (str(name) if name else cell_name(record["cell"]))


def cell_dir(cell: Mapping[str, Any]) -> str:
    """Where :func:`run_cell` writes a cell, relative to the sweep directory:
    ``runs/<cell name>`` (``outputs=`` of :func:`rnnlab.sweep.run_sweep`)."""
    from .sweep import cell_name

    return f"runs/{cell_name(cell)}"


def check_cells(base: ExperimentConfig, cells: Sequence[Mapping[str, Any]], *,
                remote: bool = False, echo: Callable[[str], None] | None = None) -> None:
    """Check every cell of a sweep as its run would check it, before the first one runs.

    Each cell's config is built, its dataset loaded (once per distinct ``[data]`` table), its
    network made and :func:`rnnlab.train.check_fit` run on them: a ``T`` that does not divide
    the images, a label out of range, a monitor without a validation split, a forward-only
    algorithm on a bidirectional network... fail here, naming the cell, instead of after the
    cells before it have trained.  Nothing is written.

    With ``remote=True`` (the cells run on a cluster whose workers may hold data this machine
    lacks) a dataset that cannot be found or fetched here is skipped with a note to ``echo``;
    anything else still fails.
    """
    from ..data.download import DownloadError
    from .sweep import canonical_json

    built = []
    for c in cells:
        try:
            built.append((c, base.with_overrides(c)))
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"sweep cell {canonical_json(c)}: {exc}") from None
    groups: dict[str, list[tuple[Mapping[str, Any], ExperimentConfig]]] = {}
    for c, cfg in built:
        groups.setdefault(json.dumps(json_safe(cfg.to_dict()["data"]), sort_keys=True),
                          []).append((c, cfg))
    for members in groups.values():
        first = members[0][0]
        try:
            ds = members[0][1].data.load()
        except (FileNotFoundError, DownloadError, ImportError) as exc:
            if not remote:
                raise type(exc)(f"sweep cell {canonical_json(first)}: {exc}") from None
            if echo is not None:
                echo(f"note: {len(members)} cell(s) not checked here, their data is not on this "
                     f"machine ({type(exc).__name__}); the workers load it")
            continue
        except (ValueError, TypeError, OSError) as exc:
            raise type(exc)(f"sweep cell {canonical_json(first)}: {exc}") from None
        seen: set[str] = set()
        for c, cfg in members:
            try:
                spec = spec_for_dataset(ds, cfg.model.hidden_size, **cfg.model.spec_kwargs())
                train = {k: v for k, v in cfg.train.to_dict().items() if k != "seed"}
                key = json.dumps([spec.to_dict(), cfg.model.dtype, cfg.model.init, train],
                                 sort_keys=True, default=str)
                if key in seen:
                    continue
                seen.add(key)
                params = init_params(spec, np.random.default_rng(0), scheme=cfg.model.init,
                                     dtype=cfg.model.dtype)
                check_fit(params, spec, ds, cfg.train.replace(checkpoint_dir=None,
                                                              log_path=None))
            except (ValueError, TypeError, OSError) as exc:
                raise type(exc)(f"sweep cell {canonical_json(c)}: {exc}") from None


# ----------------------------------------------------------------------------- seed 000


@dataclass(frozen=True)
class Method:
    """A line of the seed-000 figure: its label and its config overrides."""

    label: str
    overrides: Mapping[str, Any]


# Each method's recipe, measured by the sweeps of docs/results.md ("Recipes"): configs/recipes/
METHODS: dict[str, Method] = {
    "tanh": Method("tanh, label at the last step", {
        "model.nonlinearity": "tanh", "model.init": "keras", "model.label_steps": "last",
        "train.lr": 3e-3}),
    "irnn": Method("IRNN (ReLU, W_hh = I)", {
        "model.nonlinearity": "relu", "model.init": "identity", "model.label_steps": "last",
        "train.lr": 1e-3}),
    "every-step": Method("tanh, label at every step", {
        "model.nonlinearity": "tanh", "model.init": "keras", "model.label_steps": "all",
        "train.lr": 3e-3}),
}
DIGITS_STEPS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
IMAGE_STEPS: tuple[int, ...] = (1, 4, 7, 14, 28, 56, 112)


def timesteps_base(dataset: str = "digits", *, data_dir: str | None = None, epochs: int = 60,
                   hidden_size: int = 64, lr: float = 3e-3, batch_size: int = 32,
                   clip_norm: float = 1.0) -> ExperimentConfig:
    """The shared settings of the seed-000 experiment (measured to finish in minutes)."""
    return ExperimentConfig.from_dict({
        "name": f"timesteps-{dataset}",
        "model": {"hidden_size": hidden_size},
        "data": {"dataset": dataset, "data_dir": data_dir},
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "adam",
                  "schedule": "constant", "clip_norm": clip_norm, "progress": "off",
                  "checkpoint_every": 10},
    })


def timesteps_cells(steps: Sequence[int], methods: Sequence[str], seeds: Sequence[int]
                    ) -> list[dict[str, Any]]:
    """The sweep's cells, longest sequences first (so the two workers finish together)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid methods: {list(METHODS)}")
    cells = []
    for T in sorted(steps, reverse=True):
        for m in methods:
            for s in seeds:
                cells.append({"label": METHODS[m].label, **METHODS[m].overrides,
                              "data.steps": int(T), "train.seed": int(s),
                              "name": f"{m}-T{T}-seed{s}"})
    return cells


def accuracy_table(summaries: Sequence[Mapping[str, Any]], metric: str = "test_accuracy_last"
                   ) -> tuple[list[int], list[str], dict[tuple[str, int], list[float]]]:
    """Group ``summaries`` by (label, T): ``(steps, labels, values)``."""
    values: dict[tuple[str, int], list[float]] = {}
    labels: list[str] = []
    for s in summaries:
        v = (s.get("test") or {}).get(metric)
        if v is None:
            v = (s.get("test") or {}).get("test_accuracy")
        label = str(s.get("label") or s.get("name"))
        if label not in labels:
            labels.append(label)
        T = int(s["dataset"]["steps"])
        values.setdefault((label, T), []).append(math.nan if v is None else float(v))
    steps = sorted({T for _, T in values})
    return steps, labels, values


def format_table(summaries: Sequence[Mapping[str, Any]], metric: str = "test_accuracy_last"
                 ) -> str:
    """T x method: mean ± std of ``metric`` over seeds (n = number of seeds)."""
    steps, labels, values = accuracy_table(summaries, metric)
    width = max([len(lb) for lb in labels] + [12])
    head = f"{'T':>4}  {'D':>4}  " + "  ".join(f"{lb:>{width}}" for lb in labels)
    d_of = {int(s["dataset"]["steps"]): int(s["dataset"]["input_size"]) for s in summaries}
    lines = [head, "-" * len(head)]
    for T in steps:
        cells = []
        for lb in labels:
            v = np.array(values.get((lb, T), []), dtype=np.float64)
            if v.size == 0:
                cells.append(f"{'-':>{width}}")
                continue
            cells.append(f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f} (n={v.size})"
                         .rjust(width))
        lines.append(f"{T:>4}  {d_of.get(T, 0):>4}  " + "  ".join(cells))
    return "\n".join(lines)


def timesteps(
    dataset: str = "digits",
    *,
    data_dir: str | None = None,
    steps: Sequence[int] | None = None,
    methods: Sequence[str] = ("tanh", "irnn", "every-step"),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int | None = None,
    hidden_size: int = 64,
    jobs: int = 2,
    cluster: str | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Seed 000's experiment: test accuracy against the number of time steps ``T``.

    Runs ``methods x steps x seeds`` as one sweep in ``out`` (default
    ``runs/timesteps-<dataset>``; run again to resume), prints the table and writes
    ``accuracy_vs_T.png/.svg`` and ``gradient_norms.png/.svg`` there.

    Returns
    -------
    dict
        ``table`` (the printed text), ``figures`` (paths), ``report`` (the sweep's).
    """
    from . import plots, sweep

    if steps is None:
        steps = DIGITS_STEPS if dataset == "digits" else IMAGE_STEPS
    if epochs is None:
        epochs = 60 if dataset == "digits" else 3
    out_dir = Path(out) if out is not None else Path("runs") / f"timesteps-{dataset}"
    base = timesteps_base(dataset, data_dir=data_dir, epochs=epochs, hidden_size=hidden_size)
    cells = timesteps_cells(steps, methods, seeds)
    echo(f"seed 000: {dataset}, T in {sorted(steps)}, methods {list(methods)}, "
         f"seeds {list(seeds)}: {len(cells)} runs of {epochs} epochs (H={hidden_size}, Adam "
         f"lr={base.train.lr}, clip {base.train.clip_norm}) on "
         f"{cluster or f'{jobs} local process(es)'} -> {out_dir}")
    t0 = time.perf_counter()
    check_cells(base, cells, remote=cluster is not None, echo=echo)
    report = sweep.run_sweep(cell_function(base, out_dir), cells, out_dir, jobs=jobs,
                             cluster=cluster, overwrite=overwrite, echo=echo,
                             meta={"base": base.to_dict(), "experiment": "timesteps"},
                             outputs=cell_dir)
    summaries = [r["summary"] for r in report.records if r["status"] == "done"]
    if report.failed:
        echo(f"{len(report.failed)} run(s) failed: " + "; ".join(
            f"{r['hash'][:8]}: {r.get('error', '')}" for r in report.failed))
    if not summaries:
        raise RuntimeError("no run finished; nothing to tabulate")
    table = format_table(summaries)
    echo("\ntest accuracy (prediction after the last step), mean ± std over seeds:\n" + table)
    chance = summaries[0].get("baselines", {}).get("accuracy_chance")
    if chance is not None:
        echo(f"chance: {chance:.3f}")
    run_dirs = [run_dir_of(out_dir, r) for r in report.records if r["status"] == "done"]
    figs = plots.accuracy_vs_steps(run_dirs, out_dir / "accuracy_vs_T")
    gl = METHODS[methods[0]].label
    figs += plots.gradient_norms([d for d in run_dirs if (d / "diagnostics.npz").exists()],
                                 out_dir / "gradient_norms", label=gl, when="both")
    echo("figures: " + ", ".join(str(p) for p in figs))
    echo(f"wall time {time.perf_counter() - t0:.0f} s "
         f"({report.skipped} of {len(cells)} runs already done)")
    sys.stdout.flush()
    return {"table": table, "figures": figs, "report": report}


# ----------------------------------------------------------------------------- gradcheck


def _targets(spec: RNNSpec, rng: np.random.Generator, B: int, T: int) -> np.ndarray:
    lead = (B,) if spec.setup == "many_to_one" else (B, T)
    if spec.loss == "softmax_ce":
        return rng.integers(0, spec.output_size, size=lead)
    if spec.loss == "sigmoid_bce":
        return rng.uniform(0.0, 1.0, size=lead + (spec.output_size,))
    return rng.standard_normal(lead + (spec.output_size,))


def _kink_signature(params: Mapping[str, np.ndarray], spec: RNNSpec, cache: Any,
                    logits: np.ndarray) -> bytes:
    """The side of 0 of every ReLU pre-activation: finite differences are exact only if no
    perturbation moves one across the kink."""
    from ..core import cell

    signs = [(logits > 0).ravel()] if spec.loss == "relu_mse" else []
    for layer in range(spec.num_layers):
        inp = cache.inputs[layer]
        for d, p in enumerate(spec.layer_keys(layer)):
            hb = cache.hbufs[layer * spec.num_directions + d]
            Z = network.project(inp, params[f"{p}.W_xh"], params[f"{p}.b_h"]) \
                + cell.previous(hb, d == 1) @ params[f"{p}.W_hh"]                # eq. (5)
            signs.append((Z if cache.mask is None else Z[cache.mask]).ravel() > 0)
    return np.packbits(np.concatenate(signs)).tobytes()


def _torch_errors(spec: RNNSpec, params: Mapping[str, np.ndarray], X: np.ndarray,
                  Y: np.ndarray, h0: np.ndarray, lengths: np.ndarray | None,
                  grads: Any) -> dict[str, float]:
    """Max relative error of our gradients against PyTorch's autograd (same weights)."""
    import torch
    import torch.nn.functional as F

    from ..interop.torch import from_torch_state_dict, to_torch_state_dict
    from ..learning.diagnostics import relative_error

    B, T = X.shape[:2]
    rnn = torch.nn.RNN(spec.input_size, spec.hidden_size, num_layers=spec.num_layers,
                       nonlinearity=spec.nonlinearity, bidirectional=spec.bidirectional,
                       batch_first=True, dtype=torch.float64)
    fc = torch.nn.Linear(spec.hidden_size * spec.num_directions, spec.output_size,
                         dtype=torch.float64)
    sd = {k: torch.from_numpy(v) for k, v in to_torch_state_dict(params, spec).items()}
    rnn.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("rnn.")})
    fc.load_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("fc.")})
    x, h = torch.tensor(X, requires_grad=True), torch.tensor(h0, requires_grad=True)
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                         batch_first=True, enforce_sorted=False)
        seq_p, h_n = rnn(packed, h)
        seq, _ = torch.nn.utils.rnn.pad_packed_sequence(seq_p, batch_first=True, total_length=T)
    else:
        seq, h_n = rnn(x, h)
    if spec.setup == "many_to_one" and spec.label_steps == "last":
        top = torch.cat([h_n[-2], h_n[-1]], dim=1) if spec.bidirectional else h_n[-1]
        z, y = fc(top), torch.tensor(Y)
    else:
        z, y = fc(seq), torch.tensor(Y)
        if spec.setup == "many_to_one":                    # the label at every step
            y = y[:, None].expand((B, T) + tuple(y.shape[1:]))
        keep = torch.ones((B, T), dtype=torch.bool) if lengths is None else \
            torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
        z, y = z[keep], y[keep]
    loss = {"softmax_ce": lambda: F.cross_entropy(z, y),
            "sigmoid_bce": lambda: F.binary_cross_entropy_with_logits(z, y),
            "identity_mse": lambda: F.mse_loss(z, y),
            "relu_mse": lambda: F.mse_loss(torch.relu(z), y)}[spec.loss]()
    loss.backward()
    named = [(f"rnn.{k}", p) for k, p in rnn.named_parameters()] + \
        [(f"fc.{k}", p) for k, p in fc.named_parameters()]
    theirs = from_torch_state_dict({k: p.grad for k, p in named}, spec)
    out = {k: relative_error(grads.params[k], v / 2 if k.endswith("b_h") else v, 1e-5)
           for k, v in theirs.items()}       # bias_ih and bias_hh each get dL/db_h: halve
    assert x.grad is not None and h.grad is not None
    out["X"] = relative_error(grads.X, x.grad.numpy(), 1e-5)
    out["h0"] = relative_error(grads.h0, h.grad.numpy(), 1e-5)
    return out


def _fd_problem(spec: RNNSpec, seed: int, masked: bool) -> dict[str, Any]:
    """One random float64 problem, its backward gradients and finite differences; ``crossed``
    tells whether a perturbation moved a ReLU pre-activation across its kink."""
    from ..learning.diagnostics import finite_difference

    B, T, D, H = 3, 5, spec.input_size, spec.hidden_size
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng, dtype=np.float64)
    X = rng.standard_normal((B, D) if spec.setup == "one_to_many" else (B, T, D))
    Y = _targets(spec, rng, B, T)
    h0 = 0.5 * rng.standard_normal((spec.num_layers * spec.num_directions, B, H))
    lengths = np.array([T, 2, T - 1]) if masked else None
    steps = T if spec.setup == "one_to_many" else None
    out, cache = network.forward(params, X, spec, h0=h0, lengths=lengths, steps=steps)
    smooth = spec.nonlinearity != "relu" and spec.loss != "relu_mse"
    base = None if smooth else _kink_signature(params, spec, cache, out.logits)
    crossed = False

    def f() -> float:
        nonlocal crossed
        o, c = network.forward(params, X, spec, h0=h0, lengths=lengths, steps=steps)
        if base is not None and _kink_signature(params, spec, c, o.logits) != base:
            crossed = True
        return network.loss_and_grad(spec, o, Y, lengths=lengths).value

    res = network.loss_and_grad(spec, out, Y, lengths=lengths)
    g = network.backward(params, res.dz, cache)
    fd = {k: finite_difference(f, p) for k, p in params.items()}
    fd["X"], fd["h0"] = finite_difference(f, X), finite_difference(f, h0)
    assert g.X is not None
    return {"params": params, "X": X, "Y": Y, "h0": h0, "lengths": lengths, "grads": g,
            "ours": {**g.params, "X": g.X, "h0": g.h0}, "fd": fd, "crossed": crossed}


def gradient_check(*, nonlinearity: str = "tanh", loss: str = "softmax_ce",
                   setup: str = "many_to_one", label_steps: str = "last", feed: str = "every",
                   layers: int = 1, bidirectional: bool = False, masked: bool = False,
                   seed: int = 0, use_torch: bool = True
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """Max relative error per gradient of a small float64 problem (B=3, T=5, D=3, H=4, O=3)
    against fourth-order finite differences (eq. 22) and, where importable, PyTorch.

    Returns ``(rows, notes)``: one row per parameter plus ``X`` and ``h0``, with ``fd`` and
    ``torch`` (None where PyTorch was not compared).  A ReLU problem whose finite differences
    would cross a kink is redrawn with the next seed (and a note says so).
    """
    from ..learning.diagnostics import relative_error

    spec = RNNSpec(3, 4, 3, num_layers=layers, bidirectional=bidirectional,
                   nonlinearity=nonlinearity, loss=loss, setup=setup, label_steps=label_steps,
                   feed=feed)
    notes: list[str] = []
    for attempt in range(seed, seed + 50):
        pb = _fd_problem(spec, attempt, masked)
        if not pb["crossed"]:
            break
    else:
        raise RuntimeError("every seed tried moved a ReLU pre-activation across 0")
    if attempt != seed:
        notes.append(f"seed {attempt} used: smaller seeds put a ReLU kink within the "
                     "finite-difference step")
    rows = [{"name": k, "shape": tuple(v.shape), "fd": relative_error(v, pb["fd"][k], 1e-5)}
            for k, v in pb["ours"].items()]
    theirs: dict[str, float] = {}
    if use_torch:
        reason = None
        if nonlinearity not in ("tanh", "relu"):
            reason = f"torch.nn.RNN has no {nonlinearity!r} nonlinearity"
        elif setup == "one_to_many":
            reason = "torch.nn.RNN has no one_to_many set-up"
        if reason is None:
            try:
                theirs = _torch_errors(spec, pb["params"], pb["X"], pb["Y"], pb["h0"],
                                       pb["lengths"], pb["grads"])
            except ImportError:
                reason = "PyTorch is not installed"
        if reason:
            notes.append(f"PyTorch not compared: {reason}")
    for r in rows:
        r["torch"] = theirs.get(str(r["name"]))
    return rows, notes
