"""Conversions to and from other frameworks (docs/interop.md).

* :mod:`rnnlab.interop.onnx`: ONNX export on the standard ``RNN`` operator (``export``, ``build``);
* :mod:`rnnlab.interop.torch`: PyTorch modules both ways (``to_torch``, ``from_torch``), state
  dicts and ``torch.save`` files;
* :mod:`rnnlab.interop.safetensors`: parameters and spec in a safetensors file;
* :mod:`rnnlab.interop.verify`: an export run against rnnlab's forward on random inputs.

None of them imports onnx, onnxruntime, torch or safetensors until a function that needs it is
called, so rnnlab never depends on them.
"""

from . import onnx, safetensors, torch, verify
from .onnx import export as export_onnx
from .torch import from_torch, to_torch

__all__ = ["export_onnx", "from_torch", "onnx", "safetensors", "to_torch", "torch", "verify"]
