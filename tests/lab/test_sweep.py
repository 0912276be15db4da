"""Sweeps: cells and hashes, the results file, resuming, and killed workers in a local pool, a
Dask LocalCluster on 127.0.0.1 and a scheduler + workers started as separate processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from rnnlab import sweep
from rnnlab.sweep import ResultsFile, cell_hash, cell_name, expand, grid, run_sweep

TESTS = str(Path(__file__).parents[1])      # tests/: this module is lab.test_sweep


# --- cell functions (module level: pool and Dask workers import them from this file) ---------


def square(cell):
    """Count calls in a file per cell (so tests see what ran), return x^2."""
    log = Path(cell["log"])
    with open(log, "a") as f:
        f.write(f"{cell['x']}\n")
    if cell.get("fail"):
        raise ValueError(f"cell {cell['x']} fails on purpose")
    return {"value": cell["x"] ** 2, "pid": os.getpid()}


def kill_once(cell):
    """SIGKILL the worker process running this cell, the first time only (marker file)."""
    marker = Path(cell["marker"])
    if cell.get("kill") and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(cell.get("sleep", 0.0))
    return {"value": cell["x"] ** 2, "pid": os.getpid()}


def kill_always(cell):
    if cell.get("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"value": cell["x"]}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def exactly_once(out: Path, n: int) -> list[dict]:
    recs = lines(out / "results.jsonl")
    done = [r for r in recs if r["status"] == "done"]
    assert len(done) == n
    assert len({r["hash"] for r in done}) == n, "a cell was recorded twice"
    for r in done:
        assert r["summary"]["value"] == r["cell"]["x"] ** 2
        assert r["hash"] == cell_hash(r["cell"])
    return done


# --- cells --------------------------------------------------------------------------------------


def test_grid_and_variants():
    cells = grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert cells[:2] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}] and len(cells) == 6
    v = expand({"T": [1, 2]}, [{"label": "tanh"}, {"label": "irnn", "init": "irnn"}])
    irnn = {"label": "irnn", "init": "irnn"}
    assert v == [{"label": "tanh", "T": 1}, {"label": "tanh", "T": 2},
                 {**irnn, "T": 1}, {**irnn, "T": 2}]
    with pytest.raises(ValueError, match=r"keys \['T'\] are set both"):
        expand({"T": [1]}, [{"T": 2}])
    with pytest.raises(TypeError, match="must be a list"):
        grid({"a": 3})
    with pytest.raises(ValueError, match="has no values"):
        grid({"a": []})


def test_cell_hash_is_stable_and_canonical():
    a = {"data.steps": 8, "train.seed": 1, "label": "tanh"}
    b = {"label": "tanh", "train.seed": 1, "data.steps": 8}
    assert cell_hash(a) == cell_hash(b)
    # the canonical JSON and its SHA-256 are part of the results format: pin them
    assert sweep.canonical_json(a) == '{"data.steps":8,"label":"tanh","train.seed":1}'
    assert cell_hash(a) == "02dcd743b509d000"
    assert cell_hash({"x": 1}) != cell_hash({"x": 2})
    assert cell_name(a) == f"tanh-T8-seed1-{cell_hash(a)[:8]}"


def test_cell_names_are_short_safe_and_unique():
    label = "tanh, label at the last step"
    cells = [{"label": label, "model.nonlinearity": "tanh", "model.init": "pytorch",
              "data.steps": T, "train.seed": s, "train.lr": lr, "model.bidirectional": b}
             for T in (1, 64) for s in (0, 1) for lr in (0.01, 3e-3) for b in (False, True)]
    names = [cell_name(c) for c in cells]
    assert len(set(names)) == len(cells)
    # at most 48 readable characters, cut at a dash: the flag that did not fit is left out
    assert names[0] == f"tanh-label-at-the-last-T1-seed0-lr0.01-{cell_hash(cells[0])[:8]}"
    for n in names:
        assert re.fullmatch(r"[A-Za-z0-9.-]+-[0-9a-f]{8}", n) and len(n) <= 48 + 9, n
        assert n.startswith("tanh-label-at-the-last")
    weird = {"label": "../../etc/passwd; rm -rf *", "data.dataset": "a b/c"}
    assert re.fullmatch(r"etc-passwd-rm-rf-[0-9a-f]{8}", cell_name(weird))
    assert cell_name({"name": "tanh-T64-seed0"}).startswith("tanh-T64-seed0-")
    assert cell_name({"model.nonlinearity": "relu", "train.lr": 0.001}).startswith(
        "relu-lr0.001-")
    with pytest.raises(ValueError, match="not plain JSON"):
        cell_hash({"x": float("nan")})
    with pytest.raises(ValueError, match="not plain JSON"):
        cell_hash({"x": object()})


def test_results_file_appends_lines_and_survives_a_torn_line(tmp_path):
    rf = ResultsFile(tmp_path / "r.jsonl")
    assert rf.read() == []
    rf.append({"hash": "a", "status": "done"})
    with open(rf.path, "a") as f:
        f.write('{"hash": "b", "sta')                  # a crash in the middle of a line
    assert [r["hash"] for r in rf.read()] == ["a"]
    rf.append({"hash": "c", "status": "done"})
    assert [r["hash"] for r in rf.read()] == ["a", "c"]
    assert set(rf.done()) == {"a", "c"}
    assert rf.path.read_text().count("\n") == 3          # the torn line was ended, not glued


# --- running -----------------------------------------------------------------------------------


def test_inline_sweep_resumes_and_retries_failed_cells(tmp_path):
    log = tmp_path / "calls.log"
    cells = [{"x": x, "log": str(log), "fail": x == 3} for x in range(5)]
    seen = []
    rep = run_sweep(square, cells + cells[:2], tmp_path / "out", echo=seen.append)
    assert rep.ran == 5 and rep.skipped == 0                # duplicates run once
    assert [r["cell"]["x"] for r in rep.failed] == [3]
    assert "ValueError: cell 3 fails on purpose" in rep.failed[0]["error"]
    assert len(seen) == 5 and seen[0].startswith("[1/5] x=0")
    assert log.read_text().split() == ["0", "1", "2", "3", "4"]
    # second run: only the failed cell runs again
    cells[3]["fail"] = False
    cells_again = [{**c, "fail": False} if c["x"] == 3 else c for c in cells]
    rep2 = run_sweep(square, cells_again, tmp_path / "out")
    assert rep2.ran == 1 and rep2.skipped == 4 and not rep2.failed
    assert log.read_text().split()[-1] == "3"
    exactly_once(tmp_path / "out", 5)


def test_resume_refuses_a_different_base(tmp_path):
    cells = [{"x": 1, "log": str(tmp_path / "l")}]
    run_sweep(square, cells, tmp_path / "out", meta={"base": {"lr": 1}})
    with pytest.raises(ValueError, match="different base settings"):
        run_sweep(square, cells, tmp_path / "out", meta={"base": {"lr": 2}})
    rep = run_sweep(square, cells, tmp_path / "out", meta={"base": {"lr": 2}}, overwrite=True)
    assert rep.ran == 1


def test_pool_rebuilds_after_a_killed_worker(tmp_path):
    marker = tmp_path / "killed"
    cells = [{"x": x, "marker": str(marker), "kill": x == 2, "sleep": 0.05} for x in range(6)]
    msgs = []
    rep = run_sweep(kill_once, cells, tmp_path / "out", jobs=2, echo=msgs.append)
    assert marker.exists(), "the worker was never killed"
    assert not rep.failed
    done = exactly_once(tmp_path / "out", 6)
    killer = next(r for r in done if r["cell"]["kill"])
    assert killer["attempts"] == 2 and killer["pid"] != int(marker.read_text())
    assert any("worker process died" in m for m in msgs)


def test_pool_gives_up_after_retries(tmp_path):
    cells = [{"x": 0, "kill": True}, {"x": 1}, {"x": 2}]
    rep = run_sweep(kill_always, cells, tmp_path / "out", jobs=2, retries=1)
    failed = {r["cell"]["x"]: r for r in rep.failed}
    assert 0 in failed and "died 2 time(s)" in failed[0]["error"]
    assert {r["cell"]["x"] for r in rep.records if r["status"] == "done"} >= {2}


class BreakingPool:
    """A stand-in for the process pool that makes a dead worker's timing certain: the cells in
    flight run when the driver waits on them, and a "kill" cell among them breaks the pool,
    failing every cell in flight with BrokenProcessPool, as a real pool's dead worker does."""

    def __init__(self, max_workers, **kw):
        self.pending, self.broken = [], False

    def submit(self, fn, *args):
        if self.broken:
            raise BrokenProcessPool("broken")
        fut = Future()
        self.pending.append((fut, fn, args))
        return fut

    def settle(self):
        if any(args[-1].get("kill") for _, _, args in self.pending):
            self.broken = True
            for fut, _, _ in self.pending:
                fut.set_exception(BrokenProcessPool("a worker died"))
        else:
            for fut, fn, args in self.pending:
                fut.set_result(fn(*args))
        self.pending = []

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def test_a_cell_in_flight_when_another_kills_the_pool_is_not_charged(tmp_path, monkeypatch):
    """A dead worker breaks the whole pool; the cell that shared it (here: in flight each time
    the other cell killed the pool) must not use up its retries for a death not its own."""
    pools = []

    def pool(**kw):
        pools.append(BreakingPool(**kw))
        return pools[-1]

    def wait(futs, return_when):
        pools[-1].settle()
        return set(futs), set()

    monkeypatch.setattr(sweep, "ProcessPoolExecutor", pool)
    monkeypatch.setattr(sweep, "wait", wait)
    cells = [{"x": 0, "kill": True}, {"x": 1}]
    rep = run_sweep(kill_always, cells, tmp_path / "out", jobs=2, retries=1)
    failed = {r["cell"]["x"]: r for r in rep.failed}
    assert set(failed) == {0} and "died 2 time(s)" in failed[0]["error"]
    assert [r["cell"]["x"] for r in rep.records if r["status"] == "done"] == [1]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="jobs must be an int >= 1"):
        run_sweep(square, [{"x": 1}], tmp_path, jobs=0)
    with pytest.raises(ValueError, match="no cells"):
        run_sweep(square, [], tmp_path)
    with pytest.raises(FileNotFoundError, match="neither 'local-dask'"):
        run_sweep(square, [{"x": 1}], tmp_path, cluster=str(tmp_path / "nope.json"))


# --- Dask ----------------------------------------------------------------------------------------

distributed = pytest.importorskip("distributed")


@pytest.fixture
def importable_tests(monkeypatch):
    """Worker processes import this module by name: put tests/ on their path."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def test_local_dask_cluster_with_a_sigkilled_worker(tmp_path, importable_tests):
    marker = tmp_path / "killed"
    cells = [{"x": x, "marker": str(marker), "kill": x == 3, "sleep": 0.2} for x in range(8)]
    t0 = time.monotonic()
    rep = run_sweep(kill_once, cells, tmp_path / "out", jobs=2, cluster="local-dask",
                    retries=1, timeout=30)
    assert marker.exists(), "the worker was never killed"
    assert not rep.failed, rep.failed
    done = exactly_once(tmp_path / "out", 8)
    killed_pid = int(marker.read_text())
    # the killed cell was run again by another process (cells the killed worker finished before
    # it died may rightly carry its pid)
    killer = next(r for r in done if r["cell"]["kill"])
    assert killer["pid"] != killed_pid
    # resuming the finished sweep runs nothing
    rep2 = run_sweep(kill_once, cells, tmp_path / "out", jobs=2, cluster="local-dask")
    assert rep2.ran == 0 and rep2.skipped == 8
    assert time.monotonic() - t0 < 90


def _wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM this process by its id, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture
def dask_processes(tmp_path):
    """A scheduler and two single-threaded workers on 127.0.0.1, as separate processes;
    stopped by process id, workers first."""
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker"]
    sched_file = tmp_path / "scheduler.json"
    path = [TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    logs = open(tmp_path / "dask.log", "w")
    procs: list[subprocess.Popen] = []
    try:
        sched = subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", "0", "--scheduler-file",
                                         str(sched_file), "--no-dashboard"],
                                 stdout=logs, stderr=subprocess.STDOUT, env=env)
        _wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0, 30,
                  "the scheduler file")
        workers = [subprocess.Popen(worker + ["--scheduler-file", str(sched_file), "--nthreads",
                                              "1", "--no-dashboard", "--host", "127.0.0.1",
                                              "--name", f"w{i}"],
                                    stdout=logs, stderr=subprocess.STDOUT, env=env)
                   for i in range(2)]
        procs = workers + [sched]
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield sched_file
    finally:
        for p in procs[:-1]:
            _stop(p)                     # workers first ...
        if procs:
            _stop(procs[-1])             # ... then the scheduler
        logs.close()


def test_scheduler_and_workers_as_processes(tmp_path, dask_processes):
    marker = tmp_path / "killed"
    cells = [{"x": x, "marker": str(marker), "kill": x == 1, "sleep": 0.1} for x in range(5)]
    rep = run_sweep(kill_once, cells, tmp_path / "out", cluster=str(dask_processes),
                    retries=1, timeout=30)
    assert marker.exists() and not rep.failed, rep.failed
    exactly_once(tmp_path / "out", 5)
    rep2 = run_sweep(kill_once, cells + [{"x": 9, "marker": str(marker)}], tmp_path / "out",
                     cluster=str(dask_processes), timeout=30)
    assert rep2.ran == 1 and rep2.skipped == 5


def test_cli_sweep_of_real_runs_on_dask_processes(tmp_path, dask_processes, capsys):
    """``rnnlab sweep --cluster <scheduler file>``: real training cells on the workers."""
    from rnnlab.cli import main

    cfg = tmp_path / "sweep.toml"
    cfg.write_text('[data]\ndataset = "xor"\nsteps = 9\n[train]\nepochs = 1\n'
                   '[sweep]\nname = "xor"\ngrid = { seed = [0, 1], hidden = [2, 4] }\n')
    out = tmp_path / "xor"
    rc = main(["sweep", str(cfg), "--cluster", str(dask_processes), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    recs = lines(out / "results.jsonl")
    assert len(recs) == 4 and all(r["status"] == "done" for r in recs)
    assert all(r["summary"]["status"] == "completed" for r in recs)
    assert len(list((out / "runs").glob("*/summary.json"))) == 4
    assert "4 of 4 cells done" in capsys.readouterr().out
