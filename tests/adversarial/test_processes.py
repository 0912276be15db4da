"""Kills and concurrency with real processes: ``rnnlab train`` and ``rnnlab sweep`` started with
``subprocess``, SIGKILLed, run twice at once (each process started here is stopped here, by its
pid). The long scenarios are marked slow (``--adversarial-full``)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rnnlab

pytest.importorskip("click")
pytest.importorskip("sklearn")

SRC = Path(rnnlab.__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
       "RNNLAB_DEBUG": ""}
TRAIN = [sys.executable, "-m", "rnnlab", "train", "-T", "8", "--hidden", "16", "--name", "g",
         "--batch-size", "64", "--progress", "off", "--no-diagnostics"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(args, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def _epochs(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x)["epoch"] for x in path.read_text().splitlines() if x.strip()]


def _wait_for(cond, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_a_run_held_by_another_process_is_refused_then_free_after_its_sigkill(
        tmp_path: Path) -> None:
    """The lock names the other process, and dies with it (SIGKILL: no stale lock)."""
    from rnnlab.cli import main

    run = tmp_path / "runs" / "g"
    run.mkdir(parents=True)
    holder = _start([sys.executable, "-c",
                     "import sys, time\nfrom rnnlab.train.files import DirectoryLock\n"
                     f"lock = DirectoryLock({str(run)!r}, 'run directory').acquire()\n"
                     "print('held', flush=True)\ntime.sleep(600)"], tmp_path)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(["train", "--runs-dir", str(tmp_path / "runs"), "--name", "g", "-T", "8",
                       "--hidden", "4", "--epochs", "1", "--progress", "off"])
        lines = err.getvalue().strip().splitlines()
        assert rc == 2 and len(lines) == 1, err.getvalue()
        assert f"is in use by pid {holder.pid} on host" in lines[0]
        assert "running 'python -c'" in lines[0]
    finally:
        _stop(holder)
    assert main(["train", "--runs-dir", str(tmp_path / "runs"), "--name", "g", "-T", "8",
                 "--hidden", "4", "--epochs", "1", "--progress", "off"]) == 0


@pytest.mark.slow
def test_the_issue_train_on_resume_killed_then_run_again(tmp_path: Path) -> None:
    """Point 6 as the issue ran it: ``train --epochs 3``, then ``--resume --epochs 400``
    SIGKILLed mid-way, then the same command again: it trains on (it used to print "completed
    after 3 epoch(s)" and exit 0, forever)."""
    first = subprocess.run([*TRAIN, "--epochs", "3"], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "g"
    resumed = _start([*TRAIN, "--resume", "--epochs", "400"], tmp_path)
    try:
        _wait_for(lambda: len(_epochs(run)) >= 6, resumed)
    finally:
        _stop(resumed)
    killed_at = len(_epochs(run))
    again = _start([*TRAIN, "--resume", "--epochs", "400"], tmp_path)
    try:
        _wait_for(lambda: len(_epochs(run)) >= killed_at + 2, again)   # it trains on
    finally:
        _stop(again)
    epochs = _epochs(run)
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= killed_at + 2
    finish = subprocess.run([*TRAIN, "--resume", "--epochs", str(len(epochs) + 1)],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr
    assert f"completed after {len(epochs) + 1} epoch(s)" in finish.stdout
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".rnnlab.lock"))


@pytest.mark.slow
def test_two_resumes_at_once_one_is_refused(tmp_path: Path) -> None:
    """Point 7: two ``--resume`` of one run at once both exited 0, with 58 interleaved lines in
    metrics.jsonl for 30 epochs."""
    first = subprocess.run([*TRAIN, "--epochs", "1"], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    procs = [_start([*TRAIN, "--resume", "--epochs", "30"], tmp_path) for _ in range(2)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=600)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                _stop(p)
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for rc, _, err in results if rc == 2)
    assert "is in use by pid" in refused and len(refused.strip().splitlines()) == 1
    assert _epochs(tmp_path / "runs" / "g") == list(range(1, 31))


@pytest.mark.slow
def test_two_sweeps_into_one_output_run_each_cell_once(tmp_path: Path) -> None:
    conf = tmp_path / "s.toml"
    conf.write_text('[data]\ndataset = "xor"\nsteps = 6\n[model]\nhidden_size = 2\n'
                    '[train]\nepochs = 3\nprogress = "off"\n'
                    '[sweep]\ngrid = { seed = [0, 1, 2, 3] }\n')
    args = [sys.executable, "-m", "rnnlab", "sweep", str(conf), "-o", str(tmp_path / "out")]
    procs = [_start(args, tmp_path) for _ in range(2)]
    try:
        results = [(p.wait(timeout=600), *p.communicate(timeout=60)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                _stop(p)
    done = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(done) == 4 and len({r["hash"] for r in done}) == 4
    codes = sorted(r[0] for r in results)
    # the second either was refused (the first held the lock) or found every cell done
    assert codes[0] == 0 and codes[1] in (0, 2), results
    for rc, _out, err in results:
        if rc == 2:
            assert "sweep directory" in err and "is in use by pid" in err


@pytest.mark.slow
def test_sigkills_during_training_leave_a_resumable_run_and_no_temporary_files(
        tmp_path: Path) -> None:
    """SIGKILL at random moments (mid-epoch, mid-checkpoint write): every resume continues,
    the log has each epoch once, and no temporary or lock file outlives the run."""
    import random
    rnd = random.Random(13)
    run = tmp_path / "runs" / "g"
    target = 12
    cmd = [*TRAIN, "--epochs", str(target), "--checkpoint-every", "1"]
    for _ in range(8):
        p = _start([*cmd, "--resume"] if run.exists() else cmd, tmp_path)
        try:
            time.sleep(rnd.uniform(1.0, 4.0))
        finally:
            _stop(p)
        if len(_epochs(run)) >= target:
            break
    final = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=ENV, capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert _epochs(run) == list(range(1, target + 1))
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".rnnlab.lock"))
