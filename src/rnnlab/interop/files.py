"""Atomic writes of the exported files (ONNX, PyTorch, safetensors).

An export is serialised to bytes first, then written to a temporary file beside the target which is
flushed, fsync'ed and renamed over it (``os.replace``): a crash leaves the previous file or the new
one, never half of one.  ``overwrite=False`` refuses an existing target instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["write_bytes"]


def write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True,
                what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically; return the path.

    Parameters
    ----------
    path : path-like
        The target file; its directory must exist.
    data : bytes
    overwrite : bool
        False refuses an existing target (``FileExistsError``).
    what : str
        Names the file in errors (``"ONNX file"``).
    """
    p = Path(os.fspath(path))
    if p.is_dir():
        raise IsADirectoryError(f"{what} path {str(p)!r} is a directory; expected a file path")
    if not overwrite and p.exists():
        raise FileExistsError(f"{what} {str(p)!r} exists; pass overwrite=True to replace it")
    parent = p.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {what} {str(p)!r}: directory {str(parent)!r} "
                                "does not exist")
    tmp = parent / f".{p.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, p)
        else:
            _link_new(tmp, p, what)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        tmp.unlink()                            # left behind by _link_new only
    with contextlib.suppress(OSError):          # make the rename durable where the OS allows it
        fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return p


def _link_new(tmp: Path, p: Path, what: str) -> None:
    """Give ``tmp`` the name ``p`` only if ``p`` does not exist (a hard link fails atomically on an
    existing name); where the file system has no hard links, check and rename."""
    try:
        os.link(tmp, p)
    except FileExistsError:
        raise FileExistsError(f"{what} {str(p)!r} exists; pass overwrite=True to replace it") \
            from None
    except OSError:
        if p.exists():
            raise FileExistsError(f"{what} {str(p)!r} exists; pass overwrite=True to replace "
                                  "it") from None
        os.replace(tmp, p)
