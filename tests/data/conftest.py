"""Shared fixtures for the data tests: tiny IDX sets and a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from rnnlab.data.idx import write_idx
from rnnlab.data.images import ROLES


def tiny_arrays(seed: int = 0, n_train: int = 40, n_test: int = 12) -> dict[str, np.ndarray]:
    """Random 28x28 uint8 images and labels 0..9 for the four roles."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_set(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        role: write_idx(folder / (ROLES[role] + (".gz" if gz else "")), arr)
        for role, arr in arrays.items()
    }


@pytest.fixture
def tiny_set(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = tiny_arrays()
    write_set(tmp_path / "idx", arrays)
    return tmp_path / "idx", arrays


@dataclass
class Server:
    """Routes: path -> bytes, or ("drop", bytes) to send half and close, or ("stall", bytes)."""

    base: str
    routes: dict[str, object] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def http_server() -> Iterator[Server]:
    server_state = Server(base="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            server_state.hits.append(self.path)
            route = server_state.routes.get(self.path)
            if route is None:
                self.send_error(404, "not here")
                return
            if isinstance(route, tuple):
                kind, body = route
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if kind == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif kind == "stall":
                    self.wfile.write(body[:10])
                    self.wfile.flush()
                    time.sleep(1.0)
                    self.close_connection = True
                return
            assert isinstance(route, bytes)
            self.send_response(200)
            self.send_header("Content-Length", str(len(route)))
            self.end_headers()
            self.wfile.write(route)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    server_state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
