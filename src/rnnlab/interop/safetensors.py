"""Parameters as a safetensors file (the format the Hugging Face ecosystem loads), spec included.

::

    from rnnlab.interop import safetensors as rst
    rst.save(params, spec, "model.safetensors")                  # or RNN.save_safetensors
    params, spec = rst.load("model.safetensors")                 # or RNN.load_safetensors

A safetensors file is a JSON header (names, dtypes, shapes, offsets and a ``__metadata__`` table
of strings) followed by the raw arrays: no code runs on loading, unlike a pickle.  rnnlab writes

* one tensor per parameter, under rnnlab's keys (``l0.W_xh`` ``(D, H)``, ..., ``W_hy``,
  ``b_y``; ``layout="rnnlab"``, the default) or under the keys of the :func:`to_torch` module
  (``rnn.weight_ih_l0`` ``(H, D)``, ..., ``fc.weight``, ``fc.bias``; ``layout="torch"``, which
  ``safetensors.torch.load_file`` + ``load_state_dict`` read straight into that module or into
  ``nn.RNN`` + ``nn.Linear``);
* metadata ``format = "rnnlab"``, ``format_version = "1"``, ``layout``, ``spec`` (the
  :class:`RNNSpec` as JSON), ``rnnlab_version``, and any string pairs passed as ``metadata``.

The file is written atomically.  It holds the parameters only; the pickle-free training
checkpoint (``rnnlab.checkpoint``) also holds the optimizer state and the RNG for resuming.
Needs the ``safetensors`` package (``pip install 'rnnlab[safetensors]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..core.params import Params, check_params, shapes
from ..core.spec import RNNSpec
from ..version import __version__
from .files import write_bytes
from .torch import from_torch_state_dict, to_torch_state_dict

__all__ = ["FORMAT", "FORMAT_VERSION", "LAYOUTS", "RESERVED", "load", "metadata", "save"]

FORMAT = "rnnlab"
FORMAT_VERSION = "1"
LAYOUTS: tuple[str, ...] = ("rnnlab", "torch")
RESERVED: tuple[str, ...] = ("format", "format_version", "layout", "spec", "rnnlab_version")
"""Metadata keys rnnlab writes itself."""


def _import() -> Any:
    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        raise ImportError("safetensors files need the safetensors package: pip install "
                          "'rnnlab[safetensors]'") from None
    return safetensors


def save(
    params: Mapping[str, NDArray[np.floating]],
    spec: RNNSpec,
    path: str | os.PathLike[str],
    *,
    layout: str = "rnnlab",
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write the parameters and the spec as a safetensors file; return its path.

    Parameters
    ----------
    params : dict
        float32 or float64 arrays (kept in their dtype).
    spec : RNNSpec
    path : path-like
    layout : {"rnnlab", "torch"}
        rnnlab's keys and shapes, or those of the :func:`rnnlab.interop.torch.to_torch` module.
    metadata : dict of str -> str, optional
        Extra string pairs for the header (not the reserved keys :data:`RESERVED`).
    overwrite : bool
        False refuses an existing file.
    """
    st = _import()
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    check_params(params, spec)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}; got {layout!r}")
    extra = dict(metadata or {})
    bad = {k: v for k, v in extra.items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise TypeError(f"metadata must map str to str; got {bad!r}")
    taken = sorted(set(extra) & set(RESERVED))
    if taken:
        raise ValueError(f"metadata keys {taken} are rnnlab's own ({list(RESERVED)})")
    arrays = dict(params) if layout == "rnnlab" else to_torch_state_dict(params, spec)
    tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    header = {**extra, "format": FORMAT, "format_version": FORMAT_VERSION, "layout": layout,
              "spec": json.dumps(spec.to_dict(), sort_keys=True), "rnnlab_version": __version__}
    data = st.numpy.save(tensors, metadata=header)
    return write_bytes(path, data, overwrite=overwrite, what="safetensors file")


def metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The header's metadata table of a safetensors file (``{}`` if it has none)."""
    st = _import()
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"safetensors file {p!r} does not exist")
    try:
        with st.safe_open(p, framework="numpy") as f:
            return dict(f.metadata() or {})
    except st.SafetensorError as exc:
        raise ValueError(f"{p!r} is not a readable safetensors file: {exc}") from None


def load(path: str | os.PathLike[str], spec: RNNSpec | None = None, *,
         layout: str | None = None) -> tuple[Params, RNNSpec]:
    """``(params, spec)`` from a safetensors file.

    Parameters
    ----------
    path : path-like
    spec : RNNSpec, optional
        Needed for a file without rnnlab's metadata (a state dict of ``nn.RNN`` + ``nn.Linear``
        saved by PyTorch, say); checked against the file's spec otherwise.
    layout : {"rnnlab", "torch"}, optional
        The key layout of a file without rnnlab's metadata (default: told from the keys).

    Returns
    -------
    params : dict
        In the file's dtype.
    spec : RNNSpec
    """
    st = _import()
    meta = metadata(path)
    p = os.fspath(path)
    try:
        with st.safe_open(p, framework="numpy") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except st.SafetensorError as exc:
        raise ValueError(f"{p!r} is not a readable safetensors file: {exc}") from None
    if meta.get("format") == FORMAT:
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{p!r} has rnnlab safetensors format version "
                             f"{meta.get('format_version')!r}; this rnnlab reads "
                             f"{FORMAT_VERSION!r}")
        try:
            file_spec = RNNSpec.from_dict(json.loads(meta["spec"]))
        except (KeyError, json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ValueError(f"{p!r} has a broken rnnlab spec in its metadata: {exc}") from None
        if spec is not None and spec != file_spec:
            raise ValueError(f"spec {spec} disagrees with the file's {file_spec}")
        spec, file_layout = file_spec, meta.get("layout", "rnnlab")
        if layout is not None and layout != file_layout:
            raise ValueError(f"layout={layout!r} but the file says {file_layout!r}")
        layout = file_layout
    elif spec is None:
        raise ValueError(f"{p!r} has no rnnlab spec in its metadata (not written by rnnlab); "
                         "pass spec= to read it")
    if layout is None:
        layout = "rnnlab" if "W_hy" in tensors else "torch"
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}; got {layout!r}")
    params: Params
    if layout == "torch":
        params = from_torch_state_dict(tensors, spec)
    else:
        params = {k: np.array(v) for k, v in tensors.items()}
        try:
            check_params(params, spec)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{p!r} does not match spec: {exc}") from None
        params = {k: params[k] for k in shapes(spec)}        # the layout's key order
    return params, spec
