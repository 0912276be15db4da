"""Autoregressive generation on preallocated buffers: a character model sampling one id at a time
(what ``rnnlab sample`` and :meth:`rnnlab.RNN.generate` run).

::

    s = Sampler(spec, params)
    ids = s.generate(prime_ids, 300, temperature=0.8, rng=np.random.default_rng(0))

Each generated id is one step of every layer (eqs. 5-6 of docs/derivation.md; the first layer's
input product ``x_t W_xh`` is the row ``W_xh[id]`` of eq. 21, the input being the id itself or its
one-hot vector), the head's logits ``z = H_t W_hy + b_y`` (eq. 8) and one draw from
``softmax(z / temperature)``; the draw is fed back as the next input.

What :func:`rnnlab.data.text.generate` does with a step function on
:func:`rnnlab.network.forward` (the reference), with the same random draws (one
``rng.random((B, 1))`` per generated id, inverse CDF in float64: the draws of
:func:`rnnlab.data.text.sample_from_logits`), so for the same parameters, prime, temperature and
Generator state both give the same ids (tested; a draw can differ only where rounding moves a
logit across the drawn CDF value, a probability of order 1e-7 per id in float32 and 1e-16 in
float64).  Faster because it does only that: no validation per step, no ``(B, T, ...)`` arrays for
a one-step sequence, every array written in place (docs/performance.md, "Inference and sampling").
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..core import activations
from ..core.params import check_params
from ..core.spec import RNNSpec

__all__ = ["Sampler", "check_generative"]

Array = NDArray[np.floating]


def check_generative(spec: RNNSpec) -> None:
    """Raise ValueError unless ``spec`` can generate ids one at a time: a unidirectional
    many-to-many softmax model whose inputs are ids (``input_kind="index"``) or one-hot vectors
    over the same vocabulary (dense inputs with ``input_size == output_size``)."""
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    problems = []
    if spec.setup != "many_to_many":
        problems.append(f"setup='many_to_many' (got {spec.setup!r})")
    if spec.loss != "softmax_ce":
        problems.append(f"loss='softmax_ce' (got {spec.loss!r})")
    if spec.bidirectional:
        problems.append("a unidirectional network (a bidirectional one reads the future)")
    if spec.input_kind == "dense" and spec.input_size != spec.output_size:
        problems.append(f"ids or one-hot inputs over the output vocabulary (got dense inputs of "
                        f"size {spec.input_size} for {spec.output_size} outputs)")
    if problems:
        raise ValueError("generating ids one at a time needs " + "; ".join(problems))


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)):
        raise TypeError(f"temperature must be a number; got {type(temperature).__name__}")
    t = float(temperature)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"temperature must be a finite number >= 0; got {temperature!r}")
    return t


class Sampler:
    """Generate ids from a character model, one step at a time, on buffers reused across calls.

    Parameters
    ----------
    spec : RNNSpec
        A generative model (:func:`check_generative`): unidirectional, many-to-many,
        ``softmax_ce``, index inputs (or one-hot dense inputs, ``input_size == output_size``);
        any number of layers and any hidden activation.
    params : dict of arrays
        Read at every :meth:`generate` call (updated parameters are used; they are validated
        there, as the public functions validate them).
    """

    def __init__(self, spec: RNNSpec, params: Mapping[str, Array]) -> None:
        check_generative(spec)
        check_params(params, spec)
        self.spec = spec
        self.params = params
        self.act = activations.get(spec.nonlinearity)
        self._bufs: dict[tuple[int, np.dtype], tuple[Array, ...]] = {}
        self.h_n: Array | None = None
        """The states after the last :meth:`generate` call, ``(num_layers, B, H)``."""

    def _buffers(self, B: int, dtype: np.dtype) -> tuple[Array, ...]:
        key = (B, np.dtype(dtype))
        bufs = self._bufs.get(key)
        if bufs is None:
            L, H, V = self.spec.num_layers, self.spec.hidden_size, self.spec.output_size
            bufs = (np.zeros((L, B, H), dtype),      # the states, one (B, H) block per layer
                    np.empty((B, H), dtype),         # the recurrent product H_{t-1} W_hh
                    np.empty((B, V), dtype),         # the logits z
                    np.empty((B, V), np.float64),    # the draw's cumulative weights
                    np.empty((B, 1), np.float64))    # the draw's threshold
            self._bufs = {key: bufs}                  # one shape kept: a sampler's B rarely varies
        return bufs

    def generate(
        self,
        prime: ArrayLike,
        length: int,
        *,
        temperature: float = 1.0,
        rng: np.random.Generator | None = None,
        h0: ArrayLike | None = None,
    ) -> NDArray[np.int64]:
        """Feed ``prime`` then draw ``length`` ids, each fed back as the next input.

        Parameters
        ----------
        prime : (P,) or (B, P) ints
            Ids in ``[0, V)``, ``P >= 1``; the last prime id's logits give the first draw.
        length : int
            Ids to generate (``>= 0``).
        temperature : float
            ``> 0`` samples ``softmax(z / temperature)``; ``0`` is greedy (argmax).
        rng : numpy.random.Generator
            Needed when ``temperature > 0``.
        h0 : (num_layers, B, H), optional
            Initial states (zeros by default).

        Returns
        -------
        ndarray of int64
            ``(length,)`` for a 1-D prime, ``(B, length)`` for a 2-D one; the prime is not
            included.
        """
        spec = self.spec
        dtype = check_params(self.params, spec)
        V = spec.output_size
        p = np.asarray(prime)
        if p.ndim not in (1, 2) or p.shape[-1] < 1 or p.dtype.kind not in "iu":
            raise ValueError(f"prime must be (P,) or (B, P) integer ids with P >= 1; got "
                             f"{p.dtype} of shape {p.shape}")
        if p.size and (p.min() < 0 or p.max() >= V):
            raise ValueError(f"prime ids must be in [0, {V}); got values in "
                             f"[{p.min()}, {p.max()}]")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
            raise ValueError(f"length must be an int >= 0; got {length!r}")
        temp = _check_temperature(temperature)
        if temp > 0 and not isinstance(rng, np.random.Generator):
            raise TypeError("temperature > 0 draws ids: rng must be a numpy.random.Generator; "
                            f"got {type(rng).__name__}")
        batch = p.reshape(-1, p.shape[-1]).astype(np.intp)
        B = batch.shape[0]
        H_all, rec, z, cdf, thr = self._buffers(B, dtype)
        if h0 is None:
            H_all.fill(0.0)
        else:
            h = np.asarray(h0)
            want = (spec.num_layers, B, spec.hidden_size)
            if h.shape != want:
                raise ValueError(f"h0 must have shape {want}; got {h.shape}")
            if not np.all(np.isfinite(h)):
                raise ValueError("h0 contains NaN or infinity")
            np.copyto(H_all, h, casting="same_kind")
        out = np.empty((B, int(length)), np.int64)
        # an overflow is reported once, as a ValueError from the draw, not as warnings
        with np.errstate(over="ignore", invalid="ignore"):
            for t in range(batch.shape[1]):
                self._step(batch[:, t], H_all, rec)
            for t in range(int(length)):
                ids = self._draw(H_all[-1], z, cdf, thr, temp, rng)
                out[:, t] = ids
                if t + 1 < length:
                    self._step(ids, H_all, rec)
        self.h_n = H_all.copy()
        return out if p.ndim == 2 else out[0]

    def _step(self, ids: NDArray[np.intp], H_all: Array, rec: Array) -> None:
        """Every layer one step forwards, in place (eqs. 5-6, 21)."""
        P, act = self.params, self.act
        for layer in range(self.spec.num_layers):
            k = f"l{layer}."
            h = H_all[layer]
            np.matmul(h, P[k + "W_hh"], out=rec)               # H_{t-1} W_hh: (B, H) x (H, H)
            if layer == 0:
                np.take(P[k + "W_xh"], ids, axis=0, out=h)     # x_t W_xh = W_xh[id], eq. (21)
            else:
                np.matmul(H_all[layer - 1], P[k + "W_xh"], out=h)   # (B, H) x (H, H)
            h += P[k + "b_h"]
            h += rec                                           # Z_t, eq. (5)
            act.f(h, out=h)                                    # H_t = f(Z_t), eq. (6)

    def _draw(self, h_top: Array, z: Array, cdf: Array, thr: Array, temp: float,
              rng: np.random.Generator | None) -> NDArray[np.int64]:
        """One id per row from ``softmax(z / temp)``, by the inverse CDF of
        :func:`rnnlab.data.text.sample_from_logits` (float64, one uniform per row)."""
        np.matmul(h_top, self.params["W_hy"], out=z)          # eq. (8): (B, H) x (H, V)
        z += self.params["b_y"]
        if not np.all(np.isfinite(z)):
            raise ValueError("logits contain NaN or infinity (the model's state overflowed "
                             "while generating)")
        if temp == 0:
            return z.argmax(axis=1).astype(np.int64)
        assert rng is not None                                 # checked by generate
        np.copyto(cdf, z)                                      # float64, as sample_from_logits
        cdf /= temp
        cdf -= cdf.max(axis=1, keepdims=True)
        np.exp(cdf, out=cdf)
        np.cumsum(cdf, axis=1, out=cdf)
        rng.random(out=thr)
        thr *= cdf[:, -1:]
        V = cdf.shape[1]
        if cdf.shape[0] == 1:                                  # one row: a binary search
            i = np.searchsorted(cdf[0], thr[0], side="right")
            return np.minimum(i, V - 1).astype(np.int64)
        return np.minimum((cdf <= thr).sum(axis=1), V - 1).astype(np.int64)
