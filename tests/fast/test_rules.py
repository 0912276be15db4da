"""The learning rules on the fast path (rnnlab.fast.rules) against their reference
implementations (rnnlab.learning): batch and online forms, every set-up, masks, h0, stacked
layers where the rule defines them, index inputs, float64 to 1e-12 and float32 to its rounding;
UORO and KF-RTRL with the same Generator draws; fit with engine "fast" against "reference"."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rnnlab import RNNSpec, TrainConfig, fit, init_params, optim
from rnnlab.fast.rules import FAST_RULES, FastRule
from rnnlab.learning import ONLINE, RULES, snap, walk
from rnnlab.train import checkpoint
from rnnlab.train.steps import FastRuleStep, gradient_function

from conftest import problem

GRID = [  # (setup, layers, masked, h0, act[, spec options])
    ("many_to_many", 1, False, False, "tanh"),
    ("many_to_many", 1, True, True, "tanh"),
    ("many_to_one", 1, True, True, "relu"),
    ("many_to_one", 1, False, True, "sigmoid"),
    ("many_to_one", 1, True, True, "tanh", {"label_steps": "all"}),
    ("one_to_many", 1, False, True, "identity"),
    ("one_to_many", 1, False, False, "tanh", {"feed": "first"}),
]
STACKED = [("many_to_many", 2, True, True, "tanh"), ("many_to_one", 3, False, True, "relu")]


def _options(name: str, spec: RNNSpec, params: dict[str, Any], dtype: Any = np.float64,
             **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the reference rule's options, the fast rule's) for the same computation."""
    ref: dict[str, Any] = dict(kw)
    fast: dict[str, Any] = {}
    if name in ("uoro", "kf_rtrl"):
        ref["rng"], fast["rng"] = np.random.default_rng(11), np.random.default_rng(11)
    if name in ("rflo", "eprop"):
        fb = kw.get("feedback", "random" if name == "rflo" else "symmetric")
        fast["feedback"] = walk.feedback_matrix(fb, 0, spec, np.dtype(dtype), name)
    if name == "snap":
        conn = snap.check_connectivity(kw.get("connectivity"), params["l0.W_hh"])
        fast["connectivity"] = conn
        fast["pattern"] = snap.pattern(conn, kw.get("n", 1))
    return ref, fast


def _close(a: Any, b: Any, rtol: float, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, what
    scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-300)
    err = float(np.abs(a - b).max()) / scale if b.size else 0.0
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol}"


def _sparse(params: dict[str, Any], seed: int = 3) -> np.ndarray:
    H = params["l0.W_hh"].shape[0]
    conn = np.random.default_rng(seed).random((H, H)) < 0.4
    params["l0.W_hh"] = params["l0.W_hh"] * conn
    return conn


CASES = [(r, g) for r in sorted(FAST_RULES) for g in GRID] + \
    [(r, g) for r in ("rtrl", "uoro") for g in STACKED]


def _case(name: str, case: tuple[Any, ...], B: int, T: int) -> tuple[Any, ...]:
    """One case of the grid: ``(spec, params, X, Y, mask, h0, reference kwargs, fast kwargs)``
    for a batch of ``B`` sequences of ``T`` steps."""
    setup, layers, masked, with_h0, act = case[:5]
    spec = RNNSpec(3, 4, 3, num_layers=layers, nonlinearity=act, setup=setup,
                   **(case[5] if len(case) > 5 else {}))
    params, X, Y, mask, h0 = problem(spec, B, 4, T, masked, with_h0)
    ref_kw, fast_kw = _options(name, spec, params)
    if setup == "one_to_many":
        ref_kw["steps"] = T
    return spec, params, X, Y, mask, h0, ref_kw, fast_kw


@pytest.mark.parametrize("name,case", CASES, ids=lambda v: str(v))
def test_batch_form_is_the_reference_rule(name: str, case: tuple[Any, ...]) -> None:
    spec, params, X, Y, mask, h0, ref_kw, fast_kw = _case(name, case, 5, 6)
    l1, g1, o1 = RULES[name](params, X, Y, spec, h0=h0, mask=mask, **ref_kw)
    rule = FastRule(spec, name, **fast_kw)
    for _ in range(2):               # the buffers reused by a second call give the same result
        if name in ("uoro", "kf_rtrl"):
            rule.rng = fast_kw["rng"] = np.random.default_rng(11)
        l2, g2, o2 = rule(params, X, Y, spec, h0=h0, mask=mask, steps=ref_kw.get("steps"))
        _close(l2, l1, 1e-12, "loss")
        for k in g1.params:
            _close(g2.params[k], g1.params[k], 1e-12, k)
        _close(g2.h0, g1.h0, 1e-12, "h0 gradient")
        _close(o2.logits, o1.logits, 1e-12, "logits")
        _close(o2.y, o1.y, 1e-12, "y")
        _close(o2.h_n, o1.h_n, 1e-12, "h_n")
    if name in ("uoro", "kf_rtrl"):  # the same draws, so the Generators end in the same state
        assert fast_kw["rng"].bit_generator.state == ref_kw["rng"].bit_generator.state


@pytest.mark.parametrize("name,case", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("every", [1, 4])
def test_online_form_is_the_reference_rule(name: str, case: tuple[Any, ...], every: int) -> None:
    spec, params, X, Y, mask, h0, ref_kw, fast_kw = _case(name, case, 6, 7)
    opt = optim.Adam(lr=0.05)
    p1 = {k: v.copy() for k, v in params.items()}
    p2 = {k: v.copy() for k, v in params.items()}
    s1, s2 = opt.init(p1), opt.init(p2)
    l1, o1 = ONLINE[name + "_online"](p1, X, Y, spec, opt=opt, opt_state=s1, h0=h0, mask=mask,
                                      every=every, **ref_kw)
    rule = FastRule(spec, name + "_online", every=every, **fast_kw)
    l2, o2 = rule(p2, X, Y, spec, opt=opt, opt_state=s2, h0=h0, mask=mask,
                  steps=ref_kw.get("steps"))
    _close(l2, l1, 1e-12, "loss")
    for k in p1:
        _close(p2[k], p1[k], 1e-12, k)
    assert s2["step"] == s1["step"]
    _close(o2.logits, o1.logits, 1e-12, "logits")
    _close(o2.h_n, o1.h_n, 1e-12, "h_n")


@pytest.mark.parametrize("name", sorted(FAST_RULES))
def test_float32_within_its_rounding(name: str) -> None:
    """float32 (the fast engine's compiled loops where installed: tanh by eq. 38) against the
    reference rule in float64 on the same numbers."""
    spec = RNNSpec(3, 8, 3, setup="many_to_many")
    p64, X, Y, _, _ = problem(spec, 7, 8, 10, False, False)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    X32 = X.astype(np.float32)
    ref_kw, fast_kw = _options(name, spec, p32, np.float32)
    _, g1, _ = RULES[name](p64, X, Y, spec, **ref_kw)
    rule = FastRule(spec, name, **fast_kw)
    _, g2, _ = rule(p32, X32, Y, spec)
    for k in g1.params:
        assert g2.params[k].dtype == np.float32
        _close(g2.params[k], g1.params[k], 2e-4, k)
    ref_kw, fast_kw = _options(name, spec, p32, np.float32)
    opt = optim.SGD(lr=0.1)
    q64 = {k: v.copy() for k, v in p64.items()}
    q32 = {k: v.copy() for k, v in p32.items()}
    ONLINE[name + "_online"](q64, X, Y, spec, opt=opt, opt_state=opt.init(q64), **ref_kw)
    FastRule(spec, name + "_online", **fast_kw)(q32, X32, Y, spec, opt=opt,
                                               opt_state=opt.init(q32))
    for k in q64:
        assert q32[k].dtype == np.float32
        _close(q32[k] - p32[k], q64[k] - p64[k], 2e-4, k)


@pytest.mark.parametrize("n,dense", [(1, False), (2, False), (3, False), (2, True), (3, True)])
@pytest.mark.parametrize("online", [False, True])
@pytest.mark.parametrize("setup", ["many_to_many", "many_to_one"])
def test_sparse_snap(n: int, dense: bool, online: bool, setup: str) -> None:
    """Sparse SnAp-n on its pattern (the batch form accumulated backwards); dense SnAp-n (n >=
    2, the full pattern: RTRL, run as the fast RTRL) equal to the reference's SnAp-n."""
    spec = RNNSpec(2, 6, 2, setup=setup)
    params, X, Y, mask, h0 = problem(spec, 8, 3, 6, True)
    conn = np.ones((6, 6), bool) if dense else _sparse(params)
    ref_kw, fast_kw = _options("snap", spec, params, n=n, connectivity=conn)
    assert bool(fast_kw["pattern"].all()) == dense
    if online:
        opt = optim.SGD(lr=0.1)
        p1 = {k: v.copy() for k, v in params.items()}
        p2 = {k: v.copy() for k, v in params.items()}
        snap.online_update(p1, X, Y, spec, opt=opt, opt_state=opt.init(p1), h0=h0, mask=mask,
                           every=2, **ref_kw)
        FastRule(spec, "snap_online", every=2, **fast_kw)(p2, X, Y, spec, opt=opt,
                                                           opt_state=opt.init(p2), h0=h0,
                                                           mask=mask)
        for k in p1:
            _close(p2[k], p1[k], 1e-12, k)
        assert np.all(p2["l0.W_hh"][~conn] == 0)
        return
    _, g1, _ = snap.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, **ref_kw)
    _, g2, _ = FastRule(spec, "snap", **fast_kw)(params, X, Y, spec, h0=h0, mask=mask)
    for k in g1.params:
        _close(g2.params[k], g1.params[k], 1e-12, k)
    assert np.all(g2.params["l0.W_hh"][~conn] == 0)


@pytest.mark.parametrize("name", ["rflo", "eprop"])
@pytest.mark.parametrize("feedback", ["symmetric", "random"])
def test_feedback(name: str, feedback: str) -> None:
    spec = RNNSpec(2, 5, 3, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 9, 4, 5, True)
    ref_kw, fast_kw = _options(name, spec, params, feedback=feedback)
    _, g1, _ = RULES[name](params, X, Y, spec, h0=h0, mask=mask, **ref_kw)
    _, g2, _ = FastRule(spec, name, **fast_kw)(params, X, Y, spec, h0=h0, mask=mask)
    for k in g1.params:
        _close(g2.params[k], g1.params[k], 1e-12, k)


@pytest.mark.parametrize("name", sorted(FAST_RULES))
def test_index_inputs(name: str) -> None:
    spec = RNNSpec(5, 4, 5, setup="many_to_many", input_kind="index")
    params, X, Y, mask, h0 = problem(spec, 10, 3, 6, True)
    ref_kw, fast_kw = _options(name, spec, params)
    _, g1, _ = RULES[name](params, X, Y, spec, h0=h0, mask=mask, **ref_kw)
    _, g2, _ = FastRule(spec, name, **fast_kw)(params, X, Y, spec, h0=h0, mask=mask)
    for k in g1.params:
        _close(g2.params[k], g1.params[k], 1e-12, k)


@pytest.mark.parametrize("name", ["kf_rtrl", "snap", "rflo", "eprop"])
def test_refuses_what_the_reference_refuses(name: str) -> None:
    stacked = RNNSpec(2, 3, 2, num_layers=2)
    bi = RNNSpec(2, 3, 2, bidirectional=True)
    kw = {"rng": np.random.default_rng(0)} if name == "kf_rtrl" else {}
    for spec, match in ((stacked, "defined for one recurrent layer"),
                        (bi, "needs a unidirectional network")):
        with pytest.raises(ValueError, match=match):
            FastRule(spec, name, **kw)
    with pytest.raises(ValueError, match="no fast implementation"):
        FastRule(stacked, "tbptt")
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        FastRule(RNNSpec(2, 3, 2), "uoro")


# ----------------------------------------------------------------------------- through fit


def _data(spec: RNNSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    X = rng.standard_normal((24, 6, spec.input_size))
    return X, rng.integers(0, spec.output_size, (24, 6))


def _cfg(**kw: Any) -> TrainConfig:
    # a constant rate: the resume tests extend a 2-epoch run to 4 epochs, which a decay over
    # the run's length (the default cosine) would stretch (test_resume.py covers that)
    base: dict[str, Any] = {"epochs": 2, "batch_size": 8, "lr": 0.02, "schedule": "constant",
                            "progress": "off"}
    base.update(kw)
    return TrainConfig(**base)


ALGOS = sorted(FAST_RULES) + sorted(a + "_online" for a in FAST_RULES)


def test_gradient_function_picks_the_fast_rule_by_default() -> None:
    for algorithm in ALGOS:
        assert isinstance(gradient_function(_cfg(algorithm=algorithm)), FastRuleStep)
        assert not isinstance(gradient_function(_cfg(algorithm=algorithm, engine="reference")),
                              FastRuleStep)


@pytest.mark.parametrize("algorithm", ALGOS)
def test_fit_fast_and_reference_train_alike(algorithm: str) -> None:
    spec = RNNSpec(3, 5, 3, setup="many_to_many")
    data = _data(spec)
    val = (data[0][:8], data[1][:8])
    runs = {}
    for engine in ("fast", "reference"):
        p = init_params(spec, np.random.default_rng(0), dtype=np.float64)
        h = fit(p, spec, data, _cfg(algorithm=algorithm, engine=engine, seed=2), val=val)
        assert h.status == "completed"
        runs[engine] = (p, h.step_losses, [e["val_loss"] for e in h.epochs])
    pf, lf, vf = runs["fast"]
    pr, lr, vr = runs["reference"]
    np.testing.assert_allclose(lf, lr, rtol=1e-10)
    np.testing.assert_allclose(vf, vr, rtol=1e-10)      # the validation on the fast engine
    for k in pr:
        np.testing.assert_allclose(pf[k], pr[k], rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:the training loss has stayed")
@pytest.mark.parametrize("algorithm", ["rtrl", "snap_online", "uoro", "kf_rtrl_online"])
def test_fast_rule_resume_repeats_a_straight_run(algorithm: str, tmp_path: Any) -> None:
    spec = RNNSpec(3, 5, 3, setup="many_to_many")
    data = _data(spec)
    straight = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    fit(straight, spec, data, _cfg(algorithm=algorithm, epochs=4))
    first = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    fit(first, spec, data, _cfg(algorithm=algorithm, epochs=2, checkpoint_dir=str(tmp_path)))
    assert checkpoint.load(tmp_path / "last.npz").extra is not None
    resumed = init_params(spec, np.random.default_rng(9), dtype=np.float64)
    fit(resumed, spec, data, _cfg(algorithm=algorithm, epochs=4, checkpoint_dir=str(tmp_path)),
        resume=True)
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k])


def test_fit_keeps_the_memory_limit() -> None:
    from rnnlab.learning.rtrl import SensitivityMemoryError

    spec = RNNSpec(3, 5, 3, setup="many_to_many")
    p = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    for algorithm in ("rtrl", "rtrl_online", "snap"):
        kw = {"n": 2} if algorithm == "snap" else {}
        with pytest.raises(SensitivityMemoryError, match="max_bytes"):
            fit(p, spec, _data(spec), _cfg(algorithm=algorithm,
                                           algorithm_kwargs={**kw, "max_bytes": 1000}))


@pytest.mark.parametrize("online", [False, True])
def test_uoro_in_chunks_and_folding(online: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """UORO's pass over Θ in chunks of sequences (one sequence each here), and the scale
    folded back into Θ at almost every step (a fold bound of 1.5, in both implementations)."""
    from rnnlab.fast import estimates
    from rnnlab.learning import uoro

    monkeypatch.setattr(estimates.UOROEstimate, "CHUNK_BYTES", 8)
    monkeypatch.setattr(estimates, "FOLD", 1.5)
    monkeypatch.setattr(uoro, "FOLD", 1.5)
    spec = RNNSpec(3, 4, 3, num_layers=2, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 12, 5, 9, True)
    ref_kw, fast_kw = _options("uoro", spec, params)
    if online:
        opt = optim.SGD(lr=0.1)
        p1 = {k: v.copy() for k, v in params.items()}
        p2 = {k: v.copy() for k, v in params.items()}
        uoro.online_update(p1, X, Y, spec, opt=opt, opt_state=opt.init(p1), h0=h0, mask=mask,
                           **ref_kw)
        FastRule(spec, "uoro_online", **fast_kw)(p2, X, Y, spec, opt=opt,
                                                 opt_state=opt.init(p2), h0=h0, mask=mask)
        for k in p1:
            _close(p2[k], p1[k], 1e-12, k)
        return
    _, g1, _ = uoro.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, **ref_kw)
    rule = FastRule(spec, "uoro", **fast_kw)
    _, g2, _ = rule(params, X, Y, spec, h0=h0, mask=mask)
    est = next(iter(rule._est.values()))
    assert isinstance(est, estimates.UOROEstimate) and est.chunk == 1
    for k in g1.params:
        _close(g2.params[k], g1.params[k], 1e-12, k)


def test_snap1_online_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online SnAp-1 updates its trace in place, a chunk of sequences at a time (one each
    here), the padded rows carrying theirs: the reference's parameters after the updates."""
    from rnnlab.fast import estimates

    monkeypatch.setattr(estimates.UOROEstimate, "CHUNK_BYTES", 8)
    spec = RNNSpec(3, 4, 3, setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 13, 5, 8, True)
    conn = _sparse(params, seed=5)
    ref_kw, fast_kw = _options("snap", spec, params, connectivity=conn)
    opt = optim.SGD(lr=0.1)
    p1 = {k: v.copy() for k, v in params.items()}
    p2 = {k: v.copy() for k, v in params.items()}
    snap.online_update(p1, X, Y, spec, opt=opt, opt_state=opt.init(p1), h0=h0, mask=mask,
                       every=3, **ref_kw)
    rule = FastRule(spec, "snap_online", every=3, **fast_kw)
    rule(p2, X, Y, spec, opt=opt, opt_state=opt.init(p2), h0=h0, mask=mask)
    assert next(iter(rule._est.values())).chunk == 1
    for k in p1:
        _close(p2[k], p1[k], 1e-12, k)


@pytest.mark.parametrize("algorithm", ALGOS)
def test_two_threads_give_the_numbers_of_one(algorithm: str) -> None:
    """On a BLAS budget of 2 (RTRL's and KF-RTRL's per-sequence products cut over a pool of
    threads, the rest on one BLAS thread) every rule gives the numbers of one thread, bit for
    bit."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    name = algorithm.removesuffix("_online")
    spec = RNNSpec(3, 4, 3, num_layers=2 if name in ("rtrl", "uoro") else 1,
                   setup="many_to_many")
    params, X, Y, mask, h0 = problem(spec, 14, 5, 6, True)
    out = []
    for n in (1, 2):
        _, fast_kw = _options(name, spec, params)
        rule = FastRule(spec, algorithm, **fast_kw)
        p = {k: v.copy() for k, v in params.items()}
        with threadpoolctl.threadpool_limits(n, user_api="blas"):
            if algorithm == name:
                _, g, _ = rule(p, X, Y, spec, h0=h0, mask=mask)
                out.append(g.params)
            else:
                opt = optim.SGD(lr=0.1)
                rule(p, X, Y, spec, opt=opt, opt_state=opt.init(p), h0=h0, mask=mask)
                out.append(p)
        rule.close()
    for k in out[0]:
        np.testing.assert_array_equal(out[1][k], out[0][k])


@pytest.mark.parametrize("name", sorted(FAST_RULES))
@pytest.mark.parametrize("setup", ["many_to_many", "many_to_one"])
def test_leading_and_inner_padding(name: str, setup: str) -> None:
    """Padded steps before a sequence's first real step and between real steps carry the state
    and the estimate (eq. 30): RTRL's h0 rows before any real step, the traces, the adjoints."""
    spec = RNNSpec(2, 3, 2, setup=setup)
    params, X, Y, _, h0 = problem(spec, 15, 4, 5, False)
    mask = np.ones((4, 5), bool)
    mask[0, :4] = False
    mask[1, :2] = False
    mask[2, 1:3] = False
    ref_kw, fast_kw = _options(name, spec, params)
    l1, g1, o1 = RULES[name](params, X, Y, spec, h0=h0, mask=mask, **ref_kw)
    l2, g2, o2 = FastRule(spec, name, **fast_kw)(params, X, Y, spec, h0=h0, mask=mask)
    _close(l2, l1, 1e-12, "loss")
    for k in g1.params:
        _close(g2.params[k], g1.params[k], 1e-12, k)
    _close(g2.h0, g1.h0, 1e-12, "h0 gradient")
    ref_kw, fast_kw = _options(name, spec, params)
    opt = optim.SGD(lr=0.1)
    p1 = {k: v.copy() for k, v in params.items()}
    p2 = {k: v.copy() for k, v in params.items()}
    ONLINE[name + "_online"](p1, X, Y, spec, opt=opt, opt_state=opt.init(p1), h0=h0, mask=mask,
                             **ref_kw)
    FastRule(spec, name + "_online", **fast_kw)(p2, X, Y, spec, opt=opt, opt_state=opt.init(p2),
                                                h0=h0, mask=mask)
    for k in p1:
        _close(p2[k], p1[k], 1e-12, k)
