"""An independent float64 reference for the adversarial tests: the network written again, step by
step and sequence by sequence, in PyTorch, with the gradients from autograd.

Nothing of rnnlab's computation is used: only its parameter-key layout (``l0.W_xh``, ...) and
the meaning of an ``RNNSpec`` as docs/derivation.md states it (sections 3-6). A loop over time
per layer and direction, a padded step that carries the state, the head on the states (or the
final ones), PyTorch's own loss functions, and ``torch.autograd.grad`` for every gradient: a
bug that rnnlab's forward and backward share cannot hide here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

torch = __import__("pytest").importorskip("torch")


def _act(name: str, z: Any) -> Any:
    return {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
            "identity": lambda v: v}[name](z)


def _inputs(spec: Any, X: np.ndarray, T: int, W_xh0: Any) -> tuple[Any, list[Any]]:
    """The first layer's input per step, ``(B, D)`` each (index inputs: one-hot rows), and the
    leaf tensor the input gradient is taken of (None for ids)."""
    if spec.input_kind == "index":
        ids = torch.as_tensor(np.asarray(X), dtype=torch.long)
        eye = torch.eye(spec.input_size, dtype=torch.float64)
        return None, [eye[ids[:, t]] for t in range(T)]
    x = torch.tensor(np.asarray(X, dtype=np.float64), requires_grad=True)
    if spec.setup == "one_to_many":
        zero = torch.zeros_like(x)
        return x, [x if (spec.feed == "every" or t == 0) else zero for t in range(T)]
    return x, [x[:, t] for t in range(T)]


def _loss(spec: Any, z: Any, y: Any) -> Any:
    """The summed loss of rows ``z`` ``(N, O)`` against ``y`` (labels ``(N,)`` or ``(N, O)``)."""
    F = torch.nn.functional
    if spec.loss == "softmax_ce":           # labels or probabilities, as PyTorch takes them
        return F.cross_entropy(z, y, reduction="sum")
    if spec.loss == "sigmoid_bce":
        return F.binary_cross_entropy_with_logits(z, y, reduction="sum")
    yhat = z if spec.loss == "identity_mse" else torch.relu(z)
    return F.mse_loss(yhat, y, reduction="sum")


def reference(spec: Any, params: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray, *,
              h0: np.ndarray | None = None, mask: np.ndarray | None = None,
              steps: int | None = None) -> dict[str, Any]:
    """Loss, logits, final states and gradients (params, ``X``, ``h0``) in float64.

    Returns a dict: ``loss`` (float), ``logits`` (batch first), ``h_n``, ``grads`` (by key),
    ``X`` (None for ids), ``h0``.
    """
    B = np.asarray(X).shape[0]
    T = steps if spec.setup == "one_to_many" else np.asarray(X).shape[1]
    H, nd, L, O = spec.hidden_size, spec.num_directions, spec.num_layers, spec.output_size
    P = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True)
         for k, v in params.items()}
    h0_np = np.zeros((L * nd, B, H)) if h0 is None else np.asarray(h0, np.float64)
    h0_t = torch.tensor(h0_np, requires_grad=True)
    m = np.ones((B, T), bool) if mask is None else np.asarray(mask, bool)
    keep = torch.as_tensor(m)
    xleaf, seq = _inputs(spec, X, T, P["l0.W_xh"])
    finals = []
    for layer in range(L):
        outs = []
        for d in range(nd):
            key = f"l{layer}" + ("r" if d == 1 else "")
            W_xh, W_hh, b_h = P[f"{key}.W_xh"], P[f"{key}.W_hh"], P[f"{key}.b_h"]
            h = h0_t[layer * nd + d]
            states: list[Any] = [None] * T
            order = range(T - 1, -1, -1) if d == 1 else range(T)
            for t in order:
                new = _act(spec.nonlinearity, seq[t] @ W_xh + h @ W_hh + b_h)
                h = torch.where(keep[:, t:t + 1], new, h)      # a padded step keeps the state
                states[t] = h
            outs.append(states)
            finals.append(h)
        seq = [torch.cat([o[t] for o in outs], dim=1) for t in range(T)]
    W_hy, b_y = P["W_hy"], P["b_y"]
    if spec.per_step_output:
        z = torch.stack([s @ W_hy + b_y for s in seq], dim=1)              # (B, T, O)
        yt = torch.as_tensor(np.asarray(Y))
        if spec.setup == "many_to_one":                                    # the label at every step
            yt = yt[:, None].expand((B, T) + tuple(yt.shape[1:]))
        zs, ys = z[keep], yt[keep]
    else:
        top = torch.cat(finals[-nd:], dim=1)
        z = top @ W_hy + b_y
        zs, ys = z, torch.as_tensor(np.asarray(Y))
    if ys.dtype != torch.long:
        ys = ys.to(torch.float64)
    total = _loss(spec, zs, ys)
    if spec.reduction == "mean":
        total = total / (zs.shape[0] * (1 if spec.loss == "softmax_ce" else O))
    leaves = list(P.values()) + [h0_t] + ([xleaf] if xleaf is not None else [])
    g = torch.autograd.grad(total, leaves, allow_unused=True)
    grads = {k: (np.zeros(params[k].shape) if gi is None else gi.numpy())
             for k, gi in zip(P, g[:len(P)], strict=True)}
    gX = None
    if xleaf is not None:
        gX = np.zeros(xleaf.shape) if g[-1] is None else g[-1].numpy()
    return {"loss": float(total.detach()), "logits": z.detach().numpy(),
            "h_n": torch.stack(finals).detach().numpy(), "grads": grads, "X": gX,
            "h0": g[len(P)].numpy() if g[len(P)] is not None else np.zeros(h0_np.shape)}
