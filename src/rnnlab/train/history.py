"""What :func:`rnnlab.fit` returns and raises: :class:`History`, :class:`DivergenceError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DivergenceError", "History"]


class DivergenceError(RuntimeError):
    """A non-finite loss, gradient or update stopped training (``on_nonfinite="stop"``).

    Attributes: ``step`` (1-based minibatch count of the bad batch), ``epoch`` (1-based),
    ``checkpoint`` (path of the last good checkpoint or None), ``history``.
    """

    def __init__(self, message: str, *, step: int, epoch: int, checkpoint: str | None,
                 history: History) -> None:
        super().__init__(message)
        self.step, self.epoch, self.checkpoint, self.history = step, epoch, checkpoint, history


@dataclass
class History:
    """What :func:`fit` returns.

    Attributes
    ----------
    epochs : list of dict
        One record per completed epoch, also the lines of the JSONL log (a resumed run includes
        the epochs of the checkpoint): ``epoch``, ``step``, ``lr``, ``train_loss``,
        ``train_accuracy``, ``train_grad_norm``, ``train_skipped``, ``val_*`` on evaluation
        epochs, ``time`` and ``seq_per_s``.  Non-finite values are None.
    step_losses : list of float
        The loss of every minibatch run by this call, in order (non-finite for skipped ones).
    status : {"completed", "early_stopped", "interrupted", "diverged"}
        ``"early_stopped"`` also when a callback stopped training (``message`` names it).
    epoch, step : int
        Completed epochs and minibatches.
    opt_state : dict or None
        The optimizer state at the end (slots and step count): pass it to the next
        ``fit(..., opt_state=...)`` to continue with the same moments (``warm_start``).
    startup_s : float
        Seconds spent before the first step (building the engine: compiling its kernels).
    fast_path : str or None
        Why the compiled loops of the fast engine do not run in this training, or None when they
        do (``rnnlab[fast]`` installed, float32, no mask, tanh/ReLU/identity).
    lr_scale : float
        The factor a callback (ReduceLROnPlateau) put on the learning rate; 1.0 otherwise.
    monitor, best_value, best_epoch
        The metric early stopping watches (``TrainConfig.monitor``), its best value and epoch.
    weights : {"best", "last"}
        Which parameters the run ended with: the best epoch's (restored,
        ``TrainConfig.restore_best``) or the last epoch's; ``weights_epoch`` is that epoch.
        ``test`` metrics are those of these weights.
    health : list of dict
        Training-health warnings (loss spikes, a loss stuck at chance, gradients vanishing or
        exploding through time): ``{"epoch", "step", "kind", "message"}``, also in the epoch
        records' ``health`` field (rnnlab.train.health).
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    status: str = "completed"
    epoch: int = 0
    step: int = 0
    skipped: int = 0
    monitor: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    checkpoint: str | None = None
    test: dict[str, float] | None = None
    message: str = ""
    opt_state: dict[str, Any] | None = field(default=None, repr=False)
    startup_s: float = 0.0
    fast_path: str | None = None
    lr_scale: float = 1.0
    weights: str = "last"
    weights_epoch: int | None = None
    health: list[dict[str, Any]] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"

    @property
    def stopped_early(self) -> bool:
        return self.status == "early_stopped"

    def __getitem__(self, name: str) -> list[Any]:
        """The values of one metric across epochs (None where it was not computed)."""
        if not any(name in r for r in self.epochs):
            keys = sorted({k for r in self.epochs for k in r})
            raise KeyError(f"no metric {name!r} in the history; recorded: {keys}")
        return [r.get(name) for r in self.epochs]
