"""Optimizers over flat parameter dictionaries, as ``init``/``update`` pairs.

Parameters, gradients and every optimizer state slot are ``dict[str, np.ndarray]``
with the same keys, shapes and dtypes.  An optimizer is an immutable description of
its hyper-parameters; all mutable data lives in the state it returns::

    opt = make("adam", lr=1e-3)
    state = opt.init(params)
    params, state = opt.update(params, grads, state)           # pure
    opt.update_(params, grads, state, lr=schedule(step))        # in place

The update rules follow ``torch.optim`` (single-tensor code path, ``maximize=False``)
operation for operation, so the numbers agree with PyTorch to rounding.

State layout (``OptState``): ``{"step": int, <slot>: {key: array}, ...}`` where the
slots are

========  =====================================================================
sgd       ``momentum_buffer`` (only when ``momentum > 0``)
adam(w)   ``m``, ``v``, and ``v_max`` when ``amsgrad``
adagrad   ``sum``
rmsprop   ``square_avg``, ``grad_avg`` when ``centered``, ``momentum_buffer``
          when ``momentum > 0``
========  =====================================================================

``flatten_state``/``unflatten_state`` convert it to and from one flat
``dict[str, np.ndarray]`` (keys ``"step"`` and ``"<slot>/<param key>"``).
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "OptState",
    "Optimizer",
    "Params",
    "RMSprop",
    "OPTIMIZERS",
    "check_tree",
    "FlatUpdate",
    "clip_coefficient",
    "clip_grad_norm",
    "clip_grad_value",
    "flatten_state",
    "global_norm",
    "make",
    "unflatten_state",
]

Params = dict[str, np.ndarray]
"""Flat parameter (or gradient) dictionary."""

OptState = dict[str, Any]
"""Optimizer state: ``{"step": int, <slot name>: Params, ...}``."""

_SEP = "/"


# --------------------------------------------------------------------------- validation


def _real(name: str, value: object) -> float:
    """Return ``value`` as a finite Python float or raise TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out!r}")
    return out


def _in_range(name: str, value: object, lo: float, hi: float, *, hi_open: bool) -> float:
    v = _real(name, value)
    if not (lo <= v < hi if hi_open else lo <= v <= hi):
        bracket = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}{bracket}, got {v!r}")
    return v


def _positive(name: str, value: object) -> float:
    v = _real(name, value)
    if v <= 0.0:
        raise ValueError(f"{name} must be > 0, got {v!r}")
    return v


def _non_negative(name: str, value: object) -> float:
    v = _real(name, value)
    if v < 0.0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return v


def _check_params(params: object, what: str = "params") -> None:
    if not isinstance(params, Mapping):
        raise TypeError(f"{what} must be a mapping str -> np.ndarray, got {type(params).__name__}")
    if not params:
        raise ValueError(f"{what} must not be empty")
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} keys must be str, got {key!r} ({type(key).__name__})")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{what}[{key!r}] must be a numpy array, got {type(value).__name__}")
        if not np.issubdtype(value.dtype, np.floating):
            raise TypeError(f"{what}[{key!r}] must have a floating dtype, got {value.dtype}")


def check_tree(reference: Mapping[str, np.ndarray], other: object, what: str = "grads") -> None:
    """Check that ``other`` has exactly the keys, shapes and dtypes of ``reference``.

    Parameters
    ----------
    reference : Mapping[str, np.ndarray]
        The parameters (the structure everything must follow).
    other : object
        The dictionary to check (gradients, or one optimizer state slot).
    what : str
        Name of ``other`` used in error messages.

    Raises
    ------
    TypeError
        If ``other`` is not a mapping of arrays, or a dtype differs.
    ValueError
        If a key is missing or unexpected, or a shape differs; the message names the
        offending key with the expected and the observed value.
    """
    if not isinstance(other, Mapping):
        raise TypeError(f"{what} must be a mapping str -> np.ndarray, got {type(other).__name__}")
    missing = [k for k in reference if k not in other]
    extra = [k for k in other if k not in reference]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if extra:
            parts.append(f"unexpected keys {extra}")
        raise ValueError(
            f"{what} do not match the parameters: {'; '.join(parts)} "
            f"(expected keys {list(reference)})"
        )
    for key, ref in reference.items():
        value = other[key]
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{what}[{key!r}] must be a numpy array, got {type(value).__name__}")
        if value.shape != ref.shape:
            raise ValueError(
                f"{what}[{key!r}] has shape {value.shape}, expected {ref.shape} "
                f"(the shape of params[{key!r}])"
            )
        if value.dtype != ref.dtype:
            raise TypeError(
                f"{what}[{key!r}] has dtype {value.dtype}, expected {ref.dtype} "
                f"(the dtype of params[{key!r}])"
            )


def _check_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"state['step'] must be an int, got {step!r} ({type(step).__name__})")
    if step < 0:
        raise ValueError(f"state['step'] must be >= 0, got {step}")
    return int(step)


# --------------------------------------------------------------------------- optimizers


class Optimizer(ABC):
    """Base class: subclasses are frozen dataclasses of hyper-parameters.

    Subclasses implement :meth:`slots` (names of the state slots) and :meth:`_apply`
    (one in-place step).  ``update`` copies and then calls ``_apply``; ``update_``
    calls it directly, so both paths give bit-identical numbers.
    """

    name: ClassVar[str]
    lr: float

    @abstractmethod
    def slots(self) -> tuple[str, ...]:
        """Names of the per-parameter state slots used with this configuration."""

    def _init_slot(self, slot: str, param: np.ndarray) -> np.ndarray:
        return np.zeros_like(param)

    @abstractmethod
    def _apply(self, params: Params, grads: Mapping[str, np.ndarray], state: OptState,
               lr: float) -> None:
        """Perform one step, mutating ``params`` and ``state`` (never ``grads``)."""

    def config(self) -> dict[str, Any]:
        """Hyper-parameters as JSON-friendly data; ``make(**opt.config())`` rebuilds it."""
        out: dict[str, Any] = {"name": self.name}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def init(self, params: Mapping[str, np.ndarray]) -> OptState:
        """Return a fresh state for ``params`` (step 0, slots shaped like the parameters).

        Parameters
        ----------
        params : Mapping[str, np.ndarray]
            Non-empty mapping of floating-point arrays.

        Returns
        -------
        OptState
            ``{"step": 0, slot: {key: array}}``; arrays have the parameters' dtype.
        """
        _check_params(params)
        state: OptState = {"step": 0}
        for slot in self.slots():
            state[slot] = {k: self._init_slot(slot, p) for k, p in params.items()}
        return state

    def _validate(self, params: Mapping[str, np.ndarray], grads: object, state: object,
                  lr: object) -> float:
        _check_params(params)
        check_tree(params, grads, "grads")
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        expected = {"step", *self.slots()}
        if set(state) != expected:
            raise ValueError(
                f"state has entries {sorted(state)}, expected {sorted(expected)} for "
                f"{self!r} (was it created by a differently configured optimizer?)"
            )
        _check_step(state["step"])
        for slot in self.slots():
            check_tree(params, state[slot], f"state[{slot!r}]")
        if lr is None:
            return self.lr
        return _non_negative("lr", lr)

    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray],
               state: OptState, lr: float | None = None) -> tuple[Params, OptState]:
        """Return updated copies of ``params`` and ``state``; the inputs are not modified.

        Parameters
        ----------
        params, grads : Mapping[str, np.ndarray]
            Parameters and their gradients (same keys, shapes and dtypes).
        state : OptState
            State from :meth:`init` or a previous update.
        lr : float, optional
            Learning rate for this step (e.g. from a schedule); overrides the
            constructor's ``lr``.  Must be finite and >= 0 (a schedule may reach 0).

        Returns
        -------
        tuple[Params, OptState]
            New parameter dictionary and new state.
        """
        step_lr = self._validate(params, grads, state, lr)
        new_params = {k: p.copy() for k, p in params.items()}
        new_state: OptState = {"step": int(state["step"])}
        for slot in self.slots():
            new_state[slot] = {k: a.copy() for k, a in state[slot].items()}
        self._apply(new_params, grads, new_state, step_lr)
        return new_params, new_state

    def update_(self, params: Params, grads: Mapping[str, np.ndarray], state: OptState,
                lr: float | None = None) -> None:
        """In-place variant of :meth:`update`: mutates ``params`` and ``state``.

        The arrays of ``params`` and of the state slots are modified in place and
        ``state["step"]`` is incremented; the numbers are bit-identical to
        :meth:`update`.  ``grads`` is never modified.
        """
        step_lr = self._validate(params, grads, state, lr)
        targets = [("params", params)] + [(f"state[{s!r}]", state[s]) for s in self.slots()]
        for what, arrays in targets:
            for key, value in arrays.items():
                if not value.flags.writeable:
                    raise ValueError(f"{what}[{key!r}] is read-only; update_ needs writable "
                                     "arrays (use update for a copy)")
        self._apply(params, grads, state, step_lr)


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start += weight * (end - start)`` in place, with torch.lerp's rounding."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1.0 - weight)


@dataclass(frozen=True)
class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum (``torch.optim.SGD``).

    ``g <- g + weight_decay * p``;  with momentum ``b <- g`` on the first step and
    ``b <- momentum * b + (1 - dampening) * g`` afterwards, then ``g <- b`` (or
    ``g + momentum * b`` for Nesterov);  ``p <- p - lr * g``.
    """

    lr: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    name: ClassVar[str] = "sgd"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "momentum",
                           _in_range("momentum", self.momentum, 0.0, 1.0, hi_open=True))
        object.__setattr__(self, "dampening",
                           _in_range("dampening", self.dampening, 0.0, 1.0, hi_open=False))
        object.__setattr__(self, "weight_decay", _non_negative("weight_decay", self.weight_decay))
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"nesterov must be a bool, got {self.nesterov!r}")
        if self.nesterov and (self.momentum <= 0.0 or self.dampening != 0.0):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening == 0, got "
                f"momentum={self.momentum!r}, dampening={self.dampening!r}"
            )

    def slots(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum > 0.0 else ()

    def _apply(self, params: Params, grads: Mapping[str, np.ndarray], state: OptState,
               lr: float) -> None:
        first = state["step"] == 0
        for key, p in params.items():
            g = grads[key]
            if self.weight_decay != 0.0:
                g = g + self.weight_decay * p
            if self.momentum > 0.0:
                buf = state["momentum_buffer"][key]
                if first:
                    buf[...] = g
                else:
                    buf *= self.momentum
                    buf += (1.0 - self.dampening) * g
                g = g + self.momentum * buf if self.nesterov else buf
            p -= lr * g
        state["step"] += 1


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam with coupled L2 weight decay (``torch.optim.Adam``), optionally AMSGrad."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    name: ClassVar[str] = "adam"
    decoupled: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        betas = self.betas
        if isinstance(betas, str | bytes) or not isinstance(betas, Sequence) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        object.__setattr__(self, "betas", (
            _in_range("betas[0]", betas[0], 0.0, 1.0, hi_open=True),
            _in_range("betas[1]", betas[1], 0.0, 1.0, hi_open=True),
        ))
        object.__setattr__(self, "eps", _non_negative("eps", self.eps))
        object.__setattr__(self, "weight_decay", _non_negative("weight_decay", self.weight_decay))
        if not isinstance(self.amsgrad, bool):
            raise TypeError(f"amsgrad must be a bool, got {self.amsgrad!r}")

    def slots(self) -> tuple[str, ...]:
        return ("m", "v", "v_max") if self.amsgrad else ("m", "v")

    def _apply(self, params: Params, grads: Mapping[str, np.ndarray], state: OptState,
               lr: float) -> None:
        beta1, beta2 = self.betas
        step = state["step"] + 1
        bias_correction1 = 1.0 - beta1**step
        bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
        neg_step_size = -(lr / bias_correction1)
        for key, p in params.items():
            g = grads[key]
            if self.weight_decay != 0.0:
                if self.decoupled:
                    p *= 1.0 - lr * self.weight_decay
                else:
                    g = g + self.weight_decay * p
            m = state["m"][key]
            v = state["v"][key]
            _lerp_(m, g, 1.0 - beta1)
            v *= beta2
            v += (1.0 - beta2) * g * g
            if self.amsgrad:
                v_hat = state["v_max"][key]
                np.maximum(v_hat, v, out=v_hat)
            else:
                v_hat = v
            denom = np.sqrt(v_hat) / bias_correction2_sqrt
            denom += self.eps
            p += neg_step_size * m / denom
        state["step"] = step


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``): ``p <- p (1 - lr wd)``."""

    weight_decay: float = 1e-2
    name: ClassVar[str] = "adamw"
    decoupled: ClassVar[bool] = True


@dataclass(frozen=True)
class Adagrad(Optimizer):
    """Adagrad with PyTorch semantics (``torch.optim.Adagrad``).

    ``s <- s + g**2`` (``s`` starts at ``initial_accumulator_value``),
    ``p <- p - lr_t * g / (sqrt(s) + eps)`` with ``lr_t = lr / (1 + (t - 1) lr_decay)``.
    Note that min-char-rnn puts the epsilon inside the square root
    (``sqrt(s + 1e-8)``); PyTorch, and this class, add it outside.
    """

    lr: float = 1e-2
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10
    name: ClassVar[str] = "adagrad"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "lr_decay", _non_negative("lr_decay", self.lr_decay))
        object.__setattr__(self, "weight_decay", _non_negative("weight_decay", self.weight_decay))
        object.__setattr__(self, "initial_accumulator_value", _non_negative(
            "initial_accumulator_value", self.initial_accumulator_value))
        object.__setattr__(self, "eps", _non_negative("eps", self.eps))

    def slots(self) -> tuple[str, ...]:
        return ("sum",)

    def _init_slot(self, slot: str, param: np.ndarray) -> np.ndarray:
        return np.full_like(param, self.initial_accumulator_value)

    def _apply(self, params: Params, grads: Mapping[str, np.ndarray], state: OptState,
               lr: float) -> None:
        step = state["step"] + 1
        neg_clr = -(lr / (1.0 + (step - 1) * self.lr_decay))
        for key, p in params.items():
            g = grads[key]
            if self.weight_decay != 0.0:
                g = g + self.weight_decay * p
            acc = state["sum"][key]
            acc += g * g
            std = np.sqrt(acc)
            std += self.eps
            p += neg_clr * g / std
        state["step"] = step


@dataclass(frozen=True)
class RMSprop(Optimizer):
    """RMSprop with PyTorch semantics (``torch.optim.RMSprop``).

    ``a <- alpha a + (1 - alpha) g**2``; centered: ``ga <- lerp(ga, g, 1 - alpha)`` and
    ``d = sqrt(a - ga**2) + eps`` (else ``sqrt(a) + eps``); with momentum
    ``b <- momentum b + g / d``, ``p <- p - lr b``, else ``p <- p - lr g / d``.
    """

    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    name: ClassVar[str] = "rmsprop"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "alpha", _in_range("alpha", self.alpha, 0.0, 1.0, hi_open=True))
        object.__setattr__(self, "eps", _non_negative("eps", self.eps))
        object.__setattr__(self, "weight_decay", _non_negative("weight_decay", self.weight_decay))
        object.__setattr__(self, "momentum",
                           _in_range("momentum", self.momentum, 0.0, 1.0, hi_open=True))
        if not isinstance(self.centered, bool):
            raise TypeError(f"centered must be a bool, got {self.centered!r}")

    def slots(self) -> tuple[str, ...]:
        out = ["square_avg"]
        if self.centered:
            out.append("grad_avg")
        if self.momentum > 0.0:
            out.append("momentum_buffer")
        return tuple(out)

    def _apply(self, params: Params, grads: Mapping[str, np.ndarray], state: OptState,
               lr: float) -> None:
        for key, p in params.items():
            g = grads[key]
            if self.weight_decay != 0.0:
                g = g + self.weight_decay * p
            sq = state["square_avg"][key]
            sq *= self.alpha
            sq += (1.0 - self.alpha) * g * g
            if self.centered:
                ga = state["grad_avg"][key]
                _lerp_(ga, g, 1.0 - self.alpha)
                avg = np.sqrt(sq + (-ga) * ga)
            else:
                avg = np.sqrt(sq)
            avg += self.eps
            if self.momentum > 0.0:
                buf = state["momentum_buffer"][key]
                buf *= self.momentum
                buf += g / avg
                p -= lr * buf
            else:
                p += -lr * g / avg
        state["step"] += 1


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Adam, AdamW, Adagrad, RMSprop)
}
"""Registry used by :func:`make`."""


def make(name: str, **kwargs: Any) -> Optimizer:
    """Build an optimizer by name (case-insensitive), e.g. ``make("adam", lr=1e-3)``.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the valid names) or a
        hyper-parameter is out of range.
    TypeError
        If a keyword is not a hyper-parameter of that optimizer.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a str, got {name!r}")
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; valid names are {sorted(OPTIMIZERS)}")
    return cls(**kwargs)


# --------------------------------------------------------------------------- flat updates


class FlatUpdate:
    """One optimizer's steps on parameters, gradients and state held as blocks of flat arrays:
    the fast path of :func:`rnnlab.fit` (docs/performance.md, "The whole training step").

    :meth:`bind` makes every array of ``params`` and of each state slot a block of one flat array
    per dict (the keys in ``order``, the order of the gradient blocks the fast engine returns:
    :attr:`rnnlab.fast.workspace.Workspace.flat_grad`), copying the values in; :meth:`step` then
    applies ``opt`` to all of them at once: each ``_apply`` operation is one NumPy call over the
    whole vector instead of one per parameter, the same element-wise arithmetic in the same order,
    so the numbers are :meth:`Optimizer.update_`'s bit for bit.  An update whose new parameters
    are not all finite is undone (parameters and state restored from copies taken before it), so
    it is never applied (docs/derivation.md, "Non-finite values").
    """

    def __init__(self, opt: Optimizer, order: Sequence[str]) -> None:
        self.opt = opt
        self.order = list(order)
        self._flat: dict[str, np.ndarray] = {}            # "params" and every slot
        self._views: dict[str, dict[str, np.ndarray]] = {}
        self._backup: dict[str, np.ndarray] = {}

    def _flatten(self, name: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """``arrays`` (dict, modified) re-pointed at blocks of one flat array (values copied),
        unless they already are this updater's blocks."""
        views = self._views.get(name)
        if views is not None and all(arrays[k] is views[k] for k in self.order):
            return self._flat[name]
        first = arrays[self.order[0]]
        flat = np.empty(sum(arrays[k].size for k in self.order), first.dtype)
        views, o = {}, 0
        for k in self.order:
            a = arrays[k]
            v = flat[o:o + a.size].reshape(a.shape)
            np.copyto(v, a)
            arrays[k] = views[k] = v
            o += a.size
        self._flat[name], self._views[name] = flat, views
        self._backup[name] = np.empty_like(flat)
        return flat

    def bind(self, params: Params, state: OptState) -> None:
        """Make ``params`` and the state slots blocks of flat arrays (a no-op when they are)."""
        if set(params) != set(self.order):
            raise ValueError(f"params have keys {sorted(params)}; the flat layout has "
                             f"{sorted(self.order)}")
        self._flatten("params", params)
        for slot in self.opt.slots():
            self._flatten(slot, state[slot])

    def step(self, params: Params, state: OptState, flat_grad: np.ndarray, lr: float) -> bool:
        """One update from the flat gradient (blocks in ``order``): True if applied, False (and
        nothing changed) when the new parameters would not be all finite."""
        self.bind(params, state)
        names = ["params", *self.opt.slots()]
        for n in names:
            np.copyto(self._backup[n], self._flat[n])
        step = state["step"]
        flat_state: OptState = {"step": step}
        for slot in self.opt.slots():
            flat_state[slot] = {"": self._flat[slot]}
        self.opt._apply({"": self._flat["params"]}, {"": flat_grad}, flat_state,
                        _non_negative("lr", lr))
        if not np.isfinite(self._flat["params"]).all():
            for n in names:
                np.copyto(self._flat[n], self._backup[n])
            return False
        state["step"] = flat_state["step"]
        return True


# --------------------------------------------------------------------------- clipping


def global_norm(grads: Mapping[str, np.ndarray], norm_type: float = 2.0) -> float:
    """Norm of all gradients viewed as one vector (as ``torch.nn.utils.get_total_norm``)."""
    _check_params(grads, "grads")
    p = _positive("norm_type", norm_type) if norm_type != math.inf else math.inf
    norms = np.array([np.linalg.norm(g.ravel(), ord=p) for g in grads.values()],
                     dtype=np.float64)
    return float(np.linalg.norm(norms, ord=p))


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float, norm_type: float = 2.0,
                   *, error_if_nonfinite: bool = False) -> tuple[Params, float]:
    """Scale gradients so that their global norm is at most ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_``: every gradient is multiplied by
    ``min(max_norm / (total_norm + 1e-6), 1)``.

    Parameters
    ----------
    grads : Mapping[str, np.ndarray]
        Gradients (not modified).
    max_norm : float
        Maximum norm, > 0.
    norm_type : float
        Order of the norm, > 0 or ``math.inf``.
    error_if_nonfinite : bool
        Raise ValueError if the total norm is nan or inf.  Otherwise, as in torch,
        a non-finite norm yields a coefficient of 0 or nan (so nan gradients).

    Returns
    -------
    tuple[Params, float]
        The clipped gradients (new arrays) and the total norm *before* clipping.
    """
    max_norm = _positive("max_norm", max_norm)
    total = global_norm(grads, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise ValueError(f"the total gradient norm of order {norm_type} is non-finite ({total})")
    coef = clip_coefficient(total, max_norm)
    with np.errstate(invalid="ignore"):  # inf * 0 -> nan, as in torch
        return {k: g * g.dtype.type(coef) for k, g in grads.items()}, total


def clip_coefficient(total_norm: float, max_norm: float) -> float:
    """The factor :func:`clip_grad_norm` multiplies every gradient by (torch's rule):
    ``min(max_norm / (total_norm + 1e-6), 1)``."""
    return min(max_norm / (total_norm + 1e-6), 1.0)


def clip_grad_value(grads: Mapping[str, np.ndarray], clip_value: float) -> Params:
    """Clamp every gradient entry to ``[-clip_value, clip_value]`` (``clip_grad_value_``).

    Returns new arrays; ``grads`` is not modified.
    """
    _check_params(grads, "grads")
    c = _positive("clip_value", clip_value)
    return {k: np.clip(g, -c, c) for k, g in grads.items()}


# --------------------------------------------------------------------------- (de)serialisation


def flatten_state(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flatten an optimizer state into one ``dict[str, np.ndarray]``.

    ``"step"`` becomes a 0-d int64 array; slot arrays are stored under
    ``"<slot>/<param key>"`` (shared with ``state``, not copied).
    """
    if not isinstance(state, Mapping) or "step" not in state:
        raise ValueError("state must be a mapping with a 'step' entry")
    flat: dict[str, np.ndarray] = {"step": np.asarray(_check_step(state["step"]), np.int64)}
    for slot, arrays in state.items():
        if slot == "step":
            continue
        if _SEP in slot:
            raise ValueError(f"state slot names must not contain {_SEP!r}, got {slot!r}")
        if not isinstance(arrays, Mapping) or not arrays:
            raise TypeError(f"state[{slot!r}] must be a non-empty mapping of arrays")
        for key, value in arrays.items():
            if not isinstance(value, np.ndarray):
                raise TypeError(f"state[{slot!r}][{key!r}] must be a numpy array, "
                                f"got {type(value).__name__}")
            flat[f"{slot}{_SEP}{key}"] = value
    return flat


def unflatten_state(flat: Mapping[str, np.ndarray]) -> OptState:
    """Inverse of :func:`flatten_state` (arrays are shared, not copied)."""
    if not isinstance(flat, Mapping) or "step" not in flat:
        raise ValueError("flat optimizer state must contain a 'step' entry")
    step = np.asarray(flat["step"])
    if step.shape != () or not np.issubdtype(step.dtype, np.integer):
        raise ValueError(f"flat state 'step' must be a 0-d integer array, got "
                         f"shape {step.shape} dtype {step.dtype}")
    state: OptState = {"step": _check_step(int(step))}
    for name, value in flat.items():
        if name == "step":
            continue
        slot, sep, key = name.partition(_SEP)
        if not sep or not slot or not key:
            raise ValueError(f"flat state key {name!r} is not of the form '<slot>{_SEP}<key>'")
        state.setdefault(slot, {})[key] = value
    return state
