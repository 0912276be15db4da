"""One float32 training step of rnnlab against PyTorch and JAX, on the CPU (issue 6).

    python -m benchmarks.step                       # every config, every peer (~6 minutes)
    python -m benchmarks.step --quick               # fewer steps, no memory column (~2 minutes)
    python -m benchmarks.step --configs a,b --peers torch --threads 1

A training step is forward, softmax cross-entropy, backpropagation through time and an SGD update
of every parameter, in float32, one Elman layer (tanh) and a linear head:

* ``rnnlab``      the fast engine, :class:`rnnlab.fast.workspace.Workspace` + ``opt.update_``
                  (with the compiled loops when numba is installed, ``rnnlab[fast]``);
* ``rnnlab-api``  the three public calls, ``forward`` + ``loss_and_grad`` + ``backward``, then
                  ``opt.update_``, with no workspace (what the library did before issue 6);
* ``torch``       ``torch.nn.RNN`` + ``nn.Linear``, eager, ``F.cross_entropy``, ``torch.optim.SGD``;
* ``jax``         one ``jax.jit`` of ``value_and_grad`` over a ``lax.scan`` recurrence and the
                  SGD update, parameters donated.
* ``keras``       Keras 3 on its JAX backend (its fastest here), ``SimpleRNN`` + ``Dense``,
                  ``train_on_batch`` with ``SGD`` (a compiled train step, as Keras users run it);
                  ``pip install keras`` (the ``bench`` extra).  One backend per process: the
                  torch backend is measured by ``python -m benchmarks.train``.

Every implementation starts from the same float32 parameters and trains on the same fixed batch.
Steps are timed one by one and the implementations alternate within each round (their order
rotating), so slow drifts of a shared machine hit all of them alike; the table gives medians.
All run under the same thread budget: NumPy's BLAS is capped with threadpoolctl, PyTorch with
``torch.set_num_threads``, XLA with its intra-op flag.

FLOPs (GEMMs only, the issue's formula): forward ``F = 2BT(DH + H^2) + 2BHC x (T or 1)``, a
training step counted as ``3F``; GFLOP/s = ``3F / median step time``.  The GEMM ceiling is NumPy's
float32 ``matmul`` at 2048^3 under the same thread cap, measured in the same run.

Peak memory is measured in a fresh child process per (config, implementation): resident set
after the set-up (imports, data, parameters, model, JAX's ahead-of-time compile), then the peak
resident set over one warm-up and three steps (Linux ``/proc/self/clear_refs`` resets the peak);
the column is the difference, so it counts everything a step allocates and keeps (workspaces,
caches, autograd graphs) and nothing that was there before the first step.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LR = 0.01
IMPLS = ("rnnlab", "rnnlab-api", "torch", "torch-bf", "jax", "keras")
TBPTT_K = 25                  # k1 = k2: the windows tile T, so each step is backpropagated once


@dataclass(frozen=True)
class Config:
    name: str
    title: str
    B: int
    T: int
    D: int          # input features, or the vocabulary for index inputs
    H: int
    C: int
    every_step: bool  # loss at every step (many-to-many) instead of the last one
    index: bool       # integer ids as input
    layers: int = 1
    bidirectional: bool = False
    dtype: str = "float32"

    def flops(self) -> float:
        """Forward GEMM FLOPs ``F = 2BT(DH + H^2) + 2BHC x (T or 1)`` for one layer; with
        ``L`` layers and ``n`` directions, ``F = 2BTn(DH + H^2) + (L-1) 2BTn(nH H + H^2) +
        2B nH C x (T or 1)``."""
        B, T, D, H, C = self.B, self.T, self.D, self.H, self.C
        n = 2 if self.bidirectional else 1
        f = 2.0 * B * T * n * (D * H + H * H)
        f += (self.layers - 1) * 2.0 * B * T * n * (n * H * H + H * H)
        return f + 2.0 * B * n * H * C * (T if self.every_step else 1)

    @property
    def single(self) -> bool:
        """One float32 layer, one direction: the configs every peer implements."""
        return self.layers == 1 and not self.bidirectional and self.dtype == "float32"


CONFIGS: dict[str, Config] = {
    "a": Config("a", "row MNIST", 128, 28, 28, 128, 10, False, False),
    "b": Config("b", "pixel MNIST", 128, 784, 1, 128, 10, False, False),
    "c": Config("c", "char LM", 32, 100, 65, 256, 65, True, True),
    "d": Config("d", "large", 256, 50, 64, 512, 10, False, False),
    # for the RTRL row (RTRL's sensitivities are (B, |theta|, H): row MNIST at H = 128 would
    # need 2.6 GB and ~2.4 TFLOP per step)
    "r": Config("r", "RTRL-sized row MNIST", 16, 28, 28, 32, 10, False, False),
    # stacked, bidirectional and float64 (issue 18): rnnlab against nn.RNN in both layouts
    "a2": Config("a2", "row MNIST, 2 layers", 128, 28, 28, 128, 10, False, False, layers=2),
    "a3": Config("a3", "row MNIST, 3 layers", 128, 28, 28, 128, 10, False, False, layers=3),
    "ab": Config("ab", "row MNIST, bidirectional", 128, 28, 28, 128, 10, False, False,
                 bidirectional=True),
    "ab2": Config("ab2", "row MNIST, 2 bidirectional layers", 128, 28, 28, 128, 10, False, False,
                  layers=2, bidirectional=True),
    "a64": Config("a64", "row MNIST, float64", 128, 28, 28, 128, 10, False, False,
                  dtype="float64"),
}
MAIN_CONFIGS = ("a", "b", "c", "d")
LAYOUT_CONFIGS = ("a2", "a3", "ab", "ab2", "a64")
# the peers of the layout rows: nn.RNN time first and with batch_first=True (JAX's and Keras's
# implementations here are one float32 layer)
LAYOUT_PEERS = ("torch", "torch-bf")
# the other gradient algorithms: (config, implementation)
# (full BPTT on the Workspace is timed again next to them: the "x BPTT" column's reference)
ALGO_ROWS = (("c", "rnnlab"), ("c", "tbptt-fast"), ("c", "tbptt"), ("r", "rnnlab"),
             ("r", "rtrl-fast"), ("r", "rtrl"))


def rtrl_rows(cfg: Config) -> int:
    """Sensitivity rows R = DH + H^2 + H + H (weights, bias, h0) of one layer (rtrl.layout)."""
    return cfg.D * cfg.H + cfg.H * cfg.H + 2 * cfg.H


def step_flops(cfg: Config, impl: str) -> tuple[float, str]:
    """FLOPs of one training step of ``impl`` and the formula used."""
    if impl in ("rtrl", "rtrl-fast"):   # eq. (34): one (B R, H) x (H, H) GEMM per step
        R = rtrl_rows(cfg)
        return (cfg.flops() + 2.0 * cfg.B * cfg.T * R * cfg.H * cfg.H,
                f"F + 2BT R H^2, R = DH + H^2 + 2H = {R}")
    return 3 * cfg.flops(), "3F"


# ----------------------------------------------------------------------------- problems


def _problem(cfg: Config, seed: int = 0) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(spec, X, Y, params): X batch first, float32 parameters from rnnlab's initialiser."""
    import numpy as np

    from rnnlab import RNNSpec, init_params

    rng = np.random.default_rng(seed)
    spec = RNNSpec(cfg.D, cfg.H, cfg.C, setup="many_to_many" if cfg.every_step else "many_to_one",
                   input_kind="index" if cfg.index else "dense", num_layers=cfg.layers,
                   bidirectional=cfg.bidirectional)
    params = init_params(spec, rng, dtype=cfg.dtype)
    X: Any
    if cfg.index:
        X = rng.integers(0, cfg.D, size=(cfg.B, cfg.T))
        Y = rng.integers(0, cfg.C, size=(cfg.B, cfg.T))
    else:
        X = rng.random((cfg.B, cfg.T, cfg.D)).astype(cfg.dtype)
        Y = rng.integers(0, cfg.C, size=cfg.B)
    return spec, X, Y, params


Step = Callable[[], float]


def _sgd_step(cfg: Config, make: Callable[[Any], Callable[..., tuple[float, Any]]]) -> Step:
    """A step of rnnlab: ``grads = make(spec)`` at set-up, then per step
    ``grads(params, X, Y) -> (loss, gradient dict)`` and an SGD update."""
    from rnnlab import optim

    spec, X, Y, params = _problem(cfg)
    opt = optim.make("sgd", lr=LR)
    state = opt.init(params)
    grads = make(spec)

    def step() -> float:
        loss, g = grads(params, X, Y)
        opt.update_(params, g, state)
        return loss

    return step


def make_rnnlab(cfg: Config, threads: int) -> Step:
    from rnnlab import Workspace

    spaces: list[Any] = []

    def make(spec: Any) -> Callable[..., tuple[float, Any]]:
        spaces.append(Workspace(spec))       # made (and its kernels compiled) at set-up
        return spaces[0].value_and_grad

    step = _sgd_step(cfg, make)

    def note() -> str:
        ws = spaces[0]
        c = ws.thread_choice
        if c is None:
            return ""
        how = "compiled" if ws.compiled else "NumPy"
        if c.split > 1:
            return f"{how} loops, batch split over {c.split} threads, 1 BLAS thread each"
        return f"{how} loops, {c.loop} BLAS thread(s) in the loops, {c.rest} elsewhere"

    step.note = note   # type: ignore[attr-defined]
    return step


def make_rnnlab_api(cfg: Config, threads: int) -> Step:
    from rnnlab import network as net

    def make(spec: Any) -> Callable[..., tuple[float, Any]]:
        def grads(params: Any, X: Any, Y: Any) -> tuple[float, Any]:
            out, cache = net.forward(params, X, spec)
            res = net.loss_and_grad(spec, out, Y)
            return res.value, net.backward(params, res.dz, cache).params
        return grads

    return _sgd_step(cfg, make)


def make_torch(cfg: Config, threads: int, batch_first: bool = False) -> Step:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from rnnlab.interop.torch import to_torch_state_dict

    torch.set_num_threads(threads)
    spec, X, Y, params = _problem(cfg)
    dt = torch.float64 if cfg.dtype == "float64" else torch.float32
    rnn = nn.RNN(cfg.D, cfg.H, num_layers=cfg.layers, nonlinearity="tanh",
                 bidirectional=cfg.bidirectional, batch_first=batch_first, dtype=dt)
    n = 2 if cfg.bidirectional else 1
    fc = nn.Linear(n * cfg.H, cfg.C, dtype=dt)
    # our b_h is PyTorch's bias_ih + bias_hh (rnnlab.interop.torch)
    sd = to_torch_state_dict(params, spec, rnn_prefix="", head_prefix="fc.")
    rnn.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items() if not k.startswith("fc.")})
    fc.load_state_dict({k[3:]: torch.from_numpy(v) for k, v in sd.items() if k.startswith("fc.")})
    if cfg.index:   # nn.RNN reads vectors: one-hot rows, made once outside the step
        onehot = np.eye(cfg.D, dtype=cfg.dtype)
        x = torch.from_numpy(onehot[X] if batch_first else onehot[X.T])   # (B, T, V) / (T, B, V)
        y = torch.from_numpy(np.ascontiguousarray(Y if batch_first else Y.T)).reshape(-1)
    else:
        x = torch.from_numpy(np.ascontiguousarray(X if batch_first else X.transpose(1, 0, 2)))
        y = torch.from_numpy(Y)
    opt = torch.optim.SGD(list(rnn.parameters()) + list(fc.parameters()), lr=LR)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        seq, h_n = rnn(x)
        if cfg.every_step:
            loss = F.cross_entropy(fc(seq).reshape(-1, cfg.C), y)
        else:
            # the top layer's final states: forwards at t = T-1, backwards at t = 0 (h_n)
            top = torch.cat([h_n[-n + i] for i in range(n)], dim=-1) if n == 2 else h_n[-1]
            loss = F.cross_entropy(fc(top), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def make_torch_bf(cfg: Config, threads: int) -> Step:
    """``nn.RNN(batch_first=True)`` (inputs ``(B, T, D)``, as rnnlab's)."""
    return make_torch(cfg, threads, batch_first=True)


def make_jax(cfg: Config, threads: int) -> Step:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    spec, X, Y, params = _problem(cfg)
    p0 = {"W_xh": params["l0.W_xh"], "W_hh": params["l0.W_hh"], "b_h": params["l0.b_h"],
          "W_hy": params["W_hy"], "b_y": params["b_y"]}
    p = {k: jnp.asarray(v) for k, v in p0.items()}
    if cfg.index:
        x = jnp.asarray(np.ascontiguousarray(X.T).astype(np.int32))               # (T, B)
        y = jnp.asarray(np.ascontiguousarray(Y.T).astype(np.int32))               # (T, B)
    else:
        x = jnp.asarray(np.ascontiguousarray(X.transpose(1, 0, 2)))               # (T, B, D)
        y = jnp.asarray(Y.astype(np.int32))

    def loss_fn(p: dict[str, Any], x: Any, y: Any) -> Any:
        A = (p["W_xh"][x] if cfg.index else x @ p["W_xh"]) + p["b_h"]              # (T, B, H)

        def body(h: Any, a: Any) -> tuple[Any, Any]:
            h = jnp.tanh(a + h @ p["W_hh"])
            return h, (h if cfg.every_step else None)

        h_last, hs = lax.scan(body, jnp.zeros((cfg.B, cfg.H), jnp.float32), A)
        logits = (hs if cfg.every_step else h_last) @ p["W_hy"] + p["b_y"]
        logits = logits.reshape(-1, cfg.C)
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, y.reshape(-1, 1), axis=-1)[:, 0]
        return jnp.mean(lse - picked)

    def train(p: dict[str, Any], x: Any, y: Any) -> tuple[dict[str, Any], Any]:
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        return jax.tree.map(lambda a, b: a - LR * b, p, g), loss

    compiled = jax.jit(train, donate_argnums=0).lower(p, x, y).compile()
    box = [p]

    def step() -> float:
        box[0], loss = compiled(box[0], x, y)
        jax.block_until_ready(box[0])
        return float(loss)

    return step


def make_keras(cfg: Config, threads: int) -> Step:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    import numpy as np

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"keras runs on {keras.backend.backend()!r} in this process; the step "
                           "benchmark measures its JAX backend (KERAS_BACKEND=jax)")
    spec, X, Y, params = _problem(cfg)
    D = cfg.D
    rnn = keras.layers.SimpleRNN(cfg.H, return_sequences=cfg.every_step)
    head = keras.layers.Dense(cfg.C)
    model = keras.Sequential([keras.Input((cfg.T, D)), rnn, head])
    rnn.set_weights([params["l0.W_xh"], params["l0.W_hh"], params["l0.b_h"]])   # x @ kernel
    head.set_weights([params["W_hy"], params["b_y"]])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # index inputs as one-hot rows, made once outside the step (as for torch)
    x = np.eye(D, dtype=np.float32)[X] if cfg.index else X
    y = Y

    def step() -> float:
        return float(model.train_on_batch(x, y))

    return step


def make_tbptt(cfg: Config, threads: int) -> Step:
    from rnnlab import tbptt

    def make(spec: Any) -> Callable[..., tuple[float, Any]]:
        def grads(params: Any, X: Any, Y: Any) -> tuple[float, Any]:
            loss, g, _ = tbptt.value_and_grad(params, X, Y, spec, k1=TBPTT_K, k2=TBPTT_K)
            return loss, g.params
        return grads

    return _sgd_step(cfg, make)


def make_tbptt_fast(cfg: Config, threads: int) -> Step:
    """Truncated BPTT on the fast engine: :meth:`rnnlab.Workspace.truncated_value_and_grad`
    with the windows of :func:`rnnlab.learning.tbptt.scored_windows`."""
    from rnnlab import Workspace
    from rnnlab.learning.tbptt import scored_windows

    def make(spec: Any) -> Callable[..., tuple[float, Any]]:
        ws = Workspace(spec)                 # made (and its kernels loaded) at set-up
        wins = scored_windows(cfg.T, TBPTT_K, TBPTT_K, spec)

        def grads(params: Any, X: Any, Y: Any) -> tuple[float, Any]:
            return ws.truncated_value_and_grad(params, X, Y, wins)
        return grads

    return _sgd_step(cfg, make)


def make_rtrl(cfg: Config, threads: int) -> Step:
    from rnnlab import rtrl

    def make(spec: Any) -> Callable[..., tuple[float, Any]]:
        def grads(params: Any, X: Any, Y: Any) -> tuple[float, Any]:
            loss, g, _ = rtrl.value_and_grad(params, X, Y, spec)
            return loss, g.params
        return grads

    return _sgd_step(cfg, make)


def make_rtrl_fast(cfg: Config, threads: int) -> Step:
    """RTRL as fit runs it by default (rnnlab.fast.rules: the states from the Workspace's
    forward pass, the sensitivities on buffers)."""
    from rnnlab.fast.rules import FastRule

    def make(spec: Any) -> Callable[..., tuple[float, Any]]:
        rule = FastRule(spec, "rtrl")

        def grads(params: Any, X: Any, Y: Any) -> tuple[float, Any]:
            loss, g, _ = rule.value_and_grad(params, X, Y)
            return loss, g.params
        return grads

    return _sgd_step(cfg, make)


MAKERS: dict[str, Callable[[Config, int], Step]] = {
    "rnnlab": make_rnnlab, "rnnlab-api": make_rnnlab_api, "torch": make_torch,
    "torch-bf": make_torch_bf, "jax": make_jax, "keras": make_keras, "tbptt": make_tbptt,
    "tbptt-fast": make_tbptt_fast, "rtrl": make_rtrl, "rtrl-fast": make_rtrl_fast,
}


# ----------------------------------------------------------------------------- machinery


def _set_jax_threads(threads: int) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        multi = "true" if threads > 1 else "false"
        os.environ["XLA_FLAGS"] = (flags + f" --xla_cpu_multi_thread_eigen={multi}"
                                   f" intra_op_parallelism_threads={threads}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _available(impl: str) -> str | None:
    """None when ``impl`` can run here, else why not."""
    import importlib.util

    mod = {"torch": "torch", "torch-bf": "torch", "jax": "jax", "keras": "keras",
           "tbptt": "rnnlab.learning.tbptt", "rtrl": "rnnlab.learning.rtrl",
           "rtrl-fast": "rnnlab.fast.rules"}.get(impl)
    if mod is not None and importlib.util.find_spec(mod) is None:
        if mod.startswith("rnnlab."):
            return f"{mod} does not exist in this rnnlab"
        return f"{mod} is not installed (pip install -e '.[bench]')"
    return None


def gemm_ceiling(reps: int = 5, n: int = 2048) -> list[float]:
    """GFLOP/s of NumPy's float32 matmul at n^3, one sample per repetition."""
    import numpy as np

    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        out.append(2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
    return out


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(impl: str, cfg: Config, threads: int) -> None:
    """Child process: print the peak resident memory (MiB) one training step adds."""
    import ctypes

    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads, user_api="blas"):
        step = MAKERS[impl](cfg, threads)
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        base = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                      # reset VmHWM to the current RSS
        for _ in range(4):
            step()
        peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - base) / 1024.0}))


def measure_memory(impl: str, cfg: Config, threads: int) -> float | None:
    cmd = [sys.executable, "-m", "benchmarks.step", "--memory-child", impl,
           "--configs", cfg.name, "--threads", str(threads)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
        return float(json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError, OSError) as e:
        print(f"  (memory of {impl} on {cfg.name} not measured: {e})", file=sys.stderr)
        return None


@dataclass
class Row:
    config: str
    impl: str
    median_s: float
    seq_per_s: float
    gflops: float
    frac_ceiling: float
    peak_mib: float | None
    n: int
    formula: str
    note: str = ""


def time_config(cfg: Config, impls: list[str], threads: int, steps: int, warmup: int,
                block: int, settle: float = 0.0) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Per implementation, the times of ``steps`` single steps, and a note on each.

    The implementations take turns in blocks of ``block`` timed steps, each block preceded by an
    optional pause of ``settle`` seconds and one untimed step (the previous implementation's
    threads may still be spinning, caches hold its data); the order rotates every round.  The
    default is no pause: on this VM a core left idle for 50 ms or more runs slower for the next
    tens of milliseconds (docs/performance.md), which would be charged to whoever runs next.
    """
    runners = {name: MAKERS[name](cfg, threads) for name in impls}
    for step in runners.values():
        time.sleep(settle)
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in impls}
    rounds = -(-steps // block)
    for r in range(rounds):
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for name in order:
            step = runners[name]
            time.sleep(settle)
            step()
            for _ in range(block):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
    notes = {name: str(getattr(step, "note", lambda: "")()) for name, step in runners.items()}
    return times, notes


def _cpu_busy() -> tuple[float, float] | None:
    """(seconds of busy CPU time on the whole machine, seconds used by this process)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)   # minus idle, iowait
    t = os.times()
    return busy / hz, t.user + t.system


def others_load(start: tuple[float, float] | None, seconds: float) -> str:
    """How many cores other processes kept busy on average since ``start``."""
    end = _cpu_busy()
    if start is None or end is None or seconds <= 0:
        return "unknown"
    return f"{max(0.0, (end[0] - start[0]) - (end[1] - start[1])) / seconds:.2f} cores"


def blas_info() -> str:
    from threadpoolctl import threadpool_info

    parts = []
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            parts.append(f"{lib.get('internal_api')} {lib.get('version')} "
                         f"kernel {lib.get('architecture')}")
    return "; ".join(parts) or "unknown BLAS"


def _reexec_without_openblas_coretype() -> None:
    """OPENBLAS_CORETYPE/L2_SIZE (set on some machines for old OpenBLAS builds) slow down a
    current NumPy: drop both for this command alone (see the environment notes)."""
    if any(k in os.environ for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        env["RNNLAB_BENCH_DROPPED_OPENBLAS_ENV"] = "1"
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.step", *sys.argv[1:]], env)


def _rows(cfg: Config, impls: list[str], times: dict[str, list[float]],
          notes: dict[str, str]) -> list[Row]:
    out = []
    for name in impls:
        med = statistics.median(times[name])
        flops, formula = step_flops(cfg, name)
        out.append(Row(cfg.name, name, med, cfg.B / med, flops / med / 1e9, 0.0, None,
                       len(times[name]), formula, notes.get(name, "")))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.step", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(MAIN_CONFIGS),
                    help="comma-separated subset of a,b,c,d (and r, RTRL's small config); "
                         "'none' for none")
    ap.add_argument("--peers", default="torch,jax,keras",
                    help="comma-separated peers besides rnnlab (torch, jax, keras, rnnlab-api); "
                         "'none' for none")
    ap.add_argument("--threads", type=int, default=None,
                    help="thread budget for every implementation (default: all cores)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per implementation (default 20; --quick 6)")
    ap.add_argument("--warmup", type=int, default=30,
                    help="untimed steps first (default 30: rnnlab's thread tuner settles in 27)")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds of pause before each block (default 0; see docs/performance.md)")
    ap.add_argument("--quick", action="store_true", help="fewer steps and no memory column")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    ap.add_argument("--no-algos", action="store_true",
                    help="skip the truncated BPTT and RTRL rows")
    ap.add_argument("--layouts", default=",".join(LAYOUT_CONFIGS),
                    help="the stacked / bidirectional / float64 configs timed against nn.RNN in "
                         f"both layouts (default {','.join(LAYOUT_CONFIGS)}; 'none' for none)")
    ap.add_argument("--keep-openblas-env", action="store_true",
                    help="do not drop OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for the run")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if not args.keep_openblas_env:
        _reexec_without_openblas_coretype()
    threads = args.threads or os.cpu_count() or 1
    _set_jax_threads(threads)
    names = [] if args.configs == "none" else [c.strip() for c in args.configs.split(",")
                                                if c.strip()]
    bad = [c for c in names if c not in CONFIGS or c in LAYOUT_CONFIGS]
    if bad:
        ap.error(f"unknown config(s) {bad}; expected a subset of {list(CONFIGS)}")
    cfgs = [CONFIGS[c] for c in names]
    lnames = [] if args.layouts == "none" else [c.strip() for c in args.layouts.split(",")
                                                  if c.strip()]
    bad = [c for c in lnames if c not in LAYOUT_CONFIGS]
    if bad:
        ap.error(f"unknown layout config(s) {bad}; expected a subset of {list(LAYOUT_CONFIGS)}")

    if args.memory_child:
        _memory_child(args.memory_child, cfgs[0], threads)
        return 0

    peers = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in IMPLS or p == "rnnlab"]
    if unknown:
        ap.error(f"unknown peer(s) {unknown}; expected some of torch, jax, keras, rnnlab-api")
    impls = ["rnnlab"]
    for p in peers:
        why = _available(p)
        if why:
            print(f"skipping {p}: {why}", file=sys.stderr)
        else:
            impls.append(p)
    algos: list[tuple[str, str]] = []
    if not args.no_algos:
        for c, impl in ALGO_ROWS:
            why = _available(impl)
            if why:
                print(f"skipping the {impl} row: {why}", file=sys.stderr)
            elif c in names or c == "r":
                algos.append((c, impl))
    steps = args.steps or (6 if args.quick else 20)
    block = 3 if args.quick else 4
    memory = not (args.quick or args.no_memory)

    import numpy as np
    from threadpoolctl import threadpool_limits

    rows: list[Row] = []
    algo_rows: list[Row] = []
    ceilings: list[float] = []
    with threadpool_limits(threads, user_api="blas"):
        print(f"rnnlab benchmark: {threads} thread(s) for every implementation, {blas_info()}, "
              f"{os.cpu_count()} cores; steps={steps} warmup={args.warmup}", flush=True)
        if os.environ.get("RNNLAB_BENCH_DROPPED_OPENBLAS_ENV"):
            print("(OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE dropped for this run)")
        loads = []
        for cfg in cfgs:
            ceilings += gemm_ceiling()
            t0, busy0 = time.perf_counter(), _cpu_busy()
            times, notes = time_config(cfg, impls, threads, steps, args.warmup, block,
                                       args.settle)
            rows += _rows(cfg, impls, times, notes)
            loads.append(f"{cfg.name}: {others_load(busy0, time.perf_counter() - t0)}")
            print(f"  config {cfg.name} timed", file=sys.stderr, flush=True)
        layout_impls = ["rnnlab"] + [p for p in LAYOUT_PEERS if _available(p) is None]
        layout_rows: list[Row] = []
        if len(layout_impls) > 1:
            for c in lnames:
                cfg = CONFIGS[c]
                times, notes = time_config(cfg, layout_impls, threads, steps, args.warmup,
                                           block, args.settle)
                layout_rows += _rows(cfg, layout_impls, times, notes)
                print(f"  config {c} timed", file=sys.stderr, flush=True)
        elif lnames:
            print("skipping the layout rows: torch is not installed", file=sys.stderr)
        by_cfg: dict[str, list[str]] = {}
        for c, impl in algos:
            by_cfg.setdefault(c, []).append(impl)
        for c, algo_impls in by_cfg.items():
            cfg = CONFIGS[c]
            times, notes = time_config(cfg, algo_impls, threads, max(6, steps // 2),
                                       args.warmup, block, args.settle)
            algo_rows += _rows(cfg, algo_impls, times, notes)
            print(f"  {', '.join(algo_impls)} on config {c} timed", file=sys.stderr, flush=True)
        ceilings += gemm_ceiling()
    ceiling = float(np.median(ceilings))
    for row in rows + algo_rows + layout_rows:
        row.frac_ceiling = row.gflops / ceiling
    if memory:
        for row in rows + algo_rows:
            row.peak_mib = measure_memory(row.impl, CONFIGS[row.config], threads)
    print_table(rows, [c for c in cfgs], impls, ceiling, threads, min(ceilings), max(ceilings))
    print("CPU kept busy by other processes while each config was timed (the machine is shared): "
          + ", ".join(loads))
    if layout_rows:
        print()
        print("Stacked, bidirectional and float64 (rnnlab against nn.RNN time first and with "
              "batch_first=True; same thread budget, SGD step):")
        lcfgs = [CONFIGS[c] for c in lnames]
        print_table(layout_rows, lcfgs, layout_impls, ceiling, threads, min(ceilings),
                    max(ceilings), legend=False)
    if algo_rows:
        print_algos(algo_rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": threads, "ceiling_gflops": ceiling, "ceiling_samples": ceilings,
                       "blas": blas_info(),
                       "rows": [r.__dict__ for r in rows + algo_rows + layout_rows]},
                      f, indent=1)
    return 0


def _fmt_table(head: list[str], lines: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    print("-|-".join("-" * w for w in widths))
    for ln in lines:
        print(" | ".join(str(x).ljust(w) for x, w in zip(ln, widths, strict=True)).rstrip())


def _mib(r: Row) -> str:
    return "-" if r.peak_mib is None else f"{r.peak_mib:.1f}"


def print_table(rows: list[Row], cfgs: list[Config], impls: list[str], ceiling: float,
                threads: int, lo: float, hi: float, legend: bool = True) -> None:
    peers = [i for i in impls if i != "rnnlab"]
    head = ["cfg", "impl", "seq/s", *[f"x {p}" for p in peers], "ms/step", "GFLOP/s",
            "% ceil", "peak MiB"]
    lines = []
    notes = []
    for cfg in cfgs:
        by = {r.impl: r for r in rows if r.config == cfg.name}
        for name in impls:
            r = by[name]
            ratios = [f"{r.seq_per_s / by[p].seq_per_s:.2f}" if p != name else "-" for p in peers]
            lines.append([cfg.name, name, f"{r.seq_per_s:,.0f}", *ratios,
                          f"{r.median_s * 1e3:.2f}", f"{r.gflops:.1f}",
                          f"{100 * r.frac_ceiling:.0f}", _mib(r)])
            if r.note:
                notes.append(f"  {cfg.name} {name}: {r.note}")
    print()
    _fmt_table(head, lines)
    print()
    if legend:
        print(f"float32 GEMM ceiling (NumPy matmul 2048^3, {threads} thread(s)): {ceiling:.1f} "
              f"GFLOP/s (median of the run's samples; range {lo:.0f}-{hi:.0f})")
        print("seq/s = B / median step time; x peer = this row's seq/s over the peer's; "
              "GFLOP/s = 3F / median step, F = 2BT(DH + H^2) + 2BHC x (T or 1)")
    else:
        print("torch = nn.RNN time first (T, B, D); torch-bf = nn.RNN(batch_first=True); F for "
              "L layers, n directions: 2BTn(DH + H^2) + (L-1) 2BTn(nH H + H^2) + 2BnHC")
    for cfg in cfgs:
        extra = (f", {cfg.layers} layers" if cfg.layers > 1 else "") + \
            (", bidirectional" if cfg.bidirectional else "") + \
            (f", {cfg.dtype}" if cfg.dtype != "float32" else "")
        print(f"  {cfg.name} {cfg.title}: B={cfg.B} T={cfg.T} D={cfg.D} H={cfg.H} C={cfg.C}, "
              f"{'loss at every step' if cfg.every_step else 'loss at the last step'}"
              f"{', index input' if cfg.index else ''}{extra}; "
              f"3F = {3 * cfg.flops() / 1e9:.3f} GFLOP")
    if notes:
        print("rnnlab's thread choice (the Workspace's tuner):")
        print("\n".join(notes))


def print_algos(rows: list[Row]) -> None:
    print()
    print("Other gradient algorithms (rnnlab only), same thread budget and SGD step:")
    head = ["cfg", "algorithm", "seq/s", "x BPTT", "ms/step", "GFLOP/s", "% ceil", "peak MiB",
            "FLOP formula"]
    names = {"tbptt": f"truncated BPTT k1=k2={TBPTT_K} (tbptt.value_and_grad)",
             "tbptt-fast": f"truncated BPTT k1=k2={TBPTT_K} (Workspace)", "rtrl": "RTRL",
             "rtrl-fast": "RTRL (fast.rules)",
             "rnnlab": "BPTT (Workspace)"}
    full = {r.config: r.seq_per_s for r in rows if r.impl == "rnnlab"}
    lines = [[r.config, names.get(r.impl, r.impl), f"{r.seq_per_s:,.0f}",
              f"{r.seq_per_s / full[r.config]:.2f}" if r.config in full else "-",
              f"{r.median_s * 1e3:.2f}", f"{r.gflops:.1f}", f"{100 * r.frac_ceiling:.0f}",
              _mib(r), r.formula] for r in rows]
    _fmt_table(head, lines)
    print("x BPTT = this row's seq/s over full BPTT's on the same config, timed in the same "
          "rounds")
    for c in dict.fromkeys(r.config for r in rows):
        cfg = CONFIGS[c]
        print(f"  {c} {cfg.title}: B={cfg.B} T={cfg.T} D={cfg.D} H={cfg.H} C={cfg.C}")


if __name__ == "__main__":
    sys.exit(main())
