"""Experiment tracking: training metrics into TensorBoard event files (optional extra
``rnnlab[tracking]``, which installs ``tensorboardX``).

::

    history = fit(params, spec, ds, TrainConfig(..., tracking="tensorboard",
                                                tracking_dir="runs/tb/a"))
    # or, as a Keras-style callback
    history = fit(params, spec, ds, cfg, callbacks=[TensorBoard("runs/tb/a")])

    $ tensorboard --logdir runs          # every run directory's tensorboard/ folder

Each epoch's record becomes scalars at step = epoch (1-based): ``loss/train``, ``loss/val``,
``accuracy/train``, ``accuracy/val`` (and ``perplexity``, ``mse``), ``lr``, ``grad_norm``,
``seq_per_s``; the config is written once as text and, at the end, as TensorBoard
hyper-parameters with the final (and test) metrics.  A resumed run reopens the same directory and
discards events after the checkpoint's epoch (``purge_step``), so the curves of an interrupted and
resumed run are those of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .callbacks import Callback

__all__ = ["TRACKERS", "TensorBoard", "default_dir", "make_tracker", "scalar_tags"]

TRACKERS: tuple[str, ...] = ("tensorboard",)
_SPLITS = ("train", "val", "test")


def scalar_tags(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one epoch record under TensorBoard tags: ``train_loss`` -> ``loss/train``,
    ``lr`` -> ``lr``, ...; None (non-finite) values are left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("epoch", "step") or value is None or isinstance(value, bool):
            continue
        if not isinstance(value, int | float) or not math.isfinite(float(value)):
            continue
        split, _, metric = key.partition("_")
        if split in _SPLITS and metric:
            tag = f"{metric}/{split}"
            if metric == "grad_norm":
                tag = "grad_norm"
            elif metric == "skipped":
                tag = "skipped_batches"
        else:
            tag = key
        out[tag] = float(value)
    return out


def _writer_class() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError("tracking='tensorboard' needs tensorboardX: pip install "
                          "'rnnlab[tracking]'") from None
    return SummaryWriter


class TensorBoard(Callback):
    """Write each epoch's metrics to TensorBoard event files in ``log_dir`` (Keras's
    ``TensorBoard`` callback).

    Parameters
    ----------
    log_dir : path
        The run's event directory (created); point ``tensorboard --logdir`` at it or a parent.
    hparams : dict, optional
        Hyper-parameters to record with the final metrics (default: the trainer's config).
    """

    def __init__(self, log_dir: str | os.PathLike[str],
                 hparams: Mapping[str, Any] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.hparams = None if hparams is None else dict(hparams)
        self._cls = _writer_class()          # fail now, not after the first epoch
        self.writer: Any = None

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        done = int((logs or {}).get("epoch", 0))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # resumed: drop whatever a killed run wrote after the checkpoint's epoch
        # a file name of its own: tensorboardX names files by the second, and a second writer in
        # the same second (a quick resume) would truncate the first one's file
        self.writer = self._cls(str(self.log_dir), purge_step=done + 1 if done else None,
                                flush_secs=10, filename_suffix=f".{time.time_ns()}")
        if not done:
            cfg = getattr(getattr(self, "trainer", None), "config", None)
            if cfg is not None and hasattr(cfg, "to_dict"):
                text = json.dumps(cfg.to_dict(), indent=2, default=str)
                self.writer.add_text("config", f"```\n{text}\n```", 0)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        if self.writer is not None:
            for tag, value in scalar_tags(logs).items():
                self.writer.add_scalar(tag, value, epoch)
            self.writer.flush()
        return None

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.writer is None:
            return
        trainer = getattr(self, "trainer", None)
        hist = getattr(trainer, "history", None)
        final: dict[str, float] = {}
        if hist is not None and hist.epochs:
            final.update({f"final/{k}": v for k, v in scalar_tags(hist.epochs[-1]).items()
                          if "/" in k})
        if hist is not None and hist.test:
            final.update({f"test/{k[5:]}": float(v) for k, v in hist.test.items()
                          if isinstance(v, int | float) and math.isfinite(float(v))})
        hp = self.hparams
        if hp is None and trainer is not None and hasattr(trainer.config, "to_dict"):
            hp = trainer.config.to_dict()
        if hp and final:
            clean = {k: v if isinstance(v, int | float | str | bool) else str(v)
                     for k, v in hp.items() if v is not None}
            self.writer.add_hparams(clean, final, name="hparams",
                                    global_step=hist.epoch if hist is not None else None)
        self.writer.close()
        self.writer = None

    def __repr__(self) -> str:
        return f"TensorBoard({str(self.log_dir)!r})"


def default_dir(tracking_dir: str | None, log_path: str | None,
                checkpoint_dir: str | None) -> Path:
    """Where a run's tracker writes: ``tracking_dir``, else ``tensorboard/`` beside the log or
    the checkpoint directory."""
    if tracking_dir is not None:
        return Path(tracking_dir)
    if log_path is not None:
        return Path(log_path).parent / "tensorboard"
    if checkpoint_dir is not None:
        return Path(checkpoint_dir).parent / "tensorboard"
    raise ValueError("tracking='tensorboard' needs a directory: set tracking_dir (or log_path "
                     "or checkpoint_dir, beside which tensorboard/ is written)")


def make_tracker(kind: str, directory: str | os.PathLike[str]) -> Callback:
    """The callback of tracker ``kind`` (:data:`TRACKERS`) writing into ``directory``."""
    if kind == "tensorboard":
        return TensorBoard(directory)
    raise ValueError(f"unknown tracking {kind!r}; expected one of {list(TRACKERS)}")
