"""The learning rules beyond RTRL in the trainer: ``algorithm_kwargs`` validated against each
rule's options, passed through to it, and a stochastic rule's Generator seeded from the run's
seed and saved in checkpoints so that a resumed run repeats a straight one bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnlab import RNNSpec, TrainConfig, fit, init_params
from rnnlab.data import registry
from rnnlab.learning import ONLINE, RULES, STOCHASTIC
from rnnlab.train import checkpoint
from rnnlab.train.config import ALGORITHMS

NEW = ["uoro", "kf_rtrl", "snap", "rflo", "eprop", "uoro_online", "kf_rtrl_online",
       "snap_online", "rflo_online", "eprop_online"]


def data():
    return registry.load("add-task", steps=8, n_train=24, n_val=8, n_test=8, t1=1, t2=3)


SPEC = RNNSpec(1, 6, 1, setup="many_to_many", loss="sigmoid_bce")


def params(seed: int = 0) -> dict:
    return init_params(SPEC, np.random.default_rng(seed), dtype=np.float64)


def cfg(**kw) -> TrainConfig:
    # a constant rate: the resume test extends a 2-epoch run to 4 epochs, which a decay over
    # the run's length (the default cosine) would stretch (test_resume.py covers that)
    base = dict(epochs=2, batch_size=8, lr=1e-2, schedule="constant", progress="off")
    return TrainConfig(**{**base, **kw})


def test_every_rule_is_an_algorithm():
    assert set(NEW) <= set(ALGORITHMS)
    assert set(ALGORITHMS) == set(RULES) | set(ONLINE)
    assert STOCHASTIC == {"uoro", "uoro_online", "kf_rtrl", "kf_rtrl_online"}


@pytest.mark.parametrize("kw,err,match", [
    ({"algorithm": "snap", "algorithm_kwargs": {"m": 2}}, ValueError,
     r"unknown algorithm_kwargs \['m'\] for algorithm 'snap'; its options are: n=1"),
    ({"algorithm": "bptt", "algorithm_kwargs": {"n": 2}}, ValueError, r"its options are: none"),
    ({"algorithm": "tbptt", "k1": 2, "algorithm_kwargs": {"k2": 2}}, ValueError,
     r"k1 and k2 are TrainConfig fields"),
    ({"algorithm": "uoro", "algorithm_kwargs": {"rng": 1}}, ValueError, r"unknown algorithm_kw"),
    ({"algorithm": "rflo", "algorithm_kwargs": {"alpha": 0.5}}, ValueError,
     r"fit trains rnnlab's vanilla cell \(alpha=1.0\)"),
    ({"algorithm": "eprop_online", "algorithm_kwargs": {"decay": 0.2}}, ValueError,
     r"vanilla cell \(decay=0.0\)"),
    ({"algorithm": "rflo", "algorithm_kwargs": {"feedback": np.zeros((1, 6))}}, TypeError,
     r"must be plain data"),
    ({"algorithm": "snap", "algorithm_kwargs": [("n", 2)]}, TypeError, r"must be a dict"),
    ({"algorithm": "uoro_online", "clip_norm": 1.0}, ValueError, r"clip_norm is not supported"),
])
def test_bad_algorithm_kwargs(kw, err, match):
    with pytest.raises(err, match=match):
        TrainConfig(**kw)


def test_round_trip():
    c = TrainConfig(algorithm="snap_online", algorithm_kwargs={"n": 2, "every": 3})
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert TrainConfig(algorithm="rflo", algorithm_kwargs={"alpha": 1.0}).algorithm_kwargs == {
        "alpha": 1.0}


@pytest.mark.parametrize("algorithm", NEW)
def test_trains(algorithm):
    p = params()
    h = fit(p, SPEC, data(), cfg(algorithm=algorithm))
    assert h.status == "completed" and np.all(np.isfinite(h.step_losses))
    assert not np.allclose(p["l0.W_hh"], params()["l0.W_hh"])


def test_options_reach_the_rule():
    """Dense SnAp-2 is RTRL: trained with n=2 the parameters are RTRL's; SnAp-1's are not."""
    ref = params()
    fit(ref, SPEC, data(), cfg(algorithm="rtrl"))
    p2, p1 = params(), params()
    fit(p2, SPEC, data(), cfg(algorithm="snap", algorithm_kwargs={"n": 2}))
    fit(p1, SPEC, data(), cfg(algorithm="snap"))
    for k in ref:
        np.testing.assert_allclose(p2[k], ref[k], rtol=1e-9, atol=1e-12)
    assert not np.allclose(p1["l0.W_hh"], ref["l0.W_hh"])
    po1, po3 = params(), params()
    fit(po1, SPEC, data(), cfg(algorithm="rflo_online"))
    fit(po3, SPEC, data(), cfg(algorithm="rflo_online", algorithm_kwargs={"every": 3}))
    assert not np.allclose(po1["l0.W_hh"], po3["l0.W_hh"])


@pytest.mark.parametrize("algorithm", ["uoro", "kf_rtrl_online"])
def test_seeded_by_the_run(algorithm):
    a, b, c = params(), params(), params()
    fit(a, SPEC, data(), cfg(algorithm=algorithm, seed=3, shuffle=False))
    fit(b, SPEC, data(), cfg(algorithm=algorithm, seed=3, shuffle=False))
    fit(c, SPEC, data(), cfg(algorithm=algorithm, seed=4, shuffle=False))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["l0.W_hh"], c["l0.W_hh"])   # only the signs differ


@pytest.mark.parametrize("algorithm", ["uoro", "kf_rtrl_online", "uoro_online"])
def test_resume_repeats_a_straight_run(algorithm, tmp_path):
    straight = params()
    fit(straight, SPEC, data(), cfg(algorithm=algorithm, epochs=4))
    first = params()
    fit(first, SPEC, data(), cfg(algorithm=algorithm, epochs=2, checkpoint_dir=str(tmp_path)))
    ck = checkpoint.load(tmp_path / "last.npz")
    assert ck.extra["rule_rng"]["bit_generator"] == "PCG64"
    resumed = params(seed=9)
    fit(resumed, SPEC, data(), cfg(algorithm=algorithm, epochs=4,
                                   checkpoint_dir=str(tmp_path)), resume=True)
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k])


def test_deterministic_rules_save_no_generator(tmp_path):
    fit(params(), SPEC, data(), cfg(algorithm="eprop", checkpoint_dir=str(tmp_path)))
    assert checkpoint.load(tmp_path / "last.npz").extra["rule_rng"] is None
