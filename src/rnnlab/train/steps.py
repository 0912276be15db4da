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

__all__ = ["ENGINES", "RULE_STREAM", "StepOutput", "gradient_function", "rule_rng"]

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


def gradient_function(cfg: TrainConfig, rng: np.random.Generator | None = None
                      ) -> Callable[..., Any]:
    """``f(params, X, Y, spec, h0, mask, steps) -> (loss, Gradients, StepOutput or Output)`` for
    the batch algorithms, or the online rule itself (:data:`rnnlab.learning.ONLINE`) with
    ``cfg.algorithm_kwargs``.

    ``rng`` is the Generator a stochastic rule draws from (default: :func:`rule_rng`); the
    trainer keeps it to save its state in checkpoints.
    """
    options: dict[str, Any] = dict(cfg.algorithm_kwargs)
    if cfg.algorithm in STOCHASTIC:
        options["rng"] = rule_rng(cfg) if rng is None else rng
    if cfg.algorithm in ONLINE:
        return partial(ONLINE[cfg.algorithm], **options) if options else ONLINE[cfg.algorithm]
    if cfg.algorithm == "bptt":
        make = ENGINES[cfg.engine]
        engines: dict[RNNSpec, Engine] = {}

        def bptt(params: Params, X: Any, Y: Any, spec: RNNSpec, h0: Any, mask: Any,
                 steps: int | None) -> Any:
            engine = engines.get(spec)
            if engine is None:
                engine = engines[spec] = make(spec)
            loss, grads = engine.value_and_grad(params, X, Y, h0=h0, mask=mask, steps=steps)
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
                   steps: int | None) -> Any:
        kw = dict(extra) if steps is None else {**extra, "steps": steps}
        return rule(params, X, Y, spec, h0=h0, mask=mask, **kw)
    return batch_rule
