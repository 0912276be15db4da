"""How a model is trained: :class:`TrainConfig`, validated, and what builds from it.

Everything about a training run except the model and the data (docs/training.md).  The CLI's
experiment configs (``rnnlab.config``) embed it; ``to_dict``/``from_dict`` round-trip it and reject
unknown keys with the list of valid ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..core.spec import unknown_fields
from ..learning import ONLINE, RULES, rule_options
from . import optim, schedules
from .metrics import resolve_mode

ALGORITHMS: tuple[str, ...] = tuple(RULES) + tuple(ONLINE)
DEFAULT_CLIP_NORM = 1.0
"""``clip_norm="auto"``'s value for the algorithms that make one update per minibatch (chosen
by ``python -m benchmarks.defaults --round 4``; docs/training.md, "Defaults")."""
ENGINES: tuple[str, ...] = ("fast", "reference")
ON_NONFINITE: tuple[str, ...] = ("stop", "skip")
PROGRESS: tuple[str, ...] = ("auto", "on", "off")
TRACKING: tuple[str, ...] = ("tensorboard",)
# config fields that shape the trajectory: a resumed run must agree on them (docs/training.md);
# `lr` may change (continuing with a smaller rate is a common, deliberate choice)
RESUME_KEYS: tuple[str, ...] = (
    "batch_size", "optimizer", "optimizer_kwargs", "schedule", "schedule_kwargs",
    "clip_norm", "algorithm", "algorithm_kwargs", "k1", "k2", "stateful", "shuffle", "seed",
    "on_nonfinite", "monitor", "mode", "min_delta", "spec", "dtype",
)


# ----------------------------------------------------------------------------- config


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int >= {minimum}; got {type(value).__name__} "
                        f"{value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value}")
    return int(value)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number > 0; got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {v!r}")
    return v


def _choice(name: str, value: object, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(valid)}")
    return str(value)


def _kwargs(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{name} must be a dict of keyword arguments; got {value!r}")
    if "lr" in value:
        raise ValueError(f"{name} must not contain 'lr'; set TrainConfig.lr instead")
    return dict(value)


# options of the rules that fit cannot honour: the trainer's network is the vanilla cell
_CELL_OPTIONS: dict[str, tuple[str, float]] = {"alpha": ("rflo", 1.0), "decay": ("eprop", 0.0)}


def _plain(value: object) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return False


def _algorithm_kwargs(algorithm: str, value: object) -> dict[str, Any]:
    """``algorithm_kwargs`` checked against the options of ``algorithm``'s rule."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"algorithm_kwargs must be a dict of keyword arguments; got {value!r}")
    kw = dict(value)
    if not kw:
        return kw
    valid = {k: v for k, v in rule_options(algorithm).items()
             if not (algorithm == "tbptt" and k in ("k1", "k2"))}
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
        extra = " (k1 and k2 are TrainConfig fields)" if algorithm == "tbptt" else ""
        raise ValueError(f"unknown algorithm_kwargs {unknown} for algorithm {algorithm!r}; its "
                         f"options are: {listed}{extra}")
    for k, v in kw.items():
        if not _plain(v):
            raise TypeError(f"algorithm_kwargs[{k!r}] must be plain data (a number, string, "
                            f"bool or list: a run's config is saved as JSON); got "
                            f"{type(v).__name__}. Pass arrays to the rule functions of "
                            "rnnlab.learning directly")
        if k in _CELL_OPTIONS:
            rule, vanilla = _CELL_OPTIONS[k]
            if v != vanilla:
                raise ValueError(
                    f"algorithm_kwargs {k}={v!r}: fit trains rnnlab's vanilla cell ({k}="
                    f"{vanilla}); the leaky network of {rule} is available through "
                    f"rnnlab.learning.{rule}.value_and_grad / online_update (docs/online.md)")
    return kw


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run except the model and the data (docs/training.md).

    Parameters
    ----------
    epochs : int
        Passes over the training split (a resumed run trains until this many are done).
    batch_size : int
        Sequences per minibatch (the last one of an epoch may be smaller; in stateful mode, the
        number of parallel streams).  The defaults (50 epochs, batch 16, Adam at lr 2e-3 with a
        cosine decay over the run, the gradient norm clipped at 1) were chosen by measurement
        on the task suite (``python -m benchmarks.defaults``, docs/training.md, "Defaults").
    optimizer, optimizer_kwargs
        A name of :data:`rnnlab.optim.OPTIMIZERS` and its hyper-parameters except ``lr``.
    lr : float
        Base learning rate, > 0 (default 2e-3).
    schedule, schedule_kwargs
        A name of :data:`rnnlab.schedules.SCHEDULES` and its arguments except ``lr`` (plus
        ``warmup_steps``); schedules count optimizer updates, not epochs.  The default
        ``"cosine"`` decays from ``lr`` to 0 over the run's ``epochs`` (a resumed run with more
        epochs stretches the decay over the new total, from the update it stopped at);
        ``"constant"`` keeps ``lr``.
    clip_norm : float, None or "auto"
        Clip the global gradient norm to this value before each update; None does not clip.
        ``"auto"`` (the default) is :data:`DEFAULT_CLIP_NORM` (1.0) for the algorithms that
        make one update per minibatch and None for the online rules (they update inside the
        sequence, where no clipping is applied); :attr:`clip` is the value that applies.
    algorithm : str
        How gradients are computed (:data:`ALGORITHMS`): ``"bptt"``, ``"tbptt"``, ``"rtrl"``, the
        estimators ``"uoro"``, ``"kf_rtrl"``, ``"snap"``, ``"rflo"``, ``"eprop"`` (one gradient
        per minibatch), or an online rule (``"rtrl_online"``, ``"uoro_online"``, ...: an
        optimizer step inside the sequence; docs/online.md).  ``k1``/``k2`` are truncated BPTT's
        window sizes (``k2`` defaults to ``k1``).
    algorithm_kwargs : dict
        The rule's options (:func:`rnnlab.learning.rule_options`), e.g. ``{"n": 2}`` for SnAp,
        ``{"feedback": "symmetric"}`` for RFLO, ``{"every": 5}`` for an online rule; plain data
        only.  The random signs of UORO and KF-RTRL come from a Generator of the run (seeded
        from ``seed``, saved in checkpoints).
    engine : {"fast", "reference"}
        What computes the gradients: the fast engine (:class:`rnnlab.Workspace` for full and
        truncated BPTT; :mod:`rnnlab.fast.rules` for RTRL, UORO, KF-RTRL, SnAp, RFLO and e-prop
        and their online forms) or the reference engine (the public functions and the rules of
        :mod:`rnnlab.learning`, the derivation in code; slower).  Both give the same gradients to
        rounding (docs/architecture.md, docs/online.md).  A resumed run may change it; it is
        then no longer bit-identical.
    stateful : bool
        The training split is read as consecutive windows of ``batch_size`` streams and the final
        states carry over as the next minibatch's ``h0`` (reset every epoch); no shuffling.
    shuffle : bool
        Shuffle the training split every epoch (with the run's Generator).
    monitor, mode, patience, min_delta
        Early stopping: stop after ``patience`` evaluations without improvement of ``monitor``
        (``"val_loss"``, ``"val_accuracy"``, ``"train_loss"``, ...); ``patience=None`` never
        stops but still keeps ``best.npz``.  ``mode="auto"`` maximises accuracies.
    restore_best : bool
        At the end of a completed or early-stopped run, restore the parameters of the epoch where
        ``monitor`` was best (Keras' ``restore_best_weights``, scikit-learn's MLP with early
        stopping); the test metrics are then those of these weights.  ``History.weights`` says
        which weights the run ended with.  Needs a monitored metric (a validation split for
        ``val_*``); False keeps the last epoch's.
    health : bool
        Watch the run for loss spikes, a loss stuck at chance and gradients vanishing or
        exploding through time (:mod:`rnnlab.train.health`): a ``HealthWarning`` each, and the
        findings in ``History.health`` and the epoch records' ``health`` field.
    eval_every : int
        Evaluate on the validation split every this many epochs (and after the last).
    eval_batch_size : int, optional
        Sequences per evaluation forward pass (default ``max(batch_size, 256)``; in stateful
        mode the number of streams, default ``batch_size``).
    seed : int
        Seed of the run's Generator (shuffling).
    checkpoint_dir : str, optional
        Where ``last.npz`` (every ``checkpoint_every`` epochs, at the end, on SIGINT/SIGTERM) and
        ``best.npz`` (on every improvement of ``monitor``) are written.
    on_nonfinite : {"stop", "skip"}
        A non-finite loss or gradient is never applied; ``"stop"`` raises :class:`DivergenceError`,
        ``"skip"`` drops the batch and counts it.
    progress : {"auto", "on", "off"} or bool
        Progress bar on stderr; ``"auto"`` shows it only when stderr is a terminal.
    log_path : str, optional
        JSONL file that receives one line of metrics per epoch.
    tracking : {"tensorboard"}, optional
        Also write every epoch's metrics (and the config, and the final test metrics as
        hyper-parameter results) to an experiment tracker: ``"tensorboard"`` writes TensorBoard
        event files (needs ``pip install 'rnnlab[tracking]'``).
    tracking_dir : str, optional
        Where the tracker writes (default: ``tensorboard/`` beside ``log_path``, else beside
        ``checkpoint_dir``).
    """

    epochs: int = 50
    batch_size: int = 16
    optimizer: str = "adam"
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 2e-3
    schedule: str = "cosine"
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)
    clip_norm: float | str | None = "auto"
    algorithm: str = "bptt"
    algorithm_kwargs: dict[str, Any] = field(default_factory=dict)
    engine: str = "fast"
    k1: int | None = None
    k2: int | None = None
    stateful: bool = False
    shuffle: bool = True
    monitor: str = "val_loss"
    mode: str = "auto"
    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True
    health: bool = True
    eval_every: int = 1
    eval_batch_size: int | None = None
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    on_nonfinite: str = "stop"
    progress: str = "auto"
    log_path: str | None = None
    tracking: str | None = None
    tracking_dir: str | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("epochs", _int("epochs", self.epochs, 1))
        put("batch_size", _int("batch_size", self.batch_size, 1))
        put("lr", _positive("lr", self.lr))
        for name in ("optimizer", "schedule"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a name (str); got {getattr(self, name)!r}")
        put("optimizer", self.optimizer.lower())
        put("schedule", self.schedule.lower())
        put("optimizer_kwargs", _kwargs("optimizer_kwargs", self.optimizer_kwargs))
        put("schedule_kwargs", _kwargs("schedule_kwargs", self.schedule_kwargs))
        self.make_optimizer()        # validates the name and the hyper-parameters now
        self.make_schedule()
        _choice("algorithm", self.algorithm, ALGORITHMS)
        if isinstance(self.clip_norm, str):         # "none": how a TOML file spells None
            if self.clip_norm.lower() not in ("auto", "none"):
                raise ValueError(f"clip_norm must be a number > 0, None or 'auto'; got "
                                 f"{self.clip_norm!r}")
            put("clip_norm", None if self.clip_norm.lower() == "none" else "auto")
        elif self.clip_norm is not None:
            put("clip_norm", _positive("clip_norm", self.clip_norm))
        put("algorithm_kwargs", _algorithm_kwargs(self.algorithm, self.algorithm_kwargs))
        _choice("engine", self.engine, ENGINES)
        if self.algorithm == "tbptt":
            if self.k1 is None:
                raise ValueError("algorithm='tbptt' needs k1 (steps between truncations), an "
                                 "int >= 1; got None")
            put("k1", _int("k1", self.k1, 1))
            if self.k2 is not None:
                put("k2", _int("k2", self.k2, 1))
        elif self.k1 is not None or self.k2 is not None:
            raise ValueError(f"k1/k2 are only used with algorithm='tbptt'; got k1={self.k1!r}, "
                             f"k2={self.k2!r} with algorithm={self.algorithm!r}")
        if self.algorithm in ONLINE and self.clip_norm not in (None, "auto"):
            raise ValueError(f"clip_norm is not supported with algorithm={self.algorithm!r} (the "
                             "update is applied inside the sequence); set clip_norm=None or "
                             "'auto'")
        for name in ("stateful", "shuffle", "restore_best", "health"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool; got {getattr(self, name)!r}")
        if not isinstance(self.monitor, str) or "_" not in self.monitor or (
            self.monitor.split("_", 1)[0] not in ("train", "val")
        ):
            raise ValueError(f"monitor must look like 'val_loss' or 'train_accuracy' "
                             f"(train_/val_ + a metric); got {self.monitor!r}")
        resolve_mode(self.monitor, self.mode)
        if self.patience is not None:
            put("patience", _int("patience", self.patience, 1))
        md = self.min_delta
        if isinstance(md, bool) or not isinstance(md, int | float) or not 0 <= md < math.inf:
            raise ValueError(f"min_delta must be a finite number >= 0; got {md!r}")
        put("min_delta", float(md))
        put("eval_every", _int("eval_every", self.eval_every, 1))
        if self.eval_batch_size is not None:
            put("eval_batch_size", _int("eval_batch_size", self.eval_batch_size, 1))
        put("seed", _int("seed", self.seed, 0))
        put("checkpoint_every", _int("checkpoint_every", self.checkpoint_every, 1))
        _choice("on_nonfinite", self.on_nonfinite, ON_NONFINITE)
        if isinstance(self.progress, bool):
            put("progress", "on" if self.progress else "off")
        _choice("progress", self.progress, PROGRESS)
        if self.tracking is not None:
            _choice("tracking", self.tracking, TRACKING)
        for name in ("checkpoint_dir", "log_path", "tracking_dir"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str | os.PathLike):
                    raise TypeError(f"{name} must be a path or None; got {value!r}")
                put(name, os.fspath(value))

    @property
    def clip(self) -> float | None:
        """The gradient-norm clip this config applies (None: none): ``clip_norm`` with
        ``"auto"`` resolved for its algorithm."""
        if self.clip_norm == "auto":
            return None if self.algorithm in ONLINE else DEFAULT_CLIP_NORM
        return None if self.clip_norm is None else float(self.clip_norm)

    def make_optimizer(self) -> optim.Optimizer:
        """The optimizer this config names, with ``lr`` and ``optimizer_kwargs``."""
        try:
            return optim.make(self.optimizer, lr=self.lr, **self.optimizer_kwargs)
        except TypeError as exc:
            raise TypeError(f"optimizer_kwargs {self.optimizer_kwargs} do not fit optimizer "
                            f"{self.optimizer!r}: {exc}") from None

    def make_schedule(self) -> schedules.Schedule:
        """The learning-rate schedule, a function of the optimizer's step count."""
        try:
            return schedules.make(self.schedule, lr=self.lr, **self.schedule_kwargs)
        except TypeError as exc:
            raise TypeError(f"schedule_kwargs {self.schedule_kwargs} do not fit schedule "
                            f"{self.schedule!r}: {exc}") from None

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and validated)."""
        unknown, valid = unknown_fields(type(self), changes)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; valid keys are {valid}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/TOML-ready); ``TrainConfig.from_dict(c.to_dict()) == c``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise ValueError listing the valid ones."""
        if not isinstance(d, Mapping):
            raise TypeError(f"TrainConfig.from_dict needs a mapping; got {type(d).__name__}")
        unknown, valid = unknown_fields(cls, d)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; valid keys are {valid}")
        return cls(**d)
