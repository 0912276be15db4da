"""The online learning rules side by side, each against its own cost formula (docs/online.md).

    python -m benchmarks.online               # configs s, m, l (~6 minutes on a quiet machine)
    python -m benchmarks.online --quick       # config s, fewer repeats (~1 minute)
    python -m benchmarks.online --configs m --threads 2
    python -m benchmarks.online --form online --no-memory      # the _online forms
    python -m benchmarks.online --rules uoro,uoro-fast --configs l --rounds 3

One float32 gradient of one window (forward, loss and the rule's gradient; no update) of a
one-layer tanh many-to-many network with a softmax head, every rule on the same parameters and
batch, the rules taking turns within each round (their order rotating) so that a shared machine's
drifts hit all of them alike:

* ``bptt``      the fast engine, the trainer's path (``TrainConfig(algorithm="bptt")``);
* ``bptt-ref``  the reference engine (:func:`rnnlab.network.value_and_grad`), the same NumPy cell
                the rules below run on;
* ``tbptt``, ``rtrl``, ``uoro``, ``kf_rtrl``, ``snap1``, ``rflo``, ``eprop``: their
  ``value_and_grad`` (the reference rules of :mod:`rnnlab.learning`, on the reference cell);
* ``snap2-sparse``: SnAp-2 on a network whose ``W_hh`` keeps 10 % of its connections;
* ``<rule>-fast``: the same rule as ``fit`` runs it by default (``TrainConfig(engine="fast")``:
  :mod:`rnnlab.fast.rules`, the states from the fast engine's forward pass, the rule's recursion
  on preallocated buffers).

Columns: the median time of a window divided by ``T`` (ms per step); ``x bptt``: that time over
the fast engine's; the leading flops of eq. (56) (docs/derivation.md) per step for the whole
batch, the GFLOP/s they imply and their fraction of the GEMM ceiling (NumPy's float32 matmul at
2048^3 under the same thread cap, measured in the same run); the peak of ``tracemalloc`` during
one call from a fresh start (every array the call makes; the fast engine's buffers are made in
that call) and the entries eq. (56) says the rule keeps, in MiB.  The rules whose work is
element-wise (UORO, SnAp-1) are bound by memory traffic, not by flops: their fraction of
the GEMM ceiling is small by construction; RTRL, KF-RTRL and SnAp-n are GEMMs, and so are e-prop
and RFLO with ``alpha = 1`` (the default: their trace is ``u_t ⊗ f'(Z_t)``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from .step import _cpu_busy, blas_info, gemm_ceiling, others_load

TBPTT_K = 10


@dataclass(frozen=True)
class Config:
    name: str
    B: int
    T: int
    D: int
    H: int
    O: int
    rtrl: bool          # RTRL's (B, |θ|, H) sensitivities fit and finish in seconds


CONFIGS: dict[str, Config] = {
    "s": Config("s", 32, 50, 2, 32, 2, True),       # the size of `rnnlab experiment online-rules`
    "m": Config("m", 32, 50, 16, 64, 10, True),
    "l": Config("l", 64, 50, 32, 128, 10, False),   # RTRL: 4.4 GB and ~17 GFLOP per step
}
REFERENCE = ("rtrl", "uoro", "kf_rtrl", "snap1", "snap2-sparse", "rflo", "eprop")
RULES = ("bptt", "bptt-ref", "tbptt") + REFERENCE + tuple(f"{r}-fast" for r in REFERENCE)
# the algorithm and options fit runs for each rule (the -fast rows: its gradient function with
# the default engine="fast", rnnlab.fast.rules)
ALGORITHM = {"rtrl": ("rtrl", {"max_bytes": None}), "uoro": ("uoro", {}),
             "kf_rtrl": ("kf_rtrl", {}), "snap1": ("snap", {"n": 1}),
             "snap2-sparse": ("snap", {"n": 2}), "rflo": ("rflo", {}), "eprop": ("eprop", {})}


def formula(rule: str, cfg: Config, p: int = 1) -> tuple[float, float, str]:
    """Eq. (56) for the whole batch, per step: ``(flops, entries kept, the formula's text)``."""
    B, T, D, H = cfg.B, cfg.T, cfg.D, cfg.H
    theta = (H + D + 1) * H
    fwd = 2.0 * theta
    # the fast batch forms of the local rules accumulate the window backwards (rnnlab.fast.rules):
    # the forward pass, one product u_tᵀ D_t over the window (2|θ|), SnAp-n's adjoint (2Hp²);
    # they keep the window's states, as BPTT does
    if rule in ("snap1-fast", "rflo-fast", "eprop-fast") and FORM["form"] == "batch":
        return B * (fwd + 2 * theta), B * (T + 1) * H, "4|θ|; (T+1)H (backwards)"
    if rule == "snap2-sparse-fast" and FORM["form"] == "batch":
        return (B * (fwd + 2 * theta + 2.0 * H * p * p), B * ((T + 1) * H + H * p),
                f"4|θ|+2Hp²; (T+1)H+Hp, p={p} (backwards)")
    rule = rule.removesuffix("-fast")
    if rule in ("bptt", "bptt-ref"):
        return B * (fwd + 4 * theta), B * (T + 1) * H, "6|θ|; (T+1)H"
    if rule == "tbptt":
        return B * (fwd + 4 * theta), B * 2 * TBPTT_K * H, f"6|θ|; 2kH, k={TBPTT_K}"
    if rule == "rtrl":
        return (B * (fwd + 2.0 * H * H * (theta + 2 * H)), B * 2.0 * H * (theta + H),
                "2H²(|θ|+2H); 2H|θ|")
    if rule == "uoro":
        return B * (fwd + 2 * theta + 2 * H * H + 4 * theta), B * (2 * theta + 2 * H), \
            "8|θ|+2H²; 2|θ|"
    if rule == "kf_rtrl":
        return B * (fwd + 2.0 * H**3 + 2 * theta), B * (2 * H * H + H + D + 1), "2H³; 2H²"
    if rule == "snap1":
        return B * (fwd + 4 * theta), B * 2 * theta, "6|θ|; 2|θ|"
    if rule == "snap2-sparse":
        return (B * (fwd + 2.0 * theta * p * p), B * 2.0 * theta * p,
                f"2|θ|p²; 2|θ|p, p={p}")
    return B * (fwd + 2 * theta), B * (H + D + 1), "4|θ|; H+D+1"   # e-prop, RFLO with α = 1


def _problem(cfg: Config) -> tuple[Any, dict[str, np.ndarray], np.ndarray, np.ndarray,
                                   np.ndarray]:
    from rnnlab import RNNSpec, init_params

    rng = np.random.default_rng(0)
    spec = RNNSpec(cfg.D, cfg.H, cfg.O, setup="many_to_many")
    params = init_params(spec, rng, dtype=np.float32)
    X = rng.random((cfg.B, cfg.T, cfg.D), dtype=np.float32)
    Y = rng.integers(0, cfg.O, size=(cfg.B, cfg.T))
    conn = rng.random((cfg.H, cfg.H)) < 0.1
    return spec, params, X, Y, conn


FORM = {"form": "batch"}
"""``--form``: ``"batch"`` (one window's gradient) or ``"online"`` (the rule's ``_online`` form:
an SGD step at every step of the window, ``every = 1``)."""


def make(rule: str, cfg: Config) -> tuple[Callable[[], Any], int]:
    """A fresh ``call()`` of one window's gradient by ``rule``, and SnAp's pattern width."""
    if FORM["form"] == "online" and rule.removesuffix("-fast") in REFERENCE:
        return make_online(rule, cfg)
    from rnnlab.learning import eprop, kf_rtrl, rflo, rtrl, snap, tbptt, uoro
    from rnnlab.network import value_and_grad
    from rnnlab.train import TrainConfig
    from rnnlab.train.steps import gradient_function

    spec, params, X, Y, conn = _problem(cfg)
    rng = np.random.default_rng(1)
    p = 1
    fn: Callable[[], Any]
    if rule.endswith("-fast"):
        base = rule.removesuffix("-fast")
        algorithm, options = ALGORITHM[base]
        use = params
        if base == "snap2-sparse":
            use = dict(params)
            use["l0.W_hh"] = params["l0.W_hh"] * conn
            p = int(snap.pattern(conn, 2).sum(axis=1).max())
            options = {**options, "connectivity": conn.tolist()}
        g = gradient_function(TrainConfig(algorithm=algorithm, algorithm_kwargs=options), spec,
                              rng=rng if algorithm in ("uoro", "kf_rtrl") else None)

        def fn() -> Any:
            return g(use, X, Y, spec, None, None, None)
    elif rule == "bptt":
        g = gradient_function(TrainConfig(algorithm="bptt"))

        def fn() -> Any:
            return g(params, X, Y, spec, None, None, None)
    elif rule == "bptt-ref":
        def fn() -> Any:
            return value_and_grad(params, X, Y, spec)
    elif rule == "tbptt":
        def fn() -> Any:
            return tbptt.value_and_grad(params, X, Y, spec, k1=TBPTT_K, k2=TBPTT_K)
    elif rule == "rtrl":
        def fn() -> Any:
            return rtrl.value_and_grad(params, X, Y, spec, max_bytes=None)
    elif rule in ("uoro", "kf_rtrl"):
        mod = uoro if rule == "uoro" else kf_rtrl

        def fn() -> Any:
            return mod.value_and_grad(params, X, Y, spec, rng=rng)
    elif rule == "snap1":
        def fn() -> Any:
            return snap.value_and_grad(params, X, Y, spec, n=1)
    elif rule == "snap2-sparse":
        sparse = dict(params)
        sparse["l0.W_hh"] = params["l0.W_hh"] * conn
        p = int(snap.pattern(conn, 2).sum(axis=1).max())

        def fn() -> Any:
            return snap.value_and_grad(sparse, X, Y, spec, n=2, connectivity=conn)
    elif rule == "rflo":
        def fn() -> Any:
            return rflo.value_and_grad(params, X, Y, spec)
    else:
        def fn() -> Any:
            return eprop.value_and_grad(params, X, Y, spec)
    return fn, p


def make_online(rule: str, cfg: Config) -> tuple[Callable[[], Any], int]:
    """A fresh ``call()`` of the online form of ``rule`` (an SGD step, lr 1e-4, at every step
    of the window; ``-fast``: as fit runs it, :mod:`rnnlab.fast.rules`), and SnAp's width."""
    from rnnlab import optim
    from rnnlab.learning import ONLINE, snap
    from rnnlab.train import TrainConfig
    from rnnlab.train.steps import gradient_function

    spec, params, X, Y, conn = _problem(cfg)
    base = rule.removesuffix("-fast")
    algorithm, options = ALGORITHM[base]
    options = dict(options)
    p = 1
    if base == "snap2-sparse":
        params["l0.W_hh"] = params["l0.W_hh"] * conn
        p = int(snap.pattern(conn, 2).sum(axis=1).max())
        options["connectivity"] = conn.tolist() if rule.endswith("-fast") else conn
    opt = optim.SGD(lr=1e-4)
    state = opt.init(params)
    rng = np.random.default_rng(1)
    if algorithm in ("uoro", "kf_rtrl"):
        options["rng"] = rng
    if rule.endswith("-fast"):
        kw = {k: v for k, v in options.items() if k != "rng"}
        g = gradient_function(TrainConfig(algorithm=algorithm + "_online", algorithm_kwargs=kw),
                              spec, rng=options.get("rng"))
    else:
        g = partial(ONLINE[algorithm + "_online"], **options)

    def fn() -> Any:
        return g(params, X, Y, spec, opt=opt, opt_state=state)
    return fn, p


def peak_bytes(rule: str, cfg: Config) -> int:
    """tracemalloc's peak during the first call of a fresh ``rule`` (inputs excluded)."""
    fn, _ = make(rule, cfg)
    if rule == "bptt":
        fn()                 # compile the kernels first (outside the measurement), then anew
        fn, _ = make(rule, cfg)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@dataclass
class Row:
    config: str
    rule: str
    ms_per_step: float
    flops: float
    entries: float
    text: str
    peak_mib: float | None = None


def time_config(cfg: Config, rules: list[str], rounds: int) -> list[Row]:
    made = {r: make(r, cfg) for r in rules}
    for fn, _ in made.values():
        fn()                                            # warm-up (and compile)
    times: dict[str, list[float]] = {r: [] for r in rules}
    for k in range(rounds):
        order = rules[k % len(rules):] + rules[:k % len(rules)]
        for r in order:
            fn = made[r][0]
            t0 = time.perf_counter()
            fn()
            times[r].append(time.perf_counter() - t0)
    rows = []
    for r in rules:
        flops, entries, text = formula(r, cfg, made[r][1])
        rows.append(Row(cfg.name, r, statistics.median(times[r]) / cfg.T * 1e3, flops, entries,
                        text))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.online", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="s,m,l", help="comma-separated subset of s,m,l")
    ap.add_argument("--rules", default=",".join(RULES),
                    help="comma-separated subset (a rule's '-fast' row: fit's default path, "
                         "rnnlab.fast.rules; without: the reference rule of rnnlab.learning)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads (default 1: stable timings on a shared machine)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7; quick 3)")
    ap.add_argument("--quick", action="store_true", help="config s, 3 rounds")
    ap.add_argument("--form", choices=("batch", "online"), default="batch",
                    help="batch: one window's gradient (default); online: each rule's _online "
                         "form, an SGD step at every step (the bptt rows stay batch)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    args = ap.parse_args(argv)
    names = ["s"] if args.quick else [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in names if c not in CONFIGS]
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    bad += [r for r in rules if r not in RULES]
    if bad:
        ap.error(f"unknown config(s) or rule(s) {bad}; configs {list(CONFIGS)}, rules "
                 f"{list(RULES)}")
    rounds = args.rounds or (3 if args.quick else 7)
    FORM["form"] = args.form
    if args.form == "online":
        rules = [r for r in rules if r != "tbptt"]
    from threadpoolctl import threadpool_limits

    rows: list[Row] = []
    ceilings: list[float] = []
    loads = []
    with threadpool_limits(args.threads, user_api="blas"):
        print(f"rnnlab online rules benchmark ({args.form} form): {args.threads} BLAS "
              f"thread(s), {blas_info()}, {os.cpu_count()} cores; {rounds} rounds", flush=True)
        for name in names:
            cfg = CONFIGS[name]
            use = [r for r in rules if r.removesuffix("-fast") != "rtrl" or cfg.rtrl]
            ceilings += gemm_ceiling()
            t0, busy = time.perf_counter(), _cpu_busy()
            rows += time_config(cfg, use, rounds)
            loads.append(f"{name}: {others_load(busy, time.perf_counter() - t0)}")
            print(f"  config {name} timed", file=sys.stderr, flush=True)
        ceilings += gemm_ceiling()
        if not args.no_memory:
            for row in rows:
                row.peak_mib = peak_bytes(row.rule, CONFIGS[row.config]) / 2**20
    ceiling = float(np.median(ceilings))
    head = ["cfg", "rule", "ms/step", "x bptt", "MFLOP/step", "GFLOP/s", "% ceil",
            "peak MiB", "formula MiB", "formula (flops; entries) per sequence"]
    lines = []
    for name in names:
        by = {r.rule: r for r in rows if r.config == name}
        ref = by.get("bptt")
        for r in by.values():
            gf = r.flops / (r.ms_per_step / 1e3) / 1e9
            lines.append([name, r.rule, f"{r.ms_per_step:.3f}",
                          f"{r.ms_per_step / ref.ms_per_step:.1f}" if ref else "-",
                          f"{r.flops / 1e6:.2f}", f"{gf:.2f}", f"{100 * gf / ceiling:.1f}",
                          "-" if r.peak_mib is None else f"{r.peak_mib:.2f}",
                          f"{r.entries * 4 / 2**20:.2f}", r.text])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    print("-|-".join("-" * w for w in widths))
    for ln in lines:
        print(" | ".join(str(x).ljust(w) for x, w in zip(ln, widths, strict=True)).rstrip())
    print()
    print(f"float32 GEMM ceiling (NumPy matmul 2048^3, {args.threads} thread(s)): {ceiling:.1f} "
          f"GFLOP/s (median; range {min(ceilings):.0f}-{max(ceilings):.0f})")
    for name in names:
        c = CONFIGS[name]
        print(f"  {name}: B={c.B} T={c.T} D={c.D} H={c.H} O={c.O}, |θ| = "
              f"{(c.H + c.D + 1) * c.H}, loss at every step"
              + ("" if c.rtrl else "; no RTRL row (too large)"))
    print("CPU kept busy by other processes while each config was timed (the machine is "
          "shared): " + ", ".join(loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
