"""The files a training run writes besides checkpoints: its directory and its JSONL log."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["finite_or_none", "prepare_dir", "write_log"]


def prepare_dir(path: str) -> Path:
    """``checkpoint_dir`` made if needed and checked writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"checkpoint_dir {str(p)!r} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create checkpoint_dir {str(p)!r}: {exc.strerror}") \
            from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(f"checkpoint_dir {str(p)!r} is not writable")
    return p


def write_log(path: Path, records: list[dict[str, Any]], mode: str) -> None:
    """Write (``"w"``, atomically) or append (``"a"``) JSONL records."""
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    try:
        if mode == "a":
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
            return
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except IsADirectoryError:
        raise IsADirectoryError(f"log_path {str(path)!r} is a directory; expected a file path") \
            from None
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write log_path {str(path)!r}: {exc.strerror}") from None


def finite_or_none(v: Any) -> Any:
    """A metric for JSON: non-finite floats become None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
