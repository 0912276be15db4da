"""Strict reader and writer for the IDX format of MNIST and Fashion-MNIST, gzipped or raw.

Layout (big-endian): two zero bytes, a type code, the number of dimensions ``k``, then ``k``
uint32 dimension sizes, then exactly ``prod(dims)`` items.  Anything else -- a short header, a bad
magic number, a truncated or over-long payload, a broken gzip stream -- raises :class:`IDXError`
naming the file.  Whether a file is gzipped is decided from its first bytes, not its name.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

#: IDX type code -> big-endian numpy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """A file is not a valid IDX file (or not the one expected); the message names the file."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXError(
                f"{path}: corrupt or truncated gzip stream ({exc}); delete the file and fetch "
                "it again"
            ) from exc
    return raw


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file.

    Parameters
    ----------
    data : bytes
        The whole file.
    source : str
        Name used in error messages.

    Returns
    -------
    ndarray
        Shape ``dims`` from the header, native byte order.
    """
    if len(data) < 4:
        raise IDXError(f"{source}: truncated IDX file: {len(data)} bytes, a header needs >= 4")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()}: the first two bytes must be zero "
            "(is this an IDX file?)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise IDXError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()}: unknown type code 0x{code:02x}; "
            f"expected one of {[hex(c) for c in IDX_TYPES]}"
        )
    if ndim == 0:
        raise IDXError(f"{source}: bad IDX magic number 0x{data[:4].hex()}: zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header} bytes, file has "
            f"{len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise IDXError(
            f"{source}: truncated IDX file: dimensions {dims} need {expected} data bytes, found "
            f"{found}"
        )
    if found > expected:
        raise IDXError(
            f"{source}: IDX file has {found - expected} trailing bytes after the {expected} data "
            f"bytes that dimensions {dims} describe"
        )
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(
    path: str | os.PathLike[str],
    *,
    ndim: int | None = None,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Read an IDX file (gzipped or raw) with strict validation.

    Parameters
    ----------
    path : path-like
    ndim : int, optional
        Required number of dimensions (3 for images ``(N, H, W)``, 1 for labels ``(N,)``).
    dtype : dtype, optional
        Required item type, e.g. ``np.uint8``.

    Returns
    -------
    ndarray
        The array, in native byte order.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    IDXError
        Any violation of the format or of the requirements, naming the file.
    """
    p = Path(path)
    arr = parse_idx(_read_bytes(p), str(p))
    if ndim is not None and arr.ndim != ndim:
        raise IDXError(f"{p}: expected {ndim} dimensions, found {arr.ndim} (shape {arr.shape})")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise IDXError(f"{p}: expected items of type {np.dtype(dtype)}, found {arr.dtype}")
    return arr


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends in ``.gz``.

    Parameters
    ----------
    path : path-like
    array : ndarray
        Any shape with >= 1 dimension; dtype one of uint8, int8, int16, int32, float32, float64.

    Returns
    -------
    Path
        ``path``.
    """
    a = np.asarray(array)
    if a.ndim == 0 or a.ndim > 255:
        raise ValueError(f"an IDX array needs 1..255 dimensions; got shape {a.shape}")
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    key = a.dtype.newbyteorder("=")
    if key not in codes:
        raise ValueError(f"IDX cannot store dtype {a.dtype}; use one of {list(codes)}")
    big = a.astype(key.newbyteorder(">"))
    blob = bytes([0, 0, codes[key], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + big.tobytes()
    p = Path(path)
    p.write_bytes(gzip.compress(blob, mtime=0) if p.name.endswith(".gz") else blob)
    return p
