"""Learning rules: estimators of the gradient that share the one cell (docs/architecture.md).

Every batch rule has one signature::

    loss, grads, out = rule(params, X, Y, spec, *, h0=None, mask=None, lengths=None, steps=None,
                            **options)        # -> (float, Gradients, Output)

and every online rule (an update at every step, seed 004)::

    loss, out = rule(params, X, Y, spec, *, opt, opt_state, lr=None, h0=None, mask=None,
                     lengths=None, steps=None, **options)

:data:`RULES` and :data:`ONLINE` name them for the trainer (``TrainConfig.algorithm``), the CLI's
``--algorithm`` and sweeps.  A new rule is a module here whose function keeps the signature, and an
entry in one of the tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core import network
from . import rtrl, tbptt

__all__ = ["ONLINE", "RULES"]

RULES: dict[str, Callable[..., Any]] = {
    "bptt": network.value_and_grad,       # exact: forward, loss and backward through time
    "tbptt": tbptt.value_and_grad,        # truncated BPTT(k2; k1), eqs. (23)-(25)
    "rtrl": rtrl.value_and_grad,          # exact, forward mode, eqs. (26)-(31)
}
"""Batch rules: ``(loss, Gradients, Output)`` of one minibatch."""

ONLINE: dict[str, Callable[..., Any]] = {
    "rtrl_online": rtrl.online_update,    # an optimizer step at every scored step, eq. (32)
}
"""Online rules: update the parameters as they read the sequence; ``(loss, Output)``."""
