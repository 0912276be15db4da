"""Every array one training step of the fast engine needs, made once per batch shape and reused
(docs/performance.md): :class:`Buffers`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..core.params import Params, shapes
from ..core.spec import RNNSpec

__all__ = ["Buffers"]

Array = NDArray[np.floating]


class Buffers:
    """Every array one training step needs, for one ``(spec, B, T, dtype)``; see
    :class:`rnnlab.fast.workspace.Workspace`."""

    def __init__(self, spec: RNNSpec, B: int, T: int, dtype: np.dtype, input_grad: bool,
                 joint: bool = False) -> None:
        H, nd, L, O = spec.hidden_size, spec.num_directions, spec.num_layers, spec.output_size
        D = spec.input_size
        index = spec.input_kind == "index"
        self.key = (B, T, np.dtype(dtype))
        self.h0 = np.zeros((L * nd, B, H), dtype)
        # dense inputs time first with a column of ones: [x_t | 1] [W_xh; b_h]
        # (rnnlab.fast.network.project_into)
        self.x1: Array | None = None
        self.x: Array | None = None            # the time-first dense input, a view of x1
        # the joint buffer of the first layer (dense inputs, one direction; Workspace
        # decides): slot t holds the rows [H_{t-1} | x_t | 1], so that one product per step gives
        # Z_t and one product over all steps gives [dW_hh; dW_xh; db_h] into `joint_grad`,
        # eq. (39)
        self.joint: Array | None = None
        self.joint_grad: Array | None = None
        self.pending: Array | None = None      # the input the joint loop copies in (deferred)
        if joint:
            if nd != 1 or index:
                raise ValueError("a joint buffer needs one direction of dense inputs")
            self.joint = np.zeros((T + 1, B, H + D + 1), dtype)
            self.joint[:, :, H + D] = 1.0
            self.x1 = self.joint[:T, :, H:]
            self.x = self.joint[:T, :, H:H + D]
        elif not index and spec.setup != "one_to_many":
            self.x1 = np.ones((T, B, D + 1), dtype)
            self.x = self.x1[:, :, :D]
        self.hbufs = [self.joint[:, :, :H] if i == 0 and self.joint is not None
                      else np.empty((T + 1, B, H), dtype) for i in range(L * nd)]
        self.ones = np.ones(T * B, dtype)
        self.cat = [np.empty((T, B, nd * H), dtype) if nd == 2 else None for _ in range(L)]
        self.top = np.empty((B, nd * H), dtype)
        lead = (T, B) if spec.per_step_output else (B,)
        self.logits = np.empty(lead + (O,), dtype)
        self.dz = np.empty(lead + (O,), dtype)
        self.loss_tmp = np.empty(lead + (O,), dtype)
        self.dtop = np.empty(lead + (nd * H,), dtype)
        self.dZ = np.empty((T, B, H), dtype)        # shared by every layer and direction
        self.dh0 = np.empty((L * nd, B, H), dtype)
        self.d_inp: list[Array | None] = []
        for layer in range(L):
            d_in = D if layer == 0 else nd * H
            need = layer > 0 or (input_grad and not index)
            self.d_inp.append(np.empty((T, B, d_in), dtype) if need else None)
        # the reverse direction's dX, for any layer's input width
        self.dx = np.empty(T * B * max(D, nd * H), dtype) if nd == 2 else None
        self.grads: Params = {k: np.empty(v, dtype) for k, v in shapes(spec).items()}
        if self.joint is not None:
            p = spec.layer_keys(0)[0]
            G = self.joint_grad = np.empty((H + D + 1, H), dtype)
            self.grads[f"{p}.W_hh"], self.grads[f"{p}.W_xh"] = G[:H], G[H:H + D]
            self.grads[f"{p}.b_h"] = G[H + D]
