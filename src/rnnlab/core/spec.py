"""The architecture of a network: a frozen, validated description shared by every floor above."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from . import activations, losses

Setup = Literal["many_to_one", "many_to_many", "one_to_many"]
SETUPS: tuple[str, ...] = ("many_to_one", "many_to_many", "one_to_many")
LABEL_STEPS: tuple[str, ...] = ("last", "all")
FEEDS: tuple[str, ...] = ("every", "first")
INPUT_KINDS: tuple[str, ...] = ("dense", "index")


def unknown_fields(cls: type, d: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(unknown, valid)``: the keys of ``d`` that are not fields of the dataclass ``cls``, and
    its field names, both sorted (for the ``from_dict`` constructors' errors)."""
    valid = sorted(f.name for f in fields(cls))
    return sorted(set(d) - set(valid)), valid


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")


def _choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(valid)}")


@dataclass(frozen=True)
class RNNSpec:
    """What the network computes (docs/derivation.md, section 1).

    Parameters
    ----------
    input_size : int
        ``D``, the features per step; for ``input_kind="index"`` the vocabulary size.
    hidden_size : int
        ``H``, units per layer and direction.
    output_size : int
        ``O``, classes or regression outputs of the head.
    num_layers : int
        Stacked recurrent layers (seed 004).
    bidirectional : bool
        Each layer also reads the sequence backwards; its output is ``[H_fwd, H_bwd]`` (2H wide).
    nonlinearity : {"tanh", "relu", "sigmoid", "identity"}
        Hidden activation ``f``.
    loss : {"softmax_ce", "sigmoid_bce", "identity_mse", "relu_mse"}
        Output activation ``g`` fused with its loss.
    setup : {"many_to_one", "many_to_many", "one_to_many"}
        Where inputs enter and where the head reads (section 3 of the derivation).
    label_steps : {"last", "all"}
        many-to-one only: score the sequence label at the last step, or at every step with the
        same label (seed 000, eq. 1).
    feed : {"every", "first"}
        one-to-many only: the single input vector enters at every step (seed 000) or only at the
        first.
    reduction : {"mean", "sum"}
        Over scored (sequence, step) entries, eq. (15).
    input_kind : {"dense", "index"}
        ``"index"``: inputs are integer ids ``(B, T)`` that select rows of ``W_xh`` (eq. 21).
    """

    input_size: int
    hidden_size: int
    output_size: int
    num_layers: int = 1
    bidirectional: bool = False
    nonlinearity: str = "tanh"
    loss: str = "softmax_ce"
    setup: str = "many_to_one"
    label_steps: str = "last"
    feed: str = "every"
    reduction: str = "mean"
    input_kind: str = "dense"

    def __post_init__(self) -> None:
        for name in ("input_size", "hidden_size", "output_size", "num_layers"):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.bidirectional, bool):
            raise TypeError(f"bidirectional must be a bool; got {self.bidirectional!r}")
        activations.get(self.nonlinearity)
        _choice("loss", self.loss, losses.LOSSES)
        _choice("setup", self.setup, SETUPS)
        _choice("label_steps", self.label_steps, LABEL_STEPS)
        _choice("feed", self.feed, FEEDS)
        _choice("reduction", self.reduction, losses.REDUCTIONS)
        _choice("input_kind", self.input_kind, INPUT_KINDS)
        if self.input_kind == "index" and self.setup == "one_to_many":
            raise ValueError("input_kind='index' needs a sequence of ids; got setup='one_to_many'")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def per_step_output(self) -> bool:
        """True when the head reads every step (output ``(B, T, O)``), False for ``(B, O)``."""
        return self.setup != "many_to_one" or self.label_steps == "all"

    def layer_keys(self, layer: int) -> list[str]:
        """Parameter-key prefixes of one layer: ``["l0"]`` or ``["l0", "l0r"]``."""
        return [f"l{layer}"] + ([f"l{layer}r"] if self.bidirectional else [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RNNSpec:
        unknown, valid = unknown_fields(cls, d)
        if unknown:
            raise ValueError(f"unknown RNNSpec keys {unknown}; valid keys are {valid}")
        return cls(**d)
