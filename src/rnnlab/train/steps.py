"""The gradient of one training step: an engine for full BPTT, a learning rule otherwise.

:func:`gradient_function` turns a :class:`TrainConfig` into
``f(params, X, Y, spec, h0, mask, steps) -> (loss, Gradients, output)`` (or, for an online rule,
the rule itself).  Full BPTT runs the engine ``TrainConfig.engine`` names (:data:`ENGINES`): the
fast one by default, the reference one for teaching and checking; both keep the contract of
:class:`rnnlab.core.engine.Engine`, so a new engine is one more entry here.  The forward-mode
learning rules (RTRL, UORO, KF-RTRL, SnAp, RFLO, e-prop and their online forms) run on the fast
path with ``engine="fast"`` (:class:`FastRuleStep`, :mod:`rnnlab.fast.rules`) and as their
definitions in :mod:`rnnlab.learning` with ``engine="reference"``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from ..core import network
from ..core.engine import Engine, Reference
from ..core.params import Params
from ..core.spec import RNNSpec
from ..fast.rules import FAST_RULES, FastRule
from ..fast.workspace import Workspace
from ..learning import ONLINE, RULES, STOCHASTIC, eprop, rflo, rtrl, snap, walk
from ..learning.tbptt import scored_windows
from .config import TrainConfig

__all__ = ["ENGINES", "FastRuleStep", "FastStep", "RULE_STREAM", "StepOutput",
           "fast_path_note", "gradient_function", "rule_rng"]

RULE_STREAM = 17
"""The spawn key of the rule's Generator: ``SeedSequence(seed, spawn_key=(RULE_STREAM,))``, a
stream independent of the run's shuffling Generator (``default_rng(seed)``)."""


def _fast(spec: RNNSpec) -> Engine:
    # reproducible: the work is cut into pieces fixed by the shapes and the thread budget the run
    # starts with, and only where they run (at once on the workers, or one after another) follows
    # the load; so a run and its resumed copy compute the same numbers, bit for bit
    return Workspace(spec, reproducible=True)


ENGINES: dict[str, Callable[[RNNSpec], Engine]] = {"fast": _fast, "reference": Reference}
"""Engine makers by name: ``maker(spec) -> Engine``."""


class StepOutput(NamedTuple):
    """What a training step reads of the forward pass (an engine computes no predictions)."""

    logits: NDArray[Any]      # may be a view of the engine's buffer: valid until its next call
    h_n: NDArray[Any] | None  # the final states (None when the run does not carry them)


class FastStep:
    """Full or truncated BPTT on the fast engine (one :class:`~rnnlab.fast.workspace.Workspace`):
    ``f(params, X, Y, spec, h0, mask, steps, sample_weight=None) -> (loss, Gradients,
    StepOutput)`` like the other gradient functions, and what the trainer's fast path reads
    besides: the gradients as one flat array (:attr:`flat_grad`, blocks in :attr:`grad_order`)
    and a forward pass on the same engine (:meth:`logits`)."""

    def __init__(self, cfg: TrainConfig, spec: RNNSpec) -> None:
        self.spec = spec
        engine = ENGINES["fast"](spec)
        if not isinstance(engine, Workspace):
            raise TypeError(f"the fast engine must be a Workspace; got {type(engine).__name__}")
        self.engine: Workspace = engine
        self.truncated = cfg.algorithm == "tbptt"
        self.k1 = cfg.k1
        self.k2 = cfg.k1 if cfg.k2 is None else cfg.k2
        self.stateful = cfg.stateful
        self._windows: dict[int, list[Any]] = {}

    def __call__(self, params: Params, X: Any, Y: Any, spec: RNNSpec, h0: Any, mask: Any,
                 steps: int | None, sample_weight: Any = None) -> Any:
        ws = self.engine
        if self.truncated:
            if sample_weight is not None:
                raise ValueError("sample_weight needs algorithm='bptt'; 'tbptt' takes no "
                                 "weights")
            T = steps if spec.setup == "one_to_many" and steps is not None else np.shape(X)[1]
            wins = self._windows.get(T)
            if wins is None:
                assert self.k1 is not None and self.k2 is not None
                wins = self._windows[T] = scored_windows(T, self.k1, self.k2, spec)
            loss, grads = ws.truncated_value_and_grad(params, X, Y, wins, h0=h0, mask=mask,
                                                      steps=steps)
        else:
            loss, grads = ws.value_and_grad(params, X, Y, h0=h0, mask=mask, steps=steps,
                                            sample_weight=sample_weight)
        logits = ws.logits
        assert logits is not None and ws.h0_grad is not None
        return (loss, network.Gradients(grads, None, ws.h0_grad),
                StepOutput(logits, ws.h_n() if self.stateful else None))

    @property
    def flat_grad(self) -> NDArray[Any]:
        """The last call's gradients as one flat array (the workspace's buffer)."""
        g = self.engine.flat_grad
        assert g is not None
        return g

    @property
    def grad_order(self) -> list[str]:
        """The parameter keys in the order of their blocks in :attr:`flat_grad`."""
        order = self.engine.grad_order
        assert order is not None
        return order

    def logits(self, params: Params, X: Any, h0: Any = None, mask: Any = None,
               steps: int | None = None) -> NDArray[Any]:
        """The logits of a batch, forward pass only (the validation split's)."""
        return self.engine.forward(params, X, h0=h0, mask=mask, steps=steps)

    def h_n(self) -> NDArray[Any]:
        """The final states of the last call."""
        return self.engine.h_n()


class FastRuleStep:
    """A learning rule on the fast path (:class:`rnnlab.fast.rules.FastRule`), with the
    signature of the reference rule's gradient function (a batch rule: ``f(params, X, Y, spec,
    h0, mask, steps, sample_weight=None)``; an online rule: ``f(params, X, Y, spec, *, opt,
    opt_state, lr, h0, mask, lengths, steps)``).

    The options are checked by the reference rule's own functions (:mod:`rnnlab.learning`: the
    same errors, the same feedback matrix from ``feedback_seed``, the same SnAp pattern, the same
    memory limits) and handed to the fast rule resolved; one fast rule (and its buffers) is
    kept per spec and resolved option set.
    """

    def __init__(self, algorithm: str, options: dict[str, Any],
                 spec: RNNSpec | None = None) -> None:
        self.algorithm = algorithm
        self.name = algorithm.removesuffix("_online")
        self.online = algorithm in ONLINE
        self.options = dict(options)
        opts = self.options
        if self.online:
            every = opts.get("every", 1)
            if self.name == "rtrl":
                if isinstance(every, bool) or not isinstance(every, int | np.integer) or \
                        every < 1:
                    raise ValueError(f"every must be an int >= 1 (time steps between updates); "
                                     f"got {every!r}")
            else:
                walk.check_every(every)
        if self.name in ("uoro", "kf_rtrl"):
            walk.check_rng(opts.get("rng"), "UORO" if self.name == "uoro" else "KF-RTRL")
        max_bytes = opts.get("max_bytes", rtrl.DEFAULT_MAX_BYTES)
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(
                max_bytes, int | float) or max_bytes <= 0):
            raise ValueError(f"max_bytes must be a positive number or None; got {max_bytes!r}")
        self.max_bytes = max_bytes
        if self.name == "snap":
            snap.pattern(np.ones((1, 1), bool), opts.get("n", 1))      # n's checks
        self._rules: dict[tuple[Any, ...], FastRule] = {}
        self._feedback: dict[np.dtype, NDArray[Any] | None] = {}
        self._eval: Workspace | None = None
        self._spec: RNNSpec | None = spec

    def logits(self, params: Params, X: Any, h0: Any = None, mask: Any = None,
               steps: int | None = None) -> NDArray[Any]:
        """The logits of a batch, forward pass only (the validation split's), on a fast engine
        of its own (:meth:`rnnlab.fast.workspace.Workspace.forward`; a view, valid until the
        next call); :meth:`h_n` the final states."""
        spec = self._spec
        if spec is None:
            raise RuntimeError("logits() needs a training step first (it learns the spec)")
        if self._eval is None or self._eval.spec != spec:
            self._eval = Workspace(spec, reproducible=True)
        return self._eval.forward(params, X, h0=h0, mask=mask, steps=steps)

    def h_n(self) -> NDArray[Any]:
        """The final states of the last :meth:`logits` call."""
        if self._eval is None:
            raise RuntimeError("h_n() needs a logits() call first")
        return self._eval.h_n()

    @staticmethod
    def covers(algorithm: str, options: dict[str, Any]) -> bool:
        """Whether ``algorithm`` with ``options`` has a fast implementation: the rules of
        :data:`rnnlab.fast.rules.FAST_RULES` on the vanilla cell (RFLO's ``alpha = 1``, e-prop's
        ``decay = 0``, the only cell ``fit`` trains)."""
        name = algorithm.removesuffix("_online")
        if name not in FAST_RULES or (algorithm not in RULES and algorithm not in ONLINE):
            return False
        if name == "rflo" and rflo.check_alpha(options.get("alpha", 1.0)) != 1.0:
            return False
        return not (name == "eprop" and eprop.check_decay(options.get("decay", 0.0)) != 0.0)

    def _feedback_matrix(self, spec: RNNSpec, dtype: np.dtype) -> NDArray[Any] | None:
        if self.name not in ("rflo", "eprop"):
            return None
        key = np.dtype(dtype)
        if key not in self._feedback:
            default = "random" if self.name == "rflo" else "symmetric"
            self._feedback[key] = walk.feedback_matrix(
                self.options.get("feedback", default), self.options.get("feedback_seed", 0),
                spec, key, "RFLO" if self.name == "rflo" else "e-prop")
        return self._feedback[key]

    def _check_memory(self, spec: RNNSpec, B: int, dtype: np.dtype, p: int) -> None:
        if self.max_bytes is None or self.name not in ("rtrl", "snap"):
            return
        gib = float(1024**3)
        if self.name == "rtrl":
            need = rtrl.sensitivity_bytes(spec, B, dtype, with_h0=not self.online)
            if need > self.max_bytes:
                lay = rtrl.layout(spec, with_h0=not self.online)
                raise rtrl.SensitivityMemoryError(
                    f"RTRL needs {need / gib:.3g} GiB, limit {self.max_bytes / gib:.3g} GiB "
                    f"(max_bytes): the sensitivities dH_t/dtheta are (B, rows, H) = ({B}, "
                    f"{lay.rows[-1]}, {lay.hidden}) for the top layer alone ({dtype.name}), "
                    "growing as B H |theta| ~ B H^3 per layer; use fewer sequences per batch, a "
                    "smaller hidden_size, a larger max_bytes, or BPTT / truncated BPTT")
            return
        need = snap.snap_bytes(spec, B, p, dtype)
        if need > self.max_bytes:
            n = self.options.get("n", 1)
            raise rtrl.SensitivityMemoryError(
                f"SnAp-{n} needs {need / gib:.3g} GiB, limit {self.max_bytes / gib:.3g} GiB "
                f"(max_bytes): its pattern keeps up to p = {p} of H = {spec.hidden_size} units "
                f"per weight, (H, B, H + D + 1, p) entries twice; use a smaller n, a sparser "
                "W_hh, fewer sequences per batch or a larger max_bytes")

    def rule(self, params: Params, X: Any, spec: RNNSpec) -> FastRule:
        """The fast rule for this call (made on first use): the options resolved for
        ``params``' dtype and, for SnAp, its connections (``W_hh``'s zeros with
        ``connectivity="nonzero"``)."""
        if not isinstance(spec, RNNSpec):
            raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
        self._spec = spec
        W_hy = params.get("W_hy")
        dtype = np.asarray(W_hy).dtype if W_hy is not None else np.dtype(np.float64)
        F = self._feedback_matrix(spec, dtype) if W_hy is not None else None
        conn = P = None
        p = 1
        key: tuple[Any, ...] = (spec, dtype.str)
        if self.name == "snap" and "l0.W_hh" in params:
            conn = snap.check_connectivity(self.options.get("connectivity"), params["l0.W_hh"])
            P = snap.pattern(conn, self.options.get("n", 1))
            p = int(P.sum(axis=1).max())
            key += (conn.tobytes(), P.tobytes())
        self._check_memory(spec, int(np.shape(X)[0]) if np.ndim(X) else 0, dtype, p)
        fr = self._rules.get(key)
        if fr is None:
            if len(self._rules) >= 4:
                self._rules.clear()
            fr = self._rules[key] = FastRule(
                spec, self.algorithm, rng=self.options.get("rng"), feedback=F,
                connectivity=conn, pattern=P, every=self.options.get("every", 1))
        return fr

    def __call__(self, params: Params, X: Any, Y: Any, spec: RNNSpec, h0: Any = None,
                 mask: Any = None, steps: int | None = None, sample_weight: Any = None, *,
                 opt: Any = None, opt_state: Any = None, lr: float | None = None,
                 lengths: Any = None) -> Any:
        if self.online:
            if opt is None or opt_state is None:
                raise TypeError(f"{self.algorithm} needs opt= and opt_state=")
            return self.rule(params, X, spec).online_update(
                params, X, Y, opt=opt, opt_state=opt_state, lr=lr, h0=h0, mask=mask,
                lengths=lengths, steps=steps)
        if sample_weight is not None:
            raise ValueError(f"sample_weight needs algorithm='bptt'; {self.algorithm!r} takes "
                             "no weights")
        return self.rule(params, X, spec).value_and_grad(params, X, Y, h0=h0, mask=mask,
                                                         lengths=lengths, steps=steps)


def rule_rng(cfg: TrainConfig) -> np.random.Generator | None:
    """The Generator of a stochastic rule (:data:`rnnlab.learning.STOCHASTIC`), seeded from
    ``cfg.seed``; None for the deterministic algorithms."""
    if cfg.algorithm not in STOCHASTIC:
        return None
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(RULE_STREAM,)))


def gradient_function(cfg: TrainConfig, spec: RNNSpec | None = None,
                      rng: np.random.Generator | None = None) -> Callable[..., Any]:
    """``f(params, X, Y, spec, h0, mask, steps, sample_weight=None) -> (loss, Gradients,
    StepOutput or Output)`` for the batch algorithms, or the online rule itself
    (:data:`rnnlab.learning.ONLINE`) with ``cfg.algorithm_kwargs``.

    With ``spec`` the engine for it is made now (the fast engine compiles its kernels when it is
    made), so that the first step's time is the step's own.  ``rng`` is the Generator a
    stochastic rule draws from (default: :func:`rule_rng`); the trainer keeps it to save its
    state in checkpoints.
    """
    options: dict[str, Any] = dict(cfg.algorithm_kwargs)
    if cfg.algorithm in STOCHASTIC:
        options["rng"] = rule_rng(cfg) if rng is None else rng
    if cfg.engine == "fast" and FastRuleStep.covers(cfg.algorithm, options):
        return FastRuleStep(cfg.algorithm, options, spec)
    if cfg.algorithm in ONLINE:
        return partial(ONLINE[cfg.algorithm], **options) if options else ONLINE[cfg.algorithm]
    if cfg.algorithm in ("bptt", "tbptt") and cfg.engine == "fast" and spec is not None \
            and not options:
        return FastStep(cfg, spec)
    if cfg.algorithm == "bptt":
        make = ENGINES[cfg.engine]
        engines: dict[RNNSpec, Engine] = {}
        if spec is not None:
            engines[spec] = make(spec)

        def bptt(params: Params, X: Any, Y: Any, spec: RNNSpec, h0: Any, mask: Any,
                 steps: int | None, sample_weight: Any = None) -> Any:
            engine = engines.get(spec)
            if engine is None:
                engine = engines[spec] = make(spec)
            loss, grads = engine.value_and_grad(params, X, Y, h0=h0, mask=mask, steps=steps,
                                                sample_weight=sample_weight)
            logits = engine.logits
            assert logits is not None and engine.h0_grad is not None
            return (loss, network.Gradients(grads, None, engine.h0_grad),
                    StepOutput(logits, engine.h_n()))
        return bptt
    rule = RULES[cfg.algorithm]
    extra: dict[str, Any] = options
    if cfg.algorithm == "tbptt":
        extra = {**options, "k1": cfg.k1, "k2": cfg.k1 if cfg.k2 is None else cfg.k2}

    def batch_rule(params: Params, X: Any, Y: Any, spec: RNNSpec, h0: Any, mask: Any,
                   steps: int | None, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError(f"sample_weight needs algorithm='bptt'; {cfg.algorithm!r} takes no "
                             "weights")
        kw = dict(extra) if steps is None else {**extra, "steps": steps}
        return rule(params, X, Y, spec, h0=h0, mask=mask, **kw)
    return batch_rule


def fast_path_note(cfg: TrainConfig, spec: RNNSpec, dtype: Any, masked: bool) -> str | None:
    """Why the compiled loops of the fast engine do not run for this training (None when they
    do): the reference engine or a learning rule was asked for, the optional kernels are not
    installed (and why), or the data or network is one they do not cover."""
    import numpy as np

    from ..fast import kernels

    if cfg.engine != "fast":
        if cfg.algorithm not in ("bptt", "tbptt"):
            return (f"algorithm {cfg.algorithm!r} runs on the reference cell (engine "
                    f"{cfg.engine!r} was asked for)")
        return f"engine {cfg.engine!r} was asked for"
    if cfg.algorithm not in ("bptt", "tbptt"):
        if not FastRuleStep.covers(cfg.algorithm, dict(cfg.algorithm_kwargs)):
            return (f"algorithm {cfg.algorithm!r} runs on the reference cell (no fast "
                    "implementation of these options)")
        if cfg.algorithm in ONLINE:
            return (f"algorithm {cfg.algorithm!r} runs on the fast path's buffers "
                    "(rnnlab.fast.rules): the network stepped in NumPy with the current "
                    "parameters, not the compiled loops")
        return (f"algorithm {cfg.algorithm!r} runs on the fast path's buffers "
                "(rnnlab.fast.rules): the forward pass on the fast engine, the rule's "
                "recursion in NumPy")
    if not kernels.available():
        why = kernels.why_unavailable() or "unknown reason"
        return (f"the compiled loops are not installed ({why}): pip install 'rnnlab[fast]'; "
                "the fast engine runs its NumPy loops")
    reasons = []
    if np.dtype(dtype) != np.float32:
        reasons.append(f"the parameters are {np.dtype(dtype)} (the kernels are float32)")
    if not kernels.supports(spec.nonlinearity, np.dtype(np.float32), False):
        reasons.append(f"nonlinearity {spec.nonlinearity!r} has no kernel")
    if masked:
        reasons.append("the data has a mask (variable lengths)")
    if reasons:
        return "the compiled loops do not cover this run: " + "; ".join(reasons) + \
            " (the fast engine runs its NumPy loops)"
    return None
