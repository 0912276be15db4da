"""The gradient of one training step: an engine for full BPTT, a learning rule otherwise.

:func:`gradient_function` turns a :class:`TrainConfig` into
``f(params, X, Y, spec, h0, mask, steps) -> (loss, Gradients, output)`` (or, for an online rule,
the rule itself).  Full BPTT runs the engine ``TrainConfig.engine`` names (:data:`ENGINES`): the
fast one by default, the reference one for teaching and checking; both keep the contract of
:class:`rnnlab.core.engine.Engine`, so a new engine is one more entry here.
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
from ..fast.workspace import Workspace
from ..learning import ONLINE, RULES, STOCHASTIC
from .config import TrainConfig

__all__ = ["ENGINES", "RULE_STREAM", "StepOutput", "fast_path_note", "gradient_function",
           "rule_rng"]

RULE_STREAM = 17
"""The spawn key of the rule's Generator: ``SeedSequence(seed, spawn_key=(RULE_STREAM,))``, a
stream independent of the run's shuffling Generator (``default_rng(seed)``)."""


def _fast(spec: RNNSpec) -> Engine:
    # a fixed thread option: no tuner and no split, so that a run and its resumed copy compute
    # the same numbers, bit for bit
    return Workspace(spec, threads=1)


ENGINES: dict[str, Callable[[RNNSpec], Engine]] = {"fast": _fast, "reference": Reference}
"""Engine makers by name: ``maker(spec) -> Engine``."""


class StepOutput(NamedTuple):
    """What a training step reads of the forward pass (an engine computes no predictions)."""

    logits: NDArray[Any]      # may be a view of the engine's buffer: valid until its next call
    h_n: NDArray[Any]


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
    if cfg.algorithm in ONLINE:
        return partial(ONLINE[cfg.algorithm], **options) if options else ONLINE[cfg.algorithm]
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

    if cfg.algorithm != "bptt":
        return (f"algorithm {cfg.algorithm!r} runs on the reference cell (the fast engine "
                "computes full BPTT only)")
    if cfg.engine != "fast":
        return f"engine {cfg.engine!r} was asked for"
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
