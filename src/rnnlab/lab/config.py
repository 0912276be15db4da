"""Experiment configs: dataclasses behind TOML files, flat dotted keys for flags and sweeps.

An :class:`ExperimentConfig` is three parts plus a name::

    name = "digits-T8"              # the run directory's name
    label = "tanh"                  # optional: the line a run belongs to in plots and tables

    [model]                         # ModelConfig: what network
    hidden_size = 64
    nonlinearity = "tanh"

    [data]                          # DataConfig: which dataset, through rnnlab.data.registry
    dataset = "digits"
    steps = 8

    [data.options]                  # the dataset's own options (registry.options(name))
    scale = "unit"

    [train]                         # rnnlab.train.TrainConfig, reused as it is
    epochs = 20
    lr = 0.003

Every section rejects unknown keys with the list of valid ones.  The same settings have flat
dotted keys (``model.hidden_size``, ``data.steps``, ``train.lr``, ``data.options.scale``), which
the command line's ``--set KEY=VALUE`` and the sweep grids use; a bare field name works where it
is unambiguous (``hidden_size``, ``lr``), and a few aliases are short: ``T`` and ``steps`` for
``data.steps``, ``seed`` for ``train.seed``, ``dataset``, ``hidden``, ``layers``.

``train.seed`` is the run's seed: it seeds the initialiser (through an independent child of its
``SeedSequence``) and the trainer's shuffling.  ``data.seed`` seeds the dataset (validation carve,
generation of synthetic tasks).

TOML is read with :mod:`tomllib` (standard library) and written by the small writer here; keys set
to None are left out where None is the field's default, and written as ``"none"`` where it is not
(``train.clip_norm``, whose default is ``"auto"``), so ``load(save(c)) == c``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..core.params import DEFAULT_INIT, INITS
from ..core.spec import RNNSpec, unknown_fields
from ..data import registry
from ..train.config import TrainConfig

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "check_name",
    "dumps_toml",
    "flat_keys",
    "load_config",
    "parse_value",
    "resolve_key",
    "save_config",
]

DTYPES: tuple[str, ...] = ("float32", "float64")
SECTIONS: tuple[str, ...] = ("model", "data", "train")
# fields of TrainConfig the run directory owns (rnnlab.experiments.run sets them)
RUN_OWNED: tuple[str, ...] = ("train.checkpoint_dir", "train.log_path")
ALIASES: dict[str, str] = {
    "T": "data.steps", "steps": "data.steps", "seed": "train.seed", "dataset": "data.dataset",
    "hidden": "model.hidden_size", "layers": "model.num_layers",
}
_DICT_FIELDS: tuple[str, ...] = ("data.options", "train.optimizer_kwargs", "train.schedule_kwargs",
                                "train.algorithm_kwargs")


def _check_int(name: str, value: object, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}; got {type(value).__name__} "
                        f"{value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value}")


def _from_mapping(cls: type, d: Mapping[str, Any], what: str) -> Any:
    if not isinstance(d, Mapping):
        raise TypeError(f"[{what}] must be a table of keys; got {type(d).__name__} {d!r}")
    unknown, valid = unknown_fields(cls, d)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{what}]; valid keys are {valid}")
    return cls(**d)


@dataclass(frozen=True)
class ModelConfig:
    """The network: :class:`rnnlab.RNNSpec` fields the dataset does not fix, and its initialiser.

    Parameters
    ----------
    hidden_size, num_layers, nonlinearity, bidirectional
        As in :class:`rnnlab.RNNSpec`.
    init : {"keras", "pytorch", "small", "irnn", "identity"}
        :func:`rnnlab.init_params` scheme (default ``"keras"``, docs/results.md "Defaults").
    dtype : {"float32", "float64"}
    setup, loss : str, optional
        Override what :func:`rnnlab.train.spec_for_dataset` derives from the dataset's task.
    label_steps : {"last", "all"}
        Many-to-one: score the label at the last step or at every step (seed 000).
    """

    hidden_size: int = 64
    num_layers: int = 1
    nonlinearity: str = "tanh"
    bidirectional: bool = False
    init: str = DEFAULT_INIT
    dtype: str = "float32"
    setup: str | None = None
    loss: str | None = None
    label_steps: str = "last"

    def __post_init__(self) -> None:
        for name in ("setup", "loss"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"model.{name} must be a name or left out; got {value!r}")
        # RNNSpec validates sizes and names (with its own messages)
        RNNSpec(1, self.hidden_size, 1, num_layers=self.num_layers,
                bidirectional=self.bidirectional, nonlinearity=self.nonlinearity,
                loss=self.loss or "softmax_ce", setup=self.setup or "many_to_one",
                label_steps=self.label_steps)
        if self.init not in INITS:
            raise ValueError(f"unknown model.init {self.init!r}; expected one of {list(INITS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {list(DTYPES)}; got {self.dtype!r}")

    def spec_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`rnnlab.train.spec_for_dataset` besides hidden_size."""
        kw: dict[str, Any] = {"num_layers": self.num_layers, "nonlinearity": self.nonlinearity,
                              "bidirectional": self.bidirectional,
                              "label_steps": self.label_steps}
        if self.setup is not None:
            kw["setup"] = self.setup
        if self.loss is not None:
            kw["loss"] = self.loss
        return kw


@dataclass(frozen=True)
class DataConfig:
    """The dataset, loaded with :func:`rnnlab.data.registry.load`.

    Parameters
    ----------
    dataset : str
        A name of :func:`rnnlab.data.names` (aliases and ``_`` for ``-`` work; stored canonical).
    steps : int, optional
        ``T`` (the dataset's default when left out).
    seed : int
        The dataset's seed (validation carve, generation).
    data_dir : str, optional
        Directory with the IDX files of ``mnist``/``fashion-mnist``/``permuted-mnist``.
    options : dict
        The dataset's own options, checked against :func:`rnnlab.data.registry.options`.
    """

    dataset: str = "digits"
    steps: int | None = None
    seed: int = 0
    data_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str):
            raise TypeError(f"data.dataset must be a name; got {self.dataset!r}")
        object.__setattr__(self, "dataset", registry.canonical_name(self.dataset))
        _check_int("data.steps", self.steps, 1, optional=True)
        _check_int("data.seed", self.seed, 0)
        if self.data_dir is not None:
            if not isinstance(self.data_dir, str | os.PathLike):
                raise TypeError(f"data.data_dir must be a path; got {self.data_dir!r}")
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        if not isinstance(self.options, Mapping):
            raise TypeError(f"data.options must be a table; got {self.options!r}")
        valid = registry.options(self.dataset)
        unknown = sorted(set(self.options) - set(valid))
        if unknown:
            listed = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
            raise ValueError(f"unknown data.options {unknown} for dataset {self.dataset!r}; "
                             f"valid options: {listed}")
        object.__setattr__(self, "options", dict(self.options))

    def load(self) -> Any:
        """The :class:`rnnlab.data.Dataset` this config names."""
        return registry.load(self.dataset, steps=self.steps, seed=self.seed,
                             data_dir=self.data_dir, **self.options)


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a run (or sweep) directory name: one path component of letters, digits
    and ``._=+,-``, not ``.`` or ``..``; else ValueError naming ``what``."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._=+,-]+", name) \
            or name in (".", ".."):
        raise ValueError(f"{what} must be a non-empty directory name of letters, digits and "
                         f"._=+,- ; got {name!r}")
    return name


@dataclass(frozen=True)
class ExperimentConfig:
    """One run: a name, the model, the data and the training (module docstring).

    Parameters
    ----------
    name : str
        The run directory's name under the runs directory (letters, digits, ``._=-+,``).
    label : str, optional
        Free label that groups runs into lines of plots and tables (e.g. a method's name).
    diagnostics : bool
        Record per-step gradient norms (at initialisation and at the end) and a sample of
        hidden activations in the run directory, for :mod:`rnnlab.plots`.
    model : ModelConfig
    data : DataConfig
    train : rnnlab.train.TrainConfig
    """

    name: str = "run"
    label: str | None = None
    diagnostics: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.label is not None and not isinstance(self.label, str):
            raise TypeError(f"label must be a string; got {self.label!r}")
        if not isinstance(self.diagnostics, bool):
            raise TypeError(f"diagnostics must be a bool; got {self.diagnostics!r}")
        for part, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            if not isinstance(getattr(self, part), cls):
                raise TypeError(f"{part} must be a {cls.__name__}; got "
                                f"{type(getattr(self, part)).__name__}")

    # ------------------------------------------------------------------------ dicts

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data: top-level keys, then one table per part."""
        return {"name": self.name, "label": self.label, "diagnostics": self.diagnostics,
                "model": asdict(self.model), "data": asdict(self.data),
                "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        """Build from nested data (a parsed TOML file); unknown keys raise ValueError."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a config must be a table of keys; got {type(d).__name__}")
        unknown, valid = unknown_fields(cls, d)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} at the top of the config; valid keys "
                             f"are {valid} (settings go in the [model], [data] and [train] "
                             "tables)")
        kw: dict[str, Any] = {k: v for k, v in d.items() if k not in SECTIONS}
        kw["model"] = _from_mapping(ModelConfig, d.get("model", {}), "model")
        kw["data"] = _from_mapping(DataConfig, d.get("data", {}), "data")
        kw["train"] = _from_mapping(TrainConfig, d.get("train", {}), "train")
        return cls(**kw)

    def flat(self) -> dict[str, Any]:
        """Every setting under its dotted key (``model.hidden_size`` ...); dicts stay whole."""
        d = self.to_dict()
        out = {k: d[k] for k in ("name", "label", "diagnostics")}
        for part in SECTIONS:
            out.update({f"{part}.{k}": v for k, v in d[part].items()})
        return out

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        """A copy with flat-key ``overrides`` applied (``{"T": 8, "train.lr": 1e-2}``).

        Keys go through :func:`resolve_key`; ``data.options.scale`` sets one entry of a dict
        field.  Everything is validated again.
        """
        d = self.to_dict()
        for key, value in overrides.items():
            full = resolve_key(key)
            parts = full.split(".")
            if len(parts) == 1:
                d[full] = value
            elif len(parts) == 2:
                d[parts[0]][parts[1]] = value
            else:
                sub = d[parts[0]][parts[1]]
                d[parts[0]][parts[1]] = {**(sub or {}), ".".join(parts[2:]): value}
        # a changed dataset takes its own options: drop the old dataset's that do not apply
        if d["data"]["dataset"] != self.data.dataset and "data.options" not in {
                resolve_key(k) for k in overrides}:
            name = registry.canonical_name(str(d["data"]["dataset"]))
            valid = registry.options(name)
            d["data"]["options"] = {k: v for k, v in d["data"]["options"].items() if k in valid}
        return ExperimentConfig.from_dict(d)

    def replace(self, **changes: Any) -> ExperimentConfig:
        return replace(self, **changes)


# ----------------------------------------------------------------------------- flat keys


def flat_keys() -> list[str]:
    """Every valid dotted key, in config order."""
    keys = [f.name for f in fields(ExperimentConfig) if f.name not in SECTIONS]
    for part, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
        keys += [f"{part}.{f.name}" for f in fields(cls)]
    return keys


def resolve_key(key: str) -> str:
    """The dotted key ``key`` means: itself, an alias, or the one section with that field.

    Raises
    ------
    ValueError
        Unknown or ambiguous keys (the message lists the valid keys).
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"a config key must be a non-empty string; got {key!r}")
    valid = flat_keys()
    if key in valid:
        return key
    if key in ALIASES:
        return ALIASES[key]
    for d in _DICT_FIELDS:
        if key.startswith(d + ".") and len(key) > len(d) + 1:
            return key
    if "." not in key:
        hits = [k for k in valid if k.split(".")[-1] == key]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ValueError(f"config key {key!r} is ambiguous; use one of {hits}")
    raise ValueError(f"unknown config key {key!r}; valid keys are {', '.join(valid)} "
                     f"(aliases: {', '.join(f'{a}={k}' for a, k in ALIASES.items())}; "
                     "dict entries as data.options.NAME)")


def parse_value(text: str) -> Any:
    """A command-line value: a TOML value if it parses (``8``, ``1e-3``, ``true``, ``[1, 2]``,
    ``"x"``), ``none`` for None, else the text itself as a string."""
    s = text.strip()
    if s.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {s}")["v"]
    except tomllib.TOMLDecodeError:
        return s


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(KEY, parse_value(VALUE))``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE; got {text!r}")
    return key.strip(), parse_value(value)


# ----------------------------------------------------------------------------- TOML


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_string(k)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
            "\f": "\\f", "\r": "\\r"}


def _toml_string(s: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped."""
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    if isinstance(v, Mapping):
        items = [f"{_toml_key(str(k))} = {_toml_value(x, where)}" for k, x in v.items()
                 if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {where} = {v!r} ({type(v).__name__}) to TOML")


def dumps_toml(d: Mapping[str, Any]) -> str:
    """Nested plain data as TOML: scalars and lists first, then a table per mapping.

    None values are left out (TOML has no null).
    """
    lines: list[str] = []

    def table(prefix: str, m: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in m.items() if v is not None and not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in m.items() if isinstance(v, Mapping) and v]
        if prefix and (scalars or not tables):
            lines.append(f"\n[{prefix}]")
        for k, v in scalars:
            lines.append(f"{_toml_key(str(k))} = {_toml_value(v, f'{prefix}.{k}'.strip('.'))}")
        for k, v in tables:
            table(f"{prefix}.{_toml_key(str(k))}" if prefix else _toml_key(str(k)), v)

    table("", d)
    return "\n".join(lines).lstrip("\n") + "\n"


def read_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a ``.toml`` (or ``.json``) file; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist" if not p.exists()
                                else f"config path {str(p)!r} is not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read config file {str(p)!r}: {exc}") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}") \
            from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a table of keys at the top")
    return data


def load_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a TOML (or JSON) file; errors name the file."""
    data = read_mapping(path)
    try:
        return ExperimentConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{path}: {exc}") from None


def save_config(cfg: ExperimentConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as TOML (atomically: a temporary file renamed over ``path``)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    d = cfg.to_dict()
    for part, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
        for f in fields(cls):      # TOML has no null: a None that is not the default is "none"
            if d[part].get(f.name, MISSING) is None and f.default is not None \
                    and f.default_factory is MISSING:
                d[part][f.name] = "none"
    tmp.write_text(dumps_toml(d), encoding="utf-8")
    os.replace(tmp, p)
    return p


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return t.strip()
    if isinstance(t, type):
        return t.__name__
    return repr(t).replace("typing.", "")


def field_types() -> dict[str, str]:
    """Flat key -> the field's declared type as text (``"int"``, ``"float | None"``, ...)."""
    out: dict[str, str] = {}
    for f in fields(ExperimentConfig):
        if f.name not in SECTIONS:
            out[f.name] = _type_name(f.type)
    for part, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
        for f in fields(cls):
            out[f"{part}.{f.name}"] = _type_name(f.type)
            if f.default is MISSING and f.default_factory is MISSING:
                raise TypeError(f"config field {part}.{f.name} has no default")
    return out
