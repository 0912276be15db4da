"""Inference time of one network three ways: rnnlab's forward, its ONNX export in ONNX Runtime,
its PyTorch module (docs/interop.md).

    python -m benchmarks.inference              # three sizes, one thread each, ~20 s
    python -m benchmarks.inference --threads 2

A one-layer tanh many-to-one classifier (``O = 10``), float32: the median wall time of one call
(forward only) of :func:`rnnlab.forward`, of ``InferenceSession.run`` on the file
:func:`rnnlab.interop.onnx.export` wrote, and of the :func:`rnnlab.interop.torch.to_torch` module
under ``torch.no_grad()``; the ratio columns divide by rnnlab's time.  Every runtime gets the same
number of threads (BLAS through threadpoolctl, ``intra_op_num_threads``, ``torch.set_num_threads``).
Needs ``onnxruntime``, ``onnx`` and ``torch``.

Two more modes (issue 18), each against an idiomatic PyTorch loop with the same weights and the
same thread count:

    python -m benchmarks.inference --mode predict    # predict / evaluate throughput
    python -m benchmarks.inference --mode sample     # character sampling, tokens/s
    python -m benchmarks.inference --mode all

* ``predict``: class ids of a test set (``B`` sequences, in batches of 1024 as
  :meth:`rnnlab.RNN.predict` takes them) by ``RNN.predict(engine="reference")`` (the reference
  forward pass), by ``RNN.predict`` (its default, the fast engine), by the fast engine's forward
  pass alone (:meth:`rnnlab.Workspace.forward` + argmax, what fit's validation runs) and by
  ``nn.RNN(batch_first=True)`` + ``nn.Linear`` under ``torch.no_grad()`` (``DataLoader``-free:
  the same batches); sequences/s, medians.
* ``sample``: a character model (``V = 65``, ``H = 256``, index inputs) generating tokens one
  step at a time with :func:`rnnlab.data.text.generate` at temperature 1, for batch 1 and 64:
  a step function on :func:`rnnlab.network.forward` (one step, state carried), the same step on
  a :class:`~rnnlab.Workspace` (``forward`` + ``h_n``), :class:`rnnlab.fast.sampler.Sampler`
  (what ``rnnlab sample`` and ``RNN.generate`` run), and PyTorch's loop
  (``nn.RNN`` on one one-hot step, ``softmax`` + ``torch.multinomial``, under ``no_grad``);
  tokens/s = batch x tokens / wall time, medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from rnnlab import RNN

SIZES = [(1, 100, 32, 128), (64, 100, 32, 128), (256, 50, 64, 256)]   # B, T, D, H


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()                                                   # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--mode", default="runtimes", choices=["runtimes", "predict", "sample", "all"])
    ap.add_argument("--tokens", type=int, default=200, help="tokens per sampling run")
    args = ap.parse_args()
    if args.mode in ("predict", "all"):
        predict_table(args.threads, max(3, args.repeats // 4))
    if args.mode in ("sample", "all"):
        sample_table(args.threads, max(3, args.repeats // 4), args.tokens)
    if args.mode in ("runtimes", "all"):
        runtimes_table(args)


def _torch_net(model: RNN) -> object:
    """``nn.RNN(batch_first=True)`` + ``nn.Linear`` holding ``model``'s weights."""
    import torch
    from torch import nn

    spec = model.spec

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            D = spec.input_size
            self.rnn = nn.RNN(D, spec.hidden_size, batch_first=True)
            self.fc = nn.Linear(spec.hidden_size, spec.output_size)

        def forward(self, x: torch.Tensor, h: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            out, h_n = self.rnn(x, h)
            return self.fc(out if spec.per_step_output else h_n[-1]), h_n

    net = Net()
    net.load_state_dict({k: torch.as_tensor(v) for k, v in
                         model.to_torch_state_dict(rnn_prefix="rnn.", head_prefix="fc.").items()})
    return net.eval()


PREDICT_SIZES = [(10000, 28, 28, 128), (10000, 40, 1, 128), (2000, 100, 32, 256)]  # N, T, D, H


def predict_table(threads: int, repeats: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    bs = 1024
    print(f"predict: class ids of N sequences in batches of {bs}, {threads} thread(s); "
          "sequences/s (median of {repeats})".replace("{repeats}", str(repeats)))
    print(f"{'N x T x D -> H':<26}{'reference':>11}{'RNN.predict':>13}{'Workspace':>12}"
          f"{'torch':>11}{'ref/torch':>13}{'predict/torch':>15}{'ws/torch':>10}")
    with threadpool_limits(threads), torch.no_grad():
        for N, T, D, H in PREDICT_SIZES:
            _predict_row(N, T, D, H, bs, repeats)
    print("columns x/torch: rnnlab's sequences/s over PyTorch's (> 1: rnnlab is faster)")


def _predict_row(N: int, T: int, D: int, H: int, bs: int, repeats: int) -> None:
    import torch

    from rnnlab import Workspace

    model = RNN(D, H, output_size=10, seed=0)
    X = np.random.default_rng(0).standard_normal((N, T, D)).astype(np.float32)
    ws = Workspace(model.spec)
    net, Xt = _torch_net(model), torch.as_tensor(X)

    def by_ws() -> np.ndarray:
        return np.concatenate([ws.forward(model.params, X[s:s + bs]).argmax(-1)
                               for s in range(0, N, bs)])

    def by_torch() -> np.ndarray:
        return np.concatenate([net(Xt[s:s + bs])[0].argmax(-1).numpy()  # type: ignore
                               for s in range(0, N, bs)])

    agree = float(np.mean(model.predict(X, batch_size=bs) == by_torch()))
    ref = N / (1e-3 * _median_ms(partial(model.predict, X, batch_size=bs, engine="reference"),
                                 repeats))
    api = N / (1e-3 * _median_ms(partial(model.predict, X, batch_size=bs), repeats))
    fast = N / (1e-3 * _median_ms(by_ws, repeats))
    tch = N / (1e-3 * _median_ms(by_torch, repeats))
    print(f"{f'{N} x {T} x {D} -> {H}':<26}{ref:>11,.0f}{api:>13,.0f}{fast:>12,.0f}{tch:>11,.0f}"
          f"{ref / tch:>13.2f}{api / tch:>15.2f}{fast / tch:>10.2f}   (ids agree: {agree:.4f})")


def sample_table(threads: int, repeats: int, tokens: int) -> None:
    import torch
    import torch.nn.functional as F
    from threadpoolctl import threadpool_limits

    from rnnlab import RNN, Workspace
    from rnnlab import network as net_api
    from rnnlab.fast.sampler import Sampler

    torch.set_num_threads(threads)
    V, H = 65, 256
    model = RNN(V, H, output_size=V, setup="many_to_many", input_kind="index", seed=0)
    spec, params = model.spec, model.params
    tnet = _torch_net(model)
    ws = Workspace(spec)
    sampler = Sampler(spec, params)

    def api_step(ids: np.ndarray, state: object) -> tuple[np.ndarray, object]:
        out, _ = net_api.forward(params, ids[:, None], spec, h0=state)   # as `rnnlab sample`
        return out.logits[:, -1, :], out.h_n

    def ws_step(ids: np.ndarray, state: object) -> tuple[np.ndarray, object]:
        logits = ws.forward(params, ids[:, None], h0=state)
        return logits[:, -1, :], ws.h_n()

    def torch_loop(B: int) -> None:
        gen = torch.Generator().manual_seed(0)
        x = torch.zeros(B, dtype=torch.long)
        h = None
        for _ in range(tokens):
            logits, h = tnet(F.one_hot(x[:, None], V).float(), h)   # type: ignore[operator]
            x = torch.multinomial(F.softmax(logits[:, -1], dim=-1), 1, generator=gen)[:, 0]

    print(f"\nsampling: {tokens} tokens from a character model (V={V}, H={H}) at temperature 1, "
          f"{threads} thread(s); tokens/s (median of {repeats})")
    print(f"{'batch':<8}{'network.forward':>17}{'Workspace':>12}{'Sampler':>12}{'torch':>11}"
          f"{'forward/torch':>15}{'ws/torch':>10}{'Sampler/torch':>15}")
    with threadpool_limits(threads), torch.no_grad():
        for B in (1, 64):
            prime = np.zeros((B, 1), np.int64)
            rates = [B * tokens / (1e-3 * _median_ms(fn, repeats)) for fn in
                     (partial(_generate, api_step, prime, tokens),
                      partial(_generate, ws_step, prime, tokens),
                      partial(sampler.generate, prime, tokens, temperature=1.0,
                              rng=np.random.default_rng(0)),
                      partial(torch_loop, B))]
            print(f"{B:<8}{rates[0]:>17,.0f}{rates[1]:>12,.0f}{rates[2]:>12,.0f}"
                  f"{rates[3]:>11,.0f}{rates[0] / rates[3]:>15.2f}{rates[1] / rates[3]:>10.2f}"
                  f"{rates[2] / rates[3]:>15.2f}")
    print("columns x/torch: rnnlab's tokens/s over PyTorch's (> 1: rnnlab is faster)")


def _generate(step: object, prime: np.ndarray, tokens: int) -> None:
    from rnnlab.data.text import generate

    generate(step, prime, tokens, 1.0, np.random.default_rng(0))  # type: ignore[arg-type]


def runtimes_table(args: argparse.Namespace) -> None:
    import onnxruntime as ort
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    print(f"{'B x T x D -> H':<24}{'rnnlab':>10}{'onnxruntime':>13}{'torch':>10}"
          f"{'ort/rnnlab':>12}{'torch/rnnlab':>14}")
    with threadpool_limits(args.threads), torch.no_grad(), tempfile.TemporaryDirectory() as d:
        for B, T, D, H in SIZES:
            model = RNN(D, H, output_size=10, seed=0)
            X = np.random.default_rng(0).standard_normal((B, T, D)).astype(np.float32)
            path = model.export_onnx(os.path.join(d, f"m{H}.onnx"))
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            module, Xt = model.to_torch(), torch.as_tensor(X)
            ours = _median_ms(partial(model.forward, X), args.repeats)
            onnx = _median_ms(partial(sess.run, ["y"], {"X": X}), args.repeats)
            tch = _median_ms(partial(module, Xt), args.repeats)
            print(f"{f'{B} x {T} x {D} -> {H}':<24}{ours:>8.2f}ms{onnx:>11.2f}ms{tch:>8.2f}ms"
                  f"{onnx / ours:>12.2f}{tch / ours:>14.2f}")


if __name__ == "__main__":
    main()
