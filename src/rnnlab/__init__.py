"""rnnlab: vanilla (Elman) recurrent networks and exact backpropagation through time, on NumPy.

The package is laid out by floors (docs/architecture.md): ``core`` (the derivation in code, the
reference engine), ``learning`` (gradient estimators: BPTT, truncated BPTT, RTRL), ``fast`` (the
fast engine), ``train`` (optimizers, schedules, the loop, checkpoints), ``data``, ``interop``,
``lab`` (experiment configs, runs, sweeps, figures), and the faces here (``RNN``, the
scikit-learn estimators, the command line).  Short module names such as ``rnnlab.network`` or
``rnnlab.optim`` stay public (:mod:`rnnlab.aliases`).
"""

import importlib
from typing import TYPE_CHECKING, Any

from . import aliases
from .core.engine import Reference
from .core.network import (
    Cache,
    Gradients,
    Output,
    backward,
    forward,
    loss_and_grad,
    value_and_grad,
)
from .core.params import init_params, shapes
from .core.spec import RNNSpec
from .fast.workspace import Workspace
from .version import __version__

aliases.install()

if TYPE_CHECKING:                 # imported when first asked for (below)
    from .model import RNN
    from .train import DivergenceError, History, TrainConfig, fit

__all__ = [
    "Cache",
    "DivergenceError",
    "Gradients",
    "History",
    "NotFittedError",
    "Output",
    "RNN",
    "RNNClassifier",
    "RNNRegressor",
    "RNNSpec",
    "Reference",
    "TrainConfig",
    "Workspace",
    "backward",
    "fit",
    "forward",
    "init_params",
    "loss_and_grad",
    "shapes",
    "value_and_grad",
    "__version__",
]

# The training face, imported when first asked for (PEP 562): a process that only needs the
# reference engine or a workspace does not pay for the training loop, the data sets and the lab
# (docs/performance.md, "Start-up").  So are the floors not imported above (``rnnlab.train``,
# ``rnnlab.data``, ``rnnlab.lab``, ...).
_HOMES = {"RNN": "model",
          **{n: "train" for n in ("DivergenceError", "History", "TrainConfig", "fit")}}
_FLOORS = ("core", "learning", "fast", "train", "data", "interop", "lab", "model", "estimators",
           "cli")


_ESTIMATORS = ("NotFittedError", "RNNClassifier", "RNNRegressor")


def __getattr__(name: str) -> Any:
    """The training face and the floors, imported when first asked for; ``rnnlab.network``,
    ``rnnlab.optim``, ...: the short module names (:mod:`rnnlab.aliases`); the scikit-learn
    estimators (they need scikit-learn)."""
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        globals()[name] = value                 # asked once
        return value
    if name in _FLOORS:
        return importlib.import_module(f"{__name__}.{name}")
    if name in aliases.MODULES:
        return aliases.module(name)
    if name in _ESTIMATORS:
        if name == "NotFittedError":
            try:
                from sklearn.exceptions import NotFittedError
            except ImportError:                 # no scikit-learn, no estimators to be unfitted
                return _NotFittedError
            return NotFittedError
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")


class _NotFittedError(ValueError, AttributeError):
    """scikit-learn's ``NotFittedError`` where scikit-learn is not installed."""


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
