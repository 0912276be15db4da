"""Short module names: ``rnnlab.network``, ``rnnlab.optim``, ... name modules on their floors.

The package is laid out by floors (docs/architecture.md): ``rnnlab.core.network``,
``rnnlab.train.optim``, and so on.  The short names below are kept as public names for those
modules (the same module objects, not copies), so that ``from rnnlab import optim``,
``import rnnlab.network as net`` and ``from rnnlab.checkpoint import load`` work as they always
have.  :func:`install` puts a finder on ``sys.meta_path`` that resolves them on first import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["MODULES", "install", "module"]

MODULES: dict[str, str] = {
    # floor 1-2: the reference engine
    "activations": "core.activations",
    "cell": "core.cell",
    "engine": "core.engine",
    "inputs": "core.inputs",
    "losses": "core.losses",
    "network": "core.network",
    "params": "core.params",
    "spec": "core.spec",
    # learning rules
    "diagnostics": "learning.diagnostics",
    "rtrl": "learning.rtrl",
    "tbptt": "learning.tbptt",
    # the fast engine
    "kernels": "fast.kernels",
    "workspace": "fast.workspace",
    # training
    "callbacks": "train.callbacks",
    "checkpoint": "train.checkpoint",
    "metrics": "train.metrics",
    "optim": "train.optim",
    "progress": "train.progress",
    "schedules": "train.schedules",
    "tracking": "train.tracking",
    "trainconfig": "train.config",
    # the lab: experiment configs, runs, sweeps, figures
    "config": "lab.config",
    "experiments": "lab.experiments",
    "plots": "lab.plots",
    "sweep": "lab.sweep",
}
"""Short name -> the module's path under ``rnnlab``."""

_PACKAGE = __name__.rpartition(".")[0]


def module(short: str) -> ModuleType:
    """The module a short name stands for (imported on first use)."""
    return importlib.import_module(f"{_PACKAGE}.{MODULES[short]}")


class _Alias(importlib.abc.Loader):
    """Loads ``rnnlab.<short>`` as the module it names: the same object under a second name."""

    def __init__(self, short: str) -> None:
        self.short = short
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        target = module(self.short)
        self.spec = target.__spec__          # the import system overwrites it: restored below
        return target

    def exec_module(self, mod: ModuleType) -> None:
        mod.__spec__ = self.spec             # already executed under its own name


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, short = fullname.rpartition(".")
        if package != _PACKAGE or short not in MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(short))


def install() -> None:
    """Resolve the short names from now on (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
