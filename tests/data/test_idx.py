"""Strict IDX parsing: round trips, gz and raw, and every kind of damage named clearly."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from rnnlab.data.idx import IDXError, parse_idx, read_idx, write_idx


def header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
)
def test_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    rng = np.random.default_rng(1)
    arr: np.ndarray = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", arr)
    out = read_idx(path, ndim=3, dtype=dtype)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_layout_is_big_endian_mnist_style(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.int32).reshape(2, 3)
    raw = write_idx(tmp_path / "x", arr).read_bytes()
    assert raw[:4] == b"\x00\x00\x0c\x02"
    assert struct.unpack(">2I", raw[4:12]) == (2, 3)
    assert struct.unpack(">6i", raw[12:]) == tuple(range(6))


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    arr = np.arange(10, dtype=np.uint8)
    p = tmp_path / "labels-without-suffix"
    p.write_bytes(gzip.compress(header(0x08, (10,)) + arr.tobytes()))
    np.testing.assert_array_equal(read_idx(p), arr)


def test_truncated_payload_names_file(tmp_path: Path) -> None:
    p = tmp_path / "short-idx1-ubyte"
    p.write_bytes(header(0x08, (100,)) + bytes(99))
    with pytest.raises(IDXError, match=r"short-idx1-ubyte.*truncated.*100 data bytes, found 99"):
        read_idx(p)


def test_truncated_header(tmp_path: Path) -> None:
    p = tmp_path / "h"
    p.write_bytes(b"\x00\x00\x08\x03" + bytes(5))
    with pytest.raises(IDXError, match=r"h: truncated IDX header: 3 dimensions need 16 bytes"):
        read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(IDXError, match="truncated IDX file: 2 bytes"):
        read_idx(p)


def test_trailing_bytes(tmp_path: Path) -> None:
    p = tmp_path / "long"
    p.write_bytes(header(0x08, (4,)) + bytes(6))
    with pytest.raises(IDXError, match="2 trailing bytes"):
        read_idx(p)


@pytest.mark.parametrize(
    "magic, message",
    [
        (b"\x01\x00\x08\x01", "first two bytes must be zero"),
        (b"PK\x03\x04", "first two bytes must be zero"),
        (b"\x00\x00\x07\x01", "unknown type code 0x07"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
    ],
)
def test_bad_magic(tmp_path: Path, magic: bytes, message: str) -> None:
    p = tmp_path / "bad-magic"
    p.write_bytes(magic + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(IDXError, match=rf"bad-magic: bad IDX magic number.*{message}"):
        read_idx(p)


def test_wrong_dimensions_and_type(tmp_path: Path) -> None:
    p = write_idx(tmp_path / "img.gz", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(IDXError, match=r"img.gz: expected 1 dimensions, found 3"):
        read_idx(p, ndim=1)
    q = write_idx(tmp_path / "f32", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(IDXError, match=r"f32: expected items of type uint8, found float32"):
        read_idx(q, ndim=3, dtype=np.uint8)


def test_corrupt_and_truncated_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(header(0x08, (1000,)) + bytes(range(256)) * 3 + bytes(232))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IDXError, match=r"cut.gz: corrupt or truncated gzip stream"):
        read_idx(cut)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    bad = tmp_path / "flip.gz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(IDXError, match=r"flip.gz"):
        read_idx(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope-idx3-ubyte.*does not exist"):
        read_idx(tmp_path / "nope-idx3-ubyte")


def test_parse_bytes_and_write_errors(tmp_path: Path) -> None:
    arr = parse_idx(header(0x0B, (2,)) + struct.pack(">2h", -3, 7))
    assert arr.tolist() == [-3, 7]
    with pytest.raises(ValueError, match="IDX cannot store dtype"):
        write_idx(tmp_path / "x", np.zeros(3, np.uint16))
    with pytest.raises(ValueError, match="1..255 dimensions"):
        write_idx(tmp_path / "x", np.array(3, np.uint8))
