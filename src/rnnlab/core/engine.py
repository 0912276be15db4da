"""The contract every engine keeps, and the reference engine that defines it.

An *engine* computes one training step's loss and gradients for a fixed spec::

    engine = Reference(spec)                        # or rnnlab.Workspace(spec), the fast engine
    loss, grads = engine.value_and_grad(params, X, Y, h0=None, mask=None, lengths=None,
                                        steps=None, sample_weight=None)
    engine.logits, engine.h0_grad, engine.input_grad, engine.h_n()   # of that call

``grads`` has the parameters' keys, shapes and dtypes; ``logits`` are in the public (batch-first)
layout.  :class:`Reference` is the public functions of :mod:`rnnlab.core.network` behind this
contract; the fast engine (:class:`rnnlab.fast.workspace.Workspace`) must return the same numbers
(to rounding, tested on the shared grid of configurations), and a later engine (say, GPU arrays)
would be a third class with the same methods.  :func:`rnnlab.fit` takes either by name
(``TrainConfig(engine=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import network
from .params import Params
from .spec import RNNSpec

__all__ = ["Engine", "Reference"]

Array = NDArray[np.floating]


class Engine(Protocol):
    """What :func:`rnnlab.fit` needs of an engine (see the module docstring)."""

    spec: RNNSpec
    h0_grad: Array | None
    input_grad: Array | None

    def value_and_grad(self, params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike, *,
                       h0: ArrayLike | None = None, mask: ArrayLike | None = None,
                       lengths: ArrayLike | None = None, steps: int | None = None,
                       sample_weight: ArrayLike | None = None) -> tuple[float, Params]: ...

    @property
    def logits(self) -> Array | None: ...

    def h_n(self) -> Array: ...


class Reference:
    """The reference engine: :func:`~rnnlab.core.network.forward`,
    :func:`~rnnlab.core.network.loss_and_grad` and :func:`~rnnlab.core.network.backward` behind
    the engine contract.

    Parameters
    ----------
    spec : RNNSpec
    input_grad : bool
        Keep ``dL/dX`` of each call in :attr:`input_grad` (it is computed either way).
    """

    def __init__(self, spec: RNNSpec, *, input_grad: bool = False) -> None:
        if not isinstance(spec, RNNSpec):
            raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
        self.spec = spec
        self.want_input_grad = input_grad
        self.h0_grad: Array | None = None
        self.input_grad: Array | None = None
        self._out: network.Output | None = None

    def value_and_grad(self, params: Mapping[str, Array], X: ArrayLike, Y: ArrayLike, *,
                       h0: ArrayLike | None = None, mask: ArrayLike | None = None,
                       lengths: ArrayLike | None = None, steps: int | None = None,
                       sample_weight: ArrayLike | None = None) -> tuple[float, Params]:
        """``(loss, gradients)`` of one batch, arguments as for
        :func:`rnnlab.core.network.value_and_grad`."""
        loss, g, out = network.value_and_grad(params, X, Y, self.spec, h0=h0, mask=mask,
                                              lengths=lengths, steps=steps,
                                              sample_weight=sample_weight)
        self._out, self.h0_grad = out, g.h0
        self.input_grad = g.X if self.want_input_grad else None
        return loss, g.params

    @property
    def logits(self) -> Array | None:
        """The last call's logits, ``(B, O)`` or ``(B, T, O)``."""
        return None if self._out is None else self._out.logits

    def h_n(self) -> Array:
        """The last call's final states ``(num_layers * num_directions, B, H)``."""
        if self._out is None:
            raise RuntimeError("h_n() needs a value_and_grad call first")
        return self._out.h_n
