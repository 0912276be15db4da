"""Real-time recurrent learning (docs/derivation.md, sections 12-13): the exact form equals BPTT on
every set-up and layer count; the online form equals one BPTT update when one step is scored, and
an autograd oracle of seed 004's algorithm otherwise."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
import torch

from rnnlab import RNNSpec, optim, rtrl
from rnnlab import network as net
from rnnlab.diagnostics import relative_error
from rnnlab.params import shapes

from conftest import ACTS, LOSSES, SETUPS, problem

B, T, D, H, O = 3, 5, 2, 3, 3
TOL = 1e-10


def _steps(spec: RNNSpec, T: int = T) -> int | None:
    return T if spec.setup == "one_to_many" else None


def _compare(spec: RNNSpec, seed: int, masked: bool, T: int = T, B: int = B) -> None:
    params, X, Y, mask, h0 = problem(spec, seed, B, T, masked)
    v, g, o = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, steps=_steps(spec, T))
    v2, g2, o2 = rtrl.value_and_grad(params, X, Y, spec, h0=h0, mask=mask,
                                     steps=_steps(spec, T))
    assert abs(v - v2) <= TOL * abs(v)
    assert list(g2.params) == list(params)
    for k in params:
        assert g2.params[k].shape == params[k].shape and g2.params[k].dtype == params[k].dtype
        assert relative_error(g.params[k], g2.params[k]) < TOL, k
    assert relative_error(g.h0, g2.h0) < TOL
    assert g2.X is None
    for f in ("y", "logits", "h_n"):
        assert relative_error(getattr(o, f), getattr(o2, f)) < TOL, f


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("setup", range(len(SETUPS)), ids=lambda i: "-".join(SETUPS[i].values()))
def test_rtrl_equals_bptt(act: str, loss: str, setup: int) -> None:
    for layers, masked in itertools.product((1, 2, 3), (False, True)):
        spec = RNNSpec(D, H, O, num_layers=layers, nonlinearity=act, loss=loss,
                       reduction="sum" if layers == 2 else "mean", **SETUPS[setup])
        _compare(spec, layers, masked)


@pytest.mark.parametrize("setup", ["many_to_one", "many_to_many"])
def test_rtrl_index_inputs(setup: str) -> None:
    for layers in (1, 2):
        _compare(RNNSpec(5, H, O, num_layers=layers, setup=setup, input_kind="index"), 0, True)


def test_rtrl_longer_wider() -> None:
    """Unequal widths (D != H != O), a longer sequence, lengths instead of a mask."""
    spec = RNNSpec(4, 6, 2, num_layers=2, setup="many_to_many", loss="identity_mse")
    params, X, Y, _, h0 = problem(spec, 7, 5, 30, False)
    lengths = np.array([30, 11, 1, 29, 17])
    v, g, _ = net.value_and_grad(params, X, Y, spec, h0=h0, lengths=lengths)
    v2, g2, _ = rtrl.value_and_grad(params, X, Y, spec, h0=h0, lengths=lengths)
    assert abs(v - v2) < TOL * v
    for k in params:
        assert relative_error(g.params[k], g2.params[k]) < TOL, k
    assert relative_error(g.h0, g2.h0) < TOL


def test_rtrl_float32() -> None:
    spec = RNNSpec(D, H, O, num_layers=2, setup="many_to_many")
    params, X, Y, _, h0 = problem(spec, 1, B, T, False)
    _, g, _ = rtrl.value_and_grad(params, X, Y, spec, h0=h0)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    v32, g32, o32 = rtrl.value_and_grad(p32, X, Y, spec, h0=h0)
    assert o32.logits.dtype == np.float32
    for k in params:
        assert g32.params[k].dtype == np.float32
        np.testing.assert_allclose(g32.params[k], g.params[k], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- online RTRL


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_online_with_one_scored_step_is_one_bptt_update(opt_name: str, layers: int) -> None:
    """Many-to-one scores one step per sequence: online RTRL makes one update, BPTT's."""
    opt = optim.make(opt_name, lr=0.1)
    for masked, spec in [
        (True, RNNSpec(D, H, O, num_layers=layers)),
        (False, RNNSpec(D, H, O, num_layers=layers, setup="many_to_many",
                        loss="identity_mse")),                    # with T = 1
    ]:
        steps = T if spec.setup == "many_to_one" else 1
        params, X, Y, mask, h0 = problem(spec, layers, B, steps, masked)
        v, g, _ = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
        ref = {k: p.copy() for k, p in params.items()}
        ref_state = opt.init(ref)
        opt.update_(ref, g.params, ref_state)
        state = opt.init(params)
        v2, out = rtrl.online_update(params, X, Y, spec, opt=opt, opt_state=state, h0=h0,
                                     mask=mask)
        assert state["step"] == 1 and abs(v - v2) < TOL * v
        for k in params:
            assert relative_error(params[k], ref[k]) < TOL, k


def _torch_online(params, X, Y, spec, mask, h0, lr):
    """Seed 004's online algorithm with autograd Jacobians of one step: S_t = J_h S_{t-1} + J_w,
    the loss of the targets scored at t differentiated through S_t, SGD, S carried."""
    f = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
         "identity": lambda z: z}[spec.nonlinearity]
    L = spec.num_layers
    rec = [k for k in params if k.startswith("l")]
    theta = {k: torch.tensor(params[k]) for k in params}
    sizes = [params[k].size for k in rec]
    x = torch.tensor(np.swapaxes(X, 0, 1))
    m = torch.ones(B, T, dtype=torch.bool) if mask is None else torch.tensor(mask)
    state = torch.tensor(h0).reshape(-1)
    S = torch.zeros(state.numel(), sum(sizes), dtype=torch.float64)

    def step(s, w, t):
        hs = s.reshape(L, B, H)
        ws = dict(zip(rec, torch.split(w, sizes), strict=True))
        inp, new = x[t], []
        for layer in range(L):
            p = f"l{layer}"
            z = (inp @ ws[f"{p}.W_xh"].reshape(-1, H) + hs[layer] @ ws[f"{p}.W_hh"].reshape(H, H)
                 + ws[f"{p}.b_h"])
            inp = torch.where(m[:, t, None], f(z), hs[layer])
            new.append(inp)
        return torch.stack(new).reshape(-1)

    for t in range(T):
        w = torch.cat([theta[k].reshape(-1) for k in rec])
        J_s, J_w = torch.autograd.functional.jacobian(lambda s, w: step(s, w, t), (state, w))  # noqa: B023
        S = J_s @ S + J_w
        state = step(state, w, t).detach()
        if not m[:, t].any():
            continue
        s_req = state.clone().requires_grad_(True)
        W_hy = theta["W_hy"].clone().requires_grad_(True)
        b_y = theta["b_y"].clone().requires_grad_(True)
        z = s_req.reshape(L, B, H)[-1] @ W_hy + b_y
        rows = m[:, t]
        loss = torch.nn.functional.cross_entropy(z[rows], torch.tensor(Y[:, t])[rows])
        gs, gW, gb = torch.autograd.grad(loss, (s_req, W_hy, b_y))
        g_rec = gs @ S
        for k, gk in zip(rec, torch.split(g_rec, sizes), strict=True):
            theta[k] = theta[k] - lr * gk.reshape(theta[k].shape)
        theta["W_hy"] = theta["W_hy"] - lr * gW
        theta["b_y"] = theta["b_y"] - lr * gb
    return {k: v.numpy() for k, v in theta.items()}


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_online_matches_autograd_oracle(layers: int, masked: bool, act: str) -> None:
    spec = RNNSpec(D, H, O, num_layers=layers, setup="many_to_many", nonlinearity=act)
    params, X, Y, mask, h0 = problem(spec, 11, B, T, masked)
    lr = 0.5
    expect = _torch_online(params, X, Y, spec, mask, h0, lr)
    before = {k: p.copy() for k, p in params.items()}
    opt = optim.make("sgd", lr=0.01)
    state = opt.init(params)
    _, out = rtrl.online_update(params, X, Y, spec, opt=opt, opt_state=state, lr=lr, h0=h0,
                                mask=mask)
    assert state["step"] == T
    for k in params:
        assert relative_error(params[k], expect[k]) < 1e-10, k
        assert relative_error(params[k], before[k]) > 1e-3         # it did learn
    # the online walk is not the exact gradient: compare with the sum of per-step gradients
    _, g, _ = net.value_and_grad(before, X, Y, spec, h0=h0, mask=mask)
    assert relative_error(before["l0.W_hh"] - params["l0.W_hh"],
                          lr * T * g.params["l0.W_hh"]) > 1e-3


def test_online_skips_steps_without_targets_and_reports_its_predictions() -> None:
    spec = RNNSpec(D, H, O, setup="many_to_many", loss="sigmoid_bce")
    params, X, Y, _, h0 = problem(spec, 2, B, T, False)
    lengths = np.array([2, 3, 1])                     # steps 3 and 4 score nothing
    opt = optim.make("sgd", lr=0.3)
    state = opt.init(params)
    p0 = {k: p.copy() for k, p in params.items()}
    loss, out = rtrl.online_update(params, X, Y, spec, opt=opt, opt_state=state, h0=h0,
                                   lengths=lengths)
    assert state["step"] == 3
    assert out.logits.shape == (B, T, O) and out.h_n.shape == (1, B, H)
    assert abs(net.loss_and_grad(spec, out, Y, lengths=lengths).value - loss) < 1e-14
    # the first step's prediction is made with the initial parameters
    o0, _ = net.forward(p0, X, spec, h0=h0, lengths=lengths)
    assert relative_error(out.logits[:, 0], o0.logits[:, 0]) < 1e-14
    assert relative_error(out.logits[:, 1], o0.logits[:, 1]) > 1e-6


# ----------------------------------------------------------------------------- memory and errors


def test_sensitivity_bytes_is_what_is_allocated() -> None:
    spec = RNNSpec(3, 16, 2, num_layers=2, setup="many_to_many")
    params, X, Y, _, _ = problem(spec, 0, 4, 3, False, with_h0=False)
    need = rtrl.sensitivity_bytes(spec, 4)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        rtrl.value_and_grad(params, X, Y, spec)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert need <= peak <= need * 1.05 + 64 * 1024, (need, peak)


def test_memory_guard_says_how_much() -> None:
    spec = RNNSpec(10, 512, 2, num_layers=2, setup="many_to_many")
    params = {k: np.zeros(s) for k, s in shapes(spec).items()}
    X, Y = np.zeros((64, 3, 10)), np.zeros((64, 3), dtype=int)
    need = rtrl.sensitivity_bytes(spec, 64) / 2**30
    with pytest.raises(MemoryError, match=rf"RTRL needs {need:.3g} GiB, limit 2 GiB \(max_bytes\)"):
        rtrl.value_and_grad(params, X, Y, spec)
    with pytest.raises(ValueError, match=r"needs .* GiB, limit 0.001 GiB \(max_bytes\)"):
        rtrl.online_update(params, X, Y, spec, opt=optim.make("sgd"),
                           opt_state=optim.make("sgd").init(params), max_bytes=2**30 / 1000)
    small = RNNSpec(2, 3, 2, setup="many_to_many")
    ps = {k: np.zeros(s) for k, s in shapes(small).items()}
    rtrl.value_and_grad(ps, np.zeros((2, 3, 2)), np.zeros((2, 3), dtype=int), small,
                        max_bytes=None)
    with pytest.raises(ValueError, match=r"max_bytes must be a positive number or None"):
        rtrl.value_and_grad(ps, np.zeros((2, 3, 2)), np.zeros((2, 3), dtype=int), small,
                            max_bytes=0)


def test_bidirectional_is_refused_with_the_reason() -> None:
    spec = RNNSpec(D, H, O, bidirectional=True, setup="many_to_many")
    params, X, Y, _, _ = problem(spec, 0, B, T, False)
    with pytest.raises(ValueError, match=r"RTRL needs a unidirectional.*depends on every later"):
        rtrl.value_and_grad(params, X, Y, spec)
    with pytest.raises(ValueError, match=r"RTRL needs a unidirectional"):
        rtrl.online_update(params, X, Y, spec, opt=optim.make("sgd"),
                           opt_state=optim.make("sgd").init(params))


def test_online_every_block():
    """``every = k``: an update after every block of k steps from the block's loss; with k >= T
    that is one update with the exact gradient, with masks and the "mean" over all targets."""
    spec = RNNSpec(D, H, O, num_layers=2, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 3, B, 6, True)
    opt = optim.SGD(lr=0.1)
    p = {k: v.copy() for k, v in params.items()}
    st = opt.init(p)
    rtrl.online_update(p, X, Y, spec, opt=opt, opt_state=st, h0=h0, mask=mask, every=6)
    _, g, _ = net.value_and_grad(params, X, Y, spec, h0=h0, mask=mask)
    assert st["step"] == 1
    for k in params:
        np.testing.assert_allclose(p[k], params[k] - 0.1 * g.params[k], rtol=1e-10, atol=1e-13)
    p2 = {k: v.copy() for k, v in params.items()}
    st2 = opt.init(p2)
    rtrl.online_update(p2, X, Y, spec, opt=opt, opt_state=st2, h0=h0, mask=mask, every=4)
    assert st2["step"] == 2                          # steps 0-3, then 4-5
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        rtrl.online_update(p2, X, Y, spec, opt=opt, opt_state=st2, every=0)
