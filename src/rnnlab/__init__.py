"""rnnlab: vanilla (Elman) recurrent networks and exact backpropagation through time, on NumPy."""

from .network import (
    Cache,
    Gradients,
    Output,
    backward,
    forward,
    loss_and_grad,
    value_and_grad,
)
from .params import init_params, shapes
from .spec import RNNSpec
from .workspace import Workspace

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "Gradients",
    "Output",
    "RNNSpec",
    "backward",
    "forward",
    "init_params",
    "loss_and_grad",
    "shapes",
    "value_and_grad",
    "Workspace",
]

from .estimators import NotFittedError, RNNClassifier, RNNRegressor  # noqa: E402
from .model import RNN  # noqa: E402
from .train import DivergenceError, History, TrainConfig, fit  # noqa: E402

__all__ += ["DivergenceError", "History", "NotFittedError", "RNN", "RNNClassifier",
            "RNNRegressor", "TrainConfig", "fit"]
