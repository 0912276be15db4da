"""Learning-rate schedules as pure functions of the (0-based) optimizer step.

A schedule is an immutable callable ``schedule(step) -> float``: the learning rate
to use for update number ``step`` (the first update is step 0).  Pass it to the
optimizer per call::

    sched = make("cosine", lr=1e-3, total_steps=10_000, warmup_steps=500)
    opt.update_(params, grads, state, lr=sched(state["step"]))

Semantics (``t`` is the step):

* :class:`Constant` -- ``lr``.
* :class:`StepDecay` -- ``lr * gamma ** (t // step_size)`` (``torch.optim.lr_scheduler.StepLR``).
* :class:`Cosine` -- ``min_lr + (lr - min_lr) * (1 + cos(pi * t / total_steps)) / 2`` for
  ``t <= total_steps`` (``CosineAnnealingLR`` with ``T_max=total_steps``,
  ``eta_min=min_lr``), then stays at ``min_lr`` (PyTorch would rise again).  Without
  ``total_steps`` the schedule does not know its length yet: :func:`rnnlab.fit` sets it to the
  run's updates (epochs x minibatches per epoch) through :meth:`Schedule.with_length`; calling an
  unresolved schedule is a ValueError that says so.
* :class:`Plateau` -- ``lr``, lowered by ``factor`` whenever the monitored metric stops improving:
  :func:`rnnlab.fit` runs it through the callback
  :class:`rnnlab.train.callbacks.ReduceLROnPlateau` (the one schedule that reads metrics).
* :class:`Warmup` -- linear warm-up in front of any schedule ``inner``, with the
  semantics of ``SequentialLR([LinearLR(start_factor, total_iters=W), inner],
  milestones=[W])``: for ``t < W`` the rate is
  ``inner(0) * (start_factor + (1 - start_factor) * t / W)``, and for ``t >= W`` it is
  ``inner(t - W)``, i.e. the wrapped schedule starts from *its own* step 0 when the
  warm-up ends (a cosine over ``total_steps`` thus ends at step ``W + total_steps``).
  ``start_factor`` defaults to ``1 / W`` so the first update is not wasted; it may be 0.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

__all__ = ["SCHEDULES", "Constant", "Cosine", "Plateau", "Schedule", "StepDecay", "Warmup",
           "make"]


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out!r}")
    return out


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _positive(name: str, value: object) -> float:
    out = _real(name, value)
    if out <= 0.0:
        raise ValueError(f"{name} must be > 0, got {out!r}")
    return out


class Schedule(ABC):
    """Base class: a frozen dataclass callable as ``schedule(step) -> float``."""

    name: ClassVar[str]

    def __call__(self, step: int) -> float:
        """Learning rate for the 0-based update ``step`` (an int >= 0)."""
        return self._at(_int("step", step, 0))

    @abstractmethod
    def _at(self, step: int) -> float: ...

    def with_length(self, total_steps: int) -> Schedule:
        """This schedule for a run of ``total_steps`` updates: a schedule that needs its length
        and was not given one takes it (:func:`rnnlab.fit` calls this); others are returned
        as they are."""
        _int("total_steps", total_steps, 1)
        return self

    def config(self) -> dict[str, Any]:
        """JSON-friendly description; ``make(**sched.config())`` rebuilds the schedule."""
        out: dict[str, Any] = {"name": self.name}
        out.update({f.name: getattr(self, f.name) for f in fields(self)})  # type: ignore[arg-type]
        return out


@dataclass(frozen=True)
class Constant(Schedule):
    """Constant learning rate."""

    lr: float
    name: ClassVar[str] = "constant"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))

    def _at(self, step: int) -> float:
        return self.lr


@dataclass(frozen=True)
class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` steps (StepLR)."""

    lr: float
    step_size: int
    gamma: float = 0.1
    name: ClassVar[str] = "step"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "step_size", _int("step_size", self.step_size, 1))
        gamma = _positive("gamma", self.gamma)
        if gamma > 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        object.__setattr__(self, "gamma", gamma)

    def _at(self, step: int) -> float:
        return self.lr * self.gamma ** (step // self.step_size)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine decay from ``lr`` to ``min_lr`` over ``total_steps``, then ``min_lr``.

    ``total_steps=None``: the length of the run, set by :func:`rnnlab.fit` (epochs x minibatches
    per epoch) through :meth:`with_length`.
    """

    lr: float
    total_steps: int | None = None
    min_lr: float = 0.0
    name: ClassVar[str] = "cosine"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        if self.total_steps is not None:
            object.__setattr__(self, "total_steps", _int("total_steps", self.total_steps, 1))
        min_lr = _real("min_lr", self.min_lr)
        if not 0.0 <= min_lr <= self.lr:
            raise ValueError(f"min_lr must be in [0, lr={self.lr!r}], got {min_lr!r}")
        object.__setattr__(self, "min_lr", min_lr)

    def with_length(self, total_steps: int) -> Cosine:
        """A copy over ``total_steps`` updates when none was given (else this schedule)."""
        total = _int("total_steps", total_steps, 1)
        return self if self.total_steps is not None else replace(self, total_steps=total)

    def _at(self, step: int) -> float:
        if self.total_steps is None:
            raise ValueError("the cosine schedule does not know its length: give total_steps= "
                             "(the number of updates to decay over), or let rnnlab.fit set it "
                             "to epochs x minibatches per epoch")
        if step >= self.total_steps:
            return self.min_lr
        cos = math.cos(math.pi * step / self.total_steps)
        return self.min_lr + (self.lr - self.min_lr) * (1.0 + cos) / 2.0


@dataclass(frozen=True)
class Warmup(Schedule):
    """Linear warm-up over ``warmup_steps`` in front of ``schedule`` (see module docs)."""

    schedule: Schedule
    warmup_steps: int
    start_factor: float | None = None
    name: ClassVar[str] = "warmup"

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(self.schedule).__name__}")
        warmup_steps = _int("warmup_steps", self.warmup_steps, 0)
        object.__setattr__(self, "warmup_steps", warmup_steps)
        if self.start_factor is None:
            factor = 1.0 / warmup_steps if warmup_steps else 1.0
        else:
            factor = _real("start_factor", self.start_factor)
            if not 0.0 <= factor <= 1.0:
                raise ValueError(f"start_factor must be in [0, 1], got {factor!r}")
        object.__setattr__(self, "start_factor", factor)

    def _at(self, step: int) -> float:
        w = self.warmup_steps
        if step >= w:
            return self.schedule(step - w)
        assert self.start_factor is not None
        factor = self.start_factor + (1.0 - self.start_factor) * step / w
        return self.schedule(0) * factor

    def with_length(self, total_steps: int) -> Warmup:
        """The wrapped schedule gets what is left after the warm-up (at least one update)."""
        total = _int("total_steps", total_steps, 1)
        inner = self.schedule.with_length(max(1, total - self.warmup_steps))
        return self if inner is self.schedule else replace(self, schedule=inner)

    def config(self) -> dict[str, Any]:
        """Config of the wrapped schedule plus ``warmup_steps``/``warmup_start_factor``."""
        out = self.schedule.config()
        out["warmup_steps"] = self.warmup_steps
        out["warmup_start_factor"] = self.start_factor
        return out


@dataclass(frozen=True)
class Plateau(Schedule):
    """``lr`` until the monitored metric stops improving, then ``factor`` times less, again after
    each plateau (:class:`rnnlab.train.callbacks.ReduceLROnPlateau`, which :func:`rnnlab.fit`
    installs for this schedule: the rate depends on metrics, so this object alone gives the
    starting rate).

    Parameters
    ----------
    lr : float
    monitor : str
        A record key (``"val_loss"``, ``"train_loss"``, ``"val_accuracy"``, ...).
    factor : float
        In (0, 1).
    patience : int
        Evaluations without improvement before a reduction.
    min_delta, cooldown, min_lr, mode
        As in :class:`~rnnlab.train.callbacks.ReduceLROnPlateau`.
    """

    lr: float
    monitor: str = "val_loss"
    factor: float = 0.1
    patience: int = 10
    min_delta: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    mode: str = "auto"
    name: ClassVar[str] = "plateau"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        if not isinstance(self.monitor, str) or not self.monitor.startswith(("train_", "val_")):
            raise ValueError(f"monitor must be a metric such as 'val_loss' or 'train_loss'; "
                             f"got {self.monitor!r}")
        factor = _real("factor", self.factor)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "patience", _int("patience", self.patience, 1))
        object.__setattr__(self, "cooldown", _int("cooldown", self.cooldown, 0))
        for name in ("min_delta", "min_lr"):
            v = _real(name, getattr(self, name))
            if v < 0.0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
            object.__setattr__(self, name, v)
        if self.mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'; got {self.mode!r}")

    def _at(self, step: int) -> float:
        return self.lr

    def callback_kwargs(self) -> dict[str, Any]:
        """The arguments of the ReduceLROnPlateau callback that runs this schedule."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lr"}


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (Constant, StepDecay, Cosine, Plateau)
}
"""Base schedules known to :func:`make` (warm-up is requested with keywords)."""


def make(name: str, *, warmup_steps: int = 0, warmup_start_factor: float | None = None,
         **kwargs: Any) -> Schedule:
    """Build a schedule by name, optionally wrapped in a linear warm-up.

    Parameters
    ----------
    name : str
        One of ``"constant"``, ``"step"``, ``"cosine"``, ``"plateau"`` (case-insensitive).
    warmup_steps : int
        If > 0, wrap the schedule in :class:`Warmup` with this many steps.
    warmup_start_factor : float, optional
        ``Warmup.start_factor`` (default ``1 / warmup_steps``).
    **kwargs
        Arguments of the schedule class, e.g. ``lr=1e-3, total_steps=1000``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones) or a bad value.
    TypeError
        A missing, unexpected or wrongly typed argument.
    """
    if not isinstance(name, str):
        raise TypeError(f"schedule name must be a str, got {name!r}")
    cls = SCHEDULES.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown schedule {name!r}; valid names are {sorted(SCHEDULES)}")
    try:
        sched: Schedule = cls(**kwargs)
    except TypeError as exc:            # a missing or unexpected argument: name what is expected
        expected = [f.name for f in fields(cls) if f.name != "lr"]  # type: ignore[arg-type]
        given = sorted(k for k in kwargs if k != "lr")
        raise TypeError(f"schedule {cls.name!r} takes {expected} (besides lr); got {given}: "
                        f"{exc}") from None
    warmup_steps = _int("warmup_steps", warmup_steps, 0)
    if warmup_steps == 0 and warmup_start_factor is None:
        return sched
    return Warmup(sched, warmup_steps, warmup_start_factor)
