"""rnnlab.data sits below the model: it imports nothing else from rnnlab, and its optional
dependencies are imported only by the datasets that need them."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import rnnlab.data

PACKAGE = Path(rnnlab.data.__file__).parent


def test_imports_nothing_else_from_rnnlab() -> None:
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level > 1 or (node.module or "").startswith("rnnlab") and not (
                    node.module or ""
                ).startswith("rnnlab.data"):
                    offenders.append(f"{path.name}: from {'.' * node.level}{node.module}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("rnnlab") and not alias.name.startswith("rnnlab.data"):
                        offenders.append(f"{path.name}: import {alias.name}")
    assert offenders == []


def test_optional_dependencies_are_lazy() -> None:
    code = (
        "import sys, rnnlab.data as d; d.load('xor', n_train=5, n_test=5); "
        "print(sorted(m for m in ('sklearn', 'mnist1d', 'matplotlib', 'scipy') "
        "if m in sys.modules))"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE.parent.parent), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
        check=True,
    )
    assert out.stdout.strip() == "[]"
