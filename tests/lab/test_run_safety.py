"""Run directories: one writer at a time, resumes that do what they say, failed starts that leave
nothing, overwrites that delete only what runs wrote (issue 13, points 6-8)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnlab
from rnnlab import experiments
from rnnlab.config import ExperimentConfig
from rnnlab.train import LockedError
from rnnlab.train.files import LOCK_NAME, DirectoryLock

pytest.importorskip("sklearn")


def tiny(**over: Any) -> ExperimentConfig:
    base = {"T": 4, "hidden": 4, "epochs": 2, "batch_size": 256, "lr": 1e-2,
            "train.progress": "off", "diagnostics": False}
    return ExperimentConfig().with_overrides({**base, **over})


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- locks


def test_a_locked_run_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    d = tmp_path / "r"
    experiments.run(tiny(), d)
    before = _files(d)
    with DirectoryLock(d, "run directory"):
        with pytest.raises(LockedError, match=rf"run directory '{d}' is in use by pid "
                                              rf"{os.getpid()} on host {socket.gethostname()}"
                                              r", since .*; wait for it to finish or stop it"):
            experiments.run(tiny(epochs=3), d, resume=True)
        assert (d / LOCK_NAME).exists()
    assert _files(d) == before                       # nothing was written meanwhile
    assert not (d / LOCK_NAME).exists()              # released and removed
    s = experiments.run(tiny(epochs=3), d, resume=True)
    assert s["epochs"] == 3


def test_fit_locks_its_checkpoint_directory(tmp_path: Path) -> None:
    spec = rnnlab.RNNSpec(3, 4, 2)
    p = rnnlab.init_params(spec, np.random.default_rng(0))
    data = (np.zeros((8, 5, 3)), np.zeros(8, np.int64))
    ck = tmp_path / "ck"
    ck.mkdir()
    cfg = rnnlab.TrainConfig(epochs=1, checkpoint_dir=str(ck), progress="off")
    with DirectoryLock(ck, "checkpoint directory"):
        with pytest.raises(LockedError, match="checkpoint directory .* is in use by pid"):
            rnnlab.fit(p, spec, data, cfg)
    rnnlab.fit(p, spec, data, cfg)
    assert sorted(q.name for q in ck.iterdir()) == ["last.npz"]


def test_a_lock_is_never_stale_and_an_orphan_file_is_reused(tmp_path: Path) -> None:
    """A lock file left by a killed holder (no process holds the OS lock) is simply taken."""
    d = tmp_path / "r"
    d.mkdir()
    (d / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "elsewhere"}))
    with DirectoryLock(d) as lock:
        assert json.loads((d / LOCK_NAME).read_text())["pid"] == os.getpid() and lock.held
    assert not (d / LOCK_NAME).exists()


# ----------------------------------------------------------------------------- resume


def test_a_refused_resume_changes_nothing(tmp_path: Path) -> None:
    """Point 6: a --resume with a different --hidden rewrote config.toml with the rejected
    settings."""
    d = tmp_path / "r"
    experiments.run(tiny(), d)
    before = _files(d)
    with pytest.raises(ValueError, match=r"incompatible: .*shape"):
        experiments.run(tiny(hidden=16), d, resume=True)
    assert _files(d) == before


def test_a_killed_train_on_is_not_a_permanent_no_op(tmp_path: Path, monkeypatch: Any) -> None:
    """Point 6: after a finished 2-epoch run, ``--resume --epochs 6`` killed after epoch 3 left
    the old "completed" summary next to the new config, and the same command then printed
    "completed after 2 epoch(s)" forever.  The kill is simulated by a BaseException out of the
    epoch callback (what SIGKILL leaves: the epoch-3 checkpoint, no summary)."""
    d = tmp_path / "r"
    assert experiments.run(tiny(), d)["epochs"] == 2

    class Killed(BaseException):
        pass

    real_fit = experiments.train_fit

    def killed_after_epoch_3(*a: Any, **kw: Any) -> Any:
        def cb(rec: dict[str, Any]) -> None:
            if rec["epoch"] == 3:
                raise Killed
        return real_fit(*a, **kw, callback=cb)

    monkeypatch.setattr(experiments, "train_fit", killed_after_epoch_3)
    with pytest.raises(Killed):
        experiments.run(tiny(epochs=6), d, resume=True)
    monkeypatch.setattr(experiments, "train_fit", real_fit)
    assert not (d / "summary.json").exists()        # the old one described another run
    s = experiments.run(tiny(epochs=6), d, resume=True)
    assert s["status"] == "completed" and s["epochs"] == 6
    epochs = [json.loads(x)["epoch"] for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]
    # and a finished run with the same config returns its summary without training
    assert experiments.run(tiny(epochs=6), d, resume=True) == s


def test_resume_whose_checkpoint_is_gone_is_refused(tmp_path: Path) -> None:
    """Point 8: --resume on a run whose checkpoints/ is gone silently started from scratch."""
    d = tmp_path / "r"
    experiments.run(tiny(), d)
    (d / "checkpoints" / "last.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"cannot resume run directory .*: "
                                                r"checkpoints/last.npz is missing, but its "
                                                r"summary.json reports 2 epoch\(s\)"):
        experiments.run(tiny(epochs=3), d, resume=True)
    for p in (d / "checkpoints").iterdir():
        p.unlink()
    (d / "checkpoints").rmdir()
    with pytest.raises(FileNotFoundError, match="its checkpoints/ directory is gone"):
        experiments.run(tiny(epochs=3), d, resume=True)
    assert experiments.run(tiny(epochs=3), d, overwrite=True)["epochs"] == 3


def test_temporary_files_of_killed_writes_are_cleaned(tmp_path: Path) -> None:
    """Point 8: killed checkpoint writes left .last.npz.*.tmp files nobody cleaned."""
    d = tmp_path / "r"
    experiments.run(tiny(), d)
    stale = [d / "checkpoints" / ".last.npz.0123456789abcdef.tmp",
             d / "checkpoints" / ".best.npz.fedcba9876543210.tmp", d / ".summary.json.tmp",
             d / ".metrics.jsonl.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    mine = d / "checkpoints" / ".notes.tmp"          # not a name rnnlab writes: kept
    mine.write_text("mine")
    experiments.run(tiny(epochs=3), d, resume=True)
    assert not any(p.exists() for p in stale) and mine.read_text() == "mine"


# ----------------------------------------------------------------------------- failed starts


@pytest.mark.parametrize("bad", [
    {"T": 3},                                                  # T must divide 64
    {"train.patience": 2, "train.monitor": "val_mse"},         # not computed for a classifier
    {"train.algorithm": "tbptt", "model.bidirectional": True, "train.k1": 2},
])
def test_a_failed_start_leaves_nothing_and_the_corrected_retry_runs(tmp_path: Path,
                                                                    bad: dict) -> None:
    """Point 8: a failed start left runs/<name>/checkpoints/ and the corrected retry was
    refused as "already exists"."""
    d = tmp_path / "runs" / "r"
    with pytest.raises(ValueError):
        experiments.run(tiny(**bad), d)
    assert not (tmp_path / "runs").exists()
    assert experiments.run(tiny(), d)["status"] == "completed"


def test_leftovers_of_an_older_failed_start_do_not_block(tmp_path: Path) -> None:
    d = tmp_path / "r"
    (d / "checkpoints").mkdir(parents=True)           # what a failed start used to leave
    assert experiments.run(tiny(), d)["status"] == "completed"


def test_never_writes_into_or_deletes_what_is_not_a_run(tmp_path: Path) -> None:
    d = tmp_path / "precious"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    for kw in ({"resume": True}, {"overwrite": True}, {}):
        with pytest.raises((ValueError, FileExistsError), match=r"holds no config.toml"):
            experiments.run(tiny(), d, **kw)
    assert [p.name for p in d.iterdir()] == ["keep.txt"]


def test_overwrite_deletes_only_what_runs_write(tmp_path: Path) -> None:
    d = tmp_path / "r"
    experiments.run(tiny(), d)
    (d / "notes.md").write_text("mine")
    (d / "checkpoints" / "keep.npz").write_bytes(b"mine")
    s = experiments.run(tiny(epochs=1), d, overwrite=True)
    assert s["epochs"] == 1 and (d / "notes.md").read_text() == "mine"
    assert (d / "checkpoints" / "keep.npz").read_bytes() == b"mine"
    assert len((d / "metrics.jsonl").read_text().splitlines()) == 1
