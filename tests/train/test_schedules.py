"""Learning-rate schedules: boundary values and agreement with torch.optim.lr_scheduler."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnlab import schedules
from rnnlab.schedules import Constant, Cosine, StepDecay, Warmup

torch = pytest.importorskip("torch")


def torch_lrs(build, lr: float, n: int) -> list[float]:
    """The lr torch uses at steps 0..n-1 for ``build(optimizer) -> scheduler``."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = build(opt)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def assert_close(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- boundaries


def test_constant():
    s = Constant(0.3)
    assert [s(t) for t in (0, 1, 10**9)] == [0.3, 0.3, 0.3]


def test_step_decay_boundaries():
    s = StepDecay(lr=1.0, step_size=3, gamma=0.5)
    assert [s(t) for t in range(8)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert s(2) == 1.0 and s(3) == 0.5  # last step before / first step after the boundary


def test_cosine_boundaries():
    s = Cosine(lr=1.0, total_steps=10, min_lr=0.1)
    assert s(0) == 1.0
    assert s(5) == pytest.approx(0.55, rel=1e-15)
    assert s(9) > 0.1
    assert s(10) == pytest.approx(0.1, rel=1e-15)  # end of the decay
    assert s(11) == 0.1 and s(10**6) == 0.1        # stays at min_lr after it
    values = [s(t) for t in range(12)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_warmup_boundaries_default_start_factor():
    inner = Cosine(lr=1.0, total_steps=10)
    s = Warmup(inner, warmup_steps=4)
    assert s.start_factor == 0.25
    assert s(0) == 0.25                      # step 0: lr * start_factor (never 0 by default)
    assert s(3) == pytest.approx(0.25 + 0.75 * 3 / 4)   # last warm-up step
    assert s(4) == 1.0 == inner(0)           # first step after: inner from its own step 0
    assert s(5) == inner(1)
    assert s(14) == inner(10) == 0.0         # end of the decay
    assert s(15) == 0.0


def test_warmup_from_zero_and_zero_steps():
    s = Warmup(StepDecay(lr=2.0, step_size=2, gamma=0.5), warmup_steps=4, start_factor=0.0)
    assert [s(t) for t in range(8)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 1.0, 1.0]
    plain = Constant(0.1)
    assert Warmup(plain, 0)(0) == 0.1


@given(t=st.integers(0, 10_000), w=st.integers(1, 100), f=st.floats(0.0, 1.0))
def test_warmup_is_monotone_and_bounded(t, w, f):
    s = Warmup(Constant(0.5), w, f)
    assert 0.0 <= s(t) <= 0.5 * (1 + 1e-15)
    assert s(t) <= s(t + 1) + 1e-17


def test_step_argument_validation():
    s = Constant(0.1)
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        s(-1)
    with pytest.raises(TypeError, match="step must be an int, got 1.5"):
        s(1.5)
    assert s(np.int64(3)) == 0.1


# --------------------------------------------------------------------------- torch


@pytest.mark.parametrize(("step_size", "gamma"), [(1, 0.9), (3, 0.5), (7, 0.1)])
def test_step_matches_torch_steplr(step_size, gamma):
    n = 40
    theirs = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size, gamma), 0.1, n)
    s = StepDecay(lr=0.1, step_size=step_size, gamma=gamma)
    assert_close([s(t) for t in range(n)], theirs)


@pytest.mark.parametrize(("total", "min_lr"), [(1, 0.0), (10, 0.0), (37, 1e-4), (100, 0.05)])
def test_cosine_matches_torch_cosineannealinglr_up_to_total_steps(total, min_lr):
    theirs = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=min_lr),
        0.1, total + 1)
    s = Cosine(lr=0.1, total_steps=total, min_lr=min_lr)
    assert_close([s(t) for t in range(total + 1)], theirs)


@pytest.mark.parametrize("start_factor", [0.25, 0.1, 1.0, None])
@pytest.mark.parametrize("warmup", [1, 4, 10])
def test_warmup_cosine_matches_torch_linearlr_sequentiallr(warmup, start_factor):
    total = 20
    factor = 1.0 / warmup if start_factor is None else start_factor

    def build(o):
        lin = torch.optim.lr_scheduler.LinearLR(o, start_factor=factor, total_iters=warmup)
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=1e-3)
        return torch.optim.lr_scheduler.SequentialLR(o, [lin, cos], milestones=[warmup])

    theirs = torch_lrs(build, 0.1, warmup + total + 1)
    s = Warmup(Cosine(lr=0.1, total_steps=total, min_lr=1e-3), warmup, start_factor)
    assert_close([s(t) for t in range(warmup + total + 1)], theirs)


def test_warmup_step_matches_torch_linearlr_sequentiallr():
    def build(o):
        lin = torch.optim.lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=5)
        step = torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)
        return torch.optim.lr_scheduler.SequentialLR(o, [lin, step], milestones=[5])

    theirs = torch_lrs(build, 0.1, 30)
    s = schedules.make("step", lr=0.1, step_size=4, gamma=0.5, warmup_steps=5,
                       warmup_start_factor=0.2)
    assert_close([s(t) for t in range(30)], theirs)


# --------------------------------------------------------------------------- make / errors


def test_make_and_config_round_trip():
    s = schedules.make("cosine", lr=1e-3, total_steps=100, min_lr=1e-5, warmup_steps=10)
    assert isinstance(s, Warmup) and s.schedule == Cosine(1e-3, 100, 1e-5)
    assert schedules.make(**s.config()) == s
    assert schedules.make("Constant", lr=0.5) == Constant(0.5)
    for sched in (StepDecay(0.1, 5), Constant(0.2), Cosine(0.1, 10)):
        assert schedules.make(**sched.config()) == sched


def test_make_unknown_name_lists_valid_names():
    with pytest.raises(ValueError,
                       match=r"unknown schedule 'exp'.*'constant', 'cosine', 'plateau', 'step'"):
        schedules.make("exp", lr=0.1)


@pytest.mark.parametrize(("name", "kw", "exc", "match"), [
    ("constant", {"lr": 0.0}, ValueError, "lr must be > 0, got 0.0"),
    ("constant", {"lr": -1}, ValueError, "lr must be > 0, got -1.0"),
    ("constant", {"lr": math.inf}, ValueError, "lr must be finite"),
    ("step", {"lr": 0.1, "step_size": 0}, ValueError, "step_size must be >= 1, got 0"),
    ("step", {"lr": 0.1, "step_size": 2.5}, TypeError, "step_size must be an int"),
    ("step", {"lr": 0.1, "step_size": 2, "gamma": 0.0}, ValueError, "gamma must be > 0"),
    ("step", {"lr": 0.1, "step_size": 2, "gamma": 1.5}, ValueError, r"gamma must be in \(0, 1\]"),
    ("cosine", {"lr": 0.1, "total_steps": 0}, ValueError, "total_steps must be >= 1, got 0"),
    ("cosine", {"lr": 0.1, "total_steps": 5, "min_lr": 0.2}, ValueError,
     r"min_lr must be in \[0, lr=0.1\], got 0.2"),
    ("cosine", {"lr": 0.1, "total_steps": 5, "warmup_steps": -1}, ValueError,
     "warmup_steps must be >= 0, got -1"),
    ("cosine", {"lr": 0.1, "total_steps": 5, "warmup_steps": 3, "warmup_start_factor": 1.5},
     ValueError, r"start_factor must be in \[0, 1\], got 1.5"),
    ("step", {"lr": 0.1}, TypeError, r"schedule 'step' takes \['step_size', 'gamma'\]"),
    ("plateau", {"lr": 0.1, "factor": 1.0}, ValueError, r"factor must be in \(0, 1\)"),
    ("plateau", {"lr": 0.1, "monitor": "loss"}, ValueError, "monitor must be a metric"),
])
def test_bad_values(name, kw, exc, match):
    with pytest.raises(exc, match=match):
        schedules.make(name, **kw)


def test_warmup_needs_a_schedule():
    with pytest.raises(TypeError, match="schedule must be a Schedule, got float"):
        Warmup(0.1, 5)


def test_a_schedule_without_its_length_says_what_it_needs_and_takes_it_from_the_run():
    sched = schedules.make("cosine", lr=0.1)
    with pytest.raises(ValueError, match=r"the cosine schedule does not know its length: give "
                                         r"total_steps="):
        sched(0)
    full = sched.with_length(10)
    assert full == schedules.make("cosine", lr=0.1, total_steps=10)
    assert full(5) == pytest.approx(0.05) and full(10) == 0.0
    assert full.with_length(99) is full                      # a given length is kept
    warm = schedules.make("cosine", lr=0.1, warmup_steps=4).with_length(10)
    assert warm.schedule.total_steps == 6 and warm(10) == 0.0
    assert schedules.make("constant", lr=0.1).with_length(3)(7) == 0.1
    assert schedules.make(**sched.config()) == sched         # config() round-trips None
