"""The downloader against a local HTTP server on 127.0.0.1: good, corrupt, wrong checksum,
dropped connection, stalled connection, missing file -- and never a partial file left behind."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from rnnlab.data.download import DownloadError, RemoteFile, download, mirror_urls, sha256_file

from .conftest import Server, sha256

PAYLOAD = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x01\x00" + bytes(range(256)), mtime=0)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file(http_server: Server, tmp_path: Path) -> None:
    http_server.routes["/d/f.gz"] = PAYLOAD
    remote = RemoteFile("f.gz", sha256(PAYLOAD), (http_server.url("/d/f.gz"),))
    path = download(remote, tmp_path / "cache")
    assert path == tmp_path / "cache" / "f.gz"
    assert path.read_bytes() == PAYLOAD
    assert sha256_file(path) == sha256(PAYLOAD)
    assert leftovers(tmp_path / "cache") == ["f.gz"]


def test_corrupt_file_rejected(http_server: Server, tmp_path: Path) -> None:
    corrupt = bytearray(PAYLOAD)
    corrupt[20] ^= 0x01
    http_server.routes["/f.gz"] = bytes(corrupt)
    remote = RemoteFile("f.gz", sha256(PAYLOAD), (http_server.url("/f.gz"),))
    with pytest.raises(DownloadError, match=r"f.gz.*SHA-256 mismatch: expected " + sha256(PAYLOAD)):
        download(remote, tmp_path)
    assert leftovers(tmp_path) == []


def test_wrong_checksum_rejected(http_server: Server, tmp_path: Path) -> None:
    http_server.routes["/f.gz"] = PAYLOAD
    remote = RemoteFile("f.gz", "0" * 64, (http_server.url("/f.gz"),))
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download(remote, tmp_path)
    assert leftovers(tmp_path) == []


def test_wrong_checksum_keeps_previous_good_file(http_server: Server, tmp_path: Path) -> None:
    (tmp_path / "f.gz").write_bytes(b"previous")
    http_server.routes["/f.gz"] = PAYLOAD
    with pytest.raises(DownloadError):
        download(RemoteFile("f.gz", "1" * 64, (http_server.url("/f.gz"),)), tmp_path)
    assert (tmp_path / "f.gz").read_bytes() == b"previous"
    assert leftovers(tmp_path) == ["f.gz"]


def test_dropped_connection(http_server: Server, tmp_path: Path) -> None:
    http_server.routes["/f.gz"] = ("drop", PAYLOAD)
    remote = RemoteFile("f.gz", sha256(PAYLOAD), (http_server.url("/f.gz"),))
    with pytest.raises(DownloadError, match=r"/f.gz: .*(closed after|IncompleteRead)"):
        download(remote, tmp_path)
    assert leftovers(tmp_path) == []


def test_stalled_connection_times_out(http_server: Server, tmp_path: Path) -> None:
    http_server.routes["/f.gz"] = ("stall", PAYLOAD)
    remote = RemoteFile("f.gz", sha256(PAYLOAD), (http_server.url("/f.gz"),))
    with pytest.raises(DownloadError, match="timed out"):
        download(remote, tmp_path, timeout=0.2)
    assert leftovers(tmp_path) == []


def test_next_mirror_after_failures(http_server: Server, tmp_path: Path) -> None:
    http_server.routes["/a/f.gz"] = ("drop", PAYLOAD)
    http_server.routes["/c/f.gz"] = PAYLOAD
    bases = [http_server.url(p) for p in ("/a", "/b/", "/c")]
    urls = mirror_urls(bases, "f.gz")
    assert urls[1] == http_server.url("/b/f.gz")
    lines: list[str] = []
    path = download(RemoteFile("f.gz", sha256(PAYLOAD), urls), tmp_path, log=lines.append)
    assert path.read_bytes() == PAYLOAD
    assert http_server.hits == ["/a/f.gz", "/b/f.gz", "/c/f.gz"]
    assert len(lines) == 3 and "/c/f.gz" in lines[-1]
    assert leftovers(tmp_path) == ["f.gz"]


def test_all_mirrors_fail_lists_each(http_server: Server, tmp_path: Path) -> None:
    http_server.routes["/b/f.gz"] = b"wrong bytes"
    urls = mirror_urls([http_server.url("/a"), http_server.url("/b")], "f.gz")
    with pytest.raises(DownloadError) as info:
        download(RemoteFile("f.gz", sha256(PAYLOAD), urls), tmp_path)
    text = str(info.value)
    assert "2 mirror(s)" in text
    assert f"{urls[0]}: HTTP 404" in text
    assert f"{urls[1]}: DownloadError: SHA-256 mismatch" in text
    assert leftovers(tmp_path) == []


def test_refused_connection(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remote = RemoteFile("f.gz", "2" * 64, (f"http://127.0.0.1:{port}/f.gz",))
    with pytest.raises(DownloadError, match="cannot connect"):
        download(remote, tmp_path, timeout=2)
    assert leftovers(tmp_path) == []


def test_max_bytes(http_server: Server, tmp_path: Path) -> None:
    http_server.routes["/f.gz"] = PAYLOAD
    remote = RemoteFile("f.gz", sha256(PAYLOAD), (http_server.url("/f.gz"),))
    with pytest.raises(DownloadError, match="more than 10"):
        download(remote, tmp_path, max_bytes=10)
    assert leftovers(tmp_path) == []


def test_remote_file_validation() -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        RemoteFile("f", "abc", ("http://127.0.0.1/f",))
    with pytest.raises(ValueError, match="only http"):
        RemoteFile("f", "a" * 64, ("file:///etc/passwd",))
    with pytest.raises(ValueError, match="no URLs"):
        RemoteFile("f", "a" * 64, ())


def test_sha256_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(200_000)
    (tmp_path / "x").write_bytes(data)
    assert sha256_file(tmp_path / "x") == sha256(data)
