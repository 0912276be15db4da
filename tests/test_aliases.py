"""The short module names (rnnlab.aliases) are the modules on their floors, not copies."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import rnnlab
from rnnlab import aliases


@pytest.mark.parametrize("short", sorted(aliases.MODULES))
def test_short_name_is_the_module(short: str) -> None:
    target = importlib.import_module(f"rnnlab.{aliases.MODULES[short]}")
    assert importlib.import_module(f"rnnlab.{short}") is target
    assert getattr(rnnlab, short) is target
    assert target.__spec__.name == target.__name__ == f"rnnlab.{aliases.MODULES[short]}"


def test_from_imports_in_a_fresh_process() -> None:
    """``from rnnlab.checkpoint import load`` and ``import rnnlab.network as net`` as the first
    import of a process (nothing loaded before)."""
    code = ("from rnnlab.checkpoint import load\nimport rnnlab.network as net\n"
            "from rnnlab import optim, tbptt\n"
            "assert net.__name__ == 'rnnlab.core.network'\n"
            "assert optim.__name__ == 'rnnlab.train.optim' and callable(load)\n"
            "assert tbptt.__name__ == 'rnnlab.learning.tbptt'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unknown_attribute_and_module() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        rnnlab.nope  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("rnnlab.nope")
