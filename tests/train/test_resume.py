"""Checkpoints of a training run: bit-identical resume (at epoch ends and mid-epoch), SIGINT /
SIGTERM save-and-exit, SIGKILL leaves the previous checkpoint usable, mismatches are errors.

Run as a script (``python test_resume.py DIR EPOCHS``) this file is the child process the
signal tests interrupt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnlab import RNN, TrainConfig
from rnnlab.checkpoint import load
from rnnlab.fast.workspace import Workspace

VOLATILE = ("time", "seq_per_s")       # wall-clock fields of the epoch records


def problem(dtype: str = "float64", seed: int = 3, hidden: int = 8):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((60, 6, 3))
    Xv = rng.standard_normal((20, 6, 3))
    label = lambda a: (a[:, :3, 0].sum(axis=1) > 0).astype(np.int64)  # noqa: E731
    model = RNN(3, hidden, output_size=2, dtype=dtype, seed=seed)
    return model, (X, label(X)), (Xv, label(Xv))


def config(tmp: Path, **kw) -> TrainConfig:
    base = dict(epochs=6, batch_size=8, lr=1e-2, optimizer="adam",
                optimizer_kwargs={"amsgrad": True}, schedule="cosine",
                schedule_kwargs={"total_steps": 40, "warmup_steps": 5}, clip_norm=1.0,
                checkpoint_dir=str(tmp), log_path=str(tmp / "log.jsonl"), progress="off")
    base.update(kw)
    return TrainConfig(**base)


def records(history) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in history.epochs]


def log_records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE}
            for line in path.read_text().splitlines()]


def assert_same_params(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


def straight(tmp: Path, dtype: str = "float64", **kw):
    m, tr, va = problem(dtype)
    h = m.fit(tr, config(tmp, **kw), val=va)
    return m, h


# ----------------------------------------------------------------------------- in process


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("stateful", [False, True])
def test_half_plus_resume_plus_half_is_bit_identical(tmp_path, dtype, stateful):
    ref, h_ref = straight(tmp_path / "ref", dtype, stateful=stateful)
    m1, tr, va = problem(dtype)
    h1 = m1.fit(tr, config(tmp_path / "run", epochs=3, stateful=stateful), val=va)
    assert h1.status == "completed" and h1.epoch == 3
    m2, _, _ = problem(dtype, seed=99)                    # different init: resume overwrites
    h2 = m2.fit(tr, config(tmp_path / "run", stateful=stateful), val=va, resume=True)
    assert h2.status == "completed" and h2.epoch == 6
    assert records(h2) == records(h_ref)                  # every logged loss and metric, ==
    assert h1.step_losses + h2.step_losses == h_ref.step_losses
    assert_same_params(m2.params, ref.params)
    assert log_records(tmp_path / "run" / "log.jsonl") == records(h_ref)
    ck_ref, ck = load(tmp_path / "ref" / "last.npz"), load(tmp_path / "run" / "last.npz")
    assert_same_params(ck.params, ck_ref.params)
    assert ck.opt_state["step"] == ck_ref.opt_state["step"] == h_ref.step
    for slot in ("m", "v", "v_max"):
        assert_same_params(ck.opt_state[slot], ck_ref.opt_state[slot])
    assert ck.rng_state == ck_ref.rng_state


@pytest.fixture(autouse=True)
def default_sigint():
    """Python's own SIGINT handler, even when the suite runs where SIGINT is ignored."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ignored_signals_stay_ignored(tmp_path, monkeypatch):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupt_at(monkeypatch, 3)
    m, tr, va = problem()
    h = m.fit(tr, config(tmp_path, epochs=1), val=va)
    assert h.status == "completed" and signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def interrupt_at(monkeypatch, call: int, times: int = 1) -> None:
    """Send ourselves SIGINT during the ``call``-th gradient computation (1-based)."""
    real = Workspace.value_and_grad
    count = [0]

    def fake(self, *args, **kw):
        count[0] += 1
        if count[0] == call:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
        return real(self, *args, **kw)

    monkeypatch.setattr(Workspace, "value_and_grad", fake)


@pytest.mark.parametrize("stateful", [False, True])
def test_sigint_mid_epoch_saves_and_resumes_bit_identically(tmp_path, monkeypatch, stateful):
    ref, h_ref = straight(tmp_path / "ref", "float32", stateful=stateful)
    handler = signal.getsignal(signal.SIGINT)
    interrupt_at(monkeypatch, 19)                  # epoch 3 (8 or 7 batches per epoch)
    m1, tr, va = problem("float32")
    h1 = m1.fit(tr, config(tmp_path / "run", stateful=stateful), val=va)
    assert signal.getsignal(signal.SIGINT) is handler           # restored after fit
    assert h1.interrupted and h1.step == 19 and h1.epoch == 2
    assert "interrupted by SIGINT after step 19 (epoch 3, batch" in h1.message
    assert "resume=True" in h1.message
    ck = load(tmp_path / "run" / "last.npz")
    assert (ck.epoch, ck.step) == (2, 19) and ck.extra["batch_in_epoch"] > 0
    monkeypatch.undo()
    m2, _, _ = problem("float32", seed=5)
    h2 = m2.fit(tr, config(tmp_path / "run", stateful=stateful), val=va, resume=True)
    assert records(h2) == records(h_ref)
    assert h1.step_losses + h2.step_losses == h_ref.step_losses
    assert_same_params(m2.params, ref.params)


def test_the_default_cosine_over_the_run_resumes_bit_identically(tmp_path, monkeypatch):
    """TrainConfig's default schedule decays over the run's own length (epochs x minibatches):
    a run interrupted mid-epoch and resumed with the same config is the uninterrupted run."""
    kw = dict(schedule=TrainConfig().schedule, schedule_kwargs={})
    assert kw["schedule"] == "cosine"
    ref, h_ref = straight(tmp_path / "ref", "float32", **kw)
    lrs = [r["lr"] for r in h_ref.epochs]
    # each epoch records the rate of its last update: 8 minibatches x 6 epochs, to 0
    assert lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(1e-2 * (1 + np.cos(np.pi * 47 / 48)) / 2)
    interrupt_at(monkeypatch, 19)
    m1, tr, va = problem("float32")
    h1 = m1.fit(tr, config(tmp_path / "run", **kw), val=va)
    assert h1.interrupted and h1.step == 19
    monkeypatch.undo()
    m2, _, _ = problem("float32", seed=5)
    h2 = m2.fit(tr, config(tmp_path / "run", **kw), val=va, resume=True)
    assert records(h2) == records(h_ref)
    assert_same_params(m2.params, ref.params)


def test_more_epochs_on_resume_stretch_the_default_cosine(tmp_path):
    """A completed run resumed with more epochs decays over the new total from the update it
    stopped at (docs/training.md, "Defaults"): the rate of each later update is the cosine of
    the longer run at that update."""
    from rnnlab.train.schedules import make

    kw = dict(schedule="cosine", schedule_kwargs={}, lr=1e-2)
    m1, tr, va = problem()
    h1 = m1.fit(tr, config(tmp_path, epochs=3, **kw), val=va)
    assert h1.epochs[-1]["lr"] == pytest.approx(make("cosine", lr=1e-2, total_steps=24)(23))
    m2, _, _ = problem(seed=5)
    h2 = m2.fit(tr, config(tmp_path, epochs=6, **kw), val=va, resume=True)
    longer = make("cosine", lr=1e-2, total_steps=48)     # 8 minibatches an epoch, 6 epochs
    # each epoch record holds the rate of its last update
    assert [r["lr"] for r in h2.epochs[3:]] == pytest.approx([longer(8 * e - 1)
                                                              for e in (4, 5, 6)])


def test_a_second_sigint_interrupts_at_once(tmp_path, monkeypatch):
    handler = signal.getsignal(signal.SIGINT)
    interrupt_at(monkeypatch, 3, times=2)
    m, tr, va = problem()
    with pytest.raises(KeyboardInterrupt):
        m.fit(tr, config(tmp_path), val=va)
    assert signal.getsignal(signal.SIGINT) is handler


def test_interrupt_without_checkpoint_dir_returns_and_says_nothing_was_saved(monkeypatch):
    interrupt_at(monkeypatch, 2)
    m, tr, va = problem()
    h = m.fit(tr, TrainConfig(epochs=3, batch_size=8, progress="off"), val=va)
    assert h.interrupted and h.step == 2 and "nothing was saved" in h.message


def test_resume_auto_and_resume_of_a_finished_run(tmp_path):
    m, tr, va = problem()
    h = m.fit(tr, config(tmp_path, epochs=2), val=va, resume="auto")   # no checkpoint yet
    assert h.epoch == 2
    again = problem(seed=50)[0]
    h2 = again.fit(tr, config(tmp_path, epochs=2), val=va, resume="auto")
    assert h2.step_losses == [] and records(h2) == records(h)
    assert_same_params(again.params, m.params)


# ----------------------------------------------------------------------------- mismatches


def test_mismatched_checkpoints_are_clear_errors(tmp_path):
    m, tr, va = problem()
    m.fit(tr, config(tmp_path, epochs=1), val=va)
    bigger = problem(hidden=9)[0]
    with pytest.raises(ValueError, match=r"incompatible: params\['l0.W_xh'\] has shape \(3, 8\) "
                                         r"in the checkpoint but \(3, 9\) in the model"):
        bigger.fit(tr, config(tmp_path), val=va, resume=True)
    with pytest.raises(ValueError, match=r"config\['batch_size'\] is 8 in the checkpoint but 9"):
        problem()[0].fit(tr, config(tmp_path, batch_size=9), val=va, resume=True)
    with pytest.raises(ValueError, match=r"config\['optimizer'\] is 'adam' in the checkpoint"):
        problem()[0].fit(tr, config(tmp_path, optimizer="sgd", optimizer_kwargs={}), val=va,
                         resume=True)
    with pytest.raises(ValueError, match=r"dtype float64 in the checkpoint but float32"):
        problem("float32")[0].fit(tr, config(tmp_path), val=va, resume=True)
    with pytest.raises(ValueError, match=r"trained on a train split of shape \(60, 6, 3\); this "
                                         r"one is \(59, 6, 3\)"):
        problem()[0].fit((tr[0][:-1], tr[1][:-1]), config(tmp_path), val=va, resume=True)
    with pytest.raises(FileNotFoundError):
        problem()[0].fit(tr, config(tmp_path), val=va, resume=tmp_path / "nope.npz")
    with pytest.raises(IsADirectoryError):
        problem()[0].fit(tr, config(tmp_path), val=va, resume=tmp_path)
    # the clipping that applies must match: "auto" (1.0 for BPTT) is not no clipping
    with pytest.raises(ValueError, match=r"config\['clip_norm'\] is 1.0 in the checkpoint but "
                                         r"None"):
        problem()[0].fit(tr, config(tmp_path, clip_norm=None), val=va, resume=True)
    # what may change: epochs, logging, checkpoint cadence, patience, and the learning rate;
    # clip_norm="auto" resumes a run clipped at 1.0 (the clip it applies)
    ok = problem()[0].fit(tr, config(tmp_path, epochs=2, checkpoint_every=2, patience=4,
                                     clip_norm="auto"), val=va, resume=True)
    assert ok.epoch == 2
    slower = problem()[0].fit(tr, config(tmp_path, epochs=3, lr=0.005), val=va, resume=True)
    sched = config(tmp_path, lr=0.005).make_schedule().with_length(3 * 8)
    assert slower.epoch == 3 and slower.epochs[-1]["lr"] == sched(slower.step - 1)


# ----------------------------------------------------------------------------- real signals


def child_main(directory: str, epochs: int) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even if started ignoring it
    real = Workspace.value_and_grad

    def slow(self, *args, **kw):           # sleeping changes no number, only the timing
        time.sleep(0.005)
        return real(self, *args, **kw)

    Workspace.value_and_grad = slow    # type: ignore[method-assign]
    m, tr, va = problem()
    h = m.fit(tr, config(Path(directory), epochs=epochs), val=va)
    print(json.dumps({"status": h.status, "message": h.message, "step_losses": h.step_losses}))


def run_child_and_signal(tmp: Path, sig: int, epochs: int):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, __file__, str(tmp), str(epochs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log, deadline = tmp / "log.jsonl", time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and log.read_text().count("\n") >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the child finished before it could be signalled"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_signal_then_resume_equals_an_uninterrupted_run(tmp_path, sig):
    epochs = 40
    ref, h_ref = straight(tmp_path / "ref", epochs=epochs)
    run = tmp_path / "run"
    run.mkdir()
    rc, out, err = run_child_and_signal(run, sig, epochs)
    ck = load(run / "last.npz")                       # always a complete, loadable checkpoint
    assert 1 <= ck.epoch < epochs
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
        first_losses = None
    else:
        assert rc == 0, err
        res = json.loads(out)
        assert res["status"] == "interrupted"
        assert f"interrupted by {signal.Signals(sig).name}" in res["message"]
        first_losses = res["step_losses"]
        assert len(first_losses) == ck.step
    m, tr, va = problem(seed=11)
    h = m.fit(tr, config(run, epochs=epochs), val=va, resume=True)
    assert h.status == "completed"
    assert records(h) == records(h_ref)
    assert log_records(run / "log.jsonl") == records(h_ref)
    assert_same_params(m.params, ref.params)
    if first_losses is not None:
        assert first_losses + h.step_losses == h_ref.step_losses
    else:
        assert h.step_losses == h_ref.step_losses[ck.step:]


if __name__ == "__main__":
    child_main(sys.argv[1], int(sys.argv[2]))
