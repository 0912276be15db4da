"""Optimizers and gradient clipping, checked step by step against torch.optim (float64)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab import optim

torch = pytest.importorskip("torch")

SHAPES = {
    "l0.W_xh": (3, 5),
    "l0.W_hh": (5, 5),
    "l0.b_h": (5,),
    "l0r.W_xh": (3, 5),
    "W_hy": (5, 2),
    "b_y": (2,),
}
K = 5  # steps compared


def make_params(seed: int = 0, dtype: type = np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def make_grads(seed: int, steps: int = K, dtype: type = np.float64) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
            for _ in range(steps)]


# (rnnlab name, rnnlab kwargs, torch class name, torch kwargs)
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("sgd", {"lr": 0.1}, "SGD", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.01}, "SGD", {"lr": 0.1, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}, "SGD", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05},
     "SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05}),
    ("sgd", {"lr": 0.1, "momentum": 0.8, "nesterov": True},
     "SGD", {"lr": 0.1, "momentum": 0.8, "nesterov": True}),
    ("sgd", {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
     "SGD", {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("adam", {"lr": 1e-2}, "Adam", {"lr": 1e-2}),
    ("adam", {"lr": 1e-2, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1},
     "Adam", {"lr": 1e-2, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1}),
    ("adam", {"lr": 1e-2, "betas": (0.3, 0.4)}, "Adam", {"lr": 1e-2, "betas": (0.3, 0.4)}),
    ("adam", {"lr": 1e-2, "amsgrad": True}, "Adam", {"lr": 1e-2, "amsgrad": True}),
    ("adamw", {"lr": 1e-2}, "AdamW", {"lr": 1e-2}),
    ("adamw", {"lr": 1e-2, "weight_decay": 0.5, "amsgrad": True},
     "AdamW", {"lr": 1e-2, "weight_decay": 0.5, "amsgrad": True}),
    ("adagrad", {"lr": 0.1}, "Adagrad", {"lr": 0.1}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.01,
                 "initial_accumulator_value": 0.5, "eps": 1e-6},
     "Adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.01,
                 "initial_accumulator_value": 0.5, "eps": 1e-6}),
    ("rmsprop", {"lr": 1e-2}, "RMSprop", {"lr": 1e-2}),
    ("rmsprop", {"lr": 1e-2, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.01},
     "RMSprop", {"lr": 1e-2, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.01}),
    ("rmsprop", {"lr": 1e-2, "centered": True}, "RMSprop", {"lr": 1e-2, "centered": True}),
    ("rmsprop", {"lr": 1e-2, "momentum": 0.9}, "RMSprop", {"lr": 1e-2, "momentum": 0.9}),
    ("rmsprop", {"lr": 1e-2, "alpha": 0.3, "momentum": 0.5, "centered": True,
                 "weight_decay": 0.1},
     "RMSprop", {"lr": 1e-2, "alpha": 0.3, "momentum": 0.5, "centered": True,
                 "weight_decay": 0.1}),
]
IDS = [f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in CASES]


def torch_run(cls_name: str, kwargs: dict, params: dict, grads_seq: list, lrs=None):
    """Run torch.optim on copies of ``params``; yield numpy params after each step."""
    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
               for k, v in params.items()}
    opt = getattr(torch.optim, cls_name)(list(tparams.values()), foreach=False, **kwargs)
    for i, grads in enumerate(grads_seq):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[i]
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k], dtype=torch.float64)
        opt.step()
        yield {k: p.detach().numpy().copy() for k, p in tparams.items()}


@pytest.mark.parametrize(("name", "kw", "tname", "tkw"), CASES, ids=IDS)
def test_matches_torch_every_step(name, kw, tname, tkw):
    params = make_params(1)
    grads_seq = make_grads(2)
    opt = optim.make(name, **kw)
    state = opt.init(params)
    ours = params
    for step, (theirs, grads) in enumerate(zip(torch_run(tname, tkw, params, grads_seq),
                                               grads_seq, strict=True)):
        ours, state = opt.update(ours, grads, state)
        assert state["step"] == step + 1
        for k in SHAPES:
            np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-12, atol=0,
                                       err_msg=f"{name} step {step} key {k}")


@pytest.mark.parametrize(("name", "kw", "tname", "tkw"),
                         [c for c in CASES if c[0] in ("adamw", "sgd")][-3:])
def test_per_call_lr_overrides_constructor_like_a_torch_scheduler(name, kw, tname, tkw):
    lrs = [0.05, 0.01, 0.2, 0.0, 0.07]
    params = make_params(3)
    grads_seq = make_grads(4)
    opt = optim.make(name, **kw)
    state = opt.init(params)
    ours = {k: v.copy() for k, v in params.items()}
    for i, theirs in enumerate(torch_run(tname, tkw, params, grads_seq, lrs)):
        opt.update_(ours, grads_seq[i], state, lr=lrs[i])
        for k in SHAPES:
            np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-12, atol=0)


def test_adam_state_matches_torch_state():
    params = make_params(5)
    grads_seq = make_grads(6)
    opt = optim.Adam(lr=1e-2, amsgrad=True)
    state = opt.init(params)
    tparams = [torch.tensor(v, requires_grad=True) for v in params.values()]
    topt = torch.optim.Adam(tparams, lr=1e-2, amsgrad=True, foreach=False)
    for grads in grads_seq:
        params, state = opt.update(params, grads, state)
        for p, g in zip(tparams, grads.values(), strict=True):
            p.grad = torch.tensor(g)
        topt.step()
    for key, p in zip(SHAPES, tparams, strict=True):
        tstate = topt.state[p]
        np.testing.assert_allclose(state["m"][key], tstate["exp_avg"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(state["v"][key], tstate["exp_avg_sq"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(state["v_max"][key], tstate["max_exp_avg_sq"].numpy(),
                                   rtol=1e-12)
        assert int(tstate["step"]) == state["step"] == K


@pytest.mark.parametrize(("name", "kw"), [(c[0], c[1]) for c in CASES], ids=IDS)
def test_pure_update_leaves_inputs_untouched_and_in_place_is_bit_identical(name, kw):
    opt = optim.make(name, **kw)
    params = make_params(7)
    grads_seq = make_grads(8)
    state = opt.init(params)
    inplace_params = {k: v.copy() for k, v in params.items()}
    inplace_state = opt.init(inplace_params)
    for grads in grads_seq:
        before_p = {k: v.copy() for k, v in params.items()}
        before_g = {k: v.copy() for k, v in grads.items()}
        before_s = optim.flatten_state(state)
        before_s = {k: v.copy() for k, v in before_s.items()}
        new_params, new_state = opt.update(params, grads, state)
        for k in SHAPES:
            assert np.array_equal(params[k], before_p[k])
            assert np.array_equal(grads[k], before_g[k])
            assert new_params[k] is not params[k]
        for k, v in optim.flatten_state(state).items():
            assert np.array_equal(v, before_s[k])
        ids = [id(a) for a in inplace_params.values()]
        assert opt.update_(inplace_params, grads, inplace_state) is None
        assert [id(a) for a in inplace_params.values()] == ids
        for k in SHAPES:
            assert np.array_equal(grads[k], before_g[k])
            assert inplace_params[k].tobytes() == new_params[k].tobytes()
        flat_new = optim.flatten_state(new_state)
        flat_inplace = optim.flatten_state(inplace_state)
        assert flat_new.keys() == flat_inplace.keys()
        for k in flat_new:
            assert flat_new[k].tobytes() == flat_inplace[k].tobytes()
        params, state = new_params, new_state


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_float32_stays_float32(name):
    opt = optim.make(name)
    params = make_params(0, np.float32)
    state = opt.init(params)
    for grads in make_grads(1, 2, np.float32):
        params, state = opt.update(params, grads, state)
    assert all(p.dtype == np.float32 for p in params.values())
    assert all(a.dtype == np.float32 for a in optim.flatten_state(state).values()
               if a.ndim > 0)


def test_state_layout():
    params = make_params()
    state = optim.Adam().init(params)
    assert state["step"] == 0
    assert set(state) == {"step", "m", "v"}
    assert state["m"]["l0.W_hh"].shape == (5, 5)
    assert set(optim.SGD().init(params)) == {"step"}
    assert set(optim.SGD(momentum=0.5).init(params)) == {"step", "momentum_buffer"}
    assert set(optim.RMSprop(momentum=0.5, centered=True).init(params)) == {
        "step", "square_avg", "grad_avg", "momentum_buffer"}
    acc = optim.Adagrad(initial_accumulator_value=0.25).init(params)["sum"]["b_y"]
    assert np.array_equal(acc, np.full(2, 0.25))


def test_flatten_unflatten_round_trip_exactly():
    opt = optim.RMSprop(momentum=0.5, centered=True)
    params = make_params()
    state = opt.init(params)
    for grads in make_grads(3, 3):
        opt.update_(params, grads, state)
    flat = optim.flatten_state(state)
    assert flat["step"].dtype == np.int64 and flat["step"].shape == ()
    assert "grad_avg/l0.W_hh" in flat
    back = optim.unflatten_state(flat)
    assert list(back) == list(state)
    assert back["step"] == 3 and isinstance(back["step"], int)
    for slot in opt.slots():
        assert list(back[slot]) == list(state[slot])
        for k in SHAPES:
            assert back[slot][k].tobytes() == state[slot][k].tobytes()
    assert optim.unflatten_state(optim.flatten_state({"step": 0})) == {"step": 0}
    # a restored state keeps working
    p1, s1 = opt.update(params, make_grads(9, 1)[0], state)
    p2, s2 = opt.update(params, make_grads(9, 1)[0], back)
    assert all(np.array_equal(p1[k], p2[k]) for k in SHAPES)


def test_unflatten_rejects_bad_input():
    with pytest.raises(ValueError, match="'step'"):
        optim.unflatten_state({"m/x": np.zeros(2)})
    with pytest.raises(ValueError, match="0-d integer"):
        optim.unflatten_state({"step": np.zeros(2)})
    with pytest.raises(ValueError, match="'nokey'"):
        optim.unflatten_state({"step": np.array(1), "nokey": np.zeros(2)})


# --------------------------------------------------------------------------- errors


def test_grad_mismatch_errors_name_the_key():
    opt = optim.Adam()
    params = make_params()
    state = opt.init(params)
    grads = make_grads(0, 1)[0]
    missing = {k: v for k, v in grads.items() if k != "l0.W_hh"}
    with pytest.raises(ValueError, match=r"missing keys \['l0.W_hh'\]"):
        opt.update(params, missing, state)
    extra = dict(grads, bogus=np.zeros(3))
    with pytest.raises(ValueError, match=r"unexpected keys \['bogus'\]"):
        opt.update(params, extra, state)
    bad_shape = dict(grads, **{"l0.W_hh": np.zeros((5, 4))})
    with pytest.raises(ValueError, match=r"grads\['l0.W_hh'\] has shape \(5, 4\), "
                                         r"expected \(5, 5\)"):
        opt.update(params, bad_shape, state)
    bad_dtype = dict(grads, b_y=grads["b_y"].astype(np.float32))
    with pytest.raises(TypeError, match=r"grads\['b_y'\] has dtype float32, expected float64"):
        opt.update_(params, bad_dtype, state)
    with pytest.raises(TypeError, match=r"grads\['b_y'\] must be a numpy array, got list"):
        opt.update(params, dict(grads, b_y=[1.0, 2.0]), state)


def test_state_mismatch_errors():
    params = make_params()
    grads = make_grads(0, 1)[0]
    with pytest.raises(ValueError, match=r"state has entries \['step'\], expected"):
        optim.Adam().update(params, grads, optim.SGD().init(params))
    state = optim.Adam().init(params)
    state["m"]["b_y"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"state\['m'\]\['b_y'\] has shape \(3,\)"):
        optim.Adam().update(params, grads, state)
    state = optim.Adam().init(params)
    state["step"] = -1
    with pytest.raises(ValueError, match="step.*-1"):
        optim.Adam().update(params, grads, state)


def test_failed_validation_does_not_touch_in_place_inputs():
    opt = optim.SGD(lr=0.1)
    params = make_params()
    before = {k: v.copy() for k, v in params.items()}
    grads = make_grads(0, 1)[0]
    grads["b_y"] = np.zeros(7)
    state = opt.init(params)
    with pytest.raises(ValueError):
        opt.update_(params, grads, state)
    assert state["step"] == 0
    assert all(np.array_equal(params[k], before[k]) for k in SHAPES)


def test_in_place_update_refuses_read_only_arrays_before_touching_anything():
    opt = optim.Adam()
    params = make_params()
    state = opt.init(params)
    params["b_y"].flags.writeable = False
    before = params["l0.W_xh"].copy()
    with pytest.raises(ValueError, match=r"params\['b_y'\] is read-only"):
        opt.update_(params, make_grads(0, 1)[0], state)
    assert np.array_equal(params["l0.W_xh"], before) and state["step"] == 0
    new_params, _ = opt.update(params, make_grads(0, 1)[0], state)  # the pure path copies
    assert new_params["b_y"].flags.writeable


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown optimizer 'lbfgs'.*'adagrad', 'adam', "
                                         r"'adamw', 'rmsprop', 'sgd'"):
        optim.make("lbfgs")
    assert isinstance(optim.make("AdamW"), optim.AdamW)


@pytest.mark.parametrize(("name", "kw", "match"), [
    ("sgd", {"lr": 0.0}, "lr must be > 0, got 0.0"),
    ("adam", {"lr": -1e-3}, "lr must be > 0, got -0.001"),
    ("adam", {"lr": float("nan")}, "lr must be finite"),
    ("adam", {"weight_decay": -0.1}, "weight_decay must be >= 0, got -0.1"),
    ("adamw", {"betas": (1.0, 0.999)}, r"betas\[0\] must be in \[0, 1\), got 1.0"),
    ("adam", {"betas": (0.9, -0.1)}, r"betas\[1\] must be in \[0, 1\), got -0.1"),
    ("sgd", {"momentum": 1.5}, "momentum must be in"),
    ("sgd", {"nesterov": True}, "nesterov=True requires momentum > 0"),
    ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening == 0"),
    ("rmsprop", {"alpha": 1.0}, r"alpha must be in \[0, 1\), got 1.0"),
    ("adagrad", {"initial_accumulator_value": -1}, "initial_accumulator_value must be >= 0"),
    ("adagrad", {"eps": -1e-10}, "eps must be >= 0"),
])
def test_bad_hyperparameters(name, kw, match):
    with pytest.raises(ValueError, match=match):
        optim.make(name, **kw)


def test_bad_types():
    with pytest.raises(TypeError, match="lr must be a real number, got '0.1'"):
        optim.SGD(lr="0.1")
    with pytest.raises(TypeError, match="betas must be a pair"):
        optim.Adam(betas=0.9)
    with pytest.raises(TypeError, match="unexpected keyword"):
        optim.make("sgd", betas=(0.9, 0.99))
    with pytest.raises(TypeError, match=r"params\['a'\] must have a floating dtype, got int64"):
        optim.Adam().init({"a": np.arange(3)})
    with pytest.raises(ValueError, match="params must not be empty"):
        optim.Adam().init({})


def test_per_call_lr_validation():
    opt = optim.SGD(lr=0.1)
    params = make_params()
    grads = make_grads(0, 1)[0]
    state = opt.init(params)
    with pytest.raises(ValueError, match="lr must be >= 0, got -0.5"):
        opt.update(params, grads, state, lr=-0.5)
    same, _ = opt.update(params, grads, state, lr=0.0)
    assert all(np.array_equal(same[k], params[k]) for k in SHAPES)


def test_config_round_trip():
    for opt in (optim.Adam(lr=3e-4, betas=[0.5, 0.6], amsgrad=True),
                optim.SGD(lr=0.1, momentum=0.9, nesterov=True), optim.AdamW(),
                optim.RMSprop(centered=True), optim.Adagrad(lr_decay=0.1)):
        cfg = opt.config()
        assert optim.make(**cfg) == opt
    assert optim.Adam(betas=[0.5, 0.6]).betas == (0.5, 0.6)
    assert optim.AdamW().weight_decay == 0.01


# --------------------------------------------------------------------------- clipping


def torch_grads(grads: dict) -> list:
    out = []
    for g in grads.values():
        p = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(g)
        out.append(p)
    return out


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    grads = make_grads(11, 1)[0]
    before = {k: v.copy() for k, v in grads.items()}
    clipped, norm = optim.clip_grad_norm(grads, max_norm, norm_type)
    tps = torch_grads(grads)
    tnorm = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type, foreach=False)
    assert norm == pytest.approx(float(tnorm), rel=1e-12)
    for (k, g), p in zip(clipped.items(), tps, strict=True):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12, atol=0, err_msg=k)
        assert np.array_equal(grads[k], before[k])
    if max_norm < norm:
        assert optim.global_norm(clipped, norm_type) == pytest.approx(max_norm, rel=1e-5)
    else:
        assert all(np.array_equal(clipped[k], grads[k]) for k in grads)


def test_clip_grad_norm_float32_and_nonfinite():
    grads = make_grads(12, 1, np.float32)[0]
    clipped, _ = optim.clip_grad_norm(grads, 0.1)
    assert all(g.dtype == np.float32 for g in clipped.values())
    grads["b_y"][0] = np.inf
    _, norm = optim.clip_grad_norm(grads, 0.1)
    assert norm == math.inf
    with pytest.raises(ValueError, match="non-finite"):
        optim.clip_grad_norm(grads, 0.1, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        optim.clip_grad_norm(grads, 0.0)


@pytest.mark.parametrize("clip", [0.1, 1.0, 10.0])
def test_clip_grad_value_matches_torch(clip):
    grads = make_grads(13, 1)[0]
    before = {k: v.copy() for k, v in grads.items()}
    clipped = optim.clip_grad_value(grads, clip)
    tps = torch_grads(grads)
    torch.nn.utils.clip_grad_value_(tps, clip, foreach=False)
    for (k, g), p in zip(clipped.items(), tps, strict=True):
        assert np.array_equal(g, p.grad.numpy())
        assert np.array_equal(grads[k], before[k])
    with pytest.raises(ValueError, match="clip_value must be > 0, got -1.0"):
        optim.clip_grad_value(grads, -1.0)


@settings(max_examples=50, deadline=None)
@given(scale=st.floats(1e-6, 1e6), max_norm=st.floats(1e-3, 1e3), seed=st.integers(0, 2**32 - 1))
def test_clip_grad_norm_property(scale, max_norm, seed):
    grads = {k: v * scale for k, v in make_grads(seed, 1)[0].items()}
    clipped, norm = optim.clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(optim.global_norm(grads))
    if norm + 1e-6 <= max_norm:
        assert all(np.array_equal(clipped[k], grads[k]) for k in grads)
    else:
        assert optim.global_norm(clipped) <= max_norm * (1 + 1e-9)
