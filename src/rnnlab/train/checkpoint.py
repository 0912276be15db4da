"""Safe, atomic training checkpoints in a single ``.npz`` file (no pickle).

File format (version 1): an uncompressed ``.npz`` archive written by ``np.savez``
with ``allow_pickle=False`` and read back with ``np.load(..., allow_pickle=False)``.

* ``__meta__`` -- UTF-8 JSON as a 1-d ``uint8`` array: ``format`` tag,
  ``format_version``, ``epoch``, ``step``, ``config``, ``extra``, the bit-generator
  state of the RNG (PCG64's 128-bit integers are plain JSON integers), the ordered
  parameter keys and the layout of the optimizer state.
* ``params/<key>`` -- one array per parameter.
* ``opt/<slot>/<key>`` -- one array per optimizer state slot and parameter; scalar
  entries of the state (``"step"``) are stored in the JSON.

Only bool/integer/float/complex arrays are accepted (object arrays are refused).
Writing is atomic: the archive goes to a temporary file in the target's directory
which is flushed, fsync'ed and renamed over the target with ``os.replace``, after
which the directory is fsync'ed.  A crash at any point leaves either the previous
file or the new one; at worst a stale ``.<name>.<random>.tmp`` file remains, which
later saves ignore and :func:`rnnlab.fit` removes when it next takes the directory's
lock (:func:`rnnlab.train.files.remove_stale_temps`).
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import secrets
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "check_compatible",
    "load",
    "restore_rng",
    "save",
]

FORMAT_NAME = "rnnlab-checkpoint"
FORMAT_VERSION = 1
_META = "__meta__"
_ARRAY_KINDS = "biufc"
_BIT_GENERATORS: dict[str, type[np.random.BitGenerator]] = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "MT19937": np.random.MT19937,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
}


class CheckpointError(ValueError):
    """A file exists but is not a readable rnnlab checkpoint (corrupt, truncated,
    foreign or of an unsupported format version)."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """Contents of a checkpoint file, as returned by :func:`load`.

    Attributes
    ----------
    params : dict[str, np.ndarray]
        Parameters, in the order they were saved.
    opt_state : dict[str, Any] or None
        Optimizer state in its nested form (``{"step": int, slot: {key: array}}``).
    rng_state : dict[str, Any] or None
        ``Generator.bit_generator.state`` at save time; see :func:`restore_rng`.
    epoch, step : int
        Training position.
    config : dict[str, Any]
        Run configuration (JSON data: tuples come back as lists).
    extra : dict[str, Any]
        Free-form JSON data (``{}`` if none was saved).
    path : Path
        File the checkpoint was read from.
    format_version : int
        Format version of the file.
    """

    params: dict[str, np.ndarray]
    opt_state: dict[str, Any] | None
    rng_state: dict[str, Any] | None
    epoch: int
    step: int
    config: dict[str, Any]
    extra: dict[str, Any]
    path: Path
    format_version: int = FORMAT_VERSION


# --------------------------------------------------------------------------- helpers


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _json_data(value: Any, where: str) -> Any:
    """Return ``value`` as plain JSON data (tuples -> lists, numpy scalars -> Python)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} keys must be str for JSON, got {key!r}")
            out[key] = _json_data(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_json_data(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where} is not JSON-serialisable: {type(value).__name__} {value!r}")


def _check_array(name: str, value: object) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(f"{name} has dtype {value.dtype}; only bool, integer, float and "
                        "complex arrays can be checkpointed (no object arrays, no pickle)")
    return value


def _encode_rng_state(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str, "shape": value.shape}
    if isinstance(value, Mapping):
        return {key: _encode_rng_state(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode_rng_state(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            arr = np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
            return arr.reshape(value["shape"])
        return {key: _decode_rng_state(item) for key, item in value.items()}
    return value


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create an exclusive temporary file next to ``path`` (mode 0666 & ~umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 64 random bits collided
            continue
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write checkpoint {path}: {exc.strerror}") from exc


# --------------------------------------------------------------------------- save


def save(path: str | os.PathLike[str], *, params: Mapping[str, np.ndarray],
         opt_state: Mapping[str, Any] | None = None, rng: np.random.Generator | None = None,
         epoch: int, step: int, config: Mapping[str, Any],
         extra: Mapping[str, Any] | None = None) -> Path:
    """Atomically write a checkpoint to ``path`` (replacing any previous file).

    Parameters
    ----------
    path : str or os.PathLike
        Target file; used exactly as given (no suffix is added).  Its directory
        must exist.
    params : Mapping[str, np.ndarray]
        Parameters (non-empty; numeric arrays).
    opt_state : Mapping, optional
        Optimizer state ``{"step": int, slot: {key: array}}``; scalar entries must
        be JSON numbers, every other entry a mapping of numeric arrays.
    rng : numpy.random.Generator, optional
        Generator whose exact position is saved (see :func:`restore_rng`).
    epoch, step : int
        Training position (>= 0).
    config : Mapping
        Run configuration; must be JSON data (str keys, numbers, str, bool, None,
        lists/tuples, mappings; numpy scalars are converted).
    extra : Mapping, optional
        Any other JSON data to keep with the checkpoint.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    TypeError, ValueError
        Invalid contents (nothing is written).
    OSError
        ``path`` is a directory, or its directory is missing or not writable; the
        message names the path.  A previous checkpoint at ``path`` is left intact.
    """
    path = Path(path)
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "epoch": _count("epoch", epoch),
        "step": _count("step", step),
    }
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    meta["config"] = _json_data(config, "config")
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a mapping or None, got {type(extra).__name__}")
    meta["extra"] = _json_data(extra or {}, "extra")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    meta["rng_state"] = None if rng is None else _encode_rng_state(rng.bit_generator.state)

    arrays: dict[str, np.ndarray] = {}
    if not isinstance(params, Mapping) or not params:
        raise TypeError("params must be a non-empty mapping str -> np.ndarray")
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"params keys must be str, got {key!r}")
        arrays[f"params/{key}"] = _check_array(f"params[{key!r}]", value)
    meta["params"] = list(params)
    meta["opt_state"] = None if opt_state is None else _opt_layout(opt_state, arrays)

    blob = json.dumps(meta, allow_nan=True).encode("utf-8")
    arrays[_META] = np.frombuffer(blob, dtype=np.uint8)

    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "checkpoint path is a directory", str(path))
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _opt_layout(opt_state: Mapping[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Add the optimizer arrays to ``arrays``; return the JSON layout of the state."""
    if not isinstance(opt_state, Mapping):
        raise TypeError(f"opt_state must be a mapping or None, got {type(opt_state).__name__}")
    scalars: dict[str, Any] = {}
    slots: dict[str, list[str]] = {}
    for slot, value in opt_state.items():
        if not isinstance(slot, str) or "/" in slot:
            raise ValueError(f"opt_state entry names must be str without '/', got {slot!r}")
        if isinstance(value, Mapping):
            for key, arr in value.items():
                if not isinstance(key, str):
                    raise TypeError(f"opt_state[{slot!r}] keys must be str, got {key!r}")
                arrays[f"opt/{slot}/{key}"] = _check_array(f"opt_state[{slot!r}][{key!r}]", arr)
            slots[slot] = list(value)
        else:
            scalar = _json_data(value, f"opt_state[{slot!r}]")
            if isinstance(scalar, bool) or not isinstance(scalar, int | float):
                raise TypeError(f"opt_state[{slot!r}] must be a number or a mapping of arrays, "
                                f"got {type(value).__name__}")
            scalars[slot] = scalar
    return {"scalars": scalars, "slots": slots, "order": list(opt_state)}


# --------------------------------------------------------------------------- load


def _read_archive(path: Path) -> dict[str, np.ndarray]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "checkpoint file not found", str(path)) from None
    with f:
        try:
            data = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise CheckpointError(
                f"{path} is not a valid rnnlab checkpoint (not an .npz archive: "
                f"{_first_line(exc)})"
            ) from exc
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path} is not a valid rnnlab checkpoint "
                                  "(it holds a single .npy array, not an .npz archive)")
        with data:
            out: dict[str, np.ndarray] = {}
            for name in data.files:
                try:
                    # NpzFile returns a member that is not .npy data (say, a raw pickle) as
                    # its bytes, unread: refuse it here, before anything looks at it
                    value = data[name]
                except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile,
                        zlib.error) as exc:
                    raise CheckpointError(
                        f"{path} is corrupt or truncated (cannot read array {name!r}: "
                        f"{_first_line(exc)})") from exc
                if not isinstance(value, np.ndarray):
                    raise CheckpointError(
                        f"{path} is not a valid rnnlab checkpoint: member {name!r} is not an .npy "
                        f"array (it starts with {bytes(value[:8])!r}; a pickle or other raw data "
                        "is never loaded)")
                if value.dtype.kind not in _ARRAY_KINDS:
                    raise CheckpointError(
                        f"{path} is not a valid rnnlab checkpoint: member {name!r} has dtype "
                        f"{value.dtype} (only bool, integer, float and complex arrays)")
                out[name] = value
            return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parse_meta(path: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    raw = arrays.get(_META)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path} is not an rnnlab checkpoint (no {_META} entry)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has corrupt metadata: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not an rnnlab checkpoint (format tag "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version!r}; this "
                              f"version of rnnlab reads format version {FORMAT_VERSION}")
    return meta


def load(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save` (never unpickles anything).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        (a ValueError) The file is not an npz archive, is corrupt or truncated, is
        not an rnnlab checkpoint, or has an unsupported format version.  All
        messages name the path.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "checkpoint path is a directory", str(path))
    arrays = _read_archive(path)
    meta = _parse_meta(path, arrays)
    try:
        params = {key: arrays[f"params/{key}"] for key in meta["params"]}
        opt_state: dict[str, Any] | None = None
        expected = {_META, *(f"params/{key}" for key in meta["params"])}
        layout = meta["opt_state"]
        if layout is not None:
            opt_state = {}
            for name in layout["order"]:
                if name in layout["slots"]:
                    keys = layout["slots"][name]
                    opt_state[name] = {key: arrays[f"opt/{name}/{key}"] for key in keys}
                    expected.update(f"opt/{name}/{key}" for key in keys)
                else:
                    opt_state[name] = layout["scalars"][name]
        unexpected = sorted(set(arrays) - expected)
        if unexpected:
            raise CheckpointError(f"{path} is corrupt: unexpected entries {unexpected}")
        rng_state = meta["rng_state"]
        return Checkpoint(
            params=params,
            opt_state=opt_state,
            rng_state=None if rng_state is None else _decode_rng_state(rng_state),
            epoch=_count("epoch", meta["epoch"]),
            step=_count("step", meta["step"]),
            config=dict(meta["config"]),
            extra=dict(meta["extra"]),
            path=path,
            format_version=FORMAT_VERSION,
        )
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path} is corrupt: missing or malformed entry "
                              f"{_first_line(exc)}") from exc


def restore_rng(ckpt: Checkpoint) -> np.random.Generator:
    """Return a Generator that continues exactly where the saved one stopped.

    Only the bit-generator state is restored (not its ``SeedSequence``), so the
    stream of numbers continues exactly but ``Generator.spawn`` may differ.
    """
    state = ckpt.rng_state
    if state is None:
        raise ValueError(f"checkpoint {ckpt.path} holds no RNG state (saved with rng=None)")
    name = state.get("bit_generator")
    cls = _BIT_GENERATORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"checkpoint {ckpt.path} has RNG state for bit generator {name!r}; "
                         f"supported: {sorted(_BIT_GENERATORS)}")
    bit_generator = cls(0)
    bit_generator.state = state
    return np.random.Generator(bit_generator)


# --------------------------------------------------------------------------- compatibility

_MISSING = object()


def _describe(value: object) -> str:
    return "<missing>" if value is _MISSING else repr(value)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def check_compatible(ckpt: Checkpoint, params_template: Mapping[str, np.ndarray],
                     config: Mapping[str, Any] | None = None, *,
                     config_keys: list[str] | tuple[str, ...] | None = None) -> None:
    """Check that ``ckpt`` can be loaded into a model shaped like ``params_template``.

    Parameters
    ----------
    ckpt : Checkpoint
        Loaded checkpoint.
    params_template : Mapping[str, np.ndarray]
        Current parameters (only keys, shapes and dtypes are used).  The optimizer
        state, if any, must be keyed and shaped like them too.
    config : Mapping, optional
        Current configuration, compared with ``ckpt.config`` after normalisation to
        JSON data (so tuples equal lists).  ``None`` skips the comparison.
    config_keys : sequence of str, optional
        Top-level config keys to compare (default: every key of either config).

    Raises
    ------
    ValueError
        Listing every mismatch, each naming the key with the checkpoint's and the
        current value (shape, dtype or config value).
    """
    problems: list[str] = []
    template = {k: v for k, v in params_template.items()}
    for key in ckpt.params.keys() - template.keys():
        problems.append(f"params[{key!r}] is in the checkpoint but not in the model")
    for key, ref in template.items():
        got = ckpt.params.get(key)
        if got is None:
            problems.append(f"params[{key!r}] is in the model but not in the checkpoint")
        elif got.shape != ref.shape:
            problems.append(f"params[{key!r}] has shape {got.shape} in the checkpoint "
                            f"but {ref.shape} in the model")
        elif got.dtype != ref.dtype:
            problems.append(f"params[{key!r}] has dtype {got.dtype} in the checkpoint "
                            f"but {ref.dtype} in the model")
    for slot, value in (ckpt.opt_state or {}).items():
        if not isinstance(value, Mapping):
            continue
        if value.keys() != template.keys():
            problems.append(f"opt_state[{slot!r}] has keys {sorted(value)} but the model has "
                            f"{sorted(template)}")
            continue
        for key, ref in template.items():
            if value[key].shape != ref.shape:
                problems.append(f"opt_state[{slot!r}][{key!r}] has shape {value[key].shape} "
                                f"in the checkpoint but {ref.shape} in the model")
    if config is not None:
        current = _json_data(config, "config")
        keys = list(config_keys) if config_keys is not None else list(
            dict.fromkeys([*ckpt.config, *current]))
        for key in keys:
            old = ckpt.config.get(key, _MISSING)
            new = current.get(key, _MISSING)
            if not _same(old, new):
                problems.append(f"config[{key!r}] is {_describe(old)} in the checkpoint but "
                                f"{_describe(new)} in the current config")
    if problems:
        raise ValueError(f"checkpoint {ckpt.path} is incompatible: " + "; ".join(problems))
