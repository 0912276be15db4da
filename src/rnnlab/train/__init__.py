"""Training: optimizers, schedules, the loop, metrics, checkpoints (docs/training.md).

::

    history = fit(params, spec, dataset, TrainConfig(epochs=20, lr=1e-2))

:func:`fit` runs an engine for full BPTT (:mod:`rnnlab.train.steps`) or a learning rule of
:mod:`rnnlab.learning`, one minibatch at a time (:mod:`rnnlab.train.loop`).
"""

from .config import ALGORITHMS, RESUME_KEYS, TrainConfig
from .files import LockedError
from .history import DivergenceError, History
from .loop import check_fit, fit
from .splits import spec_for_dataset

__all__ = ["ALGORITHMS", "DivergenceError", "History", "LockedError", "RESUME_KEYS",
           "TrainConfig", "check_fit", "fit", "spec_for_dataset"]
