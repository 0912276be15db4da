"""Keras-style callbacks for :func:`rnnlab.fit`: hooks around epochs that can stop training or
change the learning rate.

::

    from rnnlab.train.callbacks import Callback, EarlyStopping, ReduceLROnPlateau, StopTraining

    class StopAt(Callback):
        def on_epoch_end(self, epoch, logs):
            return logs["train_loss"] < 0.05              # True stops training

    history = fit(params, spec, ds, cfg, callbacks=[
        ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2),
        EarlyStopping(monitor="val_accuracy", patience=5, restore_best_weights=True),
        StopAt()])

A callback stops training by returning True from :meth:`Callback.on_epoch_end`, by raising
:class:`StopTraining` in any hook, or by setting ``self.trainer.stop_training = True`` (Keras's
``model.stop_training``); the epoch in flight always finishes, is logged and checkpointed, and
``history.status`` is ``"early_stopped"`` with a message naming the callback.  ``epoch`` is the
1-based number of the epoch (as in the records), ``logs`` the epoch's record.

``self.trainer`` (set before :meth:`~Callback.on_train_begin`) is the running loop; what a
callback may read or set is :class:`Trainer`.  A callback with state implements
:meth:`~Callback.state_dict` / :meth:`~Callback.load_state_dict` (JSON data): the state goes into
every checkpoint, so a resumed run continues with it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ..core.spec import RNNSpec
from .history import History
from .metrics import EarlyStopping as _Tracker
from .metrics import resolve_mode

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "ReduceLROnPlateau", "StopTraining",
           "Trainer"]


class StopTraining(Exception):  # noqa: N818 (Keras's name for the signal, not an error)
    """Raise in a callback hook to stop training after the current epoch (the message is kept
    in ``history.message``)."""


class Trainer(Protocol):
    """What a callback sees of the running loop (``callback.trainer``).

    Attributes
    ----------
    params : dict
        The parameters, updated in place by every step.
    spec : RNNSpec
    config : TrainConfig
    history : History
        The epochs so far.
    epoch, step : int
        Completed epochs and optimizer steps.
    lr_scale : float
        A factor on the schedule's learning rate (1.0 unless a callback lowered it); settable,
        saved in checkpoints.
    stop_training : bool
        Set True to stop after the current epoch.
    available_metrics : list of str
        The record keys a monitor may name in this run (``train_loss``, ``val_accuracy``, ...).
    """

    params: dict[str, NDArray[np.floating]]
    spec: RNNSpec
    config: Any
    history: History
    epoch: int
    step: int
    lr_scale: float
    stop_training: bool
    available_metrics: list[str]


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    trainer: Trainer

    def set_trainer(self, trainer: Trainer) -> None:
        """Called by :func:`fit` before :meth:`on_train_begin`."""
        self.trainer = trainer

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Before the first epoch of this call (``logs``: ``epoch`` and ``step`` done so far)."""

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Before epoch ``epoch`` (1-based)."""

    def on_train_batch_end(self, step: int, logs: Mapping[str, Any]) -> None:
        """After optimizer step ``step`` (1-based; ``logs``: ``loss``, ``lr``, ``epoch``,
        ``batch``).  Raising :class:`StopTraining` here stops after the epoch."""

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        """After epoch ``epoch`` is evaluated and logged; return True to stop training."""
        return None

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """After the last epoch of this call and the test split's evaluation (also after a stop
        or an interruption; not after a divergence, which raises)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state saved in checkpoints (default: none)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LambdaCallback(Callback):
    """A callback from plain functions (Keras's ``LambdaCallback``): ``on_epoch_end(epoch,
    logs) -> bool | None`` and the other hooks, each optional."""

    def __init__(self, *, on_train_begin: Callable[..., Any] | None = None,
                 on_epoch_begin: Callable[..., Any] | None = None,
                 on_train_batch_end: Callable[..., Any] | None = None,
                 on_epoch_end: Callable[..., Any] | None = None,
                 on_train_end: Callable[..., Any] | None = None) -> None:
        self._fns = {"on_train_begin": on_train_begin, "on_epoch_begin": on_epoch_begin,
                     "on_train_batch_end": on_train_batch_end, "on_epoch_end": on_epoch_end,
                     "on_train_end": on_train_end}
        for name, fn in self._fns.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"LambdaCallback {name} must be callable; got {fn!r}")

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._fns["on_train_begin"] is not None:
            self._fns["on_train_begin"](logs)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._fns["on_epoch_begin"] is not None:
            self._fns["on_epoch_begin"](epoch, logs)

    def on_train_batch_end(self, step: int, logs: Mapping[str, Any]) -> None:
        if self._fns["on_train_batch_end"] is not None:
            self._fns["on_train_batch_end"](step, logs)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        fn = self._fns["on_epoch_end"]
        return None if fn is None else fn(epoch, logs)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._fns["on_train_end"] is not None:
            self._fns["on_train_end"](logs)


def _check_monitor(cb: Callback, monitor: str) -> None:
    available = cb.trainer.available_metrics
    if monitor not in available:
        raise ValueError(f"{type(cb).__name__} monitors {monitor!r}, which this run does not "
                         f"compute; available: {available}")


def _number(name: str, value: object, *, minimum: float = 0.0, below: float | None = None
            ) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < minimum or (below is not None and v >= below):
        bound = f"in [{minimum:g}, {below:g})" if below is not None else f">= {minimum:g}"
        raise ValueError(f"{name} must be a finite number {bound}; got {v!r}")
    return v


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` evaluations (Keras's
    ``EarlyStopping``).

    Parameters
    ----------
    monitor : str
        A record key (``"val_loss"``, ``"val_accuracy"``, ``"train_loss"``, ...); epochs whose
        record lacks it (no evaluation that epoch) are not counted.
    patience : int
        Evaluations without improvement before stopping (>= 1).
    min_delta : float
        An improvement must beat the best by more than this.
    mode : {"auto", "min", "max"}
        ``"auto"`` maximises accuracies and minimises the rest.
    restore_best_weights : bool
        When training ends (this callback stops it, or the last epoch is done), put back the
        parameters of the best epoch, before the test split is evaluated and the last
        checkpoint written.
    verbose : int
        1: say on stderr when it stops.
    """

    def __init__(self, monitor: str = "val_loss", *, patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False,
                 verbose: int = 0) -> None:
        self.verbose = int(verbose)
        resolve_mode(monitor, mode)
        self.monitor = monitor
        self.tracker = _Tracker(monitor, mode, _count("patience", patience, 1),
                                _number("min_delta", min_delta))
        self.restore_best_weights = bool(restore_best_weights)
        self.best_params: dict[str, NDArray[Any]] | None = None
        self.stopped_epoch: int | None = None

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        _check_monitor(self, self.monitor)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        if logs.get(self.monitor, "absent") == "absent":
            return None
        value = logs[self.monitor]
        if self.tracker.update(math.nan if value is None else value, epoch):
            if self.restore_best_weights:
                self.best_params = {k: v.copy() for k, v in self.trainer.params.items()}
        if self.tracker.should_stop:
            self.stopped_epoch = epoch
            self._restore()
            if self.verbose:
                print(f"Epoch {epoch}: early stopping (best {self.monitor} "
                      f"{self.tracker.best} at epoch {self.tracker.best_epoch})",
                      file=sys.stderr)
            raise StopTraining(f"{self.monitor} did not improve for {self.tracker.patience} "
                               f"evaluation(s); best {self.tracker.best} at epoch "
                               f"{self.tracker.best_epoch}")
        if epoch >= self.trainer.config.epochs:
            self._restore()
        return None

    def _restore(self) -> None:
        if self.restore_best_weights and self.best_params is not None:
            self.trainer.params.update({k: v.copy() for k, v in self.best_params.items()})

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tracker.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.tracker.patience}, "
                f"min_delta={self.tracker.min_delta}, mode={self.tracker.mode!r})")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (Keras's
    ``ReduceLROnPlateau``, PyTorch's ``lr_scheduler.ReduceLROnPlateau``).

    The rate of every later step is the schedule's times :attr:`Trainer.lr_scale`; this callback
    lowers that scale after ``patience`` evaluations without an improvement larger than
    ``min_delta``, waits ``cooldown`` evaluations, and never takes the base rate (``lr`` x scale)
    below ``min_lr``.  The scale is saved in checkpoints: a resumed run keeps the reduced rate.

    Parameters
    ----------
    monitor : str
    factor : float
        In (0, 1).
    patience : int
        Evaluations without improvement before a reduction (>= 1).
    min_delta : float
    cooldown : int
        Evaluations after a reduction before counting again.
    min_lr : float
        Lower bound of the base rate.
    mode : {"auto", "min", "max"}
    verbose : int
        1: say on stderr when it lowers the rate.
    """

    def __init__(self, monitor: str = "val_loss", *, factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 mode: str = "auto", verbose: int = 0) -> None:
        self.verbose = int(verbose)
        resolve_mode(monitor, mode)
        self.monitor = monitor
        self.factor = _number("factor", factor, minimum=1e-12, below=1.0)
        self.tracker = _Tracker(monitor, mode, _count("patience", patience, 1),
                                _number("min_delta", min_delta))
        self.cooldown = _count("cooldown", cooldown, 0)
        self.min_lr = _number("min_lr", min_lr)
        self.cooldown_left = 0
        self.reductions: list[tuple[int, float]] = []      # (epoch, new base rate)

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        _check_monitor(self, self.monitor)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        if logs.get(self.monitor, "absent") == "absent":
            return None
        value = logs[self.monitor]
        improved = self.tracker.update(math.nan if value is None else value, epoch)
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.tracker.wait = 0
        if improved or not self.tracker.should_stop:
            return None
        t = self.trainer
        base = float(t.config.lr)
        scale = max(t.lr_scale * self.factor, self.min_lr / base)
        if scale < t.lr_scale:
            t.lr_scale = scale
            self.reductions.append((epoch, base * scale))
            self.cooldown_left = self.cooldown
            if self.verbose:
                print(f"Epoch {epoch}: ReduceLROnPlateau reducing the learning rate to "
                      f"{base * scale:.4g}", file=sys.stderr)
        self.tracker.wait = 0
        return None

    def state_dict(self) -> dict[str, Any]:
        return {**self.tracker.state_dict(), "cooldown_left": self.cooldown_left,
                "reductions": [list(r) for r in self.reductions]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tracker.load_state_dict(state)
        self.cooldown_left = int(state.get("cooldown_left", 0))
        self.reductions = [(int(e), float(v)) for e, v in state.get("reductions", [])]

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor}, "
                f"patience={self.tracker.patience}, min_lr={self.min_lr})")
