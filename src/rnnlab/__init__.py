"""rnnlab: vanilla (Elman) recurrent networks and exact backpropagation through time, on NumPy.

The package is laid out by floors (docs/architecture.md): ``core`` (the derivation in code, the
reference engine), ``learning`` (gradient estimators: BPTT, truncated BPTT, RTRL), ``fast`` (the
fast engine), ``train`` (optimizers, schedules, the loop, checkpoints), ``data``, ``interop``,
``lab`` (experiment configs, runs, sweeps, figures), and the faces here (``RNN``, the
scikit-learn estimators, the command line).  Short module names such as ``rnnlab.network`` or
``rnnlab.optim`` stay public (:mod:`rnnlab.aliases`).
"""

from typing import Any

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

from .model import RNN  # noqa: E402
from .train import DivergenceError, History, TrainConfig, fit  # noqa: E402

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


_ESTIMATORS = ("NotFittedError", "RNNClassifier", "RNNRegressor")


def __getattr__(name: str) -> Any:
    """``rnnlab.network``, ``rnnlab.optim``, ...: the short module names (:mod:`rnnlab.aliases`);
    the scikit-learn estimators, imported when first asked for (they need scikit-learn)."""
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
