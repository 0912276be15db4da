"""Gradient diagnostics: the finite-difference stencil, relative errors, and the per-step
gradient norms of docs/derivation.md section 16, checked against PyTorch autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab import RNNSpec
from rnnlab import network as net
from rnnlab.diagnostics import (
    StepGradients,
    finite_difference,
    per_step_gradients,
    relative_error,
)

from conftest import problem

B, T, D, H, O = 3, 6, 2, 3, 3


def test_finite_difference_is_fourth_order_and_restores_x() -> None:
    x = np.array([0.3, -1.2, 2.0])
    g = finite_difference(lambda: float(np.sum(x**4)), x, eps=1e-2)
    assert relative_error(g, 4 * x**3) < 1e-12                    # exact up to degree 4
    g = finite_difference(lambda: float(np.sum(x**5)), x, eps=1e-2)
    np.testing.assert_allclose(g - 5 * x**4, -4e-8, rtol=1e-3)   # -eps^4 f^(5) / 30
    assert np.array_equal(x, [0.3, -1.2, 2.0])
    with pytest.raises(TypeError, match="float64"):
        finite_difference(lambda: 0.0, np.zeros(2, dtype=np.float32))


def test_relative_error() -> None:
    assert relative_error(np.ones(3), np.ones(3)) == 0.0
    assert relative_error(np.array([2.0]), np.array([1.0])) == 0.5
    assert relative_error(np.array([1e-12]), np.array([0.0])) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(np.ones(2), np.ones(3))


def _torch_reference(params, X, Y, spec, mask, h0):
    """The network in plain autograd, every step's state and pre-activation kept: returns
    ``{key: (G (T, B, H), C-norms (T,))}``."""
    f = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
         "identity": lambda z: z}[spec.nonlinearity]
    th = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    x = torch.tensor(np.swapaxes(X, 0, 1))
    m = torch.ones(T, B, dtype=torch.bool) if mask is None else torch.tensor(mask.T)
    hs, zs, prevs, inp, finals = {}, {}, {}, x, []
    nd = spec.num_directions
    for layer in range(spec.num_layers):
        outs = []
        for d, p in enumerate(spec.layer_keys(layer)):
            h = torch.tensor(h0[layer * nd + d])
            H_t, Z_t, P_t = [None] * T, [None] * T, [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                z = inp[t] @ th[f"{p}.W_xh"] + h @ th[f"{p}.W_hh"] + th[f"{p}.b_h"]
                z.retain_grad()
                P_t[t] = h
                h = torch.where(m[t][:, None], f(z), h)
                h.retain_grad()
                H_t[t], Z_t[t] = h, z
            hs[p], zs[p], prevs[p] = H_t, Z_t, P_t
            outs.append(torch.stack(H_t))
            finals.append(h)
        inp = torch.cat(outs, dim=2)
    if spec.per_step_output:
        z = inp @ th["W_hy"] + th["b_y"]                       # (T, B, O)
        y = torch.tensor(np.swapaxes(Y, 0, 1) if Y.ndim == 2 else np.broadcast_to(Y, (T, B)))
        loss = torch.nn.functional.cross_entropy(z[m], y[m], reduction=spec.reduction)
    else:
        z = torch.cat(finals[-nd:], dim=1) @ th["W_hy"] + th["b_y"]
        loss = torch.nn.functional.cross_entropy(z, torch.tensor(Y), reduction=spec.reduction)
    loss.backward()
    ref = {}
    for p in hs:
        G = np.stack([np.zeros((B, H)) if h.grad is None else h.grad.numpy() for h in hs[p]])
        C = [np.linalg.norm(prevs[p][t].detach().numpy().T @ zs[p][t].grad.numpy())
             for t in range(T)]
        ref[p] = (G, np.array(C))
    return float(loss.detach()), ref


@pytest.mark.parametrize("setup", [dict(setup="many_to_one"), dict(setup="many_to_many"),
                                   dict(setup="many_to_one", label_steps="all")],
                         ids=["m2o", "m2m", "m2o-all"])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, False), (3, False), (2, True)])
@pytest.mark.parametrize("masked", [False, True])
def test_per_step_gradients_match_autograd(setup: dict, layers: int, bidir: bool,
                                           masked: bool) -> None:
    spec = RNNSpec(D, H, O, num_layers=layers, bidirectional=bidir,
                   nonlinearity="sigmoid" if layers == 3 else "tanh",
                   reduction="sum" if masked else "mean", **setup)
    params, X, Y, mask, h0 = problem(spec, layers, B, T, masked)
    sg = per_step_gradients(params, X, Y, spec, h0=h0, mask=mask)
    loss, ref = _torch_reference(params, X, Y, spec, mask, h0)
    assert isinstance(sg, StepGradients)
    assert sg.keys == tuple(p for layer in range(layers) for p in spec.layer_keys(layer))
    assert sg.dh_norm.shape == sg.whh_norm.shape == (layers * spec.num_directions, T)
    assert abs(sg.loss - loss) < 1e-12 * loss
    _, g, _ = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    for i, p in enumerate(sg.keys):
        G, C = ref[p]
        assert relative_error(sg.dh_norm[i], np.linalg.norm(G, axis=(1, 2))) < 1e-10, p
        assert relative_error(sg.whh_norm[i], C) < 1e-10, p
        total = np.linalg.norm(g.params[f"{p}.W_hh"])
        assert abs(sg.whh_total[i] - total) < 1e-12 * total
        assert relative_error(sg.whh_share[i], C / total) < 1e-10
        assert abs(sg.whh_fraction[i].sum() - 1.0) < 1e-12
        if mask is not None and p == "l0":
            pad_steps = ~mask.any(axis=0)
            assert np.all(sg.whh_norm[i][pad_steps] == 0)


def test_vanishing_and_exploding_picture() -> None:
    """Identity activation, W_hh = a I, loss at the last step only: ||dL/dH_t|| = a^{T-1-t}
    ||dL/dH_{T-1}||, exactly the geometric decay (a < 1) or growth (a > 1) of the picture."""
    spec = RNNSpec(D, H, O, nonlinearity="identity", setup="many_to_one")
    params, X, Y, _, _ = problem(spec, 0, B, T, False)
    back = T - 1 - np.arange(T)
    for a in (0.5, 1.5):
        params["l0.W_hh"] = a * np.eye(H)
        sg = per_step_gradients(params, X, Y, spec)
        assert relative_error(sg.dh_norm[0], sg.dh_norm[0, -1] * a**back) < 1e-12
    one_to_many = RNNSpec(D, H, O, setup="one_to_many")
    p2, X2, Y2, _, _ = problem(one_to_many, 1, B, T, False)
    sg = per_step_gradients(p2, X2, Y2, one_to_many, steps=T)
    assert sg.dh_norm.shape == (1, T) and np.all(sg.dh_norm > 0)


def test_zero_gradient_gives_zero_shares() -> None:
    spec = RNNSpec(D, H, O, setup="many_to_one")
    params, X, Y, _, _ = problem(spec, 0, B, T, False)
    params["W_hy"][:] = 0.0                            # nothing reaches the recurrence
    sg = per_step_gradients(params, X, Y, spec)
    assert np.all(sg.whh_total == 0) and np.all(sg.whh_share == 0)
    assert np.all(sg.whh_fraction == 0) and np.all(np.isfinite(sg.whh_fraction))
