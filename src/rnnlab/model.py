"""``rnnlab.RNN``: a thin stateful object over the pure core, with PyTorch-like arguments.

::

    model = RNN(input_size=8, hidden_size=64, output_size=10, seed=0)
    history = model.fit(registry.load("digits", steps=8), epochs=10, lr=1e-2)
    labels = model.predict(X)                     # (B,) class ids
    model.save("digits.npz");  model = RNN.load("digits.npz")

The object holds an :class:`RNNSpec` (what is computed), ``params`` (a dict of arrays, the only
state) and the dtype; every method delegates to :mod:`rnnlab.network`, :mod:`rnnlab.train` and
:mod:`rnnlab.checkpoint`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from .core import losses, network
from .core.inputs import make_mask
from .core.params import (
    DEFAULT_INIT,
    INITS,
    Params,
    check_params,
    init_params,
    num_parameters,
    shapes,
)
from .core.spec import RNNSpec
from .data.base import Dataset
from .fast.sampler import Sampler
from .fast.workspace import Workspace
from .train import History, TrainConfig, checkpoint, fit, spec_for_dataset
from .train.metrics import INFERENCE_ENGINES, evaluate, inference_forward

__all__ = ["RNN"]

_CLASSIFIERS = ("softmax_ce", "sigmoid_bce")


def _rng(seed: int | None, rng: np.random.Generator | None) -> np.random.Generator:
    if seed is not None and rng is not None:
        raise ValueError("give seed or rng, not both")
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
        return rng
    return np.random.default_rng(seed)


class RNN:
    """An Elman network: stacked (optionally bidirectional) recurrent layers and a linear head.

    Parameters
    ----------
    input_size : int
        Features per step ``D`` (the vocabulary size for ``input_kind="index"``).
    hidden_size : int
        Units per layer and direction ``H``.
    num_layers : int
    nonlinearity : {"tanh", "relu", "sigmoid", "identity"}
    bidirectional : bool
    output_size : int, optional
        Classes or regression outputs of the head; defaults to ``hidden_size``.
    loss, setup, label_steps, feed, reduction, input_kind
        See :class:`rnnlab.RNNSpec`.
    batch_first : bool
        Only True is supported (arrays are ``(B, T, D)``); accepted for PyTorch compatibility.
    init : {"keras", "pytorch", "small", "irnn", "identity"}
        Initialiser (:func:`rnnlab.init_params`); ``"keras"`` by default (docs/results.md,
        "Defaults").
    dtype : {"float32", "float64"}
    seed : int, optional
        Seed of the initialiser's Generator; or pass ``rng``.
    rng : numpy.random.Generator, optional

    Attributes
    ----------
    spec : RNNSpec
    params : dict of str -> ndarray
    dtype : numpy.dtype
    history : History or None
        From the last :meth:`fit`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        *,
        bidirectional: bool = False,
        output_size: int | None = None,
        loss: str = "softmax_ce",
        setup: str = "many_to_one",
        label_steps: str = "last",
        feed: str = "every",
        reduction: str = "mean",
        input_kind: str = "dense",
        batch_first: bool = True,
        init: str = DEFAULT_INIT,
        dtype: DTypeLike = "float32",
        seed: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        if batch_first is not True:
            raise ValueError("rnnlab is batch first: X is (B, T, D); transpose (T, B, D) inputs "
                             "with X.transpose(1, 0, 2) and keep batch_first=True")
        spec = RNNSpec(
            input_size=input_size, hidden_size=hidden_size,
            output_size=hidden_size if output_size is None else output_size,
            num_layers=num_layers, bidirectional=bidirectional, nonlinearity=nonlinearity,
            loss=loss, setup=setup, label_steps=label_steps, feed=feed, reduction=reduction,
            input_kind=input_kind,
        )
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {list(INITS)}")
        self.spec = spec
        self.init = init
        self.params: Params = init_params(spec, _rng(seed, rng), scheme=init, dtype=dtype)
        self.dtype = np.dtype(dtype)
        self.history: History | None = None
        self._workspace: Workspace | None = None      # inference's buffers, made on first use

    def __getstate__(self) -> dict[str, Any]:
        # copy.deepcopy / copy.copy: the workspace (buffers, thread pools) and its lock are not
        # part of the model; a copy makes its own on first use
        state = dict(self.__dict__)
        state["_workspace"] = None
        state.pop("_workspace_lock", None)
        return state

    @contextmanager
    def _engine(self, engine: str) -> Iterator[str | Workspace]:
        """The engine for one inference call: this model's workspace for ``"fast"``, held for
        the call (a workspace is not thread-safe: a call from another thread meanwhile gets a
        workspace of its own, so concurrent predictions stay correct)."""
        if engine not in INFERENCE_ENGINES:
            raise ValueError(f"engine must be one of {list(INFERENCE_ENGINES)}; got {engine!r}")
        if engine == "reference":
            yield engine
            return
        lock = self.__dict__.setdefault("_workspace_lock", threading.Lock())
        if not lock.acquire(blocking=False):
            yield Workspace(self.spec)
            return
        try:
            ws = getattr(self, "_workspace", None)
            if ws is None or ws.spec != self.spec:
                ws = self._workspace = Workspace(self.spec)
            yield ws
        finally:
            lock.release()

    # ------------------------------------------------------------------------ construction

    @classmethod
    def from_spec(cls, spec: RNNSpec, params: Mapping[str, NDArray[np.floating]] | None = None,
                  *, init: str = DEFAULT_INIT, dtype: DTypeLike = "float32",
                  seed: int | None = None, rng: np.random.Generator | None = None) -> RNN:
        """A model for ``spec``: with copies of ``params`` (their dtype wins) or freshly drawn."""
        if not isinstance(spec, RNNSpec):
            raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
        if params is not None:
            dtype = check_params(params, spec)
        d = spec.to_dict()
        model = cls(d.pop("input_size"), d.pop("hidden_size"), d.pop("num_layers"),
                    d.pop("nonlinearity"), init=init, dtype=dtype, seed=seed, rng=rng, **d)
        if params is not None:
            model.params = {k: np.array(params[k], copy=True) for k in shapes(spec)}
        return model

    @classmethod
    def for_dataset(cls, ds: Dataset, hidden_size: int, num_layers: int = 1,
                    nonlinearity: str = "tanh", **kwargs: Any) -> RNN:
        """A model shaped for ``ds`` (sizes, input kind, set-up and loss from its task).

        ``kwargs``: ``bidirectional``, ``init``, ``dtype``, ``seed``, ``rng`` and RNNSpec fields.
        """
        model_kw = {k: kwargs.pop(k) for k in ("init", "dtype", "seed", "rng") if k in kwargs}
        spec = spec_for_dataset(ds, hidden_size, num_layers=num_layers,
                                nonlinearity=nonlinearity, **kwargs)
        return cls.from_spec(spec, **model_kw)

    # ------------------------------------------------------------------------ inference

    def forward(self, X: ArrayLike, h0: ArrayLike | None = None, mask: ArrayLike | None = None,
                *, lengths: ArrayLike | None = None, steps: int | None = None) -> network.Output:
        """Run the network: ``Output(y, logits, h_n)`` (see :func:`rnnlab.network.forward`)."""
        out, _ = network.forward(self.params, X, self.spec, h0=h0, mask=mask, lengths=lengths,
                                 steps=steps)
        return out

    __call__ = forward

    def _outputs(self, X: ArrayLike, mask: ArrayLike | None, lengths: ArrayLike | None,
                 steps: int | None, batch_size: int, engine: str, logits: bool = False
                 ) -> NDArray[np.floating]:
        """``g(z)`` (or with ``logits=True`` the logits ``z``) of every sequence, in batches."""
        Xa = np.asarray(X)
        if Xa.ndim == 0:
            raise ValueError(f"X must be an array of sequences; got {X!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
        m = None if mask is None else np.asarray(mask)
        ln = None if lengths is None else np.asarray(lengths)
        if ln is not None:
            # lengths -> the (N, T) mask they mean, checked as the forward pass checks them
            T = steps if self.spec.setup == "one_to_many" else (
                Xa.shape[1] if Xa.ndim >= 2 else 0)
            if not isinstance(T, int) or isinstance(T, bool):
                raise ValueError(f"setup='one_to_many' needs steps=T; got steps={steps!r}")
            m = make_mask(len(Xa), T, mask=m, lengths=ln)
        parts = []
        with self._engine(engine) as eng:
            logits_of = inference_forward(self.params, self.spec, eng)
            for s in range(0, max(len(Xa), 1), batch_size):
                sl = slice(s, s + batch_size)
                z = logits_of(Xa[sl], None if m is None else m[sl], steps)
                # copies: the logits may be a view of the engine's buffer (g(z) is a new array)
                parts.append(z.copy() if logits else losses.output(self.spec.loss, z))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def predict(self, X: ArrayLike, *, mask: ArrayLike | None = None,
                lengths: ArrayLike | None = None, steps: int | None = None,
                batch_size: int = 1024, engine: str = "fast") -> NDArray[Any]:
        """Class ids (``softmax_ce``: argmax; ``sigmoid_bce``: ``y_hat > 0.5`` per output) or
        regression values; ``(B,)``/``(B, O)`` or per step ``(B, T)``/``(B, T, O)``.

        ``engine="fast"`` (default) runs the forward pass on the model's
        :class:`rnnlab.Workspace` (made on the first call, its buffers reused), ``"reference"``
        on :func:`rnnlab.network.forward`; the same numbers to rounding
        (:func:`rnnlab.metrics.evaluate`)."""
        if self.spec.loss == "softmax_ce":        # softmax is monotone: argmax of the logits
            return self._outputs(X, mask, lengths, steps, batch_size, engine,
                                 logits=True).argmax(axis=-1)
        y = self._outputs(X, mask, lengths, steps, batch_size, engine)
        if self.spec.loss == "sigmoid_bce":
            return (y > 0.5).astype(np.int64)
        return y

    def predict_proba(self, X: ArrayLike, *, mask: ArrayLike | None = None,
                      lengths: ArrayLike | None = None, steps: int | None = None,
                      batch_size: int = 1024, engine: str = "fast") -> NDArray[np.floating]:
        """Class probabilities (softmax, or per-output sigmoid), shaped like the logits
        (``engine`` as for :meth:`predict`)."""
        if self.spec.loss not in _CLASSIFIERS:
            raise ValueError(f"predict_proba needs a classification loss {list(_CLASSIFIERS)}; "
                             f"this model has loss={self.spec.loss!r} (use predict)")
        return self._outputs(X, mask, lengths, steps, batch_size, engine)

    def evaluate(self, X: Any, y: ArrayLike | None = None, mask: ArrayLike | None = None, *,
                 batch_size: int = 256, steps: int | None = None,
                 engine: str = "fast") -> dict[str, float]:
        """Metrics (:func:`rnnlab.metrics.evaluate`) on arrays, or on a Split/Dataset's test
        (``engine`` as for :meth:`predict`).

        The targets are checked as the loss checks them, before any forward pass: a class label
        outside ``[0, output_size)`` (``-1`` is not "the last class") or a soft-target row that
        is not a distribution is a ValueError.
        """
        if y is None:
            split = X.test if isinstance(X, Dataset) else X
            X, y, mask = split.X, split.y, getattr(split, "mask", None)
        with self._engine(engine) as eng:
            return evaluate(self.params, self.spec, X, y, mask, batch_size=batch_size,
                            steps=steps, engine=eng)

    def generate(self, prime: ArrayLike, length: int, *, temperature: float = 1.0,
                 rng: np.random.Generator | None = None, h0: ArrayLike | None = None
                 ) -> NDArray[np.int64]:
        """Generate ids one at a time from a character model (many-to-many, ``softmax_ce``,
        unidirectional, index or one-hot inputs): feed ``prime`` (``(P,)`` or ``(B, P)`` ids),
        then draw ``length`` ids from ``softmax(z / temperature)``, each fed back as the next
        input (``temperature=0``: greedy).  ``rng`` (a ``numpy.random.Generator``) is needed
        when ``temperature > 0``.  Returns ``(length,)`` or ``(B, length)`` int64, the prime
        not included; the same ids as :func:`rnnlab.data.text.generate` with a step on
        :func:`rnnlab.network.forward` and the same Generator
        (:class:`rnnlab.fast.sampler.Sampler`, what ``rnnlab sample`` runs)."""
        return Sampler(self.spec, self.params).generate(prime, length, temperature=temperature,
                                                        rng=rng, h0=h0)

    # ------------------------------------------------------------------------ parameters

    def parameters(self) -> Iterator[NDArray[np.floating]]:
        """The parameter arrays (views, not copies), in layout order."""
        return iter(list(self.params.values()))

    def named_parameters(self) -> Iterator[tuple[str, NDArray[np.floating]]]:
        return iter(list(self.params.items()))

    @property
    def num_parameters(self) -> int:
        return num_parameters(self.params)

    def state_dict(self) -> dict[str, NDArray[np.floating]]:
        """Copies of the parameters under our keys (``l0.W_xh``, ..., ``W_hy``, ``b_y``)."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike], strict: bool = True
                        ) -> tuple[list[str], list[str]]:
        """Copy arrays into the parameters (cast to the model's dtype).

        Returns ``(missing_keys, unexpected_keys)``; with ``strict=True`` either being non-empty
        raises ValueError.  Shapes must match and values must be finite.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping; got {type(state_dict).__name__}")
        missing = [k for k in self.params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self.params]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict does not match the model: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        new = dict(self.params)
        for k in self.params:
            if k in state_dict:
                a = np.asarray(state_dict[k])
                if a.shape != self.params[k].shape:
                    raise ValueError(f"state_dict[{k!r}] has shape {a.shape}; the model needs "
                                     f"{self.params[k].shape}")
                new[k] = np.array(a, dtype=self.dtype, copy=True)
        check_params(new, self.spec)
        self.params.update(new)
        return missing, unexpected

    def to_torch_state_dict(self, *, rnn_prefix: str = "rnn.", head_prefix: str = "fc."
                            ) -> dict[str, NDArray[np.floating]]:
        """A state_dict of NumPy arrays for ``torch.nn.RNN`` + ``torch.nn.Linear``."""
        from .interop.torch import to_torch_state_dict

        return to_torch_state_dict(self.params, self.spec, rnn_prefix=rnn_prefix,
                                   head_prefix=head_prefix)

    # ------------------------------------------------------------------------ interop

    def to_torch(self, *, dtype: Any = None, device: Any = None) -> Any:
        """A PyTorch module computing this network (:func:`rnnlab.interop.torch.to_torch`):
        ``module(X, h0=None, lengths=None, steps=None)`` returns ``(y, logits, h_n)``."""
        from .interop.torch import to_torch

        return to_torch(self.params, self.spec, dtype=dtype, device=device)

    @classmethod
    def from_torch(cls, source: Any, spec: RNNSpec | None = None, **kwargs: Any) -> RNN:
        """A model from a PyTorch module or state dict (:func:`rnnlab.interop.torch.from_torch`,
        whose keyword arguments ``head``, ``head_reads``, ``rnn_prefix``, ``head_prefix`` and
        RNNSpec fields pass through); the dtype is the module's."""
        import warnings

        from .interop.torch import from_torch

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            params, spec = from_torch(source, spec, **kwargs)
        for w in caught:                    # point them at the caller of this method
            warnings.warn(w.message, w.category, stacklevel=2)
        return cls.from_spec(spec, params)

    def export_onnx(self, path: str | os.PathLike[str], *, lengths: bool = False,
                    initial_state: bool = False, opset: int | None = None,
                    identity: str = "Affine", overwrite: bool = True) -> Path:
        """Write the network as an ONNX file (:func:`rnnlab.interop.onnx.export`): inputs ``X``
        (and ``steps``, ``lengths``, ``h0`` as asked), outputs ``y``, ``logits``, ``h_n``."""
        from .interop import onnx as rx

        return rx.export(self.params, self.spec, path, lengths=lengths,
                         initial_state=initial_state,
                         opset=rx.DEFAULT_OPSET if opset is None else opset, identity=identity,
                         overwrite=overwrite)

    def save_safetensors(self, path: str | os.PathLike[str], *, layout: str = "rnnlab",
                         metadata: Mapping[str, str] | None = None,
                         overwrite: bool = True) -> Path:
        """Write the parameters and the spec as a safetensors file
        (:func:`rnnlab.interop.safetensors.save`)."""
        from .interop import safetensors as rst

        return rst.save(self.params, self.spec, path, layout=layout, metadata=metadata,
                        overwrite=overwrite)

    @classmethod
    def load_safetensors(cls, path: str | os.PathLike[str], spec: RNNSpec | None = None,
                         *, layout: str | None = None) -> RNN:
        """A model from a safetensors file (:func:`rnnlab.interop.safetensors.load`); ``spec``
        is needed only for a file without rnnlab's metadata."""
        from .interop import safetensors as rst

        params, spec = rst.load(path, spec, layout=layout)
        return cls.from_spec(spec, params)

    # ------------------------------------------------------------------------ training, files

    def fit(self, data: Any, config: TrainConfig | None = None, *, val: Any = None,
            test: Any = None, resume: bool | str | os.PathLike[str] | None = None,
            callback: Any = None, callbacks: Any = None, sample_weight: Any = None,
            opt_state: Any = None, stream: IO[str] | None = None,
            **overrides: Any) -> History:
        """Train with :func:`rnnlab.train.fit` (``callbacks``, ``sample_weight``, ``opt_state``
        as there); ``overrides`` replace fields of ``config`` (``model.fit(ds, epochs=5,
        lr=1e-2)``).  Returns (and keeps) the History."""
        cfg = TrainConfig() if config is None else config
        if overrides:
            cfg = cfg.replace(**overrides)
        self.history = fit(self.params, self.spec, data, cfg, val=val, test=test, resume=resume,
                           callback=callback, callbacks=callbacks, sample_weight=sample_weight,
                           opt_state=opt_state, stream=stream)
        return self.history

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model (spec, dtype, init, parameters) as an rnnlab checkpoint (no pickle)."""
        config = {"spec": self.spec.to_dict(), "dtype": str(self.dtype), "init": self.init}
        return checkpoint.save(path, params=self.params, epoch=0, step=0, config=config)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RNN:
        """A model from :meth:`save` or from a training checkpoint of :func:`fit`."""
        ck = checkpoint.load(path)
        if "spec" not in ck.config:
            raise ValueError(f"checkpoint {path} has no model spec in its config (keys "
                             f"{sorted(ck.config)}); it was not written by rnnlab's RNN or fit")
        spec = RNNSpec.from_dict(ck.config["spec"])
        try:
            return cls.from_spec(spec, ck.params, init=ck.config.get("init", "pytorch"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"checkpoint {path} does not match its own spec: {exc}") from None

    def __repr__(self) -> str:
        s = self.spec
        extra = "".join(
            f", {k}={v!r}" for k, v in s.to_dict().items()
            if k not in ("input_size", "hidden_size", "output_size") and
            v != RNNSpec.__dataclass_fields__[k].default
        )
        return (f"RNN({s.input_size}, {s.hidden_size}, output_size={s.output_size}{extra}, "
                f"dtype={self.dtype.name}, params={self.num_parameters})")
