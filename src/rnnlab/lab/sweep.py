"""Sweeps: a grid of config overrides run in a local process pool or on a Dask cluster.

A *cell* is a plain JSON-able dict of config overrides (``{"data.steps": 8, "train.seed": 1}``);
its identity is :func:`cell_hash`, the SHA-256 of its canonical JSON (sorted keys, no spaces).
Every finished cell is appended as one line to ``<out>/results.jsonl``::

    {"hash": "...", "cell": {...}, "status": "done", "summary": {...}, "elapsed_s": 12.3, ...}

Each line is one ``os.write`` on a file opened with ``O_APPEND``, followed by ``fsync``, so lines
never interleave and a finished cell is on disk before the next is reported.  Running the same
sweep again reads the file and skips every cell already ``done`` (failed and interrupted cells
run again).

Where cells run:

* ``jobs=1``: in this process, one after another.
* ``jobs=N``: a ``ProcessPoolExecutor`` of N spawned workers with at most N cells in flight.  A
  worker that dies (SIGKILL, out of memory) breaks the pool: it is rebuilt and the cells that
  were in flight are resubmitted, each at most ``retries`` times.
* ``cluster="local-dask"``: a Dask ``LocalCluster`` of N single-threaded worker processes on
  127.0.0.1; ``cluster="tcp://host:8786"`` or a scheduler file: an existing Dask cluster.  Cells
  are submitted with ``retries=`` (the scheduler also re-runs a task whose worker died, up to its
  ``allowed-failures``) and read with ``as_completed``; each future is released as soon as its
  result is written, so the scheduler never recomputes a finished cell whose worker later dies.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..train.files import DirectoryLock

__all__ = [
    "OUTPUTS",
    "ResultsFile",
    "SweepReport",
    "canonical_json",
    "cell_hash",
    "cell_name",
    "expand",
    "format_duration",
    "grid",
    "results_table",
    "run_sweep",
    "shown_keys",
]

RESULTS = "results.jsonl"
META = "sweep.json"
OUTPUTS = "outputs.jsonl"
"""The sweep's record of the paths (relative to its directory) it has handed to cells, each
created by the sweep: ``overwrite`` deletes exactly these, ``results.jsonl`` and ``sweep.json``."""
CellFn = Callable[[Mapping[str, Any]], Any]


# ----------------------------------------------------------------------------- cells


def canonical_json(cell: Mapping[str, Any]) -> str:
    """The cell as JSON with sorted keys and no whitespace (ValueError if not JSON-able)."""
    if not isinstance(cell, Mapping):
        raise TypeError(f"a sweep cell must be a dict of overrides; got {type(cell).__name__}")
    try:
        return json.dumps(cell, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sweep cell {cell!r} is not plain JSON data: {exc}") from None


def cell_hash(cell: Mapping[str, Any]) -> str:
    """A stable 16-hex-digit identity of ``cell`` (SHA-256 of :func:`canonical_json`)."""
    return hashlib.sha256(canonical_json(cell).encode()).hexdigest()[:16]


# short names of config keys, for run-folder names, tables and figure legends
SHORT_KEYS: dict[str, str] = {"data.steps": "T", "train.seed": "seed", "model.hidden_size": "H",
          "model.num_layers": "L", "train.lr": "lr", "train.batch_size": "B",
          "train.epochs": "ep", "data.seed": "dseed", "train.k1": "k1", "train.k2": "k2",
          "train.clip_norm": "clip"}


def _slug(text: str, limit: int, lower: bool = True) -> str:
    """Letters (lower-case unless ``lower=False``), digits, ``.`` and ``-``; cut at a ``-`` to
    at most ``limit``."""
    s = re.sub(r"[^A-Za-z0-9.]+", "-", text.lower() if lower else text).strip("-.")
    if len(s) > limit:
        cut = s[:limit + 1].rsplit("-", 1)[0] if "-" in s[:limit + 1] else s[:limit]
        s = cut.strip("-.")
    return s


def cell_name(cell: Mapping[str, Any]) -> str:
    """A short, safe and unique directory name: a readable part, then ``-<hash8>``.

    The readable part is the cell's ``name`` if it has one, else its label (a slug of at most 24
    characters, lower case) and its other values with short keys (``T8``, ``seed1``, ``H32``,
    ``lr0.01``; string values as they are when there is no label), in letters, digits, ``.`` and
    ``-``, at most 48 characters: ``tanh-label-at-the-last-T64-seed0-1a2b3c4d``.  The hash of
    the whole cell keeps names unique.
    """
    h = cell_hash(cell)[:8]
    if isinstance(cell.get("name"), str):
        text = _slug(cell["name"], 48, lower=False)
        return f"{text}-{h}" if text else cell_hash(cell)
    parts: list[str] = []
    label = cell.get("label")
    if isinstance(label, str) and _slug(label, 24):
        parts.append(_slug(label, 24))
    for k, v in cell.items():
        if k in ("label", "name") or isinstance(v, Mapping | list) or v is None:
            continue
        short = SHORT_KEYS.get(k, k.rsplit(".", 1)[-1].replace("_", ""))
        if isinstance(v, bool):
            parts.append(short if v else f"no{short}")
        elif isinstance(v, int | float):
            parts.append(f"{short}{v:g}" if isinstance(v, float) else f"{short}{v}")
        elif isinstance(v, str) and not isinstance(label, str):
            parts.append(_slug(v, 16))
    text = _slug("-".join(p for p in parts if p), 48, lower=False)
    return f"{text}-{h}" if text else cell_hash(cell)


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``axes`` (key -> values), first key slowest."""
    for k, values in axes.items():
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
            raise TypeError(f"grid values for {k!r} must be a list; got {values!r}")
        if len(values) == 0:
            raise ValueError(f"grid axis {k!r} has no values")
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(axes[k] for k in keys))]


def expand(axes: Mapping[str, Sequence[Any]],
           variants: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every variant (a dict of overrides, e.g. a method) crossed with :func:`grid`."""
    cells = []
    for v in variants or [{}]:
        for g in grid(axes):
            clash = sorted(set(v) & set(g))
            if clash:
                raise ValueError(f"keys {clash} are set both by a variant and by the grid")
            cells.append({**v, **g})
    return cells


# ----------------------------------------------------------------------------- results file


class ResultsFile:
    """The JSONL of finished cells: atomic appends, tolerant reads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        """Every complete, parseable line (a torn last line is ignored)."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and "hash" in rec:
                    out.append(rec)
        return out

    def done(self) -> dict[str, dict[str, Any]]:
        """hash -> the record of every cell finished with status ``done``."""
        return {r["hash"]: r for r in self.read() if r.get("status") == "done"}

    def append(self, record: Any) -> None:
        """One line, one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``."""
        data = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:                       # a torn last line (a crash mid-write): end it first
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        data = b"\n" + data
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- running


@dataclass
class SweepReport:
    """What :func:`run_sweep` returns: one record per requested cell, in the cells' order."""

    records: list[dict[str, Any]] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    wall_time_s: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] != "done"]


def _limit_threads() -> Any:
    """One BLAS thread per worker (the pool provides the parallelism); a no-op without
    threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(1)


def _watch_parent(ppid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != ppid:           # the driver died: do not linger as an orphan
            os._exit(1)


def _pool_worker_init(ppid: int) -> None:
    _limit_threads()
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()


def _call(fn: CellFn, cell: Mapping[str, Any]) -> dict[str, Any]:
    """Run one cell in a worker; plain data back (the result, timing, where it ran)."""
    _limit_threads()
    t0 = time.perf_counter()
    out = fn(cell)
    return {"summary": out, "elapsed_s": time.perf_counter() - t0,
            "host": socket.gethostname(), "pid": os.getpid()}


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Driver:
    """Turns worker outcomes into results lines and progress messages (with an ETA)."""

    def __init__(self, results: ResultsFile, cells: Sequence[Mapping[str, Any]],
                 done_before: int, echo: Callable[[str], None] | None) -> None:
        self.results, self.total, self.count = results, len(cells), done_before
        self.echo = echo
        self.shown = shown_keys(cells)
        self.records: dict[str, dict[str, Any]] = {}
        self.t0 = time.perf_counter()
        self.todo = self.total - done_before      # cells this session runs
        self.finished = 0                         # of them, ended (done or not)

    def finish(self, h: str, cell: Mapping[str, Any], outcome: Mapping[str, Any] | None,
               error: str | None, attempts: int) -> None:
        if h in self.records and self.records[h]["status"] == "done":
            return                                   # never twice
        rec: dict[str, Any] = {"hash": h, "cell": dict(cell)}
        if outcome is not None:
            summary = outcome["summary"]
            status = "done"
            if isinstance(summary, Mapping) and summary.get("status") == "interrupted":
                status = "interrupted"
            rec.update(status=status, summary=summary, elapsed_s=outcome["elapsed_s"],
                       host=outcome["host"], pid=outcome["pid"])
        else:
            rec.update(status="failed", error=error)
        rec.update(attempts=attempts, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self.results.append(rec)
        self.records[h] = rec
        if rec["status"] == "done":
            self.count += 1
        self.finished += 1
        if self.echo is not None:
            line = _progress_line(rec, self.count, self.total, self.shown)
            left = self.todo - self.finished
            if left > 0:            # wall time per finished cell (parallel workers included)
                elapsed = time.perf_counter() - self.t0
                line += f"  ETA {format_duration(elapsed / self.finished * left)}"
            self.echo(line)


def shown_keys(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys worth printing: those that vary, minus those an earlier shown key determines
    (a method's overrides follow from its label); all keys if none varies."""
    keys = list(dict.fromkeys(k for c in cells for k in c))

    def val(c: Mapping[str, Any], k: str) -> str:
        return json.dumps(c.get(k), sort_keys=True)

    shown: list[str] = []
    for k in keys:
        if k == "name" or len({val(c, k) for c in cells}) < 2:
            continue
        determined = any(len({(val(c, j), val(c, k)) for c in cells})
                         == len({val(c, j) for c in cells}) for j in shown)
        if not determined:
            shown.append(k)
    return shown or keys


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``2 h 05 min``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _test_metrics(summary: Any) -> dict[str, float]:
    """The test metrics a table shows: the last-step accuracy/loss where recorded, else the
    first two."""
    if not isinstance(summary, Mapping) or not isinstance(summary.get("test"), Mapping):
        return {}
    test = summary["test"]
    keys = ([k for k in test if k.endswith("accuracy_last")]
            or [k for k in ("test_accuracy", "test_mse", "test_perplexity", "test_loss")
                if k in test][:2] or list(test)[:2])
    return {k: test[k] for k in keys if isinstance(test[k], int | float)}


def results_table(records: Sequence[Mapping[str, Any]]) -> str:
    """One line per cell: the keys that vary, the status, the test metrics and the time."""
    if not records:
        return "(no cells)"
    shown = shown_keys([r["cell"] for r in records])
    metrics = list(dict.fromkeys(k for r in records for k in _test_metrics(r.get("summary"))))
    head = [k.rsplit(".", 1)[-1] for k in shown] + ["status"] + metrics + ["time"]
    rows = []
    for r in records:
        row = [str(r["cell"].get(k, "")) for k in shown] + [str(r.get("status", ""))]
        tm = _test_metrics(r.get("summary"))
        row += [f"{tm[m]:.4f}" if m in tm else "-" for m in metrics]
        row.append(format_duration(r["elapsed_s"]) if "elapsed_s" in r else "-")
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


def _progress_line(rec: Mapping[str, Any], count: int, total: int, shown: Sequence[str]) -> str:
    cell = ", ".join(f"{k.rsplit('.', 1)[-1]}={rec['cell'][k]}" for k in shown
                     if k in rec["cell"])
    if rec["status"] != "done":
        return f"[{count}/{total}] {rec['status']} {cell}: {rec.get('error') or ''}".rstrip(": ")
    s = rec.get("summary")
    shown = ""
    if isinstance(s, Mapping) and isinstance(s.get("test"), Mapping):
        keys = [k for k in s["test"] if k.endswith("accuracy_last")] or list(s["test"])[:2]
        shown = "  " + " ".join(
            f"{k} {s['test'][k]:.4f}" for k in keys if isinstance(s["test"][k], float))
    return f"[{count}/{total}] {cell}{shown} ({rec.get('elapsed_s', 0):.1f} s)"


def _run_inline(fn: CellFn, todo: Sequence[tuple[str, dict[str, Any]]], drv: _Driver) -> None:
    for h, cell in todo:
        try:
            outcome = _call(fn, cell)
        except Exception as exc:              # a cell's own error: recorded, the sweep goes on
            drv.finish(h, cell, None, _error(exc), 1)
        else:
            drv.finish(h, cell, outcome, None, 1)


def _run_pool(fn: CellFn, todo: Sequence[tuple[str, dict[str, Any]]], drv: _Driver, jobs: int,
              retries: int) -> None:
    queue: deque[tuple[str, dict[str, Any]]] = deque(todo)
    attempts: dict[str, int] = {}
    # A dead worker breaks the whole pool and fails every cell in flight, and the pool does
    # not say whose worker died.  So a death is counted against a cell only when it ran alone:
    # the cells in flight when a pool broke run alone from then on, one at a time.
    deaths: dict[str, int] = {}
    alone: set[str] = set()
    ctx = multiprocessing.get_context("spawn")
    while queue:
        retry: list[tuple[str, dict[str, Any]]] = []
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                   initializer=_pool_worker_init, initargs=(os.getpid(),))
        inflight: dict[Any, tuple[str, dict[str, Any]]] = {}
        broken = False
        suspects: set[str] = set()             # the cells in flight when this pool broke
        try:
            while inflight or (queue and not broken):
                while queue and not broken and len(inflight) < jobs and not (
                        inflight and (queue[0][0] in alone
                                      or any(h in alone for h, _ in inflight.values()))):
                    h, cell = queue.popleft()
                    attempts[h] = attempts.get(h, 0) + 1
                    try:
                        inflight[pool.submit(_call, fn, cell)] = (h, cell)
                    except BrokenProcessPool:
                        broken = True
                        retry.append((h, cell))
                if not inflight:
                    break
                finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in finished:
                    h, cell = inflight.pop(fut)
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        if not broken:                 # the first news of this break
                            broken = True
                            suspects = {h, *(x for x, _ in inflight.values())}
                        if len(suspects) > 1:           # whose worker died is not known
                            alone.update(suspects)
                            retry.append((h, cell))
                            continue
                        alone.add(h)
                        deaths[h] = deaths.get(h, 0) + 1
                        if deaths[h] > retries:
                            drv.finish(h, cell, None, "its worker process died "
                                       f"{deaths[h]} time(s)", attempts[h])
                        else:
                            retry.append((h, cell))
                    except Exception as exc:
                        drv.finish(h, cell, None, _error(exc), attempts[h])
                    else:
                        drv.finish(h, cell, outcome, None, attempts[h])
                    del fut
        except BaseException:                  # Ctrl-C, SIGTERM: leave without waiting
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if retry and drv.echo is not None:
            drv.echo(f"a worker process died; restarting the pool and resubmitting "
                     f"{len(retry)} cell(s)")
        queue.extendleft(reversed(retry))


def _connect(cluster: str, jobs: int, timeout: float) -> tuple[Any, Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("--cluster needs Dask distributed: pip install 'rnnlab[distributed]'"
                          ) from None
    if cluster == "local-dask":
        local = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                             host="127.0.0.1", dashboard_address=None)
        return Client(local, timeout=timeout), local
    if "://" in cluster or re.fullmatch(r"[\w.\-]+:\d+", cluster):
        return Client(cluster, timeout=timeout), None
    path = Path(cluster)
    if not path.is_file():
        raise FileNotFoundError(f"--cluster {cluster!r} is neither 'local-dask', a scheduler "
                                "address (tcp://host:8786) nor an existing scheduler file")
    return Client(scheduler_file=str(path), timeout=timeout), None


def _run_dask(fn: CellFn, todo: Sequence[tuple[str, dict[str, Any]]], drv: _Driver, jobs: int,
              retries: int, cluster: str, timeout: float) -> None:
    client, local = _connect(cluster, jobs, timeout)   # first: its ImportError names the extra
    from distributed import as_completed

    try:
        ac = as_completed()
        pending: dict[str, tuple[str, dict[str, Any]]] = {}
        for h, cell in todo:
            key = f"rnnlab-cell-{h}-{uuid.uuid4().hex[:8]}"
            ac.add(client.submit(_call, fn, cell, key=key, retries=retries, pure=False))
            pending[key] = (h, cell)
        for fut in ac:
            h, cell = pending.pop(fut.key)
            try:
                outcome = fut.result()
            except Exception as exc:
                drv.finish(h, cell, None, _error(exc), retries + 1)
            else:
                drv.finish(h, cell, outcome, None, 1)
            fut.release()                      # drop it: a dead worker must not recompute it
            del fut
    finally:
        client.close()
        if local is not None:
            local.close()


def _read_lines(path: Path) -> list[Any]:
    """The complete, parseable JSON lines of ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _inside(out: Path, rel: object) -> Path | None:
    """``out / rel`` if ``rel`` is a relative path that stays inside ``out``, else None."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        return None
    p = out / rel
    try:
        p.resolve().relative_to(out.resolve())
    except ValueError:
        return None
    return None if p.resolve() == out.resolve() else p


def _recorded_outputs(out: Path, outputs: Callable[[Mapping[str, Any]], str] | None
                      ) -> list[Path]:
    """Every path the sweep in ``out`` recorded writing: those in ``outputs.jsonl``, or, for a
    sweep of an earlier version that kept no such record, ``outputs(cell)`` of each cell its
    results file lists (named by the cell's hash: nobody else's)."""
    rels: list[object] = list(_read_lines(out / OUTPUTS))
    if outputs is not None and not (out / OUTPUTS).exists():      # kept no record
        for rec in ResultsFile(out / RESULTS).read():
            if isinstance(rec.get("cell"), Mapping):
                try:
                    rels.append(outputs(rec["cell"]))
                except (TypeError, ValueError, KeyError):
                    continue
    paths: dict[Path, None] = {}
    for rel in rels:
        p = _inside(out, rel)
        if p is not None:
            paths[p] = None
    return list(paths)


def _forget(out: Path, outputs: Callable[[Mapping[str, Any]], str] | None,
            echo: Callable[[str], None] | None) -> None:
    """``overwrite``: delete what the sweep in ``out`` wrote, nothing else."""
    import shutil

    removed = 0
    for p in _recorded_outputs(out, outputs):
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            with DirectoryLock(p, "run directory"):       # nobody is running it meanwhile
                shutil.rmtree(p)
        else:
            continue
        removed += 1
        parent = p.parent                 # directories left empty by it (runs/), up to out
        while parent != out and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    for name in (RESULTS, META, OUTPUTS, f".{META}.tmp"):
        (out / name).unlink(missing_ok=True)
    if echo is not None and removed:
        echo(f"--overwrite: removed {removed} output(s) of the earlier sweep in {out}")


def _prepare_out(out: Path, meta: Mapping[str, Any] | None, overwrite: bool,
                 outputs: Callable[[Mapping[str, Any]], str] | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
    meta_path = out / META
    if overwrite:
        _forget(out, outputs, echo)
    if meta is None:
        return
    data = json.loads(json.dumps(meta, sort_keys=True))
    if meta_path.exists() and (out / RESULTS).exists():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
        if old != data:
            raise ValueError(f"{out} holds a sweep run with different base settings "
                             f"({META} differs); use another output directory or --overwrite")
    tmp = out / f".{META}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)


def run_sweep(
    fn: CellFn,
    cells: Iterable[Mapping[str, Any]],
    out: str | os.PathLike[str],
    *,
    jobs: int = 1,
    cluster: str | None = None,
    retries: int = 2,
    overwrite: bool = False,
    meta: Mapping[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
    timeout: float = 60.0,
    outputs: Callable[[Mapping[str, Any]], str] | None = None,
) -> SweepReport:
    """Run ``fn(cell)`` for every cell not yet done in ``out/results.jsonl``.

    One sweep at a time writes ``out``: it is locked for the whole call
    (:class:`rnnlab.train.files.DirectoryLock`); a second sweep into it gets ``LockedError``
    naming the holder, before anything runs.

    Parameters
    ----------
    fn : callable
        ``fn(cell) -> JSON-able result`` (a summary dict); must be picklable (a module-level
        function or a ``functools.partial`` of one) for pools and clusters.
    cells : iterable of dict
        Plain JSON data; duplicates (same hash) run once.
    out : path
        The sweep directory: ``results.jsonl``, ``sweep.json`` (``meta``), and whatever ``fn``
        writes.
    jobs : int
        Local worker processes (``1``: inline), or the LocalCluster's workers.
    cluster : str, optional
        ``"local-dask"``, a Dask scheduler address or a scheduler file.
    retries : int
        Extra attempts for a cell whose worker died (Dask: also for exceptions).
    overwrite : bool
        Forget the earlier sweep in ``out`` first: delete its ``results.jsonl``, ``sweep.json``
        and the outputs it recorded handing to its cells (``outputs.jsonl``), nothing else.
    meta : dict, optional
        Settings every cell shares (the base config): stored in ``sweep.json``; resuming with
        different ones is a ValueError.
    echo : callable, optional
        Receives one progress line per finished cell, with an estimate of the time left.
    timeout : float
        Seconds to wait when connecting to a Dask cluster.
    outputs : callable, optional
        ``outputs(cell) -> str``: the path, relative to ``out``, that ``fn`` writes for a cell
        (``"runs/<cell name>"`` for :func:`rnnlab.experiments.cell_function`).  Before the
        cells run, each such path that does not exist yet is recorded in ``outputs.jsonl`` as
        the sweep's own; ``overwrite`` deletes those.  A path that already exists and is not on
        record is not the sweep's: it is never deleted.

    Returns
    -------
    SweepReport
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1; got {jobs!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0; got {retries!r}")
    t0 = time.perf_counter()
    unique: dict[str, dict[str, Any]] = {}
    for c in cells:
        unique.setdefault(cell_hash(c), dict(c))
    if not unique:
        raise ValueError("the sweep has no cells")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"sweep directory {str(out_dir)!r} exists and is not a "
                                 "directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(out_dir, "sweep directory"):
        _prepare_out(out_dir, meta, overwrite, outputs, echo)
        results = ResultsFile(out_dir / RESULTS)
        done = results.done()
        todo = [(h, c) for h, c in unique.items() if h not in done]
        if outputs is not None:
            _record_outputs(out_dir, outputs, [c for _, c in todo])
        drv = _Driver(results, list(unique.values()), len(unique) - len(todo), echo)
        if echo is not None and len(todo) < len(unique):
            echo(f"{len(unique) - len(todo)} of {len(unique)} cells already done in "
                 f"{results.path}; running the other {len(todo)}")
        if todo:
            if cluster is not None:
                _run_dask(fn, todo, drv, jobs, retries, cluster, timeout)
            elif jobs == 1:
                _run_inline(fn, todo, drv)
            else:
                _run_pool(fn, todo, drv, min(jobs, len(todo)), retries)
    records = []
    for h, c in unique.items():
        if h in done:
            records.append(done[h])
        else:
            records.append(drv.records.get(h, {"hash": h, "cell": c, "status": "failed",
                                               "error": "no result"}))
    return SweepReport(records, ran=len(todo), skipped=len(unique) - len(todo),
                       wall_time_s=time.perf_counter() - t0)


def _record_outputs(out: Path, outputs: Callable[[Mapping[str, Any]], str],
                    cells: Sequence[Mapping[str, Any]]) -> None:
    """Record as the sweep's own each output path of ``cells`` that does not exist yet."""
    known = {p for p in _read_lines(out / OUTPUTS) if isinstance(p, str)}
    log = ResultsFile(out / OUTPUTS)
    (out / OUTPUTS).touch()              # the record exists, empty if nothing is the sweep's
    for cell in cells:
        rel = outputs(cell)
        if _inside(out, rel) is None:
            raise ValueError(f"the output path {rel!r} of sweep cell {canonical_json(cell)} is "
                             f"not inside the sweep directory {str(out)!r}")
        if rel not in known and not (out / rel).exists():
            log.append(rel)
            known.add(rel)


# ----------------------------------------------------------------------------- sweep files


def config_cells(base: Any, axes: Mapping[str, Sequence[Any]],
                 variants: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Cells over an :class:`rnnlab.config.ExperimentConfig`: keys resolved to dotted keys
    (``T`` -> ``data.steps``), every cell checked by building its config (errors name it)."""
    from .config import resolve_key

    def norm(d: Mapping[str, Any], what: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            full = resolve_key(str(k))
            if full in out:
                raise ValueError(f"{what} sets {full!r} twice ({k!r})")
            out[full] = v
        return out

    cells = expand(norm(axes, "the grid"), [norm(v, "a variant") for v in variants or [{}]])
    for c in cells:
        try:
            base.with_overrides(c)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"sweep cell {canonical_json(c)}: {exc}") from None
    return cells


def load_sweep(path: str | os.PathLike[str]) -> tuple[Any, dict[str, list[Any]],
                                                      list[dict[str, Any]], str]:
    """Read a sweep file: an experiment config plus a ``[sweep]`` table::

        [sweep]
        name = "hidden-vs-T"                       # default output: runs/<name>
        grid = { T = [4, 8, 16], "model.hidden_size" = [32, 64], seed = [0, 1] }

        [[sweep.variants]]                        # optional: crossed with the grid
        label = "tanh"

    Returns ``(base config, grid, variants, name)``.
    """
    from .config import ExperimentConfig, check_name, read_mapping

    data = read_mapping(path)
    sw = data.pop("sweep", {})
    if not isinstance(sw, Mapping):
        raise ValueError(f"{path}: [sweep] must be a table")
    valid = ["grid", "name", "variants"]
    unknown = sorted(set(sw) - set(valid))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} in [sweep]; valid keys are {valid}")
    axes = sw.get("grid", {})
    if not isinstance(axes, Mapping):
        raise ValueError(f"{path}: sweep.grid must be a table of KEY = [values]")
    axes = {k: v if isinstance(v, list) else [v] for k, v in axes.items()}
    variants = sw.get("variants", [])
    if not isinstance(variants, list) or not all(isinstance(v, Mapping) for v in variants):
        raise ValueError(f"{path}: sweep.variants must be an array of tables")
    try:
        base = ExperimentConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{path}: {exc}") from None
    name = sw.get("name") or Path(path).stem
    try:
        check_name(name, "the sweep's name")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc} (it names the output directory runs/<name>; set "
                         "[sweep] name or rename the file)") from None
    return base, dict(axes), [dict(v) for v in variants], str(name)
