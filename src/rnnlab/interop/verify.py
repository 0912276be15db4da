"""Check an export against rnnlab's own forward on random inputs.

:func:`onnx_file` runs an exported ONNX file in ONNX Runtime, :func:`torch_module` runs a PyTorch
module of :func:`rnnlab.interop.torch.to_torch`; both compare ``y``, ``logits`` and ``h_n`` with
:func:`rnnlab.forward` of the same parameters and return the largest difference relative to
each output's scale (``max |theirs - ours| / max |ours|``).  ``rnnlab export`` prints these
figures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..core import network
from ..core.spec import RNNSpec

__all__ = ["Batch", "onnx_file", "random_batch", "relative_differences", "torch_module"]

Batch = dict[str, Any]
"""rnnlab's forward arguments: ``X`` and optionally ``steps``, ``lengths``, ``h0``."""


def random_batch(spec: RNNSpec, rng: np.random.Generator, *, batch_size: int = 4,
                 steps: int = 8, lengths: bool = False, initial_state: bool = False,
                 dtype: Any = np.float32) -> Batch:
    """Random inputs for ``spec``: ``X`` (ids, one vector or a sequence per row), and as asked
    ``lengths`` (the first row full, the others from 1 to ``steps``), ``h0`` and ``steps``."""
    B, T, D = batch_size, steps, spec.input_size
    batch: Batch = {}
    if spec.input_kind == "index":
        batch["X"] = rng.integers(0, D, size=(B, T))
    elif spec.setup == "one_to_many":
        batch["X"] = rng.standard_normal((B, D)).astype(dtype)
        batch["steps"] = T
    else:
        batch["X"] = rng.standard_normal((B, T, D)).astype(dtype)
    if lengths:
        ln = rng.integers(1, T + 1, size=B)
        ln[0] = T
        batch["lengths"] = ln
    if initial_state:
        shape = (spec.num_layers * spec.num_directions, B, spec.hidden_size)
        batch["h0"] = (0.5 * rng.standard_normal(shape)).astype(dtype)
    return batch


def relative_differences(theirs: Mapping[str, Any], ours: network.Output) -> dict[str, float]:
    """``max |theirs - ours| / max |ours|`` of ``y``, ``logits`` and ``h_n``."""
    out = {}
    for name in ("y", "logits", "h_n"):
        ref = np.asarray(getattr(ours, name), dtype=np.float64)
        got = np.asarray(theirs[name], dtype=np.float64)
        if got.shape != ref.shape:
            raise ValueError(f"{name} has shape {got.shape}; rnnlab's is {ref.shape}")
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        diff = float(np.abs(got - ref).max()) if ref.size else 0.0
        out[name] = diff / scale if scale > 0 else diff
    return out


def onnx_file(path: str | os.PathLike[str], params: Mapping[str, NDArray[np.floating]],
              spec: RNNSpec, batch: Batch) -> dict[str, float]:
    """Run the ONNX file on ``batch`` in ONNX Runtime (CPU) and compare with rnnlab."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("running an ONNX file needs onnxruntime: pip install "
                          "'rnnlab[onnx]'") from None
    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    wanted = [i.name for i in sess.get_inputs()]
    feeds: dict[str, Any] = {}
    for name in wanted:
        if name not in batch:
            raise ValueError(f"the ONNX file takes input {name!r}; the batch has "
                             f"{sorted(batch)}")
        v = batch[name]
        if name in ("X", "h0") and np.issubdtype(np.asarray(v).dtype, np.floating):
            feeds[name] = np.asarray(v, dtype=np.float32)
        else:
            feeds[name] = np.asarray(v, dtype=np.int64)
    y, logits, h_n = sess.run(["y", "logits", "h_n"], feeds)
    ours, _ = network.forward(params, batch["X"], spec, h0=batch.get("h0"),
                              lengths=batch.get("lengths"), steps=batch.get("steps"))
    return relative_differences({"y": y, "logits": logits, "h_n": h_n}, ours)


def torch_module(module: Any, params: Mapping[str, NDArray[np.floating]], spec: RNNSpec,
                 batch: Batch) -> dict[str, float]:
    """Run a :func:`~rnnlab.interop.torch.to_torch` module on ``batch`` and compare with
    rnnlab."""
    import torch

    dtype = module.fc.weight.dtype
    with torch.no_grad():
        h0 = batch.get("h0")
        lengths = batch.get("lengths")
        got = module(torch.as_tensor(batch["X"]),
                     h0=None if h0 is None else torch.as_tensor(h0, dtype=dtype),
                     lengths=None if lengths is None else torch.as_tensor(lengths),
                     steps=batch.get("steps"))
    ours, _ = network.forward(params, batch["X"], spec, h0=batch.get("h0"),
                              lengths=batch.get("lengths"), steps=batch.get("steps"))
    return relative_differences({k: getattr(got, k).cpu().numpy() for k in ("y", "logits", "h_n")},
                                ours)
