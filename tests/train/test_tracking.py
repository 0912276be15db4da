"""Tracking to TensorBoard: the event files fit writes, read back with TensorBoard's own reader
(EventAccumulator), including an interrupted-and-resumed run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

from rnnlab import RNN, TrainConfig  # noqa: E402
from rnnlab.train.tracking import TensorBoard, scalar_tags  # noqa: E402


def data(seed: int, n: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5, 2))
    return X, (X[:, :2, 0].sum(axis=1) > 0).astype(np.int64)


def read(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under ``directory`` (the run's own event files, not the hparams
    sub-run), by TensorBoard's reader."""
    acc = event_accumulator.EventAccumulator(str(directory))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_fit_writes_tensorboard_scalars_readable_by_tensorboard(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-2, progress="off", tracking="tensorboard",
                      log_path=str(tmp_path / "metrics.jsonl"))
    h = RNN(2, 6, output_size=2, seed=0).fit(data(0, 32), cfg, val=data(1, 16),
                                             test=data(2, 16))
    tb = tmp_path / "tensorboard"                         # beside log_path by default
    series = read(tb)
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "grad_norm",
            "seq_per_s"} <= set(series)
    for tag, key in (("loss/train", "train_loss"), ("accuracy/val", "val_accuracy"),
                     ("lr", "lr")):
        assert [s for s, _ in series[tag]] == [1, 2, 3]
        assert [v for _, v in series[tag]] == pytest.approx(h[key], rel=1e-6)
    # the hyper-parameters and final/test metrics, as a sub-run TensorBoard's HParams tab reads
    hp = read(tb / "hparams")
    assert hp["test/accuracy"][0][1] == pytest.approx(h.test["test_accuracy"], rel=1e-6)
    assert hp["final/loss/val"][0][1] == pytest.approx(h.epochs[-1]["val_loss"], rel=1e-6)


def test_a_resumed_run_continues_the_same_curves(tmp_path):
    X, y = data(0, 32)

    def cfg(epochs: int, where: Path) -> TrainConfig:
        # a constant rate: the 2-epoch run is extended to 4 (a decay over the run would
        # stretch; test_resume.py covers that)
        return TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, schedule="constant",
                           progress="off",
                           checkpoint_dir=str(where / "ckpt"), tracking="tensorboard",
                           tracking_dir=str(where / "tb"))

    straight = RNN(2, 6, output_size=2, seed=0, dtype="float64")
    h = straight.fit((X, y), cfg(4, tmp_path / "a"))
    part = RNN(2, 6, output_size=2, seed=0, dtype="float64")
    part.fit((X, y), cfg(2, tmp_path / "b"))
    # a killed run wrote epochs after its last checkpoint: the resumed run discards them
    rogue = TensorBoard(tmp_path / "b" / "tb")
    rogue.on_train_begin({"epoch": 2})
    rogue.on_epoch_end(3, {"train_loss": 123.0})
    rogue.writer.close()
    rest = RNN(2, 6, output_size=2, seed=0, dtype="float64")
    rest.fit((X, y), cfg(4, tmp_path / "b"), resume=True)
    a, b = read(tmp_path / "a" / "tb"), read(tmp_path / "b" / "tb")
    assert [s for s, _ in b["loss/train"]] == [1, 2, 3, 4]
    assert [v for _, v in b["loss/train"]] == pytest.approx([v for _, v in a["loss/train"]],
                                                             rel=1e-6)
    assert [v for _, v in a["loss/train"]] == pytest.approx(h["train_loss"], rel=1e-6)


def test_scalar_tags_and_missing_directory():
    assert scalar_tags({"epoch": 2, "step": 8, "train_loss": 0.5, "val_accuracy": 0.75,
                        "lr": 0.1, "train_grad_norm": 1.5, "val_loss": None,
                        "train_skipped": 0}) == {
        "loss/train": 0.5, "accuracy/val": 0.75, "lr": 0.1, "grad_norm": 1.5,
        "skipped_batches": 0.0}
    with pytest.raises(ValueError, match=r"tracking='tensorboard' needs a directory"):
        RNN(2, 4, output_size=2).fit(data(0, 8), TrainConfig(epochs=1, progress="off",
                                                              tracking="tensorboard"))
    with pytest.raises(ValueError, match=r"unknown tracking 'wandb'; expected one of "
                                         r"\['tensorboard'\]"):
        TrainConfig(tracking="wandb")
