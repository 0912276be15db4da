"""Learning rules: estimators of the gradient that share the one cell (docs/architecture.md).

Every batch rule has one signature::

    loss, grads, out = rule(params, X, Y, spec, *, h0=None, mask=None, lengths=None, steps=None,
                            **options)        # -> (float, Gradients, Output)

and every online rule (an update at every step, seed 004, or every ``every`` steps)::

    loss, out = rule(params, X, Y, spec, *, opt, opt_state, lr=None, h0=None, mask=None,
                     lengths=None, steps=None, **options)

:data:`RULES` and :data:`ONLINE` name them for the trainer (``TrainConfig.algorithm``, with the
options in ``TrainConfig.algorithm_kwargs``), the CLI's ``--algorithm`` and sweeps; the rules of
:data:`STOCHASTIC` also take ``rng=``, a ``numpy.random.Generator`` (the trainer passes its own,
saved in checkpoints).  A new rule is a module here whose function keeps the signature, and an
entry in the tables.

Beyond exact BPTT and RTRL (docs/derivation.md, sections 11-14): UORO (:mod:`.uoro`), KF-RTRL
(:mod:`.kf_rtrl`), SnAp-n (:mod:`.snap`), RFLO (:mod:`.rflo`) and e-prop (:mod:`.eprop`), on the
shared forward walk of :mod:`.walk`; docs/online.md compares them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..core import network
from . import eprop, kf_rtrl, rflo, rtrl, snap, tbptt, uoro

__all__ = ["ONLINE", "RULES", "STOCHASTIC", "rule_options"]

RULES: dict[str, Callable[..., Any]] = {
    "bptt": network.value_and_grad,       # exact: forward, loss and backward through time
    "tbptt": tbptt.value_and_grad,        # truncated BPTT(k2; k1), eqs. (23)-(25)
    "rtrl": rtrl.value_and_grad,          # exact, forward mode, eqs. (26)-(31)
    "uoro": uoro.value_and_grad,          # rank-one unbiased estimate, eqs. (45)-(47)
    "kf_rtrl": kf_rtrl.value_and_grad,    # Kronecker-factored unbiased estimate, eqs. (48)-(49)
    "snap": snap.value_and_grad,          # sparse n-step approximation, eqs. (50)-(51)
    "rflo": rflo.value_and_grad,          # local traces, random feedback, eqs. (52)-(53)
    "eprop": eprop.value_and_grad,        # eligibility propagation, eqs. (54)-(55)
}
"""Batch rules: ``(loss, Gradients, Output)`` of one minibatch."""

ONLINE: dict[str, Callable[..., Any]] = {
    "rtrl_online": rtrl.online_update,    # an optimizer step at every scored step, eq. (32)
    "uoro_online": uoro.online_update,    # an optimizer step every `every` steps, eq. (42)
    "kf_rtrl_online": kf_rtrl.online_update,
    "snap_online": snap.online_update,
    "rflo_online": rflo.online_update,
    "eprop_online": eprop.online_update,
}
"""Online rules: update the parameters as they read the sequence; ``(loss, Output)``."""

STOCHASTIC: frozenset[str] = frozenset({"uoro", "uoro_online", "kf_rtrl", "kf_rtrl_online"})
"""Rules that draw random numbers: they take ``rng=`` (a ``numpy.random.Generator``)."""

# the shared signature: states, masks, the optimizer of the online forms, the Generator of the
# stochastic rules and the loss weights (data, passed by fit from the dataset)
_SHARED = frozenset({"h0", "mask", "lengths", "steps", "opt", "opt_state", "lr", "rng",
                     "sample_weight"})


def rule_options(name: str) -> dict[str, Any]:
    """The options of rule ``name`` (its keyword arguments beyond the shared signature) and
    their defaults (``inspect.Parameter.empty`` when required)."""
    table = RULES if name in RULES else ONLINE
    if name not in table:
        raise ValueError(f"unknown learning rule {name!r}; expected one of "
                         f"{sorted(RULES) + sorted(ONLINE)}")
    sig = inspect.signature(table[name])
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _SHARED}
