"""A whole training run, start to the printed result: rnnlab against PyTorch and Keras
(issues 18, 19).

    python -m benchmarks.train                        # every workload, every peer, 3 repeats
    python -m benchmarks.train --workloads digits --peers torch --repeats 1
    python -m benchmarks.train --quick                # 1 repeat, fewer epochs

Each run is a fresh Python process (so start-up counts: imports, data, model, compilation) that
loads the same arrays through ``rnnlab.data``, trains with the same batch size, learning rate,
epochs, optimizer (Adam) and shuffling every epoch, evaluates the validation split after every
epoch and the test split at the end, and prints its result:

* ``rnnlab``       ``rnnlab.RNN.fit`` with a ``TrainConfig`` (the fast engine, defaults otherwise,
                   but no gradient clipping, as the other loops: ``clip_norm=None``),
                   the kernels prefetched while the data loads (``rnnlab.fast.prefetch()``, as
                   ``rnnlab train`` does);
* ``torch``        the idiomatic loop: ``TensorDataset`` + ``DataLoader(shuffle=True)``,
                   ``nn.RNN(batch_first=True)`` + ``nn.Linear``, ``torch.optim.Adam``,
                   ``F.cross_entropy``, validation under ``torch.no_grad()``;
* ``keras-jax``    Keras 3, ``SimpleRNN`` + ``Dense``, ``model.fit(validation_data=...)`` on the
                   JAX backend; ``keras-torch`` the same on the torch backend.

Every library keeps its own initialiser, so accuracies differ by more than noise only where the
defaults do (docs/results.md compares them under identical weights).  The implementations take
turns (repeat 1: all of them, then repeat 2, ...), each under the same thread budget
(``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``torch.set_num_threads``, XLA's intra-op
threads).  Reported per implementation, medians over the repeats: the whole run's wall time from
spawning the process to its printed result; start-up (from spawning to the first minibatch:
imports, data, model, compilation); the first epoch and the median of the other epochs (each
with its validation); the test accuracy.  Ratios are the peer's time over rnnlab's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

IMPLS = ("rnnlab", "torch", "keras-jax", "keras-torch")


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    dataset: str
    steps: int
    hidden: int
    epochs: int
    batch: int
    lr: float
    quick_epochs: int


WORKLOADS: dict[str, Workload] = {
    "digits": Workload("digits", "digits, the main job's T = 8 cell", "digits", 8, 64, 30, 32,
                       1e-3, 5),
    "digits64": Workload("digits64", "digits one pixel a step, T = 64 (issue 19's second row)",
                         "digits", 64, 64, 30, 32, 1e-3, 3),
    "mnist1d": Workload("mnist1d", "MNIST-1D, T = 40", "mnist1d", 40, 128, 30, 64, 1e-3, 3),
    "fashion": Workload("fashion", "Fashion-MNIST rows, T = 28", "fashion-mnist", 28, 128, 3,
                        128, 1e-3, 1),
}


# ----------------------------------------------------------------------------- the children


def _data(w: Workload) -> Any:
    from rnnlab import data

    return data.load(w.dataset, steps=w.steps, seed=0)


def child_rnnlab(w: Workload, epochs: int, seed: int, marks: dict[str, Any]) -> float:
    import rnnlab
    import rnnlab.fast

    rnnlab.fast.prefetch()      # the compiled kernels load while the data does (docs/training.md)
    ds = _data(w)
    model = rnnlab.RNN.for_dataset(ds, w.hidden, seed=seed)
    cfg = rnnlab.TrainConfig(epochs=epochs, batch_size=w.batch, lr=w.lr, seed=seed,
                             schedule="constant", clip_norm=None, progress="off",
                             health=False)  # as the torch loop
    ends: list[float] = []
    marks["fit"] = time.time()
    h = model.fit(ds, cfg, callback=lambda rec: ends.append(time.time()))
    marks["epochs"] = ends
    assert h.test is not None
    return float(h.test["test_accuracy"])


def child_torch(w: Workload, epochs: int, seed: int, marks: dict[str, Any]) -> float:
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(seed)
    ds = _data(w)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.RNN(ds.input_size, w.hidden, batch_first=True)
            self.fc = nn.Linear(w.hidden, ds.output_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, h_n = self.rnn(x)
            return self.fc(h_n[-1])

    def tensors(split: Any) -> TensorDataset:
        return TensorDataset(torch.from_numpy(split.X), torch.from_numpy(split.y))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=w.lr)
    train = DataLoader(tensors(ds.train), batch_size=w.batch, shuffle=True)
    val = DataLoader(tensors(ds.val), batch_size=256)
    test = DataLoader(tensors(ds.test), batch_size=256)

    def accuracy(loader: DataLoader) -> float:
        net.eval()
        right = total = 0
        with torch.no_grad():
            for x, y in loader:
                right += int((net(x).argmax(1) == y).sum())
                total += len(y)
        net.train()
        return right / total

    marks["fit"] = time.time()
    ends = []
    for _ in range(epochs):
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        accuracy(val)
        ends.append(time.time())
    marks["epochs"] = ends
    return accuracy(test)


def child_keras(w: Workload, epochs: int, seed: int, marks: dict[str, Any]) -> float:
    import keras

    keras.utils.set_random_seed(seed)
    ds = _data(w)
    model = keras.Sequential([keras.Input(ds.train.X.shape[1:]), keras.layers.SimpleRNN(w.hidden),
                              keras.layers.Dense(ds.output_size, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=w.lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            ends.append(time.time())

    marks["fit"] = time.time()
    model.fit(ds.train.X, ds.train.y, batch_size=w.batch, epochs=epochs, shuffle=True,
              validation_data=(ds.val.X, ds.val.y), callbacks=[Clock()], verbose=0)
    marks["epochs"] = ends
    return float(model.evaluate(ds.test.X, ds.test.y, batch_size=256, verbose=0)[1])


CHILDREN = {"rnnlab": child_rnnlab, "torch": child_torch, "keras-jax": child_keras,
            "keras-torch": child_keras}


def run_child(impl: str, w: Workload, epochs: int, seed: int) -> None:
    marks: dict[str, Any] = {}
    acc = CHILDREN[impl](w, epochs, seed, marks)
    print(json.dumps({"accuracy": acc, "fit": marks["fit"], "epochs": marks["epochs"],
                      "done": time.time()}), flush=True)


# ----------------------------------------------------------------------------- the parent


def thread_env(threads: int, keras_backend: str | None = None) -> dict[str, str]:
    """This process's environment for a child held to ``threads`` threads (BLAS, OpenMP,
    XLA on the CPU), with ``KERAS_BACKEND`` when given (also :mod:`benchmarks.results_run`)."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    multi = "true" if threads > 1 else "false"
    env["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={multi} "
                        f"intra_op_parallelism_threads={threads}")
    env["JAX_PLATFORMS"] = "cpu"
    if keras_backend is not None:
        env["KERAS_BACKEND"] = keras_backend
    return env


def measure(impl: str, w: Workload, epochs: int, seed: int, threads: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.train", "--child", impl, "--workloads", w.name,
           "--epochs", str(epochs), "--seed", str(seed)]
    backend = impl.split("-", 1)[1] if impl.startswith("keras") else None
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads, backend),
                         timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"{impl} on {w.name} failed: "
                           + (res.stderr.strip().splitlines() or ["?"])[-1])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    ends = out["epochs"]
    starts = [out["fit"]] + ends[:-1]
    per_epoch = [e - s for s, e in zip(starts, ends, strict=True)]
    return {"total": out["done"] - t0, "startup": out["fit"] - t0, "first": per_epoch[0],
            "epoch": statistics.median(per_epoch[1:]) if len(per_epoch) > 1 else float("nan"),
            "accuracy": out["accuracy"]}


def _available(impl: str) -> str | None:
    import importlib.util

    need = {"torch": ["torch"], "keras-jax": ["keras", "jax"], "keras-torch": ["keras", "torch"]}
    for mod in need.get(impl, []):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install -e '.[bench]')"
    return None


def _fashion_present() -> bool:
    from rnnlab import data

    try:
        data.load("fashion-mnist", steps=28, seed=0)
    except Exception:      # noqa: BLE001 -- any failure to find the files: skip the workload
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--peers", default="torch,keras-jax,keras-torch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="override every workload's epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1 repeat, the quick epochs")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    bad = [n for n in names if n not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s) {bad}; expected some of {list(WORKLOADS)}")
    if args.child:
        w = WORKLOADS[names[0]]
        run_child(args.child, w, args.epochs or w.epochs, args.seed)
        return 0
    threads = args.threads or os.cpu_count() or 1
    impls = ["rnnlab"]
    for p in (p.strip() for p in args.peers.split(",") if p.strip()):
        if p not in IMPLS:
            ap.error(f"unknown peer {p!r}; expected some of {list(IMPLS[1:])}")
        why = _available(p)
        if why:
            print(f"skipping {p}: {why}", file=sys.stderr)
        else:
            impls.append(p)
    repeats = 1 if args.quick else args.repeats
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    print(f"rnnlab whole-run benchmark: {threads} thread(s) each, {repeats} repeat(s), "
          f"{os.cpu_count()} cores", flush=True)
    for name in names:
        w = WORKLOADS[name]
        if w.dataset == "fashion-mnist" and not _fashion_present():
            print(f"skipping {name}: the Fashion-MNIST files are not here (Debian's "
                  "dataset-fashion-mnist, or --data-dir)", file=sys.stderr)
            continue
        epochs = args.epochs or (w.quick_epochs if args.quick else w.epochs)
        for r in range(repeats):
            order = impls[r % len(impls):] + impls[:r % len(impls)]
            for impl in order:
                res = measure(impl, w, epochs, args.seed + r, threads)
                results.setdefault((name, impl), []).append(res)
                print(f"  {name} {impl} repeat {r + 1}: {res['total']:.1f} s, acc "
                      f"{res['accuracy']:.4f}", file=sys.stderr, flush=True)
    _print(results, names, impls, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}/{k[1]}": v for k, v in results.items()}, f, indent=1)
    return 0


def _print(results: dict[tuple[str, str], list[dict[str, float]]], names: list[str],
           impls: list[str], args: Any) -> None:
    def med(name: str, impl: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, impl)])

    head = ["workload", "impl", "total s", "x rnnlab", "start-up s", "epoch 1 s",
            "epoch s (median)", "x rnnlab", "test acc"]
    lines = []
    for name in names:
        if (name, "rnnlab") not in results:
            continue
        for impl in impls:
            tot, ep = med(name, impl, "total"), med(name, impl, "epoch")
            accs = [r["accuracy"] for r in results[(name, impl)]]
            lines.append([name, impl, f"{tot:.1f}",
                          "-" if impl == "rnnlab" else f"{tot / med(name, 'rnnlab', 'total'):.2f}",
                          f"{med(name, impl, 'startup'):.2f}", f"{med(name, impl, 'first'):.2f}",
                          f"{ep:.2f}",
                          "-" if impl == "rnnlab" else f"{ep / med(name, 'rnnlab', 'epoch'):.2f}",
                          f"{statistics.mean(accs):.4f}"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    print()
    print(" | ".join(h.ljust(wd) for h, wd in zip(head, widths, strict=True)).rstrip())
    print("-|-".join("-" * wd for wd in widths))
    for ln in lines:
        print(" | ".join(str(x).ljust(wd) for x, wd in zip(ln, widths, strict=True)).rstrip())
    print("x rnnlab = the peer's time over rnnlab's (> 1: rnnlab is faster); medians over the "
          "repeats; test acc: mean")
    for name in names:
        w = WORKLOADS[name]
        print(f"  {name}: {w.title}; H={w.hidden}, batch {w.batch}, Adam lr {w.lr}, "
              f"{args.epochs or (w.quick_epochs if args.quick else w.epochs)} epochs")


if __name__ == "__main__":
    sys.exit(main())
