"""Element-wise hidden activations and their derivatives (docs/derivation.md, eqs. 1-4).

Each activation's derivative is written in terms of its *output* ``h = f(z)``, so the forward pass
need not keep the pre-activations ``z``: ``tanh' = 1 - h^2`` (eq. 2), ``sigmoid' = h (1 - h)``
(eq. 3), ``relu' = [h > 0]`` (eq. 4), ``identity' = 1``.  All functions work in place when given
``out=`` so that the time loop allocates nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


def _tanh(z: Array, out: Array | None = None) -> Array:
    return np.tanh(z, out=out)


def _tanh_grad(h: Array, out: Array | None = None) -> Array:
    # eq. (2): 1 - h^2, written without a temporary when out is given
    out = np.multiply(h, h, out=out)
    np.subtract(1.0, out, out=out)
    return out


def _sigmoid(z: Array, out: Array | None = None) -> Array:
    # eq. (3): sigma(z) = (1 + tanh(z / 2)) / 2, which never overflows
    out = np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


def _sigmoid_grad(h: Array, out: Array | None = None) -> Array:
    out = np.subtract(1.0, h, out=out)
    out *= h
    return out


def _relu(z: Array, out: Array | None = None) -> Array:
    return np.maximum(z, 0.0, out=out)


def _relu_grad(h: Array, out: Array | None = None) -> Array:
    # eq. (4): [z > 0] == [h > 0]; the derivative at z = 0 is taken as 0, as PyTorch does
    if out is None:
        return (h > 0).astype(h.dtype)
    np.greater(h, 0, out=out, casting="unsafe")
    return out


def _identity(z: Array, out: Array | None = None) -> Array:
    if out is None:
        return z.copy()
    if out is not z:
        np.copyto(out, z)
    return out


def _identity_grad(h: Array, out: Array | None = None) -> Array:
    if out is None:
        return np.ones_like(h)
    out.fill(1.0)
    return out


@dataclass(frozen=True)
class Activation:
    """A hidden activation ``f`` with its derivative expressed through ``h = f(z)``.

    Attributes
    ----------
    name : str
    f : callable ``(z, out=None) -> h``, element-wise, any shape
    grad_from_output : callable ``(h, out=None) -> f'(z)``, element-wise, same shape as ``h``
    linear : bool
        True when ``f'`` is identically 1 (identity), which lets callers skip a multiplication.
    """

    name: str
    f: Callable[..., Array]
    grad_from_output: Callable[..., Array]
    linear: bool = False


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", _tanh, _tanh_grad),
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_grad),
    "relu": Activation("relu", _relu, _relu_grad),
    "identity": Activation("identity", _identity, _identity_grad, linear=True),
}


def get(name: str) -> Activation:
    """Return the activation called ``name``; a ``ValueError`` lists the valid names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"activation name must be a str; got {type(name).__name__}")
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None
