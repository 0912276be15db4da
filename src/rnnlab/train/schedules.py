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
  ``eta_min=min_lr``), then stays at ``min_lr`` (PyTorch would rise again).
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
from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = ["SCHEDULES", "Constant", "Cosine", "Schedule", "StepDecay", "Warmup", "make"]


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
    """Cosine decay from ``lr`` to ``min_lr`` over ``total_steps``, then ``min_lr``."""

    lr: float
    total_steps: int
    min_lr: float = 0.0
    name: ClassVar[str] = "cosine"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "total_steps", _int("total_steps", self.total_steps, 1))
        min_lr = _real("min_lr", self.min_lr)
        if not 0.0 <= min_lr <= self.lr:
            raise ValueError(f"min_lr must be in [0, lr={self.lr!r}], got {min_lr!r}")
        object.__setattr__(self, "min_lr", min_lr)

    def _at(self, step: int) -> float:
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

    def config(self) -> dict[str, Any]:
        """Config of the wrapped schedule plus ``warmup_steps``/``warmup_start_factor``."""
        out = self.schedule.config()
        out["warmup_steps"] = self.warmup_steps
        out["warmup_start_factor"] = self.start_factor
        return out


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (Constant, StepDecay, Cosine)
}
"""Base schedules known to :func:`make` (warm-up is requested with keywords)."""


def make(name: str, *, warmup_steps: int = 0, warmup_start_factor: float | None = None,
         **kwargs: Any) -> Schedule:
    """Build a schedule by name, optionally wrapped in a linear warm-up.

    Parameters
    ----------
    name : str
        One of ``"constant"``, ``"step"``, ``"cosine"`` (case-insensitive).
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
    sched: Schedule = cls(**kwargs)
    warmup_steps = _int("warmup_steps", warmup_steps, 0)
    if warmup_steps == 0 and warmup_start_factor is None:
        return sched
    return Warmup(sched, warmup_steps, warmup_start_factor)
