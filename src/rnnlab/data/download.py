"""Fetching a file from a list of mirrors, verified by SHA-256, never leaving a partial file.

The downloader takes its mirrors and checksum as data (:class:`RemoteFile`), so tests can point it
at a server on 127.0.0.1.  Each attempt writes ``NAME.part`` beside the destination, hashes while
writing, checks the length the server announced and the SHA-256, and only then renames the part
file over ``NAME`` (``os.replace``, atomic on one file system).  Any failure deletes the part file
and moves on to the next mirror; when every mirror fails, :class:`DownloadError` lists each URL and
what went wrong.  Only the standard library is used (``urllib`` with a timeout).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """Every mirror failed; the message names each URL and the reason."""


@dataclass(frozen=True)
class RemoteFile:
    """A file known by name and SHA-256, available from one or more URLs.

    Parameters
    ----------
    filename : str
        Name of the file on disk, e.g. ``"train-images-idx3-ubyte.gz"``.
    sha256 : str
        Lower-case hex digest of the exact bytes.
    urls : tuple of str
        Full URLs, tried in order.
    """

    filename: str
    sha256: str
    urls: tuple[str, ...]

    def __post_init__(self) -> None:
        digest = self.sha256.lower()
        if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
            raise ValueError(f"{self.filename}: sha256 must be 64 hex digits; got {self.sha256!r}")
        if not self.urls:
            raise ValueError(f"{self.filename}: no URLs to download from")
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{self.filename}: only http(s) URLs are allowed; got {url!r}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_once(url: str, part: Path, timeout: float, max_bytes: int | None) -> str:
    """Stream ``url`` into ``part``; return the SHA-256 of what was written."""
    h = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "rnnlab-data/0.1"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        announced = response.headers.get("Content-Length")
        expected = int(announced) if announced is not None and announced.isdigit() else None
        if max_bytes is not None and expected is not None and expected > max_bytes:
            raise DownloadError(f"server announces {expected} bytes, more than {max_bytes}")
        received = 0
        with open(part, "wb") as out:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if max_bytes is not None and received > max_bytes:
                    raise DownloadError(f"more than {max_bytes} bytes received")
                h.update(chunk)
                out.write(chunk)
    if expected is not None and received != expected:
        raise DownloadError(
            f"connection closed after {received} of {expected} announced bytes"
        )
    return h.hexdigest()


def download(
    remote: RemoteFile,
    directory: str | os.PathLike[str],
    *,
    timeout: float = 30.0,
    max_bytes: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download ``remote`` into ``directory``, trying each URL until one verifies.

    Parameters
    ----------
    remote : RemoteFile
        File name, SHA-256 and mirror URLs.
    directory : path-like
        Created if missing.  The result is ``directory / remote.filename``.
    timeout : float
        Seconds for connecting and for each read, per attempt.
    max_bytes : int, optional
        Refuse responses larger than this.
    log : callable, optional
        Called with a line of text before each attempt (e.g. ``print``).

    Returns
    -------
    Path
        The verified file.

    Raises
    ------
    DownloadError
        Every URL failed; no ``.part`` file is left behind.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / remote.filename
    part = folder / (remote.filename + ".part")
    failures: list[str] = []
    for url in remote.urls:
        if log is not None:
            log(f"downloading {url} -> {dest}")
        try:
            digest = _fetch_once(url, part, timeout, max_bytes)
            if digest != remote.sha256.lower():
                raise DownloadError(
                    f"SHA-256 mismatch: expected {remote.sha256.lower()}, got {digest}"
                )
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except urllib.error.URLError as exc:
            failures.append(f"{url}: cannot connect ({exc.reason})")
        except (DownloadError, http.client.HTTPException, OSError, ValueError) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            part.unlink(missing_ok=True)
    raise DownloadError(
        f"could not download {remote.filename} from any of {len(remote.urls)} mirror(s):\n  "
        + "\n  ".join(failures)
        + "\nCheck the network, or put the file in a data directory and pass data_dir=."
    )


def mirror_urls(bases: Sequence[str], filename: str) -> tuple[str, ...]:
    """Join each base URL (a directory on a mirror) with ``filename``."""
    return tuple(b.rstrip("/") + "/" + filename for b in bases)
