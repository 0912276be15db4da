"""Our parameters <-> a ``torch.nn.RNN`` + ``torch.nn.Linear`` state_dict.

PyTorch works in the same row convention as seed 003 but stores each weight transposed
(``weight_ih_l0`` is ``(H, D)``, our ``W_xh`` is ``(D, H)``) and has two biases per layer,
``bias_ih + bias_hh``, where we have their sum ``b_h`` (docs/derivation.md, section 7)::

    rnn.weight_ih_l{k}[_reverse]  = l{k}[r].W_xh.T       rnn.bias_ih_l{k}[_reverse] = l{k}[r].b_h
    rnn.weight_hh_l{k}[_reverse]  = l{k}[r].W_hh.T       rnn.bias_hh_l{k}[_reverse] = 0
    fc.weight = W_hy.T            fc.bias = b_y

The functions work on NumPy arrays, so this module does not import torch; tensors given to
:func:`from_torch_state_dict` are converted with ``.detach().cpu().numpy()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..core.params import Params, check_params
from ..core.spec import RNNSpec


def _torch_name(key: str, rnn_prefix: str) -> tuple[str, str]:
    """``"l1r.W_hh"`` -> ``("rnn.weight_hh_l1_reverse", "rnn.bias_hh_l1_reverse")``."""
    layer, name = key.split(".")
    reverse = layer.endswith("r")
    k = layer[1:-1] if reverse else layer[1:]
    suffix = f"_l{k}" + ("_reverse" if reverse else "")
    kind = {"W_xh": "ih", "W_hh": "hh", "b_h": "ih"}[name]
    return f"{rnn_prefix}{'bias' if name == 'b_h' else 'weight'}_{kind}{suffix}", (
        f"{rnn_prefix}bias_hh{suffix}"
    )


def to_torch_state_dict(
    params: Mapping[str, NDArray[np.floating]],
    spec: RNNSpec,
    *,
    rnn_prefix: str = "rnn.",
    head_prefix: str = "fc.",
) -> dict[str, NDArray[np.floating]]:
    """Our parameters as a state_dict of NumPy arrays for ``nn.RNN`` (+ ``nn.Linear`` head).

    Load it with ``model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.
    ``b_h`` goes to ``bias_ih`` and ``bias_hh`` is zero, so their sum is ``b_h``.
    """
    check_params(params, spec)
    if spec.input_kind == "index":
        raise ValueError("index inputs have no nn.RNN equivalent; use one-hot inputs or an "
                         "nn.Embedding in front (its weight is W_xh)")
    sd: dict[str, NDArray[np.floating]] = {}
    for key, value in params.items():
        if key == "W_hy":
            sd[f"{head_prefix}weight"] = np.ascontiguousarray(value.T)
        elif key == "b_y":
            sd[f"{head_prefix}bias"] = value.copy()
        else:
            name, bias_hh = _torch_name(key, rnn_prefix)
            if key.endswith("b_h"):
                sd[name] = value.copy()
                sd[bias_hh] = np.zeros_like(value)
            else:
                sd[name] = np.ascontiguousarray(value.T)
    return sd


def _to_numpy(v: Any) -> NDArray[np.floating]:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    spec: RNNSpec,
    *,
    rnn_prefix: str = "rnn.",
    head_prefix: str = "fc.",
) -> Params:
    """Our parameters from an ``nn.RNN`` (+ ``nn.Linear``) state_dict (tensors or arrays).

    ``b_h = bias_ih + bias_hh``; a missing bias (``bias=False``) counts as zero.  The dtype is the
    state_dict's.  Keys other than the RNN's and the head's are ignored; missing ones raise a
    ``KeyError``-free ``ValueError`` naming them.
    """
    from ..core.params import shapes

    sd = {k: _to_numpy(v) for k, v in state_dict.items()}
    params: Params = {}
    missing: list[str] = []
    for key in shapes(spec):
        if key in ("W_hy", "b_y"):
            name = f"{head_prefix}{'weight' if key == 'W_hy' else 'bias'}"
            if name not in sd:
                missing.append(name)
                continue
            params[key] = np.ascontiguousarray(sd[name].T if key == "W_hy" else sd[name])
            continue
        name, bias_hh = _torch_name(key, rnn_prefix)
        if key.endswith("b_h"):
            w_key = name.replace("bias_ih", "weight_ih")
            if w_key not in sd:
                missing.append(w_key)
                continue
            zero = np.zeros(sd[w_key].shape[0], dtype=sd[w_key].dtype)
            params[key] = sd.get(name, zero) + sd.get(bias_hh, zero)
        elif name not in sd:
            missing.append(name)
        else:
            params[key] = np.ascontiguousarray(sd[name].T)
    if missing:
        raise ValueError(f"state_dict lacks {missing} needed for {spec}")
    check_params(params, spec)
    return params
