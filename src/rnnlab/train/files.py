"""The files a training run writes besides checkpoints: its directory, its JSONL log, and the
lock that keeps two processes from writing one directory at once."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["LOCK_NAME", "DirectoryLock", "LockedError", "finite_or_none", "prepare_dir",
           "remove_stale_temps", "write_log"]

LOCK_NAME = ".rnnlab.lock"
"""The lock file a :class:`DirectoryLock` keeps in the directory it guards."""

# the temporary files checkpoint.save makes next to its target: ".<name>.npz.<16 hex>.tmp"
_CHECKPOINT_TEMP = re.compile(r"\.[^/]+\.npz\.[0-9a-f]{16}\.tmp")


class LockedError(OSError):
    """Another process holds the lock of a run or sweep directory (an ``OSError``: the command
    line prints it as one line with exit code 2).

    Attributes
    ----------
    path : Path
        The lock file.
    holder : dict
        What the holder wrote into it: ``pid``, ``host``, ``since`` (ISO time), ``command``;
        empty if it had not written yet.
    """

    def __init__(self, message: str, path: Path, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.path, self.holder = path, holder


def _describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it has not written its details yet)"
    who = f"pid {holder.get('pid')} on host {holder.get('host')}"
    if holder.get("since"):
        who += f", since {holder['since']}"
    if holder.get("command"):
        who += f", running {holder['command']!r}"
    return who


class DirectoryLock:
    """An exclusive, non-blocking lock on a directory, held by one process at a time.

    The lock is an OS file lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) on
    ``<directory>/.rnnlab.lock``, which the holder fills with its pid, host, start time and
    command line.  The operating system releases it when the holder exits, however it exits
    (SIGKILL, out of memory, power loss of a client of a network filesystem once the server
    notices), so a lock is never stale; :meth:`release` also deletes the file.  A second process
    that tries to take it gets :class:`LockedError` at once, naming the holder.  Within one
    process, two locks on one directory also exclude each other.

    ::

        with DirectoryLock("runs/a", what="run directory"):
            ...                                   # nothing else writes runs/a meanwhile

    Parameters
    ----------
    directory : path
        Must exist.
    what : str
        How messages name the directory (``"run directory"``, ``"sweep directory"``).
    """

    def __init__(self, directory: str | os.PathLike[str], what: str = "directory") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        """Take the lock or raise :class:`LockedError` (never waits)."""
        if self._fd is not None:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot create the lock file {str(self.path)!r} of "
                                         f"{self.what} {str(self.directory)!r}: "
                                         f"{exc.strerror}") from None
            if not _try_lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise LockedError(
                    f"{self.what} {str(self.directory)!r} is in use by {_describe_holder(holder)}"
                    f"; wait for it to finish or stop it (the lock is {str(self.path)!r}, "
                    "released when that process exits)", self.path, holder)
            # the file may have been deleted (a holder releasing) between our open and our lock:
            # then we locked an orphan, and must lock the file that is there now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": _command()}
        data = json.dumps(info).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        self._fd = fd
        return self

    def release(self) -> None:
        """Delete the lock file and release the lock (a no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)                  # while still holding it: see acquire
        except OSError:
            pass
        os.close(fd)                              # closing releases the OS lock

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


def _command() -> str:
    """This process's command line, as a user would have typed it (for lock messages)."""
    argv = list(sys.argv) or [""]
    first = argv[0]
    if first == "-c":
        head = "python -c"
    elif Path(first).name == "__main__.py":
        head = f"python -m {Path(first).parent.name}"
    elif first in ("", "-"):
        head = "python"
    else:
        head = Path(first).name
    return " ".join([head, *argv[1:]])[:300]


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":                                 # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        holder = json.loads(raw.decode("utf-8")) if raw else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def remove_stale_temps(directory: str | os.PathLike[str], names: tuple[str, ...] = ()
                       ) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in ``directory``: the
    ``.<name>.npz.<16 hex digits>.tmp`` of :func:`rnnlab.checkpoint.save`, and the files named
    in ``names`` (the fixed ``.<name>.tmp`` of the JSON writers).  Call it only while holding the
    directory's :class:`DirectoryLock`, so that no write is in flight.  Returns what was
    removed."""
    removed: list[Path] = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        if (_CHECKPOINT_TEMP.fullmatch(p.name) or p.name in names) and p.is_file():
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            removed.append(p)
    return removed


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
