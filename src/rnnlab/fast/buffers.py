"""Every array one training step of the fast engine needs, made once per batch shape and reused
(docs/performance.md): :class:`Buffers`.
"""

from __future__ import annotations

from typing import Any

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
                 joint: bool = False, train: bool = True, backward: bool = True) -> None:
        H, nd, L, O = spec.hidden_size, spec.num_directions, spec.num_layers, spec.output_size
        D = spec.input_size
        index = spec.input_kind == "index"
        self.key = (B, T, np.dtype(dtype))
        self.train = train                    # False: a forward pass only (no gradient arrays)
        self.backward = train and backward    # False: no backward pass (the loss and dL/dz only)
        self.tuner: Any = None                # the workspace's thread tuner for these shapes
        self._scratch: dict[str, Array] = {}
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
        if train:
            self._gradient_arrays(spec, B, T, dtype, input_grad, lead)

    def _gradient_arrays(self, spec: RNNSpec, B: int, T: int, dtype: np.dtype, input_grad: bool,
                         lead: tuple[int, ...]) -> None:
        """What the loss and the backward pass need besides the forward pass's arrays."""
        H, nd, L, O = spec.hidden_size, spec.num_directions, spec.num_layers, spec.output_size
        D = spec.input_size
        index = spec.input_kind == "index"
        self.dz = np.empty(lead + (O,), dtype)
        self.loss_tmp = np.empty(lead + (O,), dtype)
        if not self.backward:                       # Workspace.forward_loss: the loss only
            return
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
        # every gradient is a block of one flat array (`flat_grad`, blocks in the order of
        # `grad_order`), so that a caller can treat them as one vector (a norm, an update); on a
        # joint buffer the first layer's three are the rows of one product's result, eq. (39)
        sizes = shapes(spec)
        order = list(sizes)
        if self.joint is not None:
            p = spec.layer_keys(0)[0]
            first = [f"{p}.W_hh", f"{p}.W_xh", f"{p}.b_h"]
            order = first + [k for k in order if k not in first]
        self.grad_order = order
        n = sum(int(np.prod(sizes[k])) for k in order)
        self.flat_grad = np.empty(n, dtype)
        self.grads: Params = {}
        o = 0
        for k in order:
            size = int(np.prod(sizes[k]))
            self.grads[k] = self.flat_grad[o:o + size].reshape(sizes[k])
            o += size
        if self.joint is not None:
            self.joint_grad = self.flat_grad[:(H + D + 1) * H].reshape(H + D + 1, H)

    def scratch(self, name: str, shape: tuple[int, ...]) -> Array:
        """A named array of at least ``shape`` (made on first use, kept; truncated BPTT's window
        buffers)."""
        a = self._scratch.get(name)
        if a is None or a.shape != shape:
            a = self._scratch[name] = np.empty(shape, self.key[2])
        return a

    def layer_dZ(self, L: int) -> list[Array]:
        """One ``(T, B, H)`` array per layer (the first is :attr:`dZ`): truncated BPTT sums each
        layer's ``dZ`` of every window into its own."""
        return [self.dZ] + [self.scratch(f"dZ_{i}", self.dZ.shape) for i in range(1, L)]
