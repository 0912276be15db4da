"""Training health: the signs that a run is not learning, reported as it trains.

Three checks (docs/training.md, "Training health"):

* **loss spike**: a minibatch's loss more than ``spike_factor`` (default 100, two orders of
  magnitude) times the median of the last ``window`` finite losses;
* **stuck at chance**: for softmax cross-entropy (mean reduction), the epoch's training loss
  within ``stall_tol`` (default 2 %) of the chance level ``ln C`` for ``stall_epochs`` (default
  3) epochs in a row;
* **vanishing or exploding gradient through time**: with the per-step gradient norms of
  docs/derivation.md eq. (35), ``||dL/dH_t||`` of the top layer on a fixed probe batch, the ratio
  of the norm at the step furthest from the loss to the norm at the scored step falls below
  ``vanish`` (1e-6) or rises above ``explode`` (1e6).  Measured once per epoch for sequence
  targets scored at the last step (many-to-one), where "through time" has one meaning.

Each finding is a :class:`HealthWarning` (a ``UserWarning``: ``warnings`` filters apply; the
CLI prints it as one line), a ``{"epoch", "step", "kind", "message"}`` entry of
``History.health``, and its kind in the epoch record's ``health`` list (``metrics.jsonl``).
A kind that persists is warned about once, when it starts.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Health", "HealthWarning", "KINDS"]

KINDS: tuple[str, ...] = ("loss_spike", "stuck_at_chance", "vanishing_gradient",
                          "exploding_gradient")


class HealthWarning(UserWarning):
    """A sign that training is not learning (see :mod:`rnnlab.train.health`)."""


@dataclass
class Health:
    """The checks of one run.

    Parameters
    ----------
    chance : float or None
        The chance-level training loss (``ln C``), or None where the task has none.
    spike_factor, window, stall_epochs, stall_tol, vanish, explode
        See the module docstring.
    """

    chance: float | None = None
    spike_factor: float = 100.0
    window: int = 50
    stall_epochs: int = 3
    stall_tol: float = 0.02
    vanish: float = 1e-6
    explode: float = 1e6
    events: list[dict[str, Any]] = field(default_factory=list)
    _recent: deque[float] = field(default_factory=deque)
    _stalled: int = 0
    _active: set[str] = field(default_factory=set)
    _epoch_kinds: set[str] = field(default_factory=set)

    def _report(self, kind: str, message: str, epoch: int, step: int) -> None:
        self._epoch_kinds.add(kind)
        if kind in self._active:
            return
        self._active.add(kind)
        self.events.append({"epoch": epoch, "step": step, "kind": kind, "message": message})
        warnings.warn(message, HealthWarning, stacklevel=4)

    def step(self, loss: float, epoch: int, step: int) -> None:
        """One minibatch's loss (non-finite losses are the divergence check's business)."""
        if not math.isfinite(loss):
            return
        if len(self._recent) >= 10:
            median = statistics.median(self._recent)
            if median > 0 and loss > self.spike_factor * median:
                self._report("loss_spike", f"loss spike at step {step} (epoch {epoch}): "
                             f"{loss:.4g}, {loss / median:.0f}x the median {median:.3g} of the "
                             f"last {len(self._recent)} minibatches", epoch, step)
        self._recent.append(loss)
        if len(self._recent) > self.window:
            self._recent.popleft()

    def gradients(self, dh_norm: NDArray[np.floating], epoch: int, step: int) -> None:
        """The top layer's per-step ``||dL/dH_t||`` (reading order, the loss at the end)."""
        last, first = float(dh_norm[-1]), float(dh_norm[0])
        if not (last > 0 and math.isfinite(last) and math.isfinite(first)):
            return
        ratio = first / last
        T = dh_norm.shape[0]
        if ratio < self.vanish:
            self._report("vanishing_gradient", f"the gradient vanishes through time (epoch "
                         f"{epoch}): ||dL/dH_1|| / ||dL/dH_{T}|| = {ratio:.2g} over {T} steps; "
                         "early steps barely learn (fewer steps may help; so may an orthogonal or "
                         "identity recurrent matrix at the start, init='keras' or 'irnn', if "
                         "the run did not start from one)",
                         epoch, step)
        else:
            self._active.discard("vanishing_gradient")
        if ratio > self.explode:
            self._report("exploding_gradient", f"the gradient explodes through time (epoch "
                         f"{epoch}): ||dL/dH_1|| / ||dL/dH_{T}|| = {ratio:.2g} over {T} steps "
                         "(try clip_norm or a smaller lr)", epoch, step)
        else:
            self._active.discard("exploding_gradient")

    def end_epoch(self, train_loss: float | None, epoch: int, step: int) -> list[str]:
        """The epoch's training loss; returns the kinds found during the epoch (for its
        record) and starts the next epoch."""
        if self.chance is not None and train_loss is not None and math.isfinite(train_loss):
            if train_loss >= (1.0 - self.stall_tol) * self.chance:
                self._stalled += 1
            else:
                self._stalled = 0
                self._active.discard("stuck_at_chance")
            if self._stalled >= self.stall_epochs:
                self._report("stuck_at_chance", f"the training loss has stayed at the chance "
                             f"level ln C = {self.chance:.4g} for {self._stalled} epochs (epoch "
                             f"{epoch}: {train_loss:.4g}): the network is not learning; try "
                             "another lr, init or clip_norm", epoch, step)
        if "loss_spike" not in self._epoch_kinds:
            self._active.discard("loss_spike")
        kinds, self._epoch_kinds = sorted(self._epoch_kinds), set()
        return kinds


def chance_level(loss: str, reduction: str, output_size: int) -> float | None:
    """``ln C`` for softmax cross-entropy averaged over scored entries; None otherwise."""
    if loss == "softmax_ce" and reduction == "mean" and output_size > 1:
        return math.log(output_size)
    return None

