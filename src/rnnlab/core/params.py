"""Parameter layout and initialisers.

Parameters are a flat ``dict[str, ndarray]``, one key per array, biases 1-D::

    l0.W_xh (D, H)   l0.W_hh (H, H)   l0.b_h (H,)      layer 0, forward direction
    l0r.W_xh ...                                       layer 0, reverse direction (bidirectional)
    l1.W_xh (H or 2H, H) ...                           layer 1 reads layer 0's output
    W_hy (H or 2H, O)   b_y (O,)                       the head

Gradients and optimizer state use the same keys and shapes.  Every initialiser takes an explicit
``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .spec import RNNSpec

Params = dict[str, NDArray[np.floating]]
INITS: tuple[str, ...] = ("keras", "pytorch", "small", "irnn", "identity")
DEFAULT_INIT = "keras"
"""The default initialiser everywhere (init_params, RNN, configs, estimators): chosen by the
defaults sweep of docs/results.md ("Defaults"), where it won on every task of the suite."""


def shapes(spec: RNNSpec) -> dict[str, tuple[int, ...]]:
    """The key -> shape layout for ``spec``, in a fixed order (layers bottom up, then the head)."""
    H = spec.hidden_size
    out: dict[str, tuple[int, ...]] = {}
    for layer in range(spec.num_layers):
        d_in = spec.input_size if layer == 0 else H * spec.num_directions
        for p in spec.layer_keys(layer):
            out[f"{p}.W_xh"] = (d_in, H)
            out[f"{p}.W_hh"] = (H, H)
            out[f"{p}.b_h"] = (H,)
    out["W_hy"] = (H * spec.num_directions, spec.output_size)
    out["b_y"] = (spec.output_size,)
    return out


def _orthogonal(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    # QR of a Gaussian matrix with the sign fix that makes the result Haar-distributed
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _glorot(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float64]:
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, shape)


def init_params(
    spec: RNNSpec,
    rng: np.random.Generator,
    *,
    scheme: str = DEFAULT_INIT,
    dtype: DTypeLike = np.float32,
) -> Params:
    """Fresh parameters for ``spec``.

    Schemes
    -------
    ``"keras"`` (the default, :data:`DEFAULT_INIT`)
        Keras ``SimpleRNN`` + ``Dense`` defaults: Glorot-uniform ``W_xh`` and ``W_hy``,
        orthogonal ``W_hh``, zero biases.
    ``"pytorch"``
        ``torch.nn.RNN`` + ``nn.Linear`` defaults: every entry ``U(-k, k)``, ``k = 1/sqrt(H)`` for
        the recurrent layers and ``1/sqrt(fan_in)`` for the head.  PyTorch has two biases per
        layer; ``b_h`` is drawn as their sum, so its distribution matches too.
    ``"small"``
        min-char-rnn: weights ``N(0, 0.01^2)``, zero biases.
    ``"irnn"``
        Le et al. (2015) for ReLU networks: ``W_hh = I``, other weights ``N(0, 0.001^2)``, zero
        biases.
    ``"identity"``
        ``W_hh = I`` with the ``"keras"`` scheme's Glorot-uniform ``W_xh`` and ``W_hy`` and zero
        biases: the identity recurrence of an IRNN with input and output weights of the usual
        scale (the main job's IRNN recipe, docs/results.md).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    if scheme not in INITS:
        raise ValueError(f"unknown initialiser {scheme!r}; expected one of {list(INITS)}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dt}")
    params: Params = {}
    k_rnn = 1.0 / np.sqrt(spec.hidden_size)
    for key, shape in shapes(spec).items():
        name = key.rsplit(".", 1)[-1]
        head = key in ("W_hy", "b_y")
        if scheme == "pytorch":
            k = 1.0 / np.sqrt(spec.hidden_size * spec.num_directions) if head else k_rnn
            w = rng.uniform(-k, k, shape)
            if name == "b_h":
                w = w + rng.uniform(-k, k, shape)
        elif name in ("b_h", "b_y"):
            w = np.zeros(shape)
        elif scheme == "keras":
            w = _orthogonal(rng, shape[0]) if name == "W_hh" else _glorot(rng, shape)
        elif scheme == "small":
            w = rng.normal(0.0, 0.01, shape)
        elif scheme == "irnn":
            w = np.eye(shape[0]) if name == "W_hh" else rng.normal(0.0, 0.001, shape)
        else:  # identity
            w = np.eye(shape[0]) if name == "W_hh" else _glorot(rng, shape)
        params[key] = np.ascontiguousarray(w, dtype=dt)
    return params


def check_params(params: Mapping[str, NDArray[np.generic]], spec: RNNSpec) -> np.dtype:
    """Validate keys, shapes, dtype and finiteness against ``spec``; return the common dtype."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of arrays; got {type(params).__name__}")
    expected = shapes(spec)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(
            f"params keys do not match the spec: missing {missing}, unexpected {extra}"
        )
    dtype = None
    for key, shape in expected.items():
        p = params[key]
        if not isinstance(p, np.ndarray):
            raise TypeError(f"params[{key!r}] must be a numpy array; got {type(p).__name__}")
        if p.shape != shape:
            raise ValueError(f"params[{key!r}] must have shape {shape}; got {p.shape}")
        if p.dtype not in (np.float32, np.float64):
            raise TypeError(f"params[{key!r}] must be float32 or float64; got {p.dtype}")
        if dtype is None:
            dtype = p.dtype
        elif p.dtype != dtype:
            raise TypeError(
                f"all params must share one dtype; params[{key!r}] is {p.dtype}, others {dtype}"
            )
        if not np.isfinite(p).all():
            raise ValueError(f"params[{key!r}] contains NaN or inf")
    assert dtype is not None
    return np.dtype(dtype)


def zeros_like(params: Mapping[str, NDArray[np.floating]]) -> Params:
    """A dict of zeros with the keys, shapes and dtypes of ``params``."""
    return {k: np.zeros_like(v) for k, v in params.items()}


def num_parameters(params: Mapping[str, NDArray[np.generic]]) -> int:
    return int(sum(p.size for p in params.values()))
