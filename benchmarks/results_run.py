"""Training runs for ``python -m benchmarks.results``: one configuration, three libraries.

A :class:`Setup` is one training configuration written out in full (dataset and its view, the
network, every :class:`rnnlab.TrainConfig` field the experiment sets); a *cell* is a setup, a
seed and a library.  Every library starts from the same float32 weights, drawn by
``rnnlab.init_params(spec, numpy.random.default_rng(seed), scheme=setup.init)``, and reads the
same minibatches in the same order (rnnlab's: ``default_rng(seed).permutation(N)`` every epoch,
cut into consecutive batches):

* ``rnnlab``  :func:`rnnlab.fit` with the setup's ``TrainConfig``;
* ``torch``   ``torch.nn.RNN`` + ``nn.Linear`` loaded with the same weights (``weight_ih =
  W_xh^T``, ``weight_hh = W_hh^T``, ``bias_ih = b_h``, ``bias_hh = 0`` and frozen, so that the
  network has rnnlab's one bias; ``fc.weight = W_hy^T``), the same loss with the same reduction,
  ``torch.nn.utils.clip_grad_norm_``, the ``torch.optim`` optimizer of the same name and
  arguments, the learning rate of rnnlab's schedule set before every step, the validation split
  scored every epoch and the weights of the best ``val_loss`` restored at the end (rnnlab's
  ``restore_best``);
* ``keras``   Keras 3 ``SimpleRNN`` + ``Dense`` (:func:`keras_model`, in a child process per
  backend, see :func:`run_keras_cells`) on every set-up of the suite: a label after the last
  step or at every step (``return_sequences=True``), softmax / sigmoid / linear heads with the
  loss of the same name, ids inputs one-hot encoded in the model, padded steps masked by
  ``Masking(0.0)``.  With ``mode="same"`` (many-to-one classification) loaded with the same
  weights (``kernel = W_xh``, ``recurrent_kernel = W_hh``, ``bias = b_h``; ``Dense`` ``W_hy``,
  ``b_y``) and trained by ``train_on_batch`` on the same minibatches with ``Adam(epsilon=1e-8,
  global_clipnorm=clip)``, best validation weights restored; with ``mode="defaults"`` Keras as
  a Keras user runs it (``compile(optimizer="adam", loss=<by name>)``, ``model.fit`` with its
  own initialisers and shuffling, the setup's epochs and batch size, the last epoch's weights).

Test metrics of every library are computed by rnnlab's metric code on the trained weights
(converted back for torch and Keras), so the definitions (accuracy after the last step, strict
Reber success, XOR error by position, perplexity, MSE against the baseline) are identical; each
peer's own test accuracy is recorded beside it as a check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LIBS = ("rnnlab", "torch", "keras-jax", "keras-torch")


@dataclass(frozen=True, eq=False)
class Setup:
    """One training configuration, every setting explicit.

    ``train`` holds :class:`rnnlab.TrainConfig` fields (``seed`` and ``progress`` are set per
    cell); ``data`` the dataset's options; ``n_train`` / ``n_val`` keep the first rows of a fixed
    permutation (``default_rng(12345)``) of the training / validation split, so that long
    sequences fit the time budget (the test split is never cut).
    """

    dataset: str
    steps: int | None = None
    hidden: int = 64
    nonlinearity: str = "tanh"
    init: str = "pytorch"
    label_steps: str = "last"
    train: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    n_train: int | None = None
    n_val: int | None = None
    data_seed: int = 0
    num_layers: int = 1
    bidirectional: bool = False
    # how a seed draws the initial weights: "direct" from default_rng(seed) (as
    # RNN(seed=s) does), "child" from a child of SeedSequence(seed) (as `rnnlab train --seed s`)
    init_draw: str = "direct"

    def __post_init__(self) -> None:
        if self.init_draw not in ("direct", "child"):
            raise ValueError(f"init_draw must be 'direct' or 'child'; got {self.init_draw!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"], d["data"] = dict(self.train), dict(self.data)
        # the fields added after the first cells ran are left out at their defaults, so the
        # key (and the finished cells it names) of every earlier configuration is unchanged
        for name, default in (("num_layers", 1), ("bidirectional", False),
                              ("init_draw", "direct")):
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Setup:
        return cls(**d)

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True, default=str)
                            .encode()).hexdigest()[:12]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Setup) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def replace(self, **kw: Any) -> Setup:
        if "train" in kw:
            kw["train"] = {**self.train, **kw["train"]}
        return dataclasses.replace(self, **kw)


# ----------------------------------------------------------------------------- data and model


@functools.lru_cache(maxsize=8)
def _load_cached(dataset: str, steps: int | None, data_json: str, seed: int,
                 n_train: int | None, n_val: int | None) -> Any:
    from rnnlab import data
    from rnnlab.data.base import Split

    ds = data.load(dataset, steps=steps, seed=seed, **json.loads(data_json))
    rng = np.random.default_rng(12345)
    changes: dict[str, Any] = {}
    for name, n in (("train", n_train), ("val", n_val)):
        s = getattr(ds, name)
        if n is not None and n < len(s.X):
            idx = np.sort(rng.permutation(len(s.X))[:n])
            changes[name] = Split(s.X[idx], s.y[idx], None if s.mask is None else s.mask[idx])
    return dataclasses.replace(ds, **changes) if changes else ds


def load_data(setup: Setup) -> Any:
    return _load_cached(setup.dataset, setup.steps, json.dumps(dict(setup.data), sort_keys=True),
                        setup.data_seed, setup.n_train, setup.n_val)


def model_spec(setup: Setup, ds: Any) -> Any:
    from rnnlab.train import spec_for_dataset

    return spec_for_dataset(ds, setup.hidden, nonlinearity=setup.nonlinearity,
                            label_steps=setup.label_steps, num_layers=setup.num_layers,
                            bidirectional=setup.bidirectional)


def initial_params(setup: Setup, spec: Any, seed: int, dtype: Any = np.float32) -> dict[str, Any]:
    from rnnlab import init_params

    # "child": as rnnlab.lab.experiments.run_cell (`rnnlab train`) draws them, independent of
    # the trainer's shuffling, which TrainConfig.seed seeds
    rng = (np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
           if setup.init_draw == "child" else np.random.default_rng(seed))
    return init_params(spec, rng, scheme=setup.init, dtype=dtype)


def train_config(setup: Setup, seed: int) -> Any:
    from benchmarks.defaults import EARLIER_DEFAULTS
    from rnnlab import TrainConfig

    # what a Setup does not name is TrainConfig's default when the harness was written (no
    # clipping, batch 32, Adam at a constant 1e-3), so the cells' keys and results stay
    return TrainConfig(**{**EARLIER_DEFAULTS, **setup.train, "seed": seed, "progress": "off"})


def run_schedule(cfg: Any, n_train: int) -> Any:
    """``cfg``'s learning-rate schedule over a run on ``n_train`` independent sequences, its
    default length the run's, as rnnlab.fit sets it (epochs x minibatches per epoch)."""
    return cfg.make_schedule().with_length(cfg.epochs * math.ceil(n_train / cfg.batch_size))


def batch_plan(n: int, batch_size: int, rng: np.random.Generator, shuffle: bool
               ) -> list[np.ndarray]:
    """rnnlab's minibatches of one epoch (rnnlab.train.loop, ``_plan``)."""
    order = rng.permutation(n) if shuffle else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _last_step_accuracy(params: Any, spec: Any, ds: Any) -> dict[str, float]:
    """Many-to-one classification: the prediction after the whole sequence (seed 000)."""
    from rnnlab.train.metrics import evaluate

    if spec.setup != "many_to_one" or spec.loss != "softmax_ce":
        return {}
    last = dataclasses.replace(spec, label_steps="last")
    res = evaluate(params, last, ds.test.X, ds.test.y, ds.test.mask)
    return {"test_accuracy_last": res["accuracy"], "test_loss_last": res["loss"]}


def score(params: Any, spec: Any, ds: Any) -> dict[str, Any]:
    """Test metrics of ``params`` by rnnlab's code: the spec's metrics, the task's own, and the
    accuracy after the last step."""
    from rnnlab.train.metrics import evaluate, predict, task_metrics

    out: dict[str, Any] = {f"test_{k}": v for k, v in evaluate(params, spec, ds.test.X, ds.test.y,
                                                ds.test.mask).items()}
    out.update({f"test_{k}": v for k, v in task_metrics(params, spec, ds, "test").items()})
    out.update(_last_step_accuracy(params, spec, ds))
    if spec.setup == "many_to_many" and spec.loss == "softmax_ce" and ds.test.mask is None:
        y = predict(params, spec, ds.test.X)                       # (N, T, O)
        wrong = np.argmax(y, axis=-1) != ds.test.y
        out["test_error_by_step"] = [float(v) for v in wrong.mean(axis=0)]
    return out


def gradient_norms(params: Any, spec: Any, ds: Any, n: int = 128) -> list[float] | None:
    """``||dL/dH_t||`` per step on the first ``n`` test sequences (eq. 35), layer 0."""
    from rnnlab.learning.diagnostics import per_step_gradients

    s = ds.test
    mask = None if s.mask is None else s.mask[:n]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sg = per_step_gradients(params, s.X[:n], s.y[:n], spec, mask=mask)
    return [float(v) for v in np.asarray(sg.dh_norm, dtype=np.float64)[0]]


# ----------------------------------------------------------------------------- rnnlab


def run_rnnlab(setup: Setup, seed: int, *, diagnostics: bool = False) -> dict[str, Any]:
    from rnnlab import DivergenceError, fit

    ds = load_data(setup)
    spec = model_spec(setup, ds)
    params = initial_params(setup, spec, seed)
    cfg = train_config(setup, seed)
    res: dict[str, Any] = {"status": "completed"}
    if diagnostics:
        res["grad_norm_init"] = gradient_norms(params, spec, ds)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            h = fit(params, spec, ds, cfg)
            res["status"] = h.status
        except DivergenceError as exc:
            h = exc.history
            res["status"], res["message"] = "diverged", str(exc)
    res["fit_s"] = time.perf_counter() - t0
    res["epochs"] = [dict(r) for r in h.epochs]
    res["weights"], res["weights_epoch"] = h.weights, h.weights_epoch
    res["health"] = sorted({e["kind"] for e in h.health})
    res["test"] = score(params, spec, ds)
    if diagnostics:
        res["grad_norm_final"] = gradient_norms(params, spec, ds)
    return res


# ----------------------------------------------------------------------------- PyTorch


def _torch_optimizer(name: str, params: list[Any], lr: float, kwargs: Mapping[str, Any]) -> Any:
    import torch

    kw = dict(kwargs)
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    makers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}
    if name not in makers:
        raise ValueError(f"no torch optimizer for {name!r}")
    return makers[name](params, lr=lr, **kw)


class TorchNet:
    """``nn.RNN`` + ``nn.Linear`` holding rnnlab's parameters, and the spec's loss."""

    def __init__(self, spec: Any, params: Mapping[str, np.ndarray]) -> None:
        import torch
        from torch import nn

        from rnnlab.interop.torch import to_torch_state_dict

        self.spec = spec
        dtype = torch.float64 if params["b_y"].dtype == np.float64 else torch.float32
        self.dtype = dtype
        self.rnn = nn.RNN(spec.input_size, spec.hidden_size, num_layers=spec.num_layers,
                          nonlinearity=spec.nonlinearity, bidirectional=spec.bidirectional,
                          batch_first=True, dtype=dtype)
        self.fc = nn.Linear(spec.hidden_size * spec.num_directions, spec.output_size,
                            dtype=dtype)
        dense = dataclasses.replace(spec, input_kind="dense") if spec.input_kind == "index" \
            else spec
        sd = {k: torch.from_numpy(np.ascontiguousarray(v))
              for k, v in to_torch_state_dict(params, dense).items()}
        self.rnn.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("rnn.")})
        self.fc.load_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("fc.")})
        self.trainable: list[Any] = []
        for name, p in self.rnn.named_parameters():
            if name.startswith("bias_hh"):         # rnnlab has one bias: b_h = bias_ih
                p.requires_grad_(False)
            else:
                self.trainable.append(p)
        self.trainable += [self.fc.weight, self.fc.bias]

    def inputs(self, X: np.ndarray) -> Any:
        import torch

        if self.spec.input_kind == "index":       # one-hot rows: x_t W_xh is row x_t of W_xh
            eye = np.eye(self.spec.input_size, dtype=np.float64 if self.dtype == torch.float64
                         else np.float32)
            return torch.from_numpy(eye[X])
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64 if self.dtype ==
                                                     torch.float64 else np.float32))

    def outputs(self, X: np.ndarray) -> Any:
        """Logits: ``(B, O)`` for a label at the last step, else ``(B, T, O)``."""
        seq, h_n = self.rnn(self.inputs(X))
        if self.spec.setup == "many_to_one" and self.spec.label_steps == "last":
            # the top layer's final states, [forward at T, reverse at t = 0] (rnnlab's
            # convention, rnnlab.interop.torch_modules.RNNModule)
            nd = self.spec.num_directions
            return self.fc(h_n[-nd:].transpose(0, 1).reshape(h_n.shape[1], -1))
        return self.fc(seq)

    def losses(self, z: Any, y: np.ndarray, mask: np.ndarray | None) -> tuple[Any, int, Any]:
        """(sum of per-entry losses, number of scored rows, number right or None)."""
        import torch
        import torch.nn.functional as F

        spec = self.spec
        yt = torch.from_numpy(y)
        if z.dim() == 3:
            T = z.shape[1]
            if spec.setup == "many_to_one":       # the label at every step
                yt = yt[:, None].expand((yt.shape[0], T) + tuple(yt.shape[1:]))
            keep = torch.ones(z.shape[:2], dtype=torch.bool) if mask is None else \
                torch.from_numpy(mask)
            z, yt = z[keep], yt[keep]
        if spec.loss == "softmax_ce":
            total = F.cross_entropy(z, yt, reduction="sum")
            return total, int(z.shape[0]), (z.argmax(-1) == yt).sum()
        if spec.loss == "identity_mse":
            total = F.mse_loss(z, yt.to(z.dtype), reduction="sum")
            return total, int(z.numel()), None
        raise ValueError(f"loss {spec.loss!r} is not compared with torch here")

    def params(self) -> dict[str, np.ndarray]:
        from rnnlab.interop.torch import from_torch_state_dict

        sd = {f"rnn.{k}": v for k, v in self.rnn.state_dict().items()}
        sd.update({f"fc.{k}": v for k, v in self.fc.state_dict().items()})
        dense = dataclasses.replace(self.spec, input_kind="dense") \
            if self.spec.input_kind == "index" else self.spec
        return {k: np.ascontiguousarray(v) for k, v in from_torch_state_dict(sd, dense).items()}

    def evaluate(self, split: Any, batch_size: int) -> dict[str, float]:
        import torch

        tot, n, right = 0.0, 0, 0
        with torch.no_grad():
            for i in range(0, len(split.X), batch_size):
                sl = slice(i, i + batch_size)
                z = self.outputs(split.X[sl])
                s, k, r = self.losses(z, split.y[sl], None if split.mask is None
                                      else split.mask[sl])
                tot, n = tot + float(s), n + k
                right += 0 if r is None else int(r)
        out = {"loss": tot / n}
        if self.spec.loss == "softmax_ce":
            out["accuracy"] = right / n
        return out


def run_torch(setup: Setup, seed: int, *, dtype: Any = np.float32,
              diagnostics: bool = False) -> dict[str, Any]:
    """The torch twin of :func:`run_rnnlab` (module docstring)."""
    import torch

    from rnnlab.train.metrics import EarlyStopping

    ds = load_data(setup)
    spec = model_spec(setup, ds)
    params0 = initial_params(setup, spec, seed, dtype)
    cfg = train_config(setup, seed)
    if cfg.algorithm != "bptt" or cfg.stateful:
        raise ValueError("torch runs full BPTT on independent sequences only")
    net = TorchNet(spec, params0)
    opt = _torch_optimizer(cfg.optimizer, net.trainable, cfg.lr, cfg.optimizer_kwargs)
    sched = run_schedule(cfg, len(ds.train.X))
    rng = np.random.default_rng(cfg.seed)
    stopper = EarlyStopping(cfg.monitor, cfg.mode, cfg.patience, cfg.min_delta)
    eval_bs = cfg.eval_batch_size or max(cfg.batch_size, 256)
    res: dict[str, Any] = {"status": "completed", "epochs": []}
    if diagnostics:
        res["grad_norm_init"] = gradient_norms(params0, spec, ds)
    best: dict[str, Any] | None = None
    best_epoch = None
    step = 0
    t_fit = time.perf_counter()
    Xtr, ytr, mtr = ds.train.X, ds.train.y, ds.train.mask
    for e in range(cfg.epochs):
        t0 = time.perf_counter()
        loss_sum, count, right, rows = 0.0, 0, 0, 0
        diverged = False
        for idx in batch_plan(len(Xtr), cfg.batch_size, rng, cfg.shuffle):
            for g in opt.param_groups:
                g["lr"] = sched(step)
            opt.zero_grad(set_to_none=True)
            s, k, r = net.losses(net.outputs(Xtr[idx]), ytr[idx],
                                 None if mtr is None else mtr[idx])
            loss = s / k
            loss.backward()
            lv = float(loss.detach())
            if cfg.clip is not None:
                norm = float(torch.nn.utils.clip_grad_norm_(net.trainable, cfg.clip))
            else:
                norm = float(torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(p.grad) for p in net.trainable])))
            if not (math.isfinite(lv) and math.isfinite(norm)):
                diverged = True
                break
            opt.step()
            step += 1
            loss_sum, count = loss_sum + lv, count + 1
            right, rows = right + (0 if r is None else int(r)), rows + k
        if diverged:
            res["status"] = "diverged"
            res["message"] = f"non-finite loss or gradient at step {step + 1}"
            break
        rec: dict[str, Any] = {"epoch": e + 1, "step": step, "train_loss": loss_sum / count}
        if spec.loss == "softmax_ce":
            rec["train_accuracy"] = right / rows
        if len(ds.val.X) and ((e + 1) % cfg.eval_every == 0 or e + 1 == cfg.epochs):
            rec.update({f"val_{k}": v for k, v in net.evaluate(ds.val, eval_bs).items()})
        rec["time"] = time.perf_counter() - t0
        res["epochs"].append(rec)
        if cfg.monitor in rec:
            if stopper.update(float(rec[cfg.monitor]), e + 1) and cfg.restore_best:
                best = {k: v.detach().clone() for k, v in
                        [*net.rnn.state_dict().items(), *(("fc." + k, v) for k, v in
                                                          net.fc.state_dict().items())]}
                best_epoch = e + 1
            if stopper.should_stop:
                res["status"] = "early_stopped"
                break
    res["weights"], res["weights_epoch"] = "last", len(res["epochs"])
    if best is not None and cfg.restore_best and best_epoch != len(res["epochs"]):
        net.rnn.load_state_dict({k: v for k, v in best.items() if not k.startswith("fc.")})
        net.fc.load_state_dict({k[3:]: v for k, v in best.items() if k.startswith("fc.")})
        res["weights"], res["weights_epoch"] = "best", best_epoch
    params = net.params()
    res["test"] = score(params, spec, ds)
    own = net.evaluate(ds.test, eval_bs)
    res["test_own"] = {f"test_{k}": v for k, v in own.items()}
    res["fit_s"] = time.perf_counter() - t_fit
    if diagnostics:
        res["grad_norm_final"] = gradient_norms(params, spec, ds)
    res["params"] = params if dtype == np.float64 else None   # for the tests' trajectory check
    return res


# ----------------------------------------------------------------------------- Keras


KERAS_LOSSES = {"softmax_ce": ("sparse_categorical_crossentropy", "softmax"),
                "sigmoid_bce": ("binary_crossentropy", "sigmoid"),
                "identity_mse": ("mse", None)}
"""rnnlab loss -> (the loss a Keras user names, the activation of the ``Dense`` head)."""


def keras_supports(spec: Any) -> str | None:
    """None if :func:`keras_model` builds ``spec``'s network, else why not."""
    if spec.num_layers != 1 or spec.bidirectional:
        return "the Keras rows compare one-layer, one-direction networks"
    if spec.loss not in KERAS_LOSSES:
        return f"no Keras loss for {spec.loss!r}"
    if spec.setup == "many_to_one" and spec.label_steps != "last":
        return "many-to-one with a label at every step is not a Keras row"
    if spec.setup not in ("many_to_one", "many_to_many"):
        return f"set-up {spec.setup!r} is not a Keras row"
    return None


def keras_model(spec: Any, T: int, *, logits: bool, masked: bool = False
                ) -> tuple[Any, Any, Any]:
    """``SimpleRNN`` + ``Dense`` for ``spec``, as a Keras user writes it: ``(model, rnn, head)``.

    Many-to-many networks return the sequence (``return_sequences=True``) and the ``Dense`` head
    acts on every step; ids inputs (``input_kind="index"``) are one-hot encoded in the model (the
    one-hot row times ``kernel`` is rnnlab's row ``x_t`` of ``W_xh``); ``masked`` puts a
    ``Masking(0.0)`` layer first (padded steps are all-zero inputs: :func:`keras_inputs`), which
    Keras carries to the loss and the metrics.  The head is the task's activation
    (:data:`KERAS_LOSSES`) or, with ``logits``, linear.  The weights map one to one: ``kernel =
    W_xh``, ``recurrent_kernel = W_hh``, ``bias = b_h``; ``Dense`` ``W_hy``, ``b_y``.
    """
    import keras

    why = keras_supports(spec)
    if why:
        raise ValueError(why)
    layers: list[Any] = []
    if spec.input_kind == "index":
        if masked:
            raise ValueError("masked ids inputs are not a Keras row")
        depth = spec.input_size

        class OneHot(keras.layers.Layer):
            def call(self, x: Any) -> Any:
                return keras.ops.one_hot(keras.ops.cast(x, "int32"), depth)

        layers += [keras.Input((T,), dtype="int32"), OneHot()]
    else:
        layers.append(keras.Input((T, spec.input_size)))
        if masked:
            layers.append(keras.layers.Masking(0.0))
    rnn = keras.layers.SimpleRNN(spec.hidden_size, activation=spec.nonlinearity,
                                 return_sequences=spec.setup == "many_to_many")
    head = keras.layers.Dense(spec.output_size,
                              activation=None if logits else KERAS_LOSSES[spec.loss][1])
    model = keras.Sequential([*layers, rnn, head])
    return model, rnn, head


def keras_inputs(spec: Any, X: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The array a Keras model of :func:`keras_model` reads: ids as int32, dense inputs as
    float32 with the padded steps (``mask`` False) zeroed for ``Masking(0.0)``."""
    if spec.input_kind == "index":
        return np.ascontiguousarray(X, dtype=np.int32)
    X = np.asarray(X, dtype=np.float32)
    if mask is not None:
        X = X * np.asarray(mask, dtype=np.float32)[..., None]
    return np.ascontiguousarray(X)


def keras_load(rnn: Any, head: Any, params: Mapping[str, np.ndarray]) -> None:
    """rnnlab's parameters into the Keras layers (the same layout, eq. 5)."""
    rnn.set_weights([params["l0.W_xh"], params["l0.W_hh"], params["l0.b_h"]])
    head.set_weights([params["W_hy"], params["b_y"]])


def keras_params(rnn: Any, head: Any) -> dict[str, np.ndarray]:
    """The Keras layers' weights as rnnlab parameters (float32)."""
    W_xh, W_hh, b_h = (np.asarray(w, np.float32) for w in rnn.get_weights())
    W_hy, b_y = (np.asarray(w, np.float32) for w in head.get_weights())
    return {"l0.W_xh": W_xh, "l0.W_hh": W_hh, "l0.b_h": b_h, "W_hy": W_hy, "b_y": b_y}


def peer_metrics(spec: Any, out: np.ndarray, y: np.ndarray, mask: np.ndarray | None, *,
                 logits: bool) -> dict[str, float]:
    """Loss (and accuracy, perplexity) of a peer's own predictions ``out`` on one split, in
    NumPy: ``(N, O)`` after the last step or ``(N, T, O)`` at every step (only the steps of
    ``mask`` count), probabilities or, with ``logits``, scores before the head's activation.
    The cross-check beside rnnlab's scoring of the same weights."""
    z = np.asarray(out, dtype=np.float64)
    y = np.asarray(y)
    keep = None
    if z.ndim == 3 and mask is not None:
        keep = np.asarray(mask, dtype=bool)
    if spec.loss == "softmax_ce":
        if logits:
            logp = z - z.max(-1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        else:
            logp = np.log(np.clip(z, 1e-300, None))
        nll = -np.take_along_axis(logp, y[..., None].astype(np.int64), -1)[..., 0]
        right = (z.argmax(-1) == y).astype(np.float64)
        if keep is not None:
            nll, right = nll[keep], right[keep]
        res = {"loss": float(nll.mean()), "accuracy": float(right.mean())}
        if z.ndim == 3:
            res["perplexity"] = math.exp(res["loss"])
        return res
    if spec.loss == "sigmoid_bce":
        p = 1.0 / (1.0 + np.exp(-z)) if logits else z
        p = np.clip(p, 1e-12, 1 - 1e-12)
        bce = -(y * np.log(p) + (1 - y) * np.log1p(-p))
        if keep is not None:
            bce = bce[keep]
        return {"bce": float(bce.mean())}
    err = (z - y) ** 2
    if keep is not None:
        err = err[keep]
    return {"mse": float(err.mean())}


def keras_rate(cfg: Any, n_train: int) -> Any:
    """The Keras ``learning_rate`` of rnnlab's schedule for ``cfg`` on ``n_train`` sequences:
    the number for a constant rate; for a cosine decay Keras' ``CosineDecay`` with ``alpha =
    min_lr / lr`` over the run's updates (``rnnlab.fit``'s default length), both evaluated at
    the number of updates made so far."""
    import keras

    from rnnlab.train.schedules import Constant, Cosine

    sched = run_schedule(cfg, n_train)
    if isinstance(sched, Constant):
        return cfg.lr
    if isinstance(sched, Cosine):
        assert sched.total_steps is not None        # with_length set it
        return keras.optimizers.schedules.CosineDecay(
            cfg.lr, decay_steps=sched.total_steps, alpha=sched.min_lr / cfg.lr)
    raise ValueError(f"the identical-config Keras rows take a constant rate or a cosine decay "
                     f"without warm-up; got {type(sched).__name__}")


def run_keras(setup: Setup, seed: int, mode: str) -> dict[str, Any]:
    """One Keras cell in this process (its backend is fixed at import: KERAS_BACKEND).

    ``mode="defaults"``: what a Keras user writes with no tuning: ``SimpleRNN(H)`` (+ ``Dense``
    with the task's activation), ``compile(optimizer="adam", loss=<the task's loss by name>)``,
    ``model.fit`` with the setup's epochs and batch size (Keras shuffles), no early stopping,
    the last epoch's weights.  ``mode="same"``: rnnlab's initial weights, minibatches, Adam
    settings and best-epoch restore (many-to-one classification only).  Either way the trained
    weights are scored by rnnlab's code (:func:`score`) and Keras' own predictions on the test
    split are kept beside them (``test_own``, :func:`peer_metrics`).
    """
    import keras

    ds = load_data(setup)
    spec = model_spec(setup, ds)
    cfg = train_config(setup, seed)
    T = ds.train.X.shape[1]
    masked = any(s.mask is not None for s in (ds.train, ds.val, ds.test))
    X = {name: keras_inputs(spec, getattr(ds, name).X, getattr(ds, name).mask)
         for name in ("train", "val", "test")}
    keras.utils.set_random_seed(seed)
    res: dict[str, Any] = {"status": "completed", "epochs": [],
                           "backend": keras.backend.backend(), "keras": keras.__version__}
    times: list[float] = []
    if mode == "defaults":
        model, rnn, head = keras_model(spec, T, logits=False, masked=masked)
        classify = spec.loss == "softmax_ce"
        model.compile(optimizer="adam", loss=KERAS_LOSSES[spec.loss][0],
                      metrics=["accuracy"] if classify else None)
        per_step = spec.setup == "many_to_many"

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                times.append(time.perf_counter())

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                times[-1] = time.perf_counter() - times[-1]
                logs = logs or {}
                rec = {"epoch": epoch + 1, "train_loss": logs.get("loss"),
                       "val_loss": logs.get("val_loss"), "time": times[-1]}
                if classify:
                    rec["train_accuracy"] = logs.get("accuracy")
                    rec["val_accuracy"] = logs.get("val_accuracy")
                    if per_step and rec["val_loss"] is not None:
                        rec["val_perplexity"] = math.exp(rec["val_loss"])
                res["epochs"].append(rec)

        val = (X["val"], ds.val.y) if len(ds.val.X) else None
        t0 = time.perf_counter()
        hist = model.fit(X["train"], ds.train.y, batch_size=cfg.batch_size, epochs=cfg.epochs,
                         validation_data=val, callbacks=[Clock()], verbose=0)
        res["weights"], res["weights_epoch"] = "last", cfg.epochs
        last = hist.history.get("loss") or [None]
        if last[-1] is None or not math.isfinite(float(last[-1])):
            res["status"] = "diverged"
    elif mode == "same":
        from rnnlab.train.metrics import EarlyStopping

        if spec.setup != "many_to_one" or spec.loss != "softmax_ce" or masked:
            raise ValueError("the identical-config Keras rows are sequence classification with "
                             "the label at the end")
        if cfg.optimizer != "adam":       # keras_rate refuses the schedules it cannot follow
            raise ValueError("the identical-config Keras rows use Adam")
        params = initial_params(setup, spec, seed)
        model, rnn, head = keras_model(spec, T, logits=True)
        keras_load(rnn, head, params)
        betas = cfg.optimizer_kwargs.get("betas", (0.9, 0.999))
        model.compile(optimizer=keras.optimizers.Adam(
            learning_rate=keras_rate(cfg, len(X["train"])), beta_1=betas[0], beta_2=betas[1],
            epsilon=cfg.optimizer_kwargs.get("eps", 1e-8), global_clipnorm=cfg.clip),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(cfg.seed)
        stopper = EarlyStopping(cfg.monitor, cfg.mode, cfg.patience, cfg.min_delta)
        best, best_epoch = None, None
        t0 = time.perf_counter()
        for e in range(cfg.epochs):
            te = time.perf_counter()
            losses = [float(model.train_on_batch(X["train"][idx], ds.train.y[idx]))
                      for idx in batch_plan(len(X["train"]), cfg.batch_size, rng, cfg.shuffle)]
            z = np.asarray(model.predict(X["val"], batch_size=256, verbose=0), np.float64)
            own = peer_metrics(spec, z, ds.val.y, None, logits=True)
            rec = {"epoch": e + 1, "train_loss": float(np.mean(losses)),
                   "val_loss": own["loss"], "val_accuracy": own["accuracy"],
                   "time": time.perf_counter() - te}
            times.append(rec["time"])
            res["epochs"].append(rec)
            if stopper.update(rec[cfg.monitor], e + 1) and cfg.restore_best:
                best, best_epoch = model.get_weights(), e + 1
            if stopper.should_stop:
                break
        res["weights"], res["weights_epoch"] = "last", len(res["epochs"])
        if best is not None and best_epoch != len(res["epochs"]):
            model.set_weights(best)
            res["weights"], res["weights_epoch"] = "best", best_epoch
    else:
        raise ValueError(f"unknown Keras mode {mode!r}")
    res["fit_s"] = time.perf_counter() - t0
    params = keras_params(rnn, head)
    # rnnlab's scorer on the Keras weights: the head's activation is monotone, so accuracy,
    # strict Reber success and XOR errors are those of Keras' own outputs
    res["test"] = score(params, spec, ds)
    z = np.asarray(model.predict(X["test"], batch_size=256, verbose=0))
    res["test_own"] = {f"test_{k}": v for k, v in peer_metrics(
        spec, z, ds.test.y, ds.test.mask, logits=mode == "same").items()}
    return res


# ----------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One training run: a setup, a seed, a library (``mode`` for Keras: same / defaults)."""

    setup: Setup
    seed: int
    lib: str
    mode: str = "same"
    diagnostics: bool = False

    def key(self) -> str:
        d = {"setup": self.setup.to_dict(), "seed": self.seed, "lib": self.lib,
             "mode": self.mode, "diagnostics": self.diagnostics}
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"setup": self.setup.to_dict(), "seed": self.seed, "lib": self.lib,
                "mode": self.mode, "diagnostics": self.diagnostics}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cell:
        return cls(Setup.from_dict(d["setup"]), d["seed"], d["lib"], d.get("mode", "same"),
                   d.get("diagnostics", False))


def _threads(n: int) -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(n)


def run_cell(cell: Cell, threads: int = 1) -> dict[str, Any]:
    """Run one rnnlab or torch cell in this process under a thread cap."""
    t0 = time.perf_counter()
    with _threads(threads):
        try:
            if cell.lib == "rnnlab":
                res = run_rnnlab(cell.setup, cell.seed, diagnostics=cell.diagnostics)
            elif cell.lib == "torch":
                import torch

                torch.set_num_threads(threads)
                res = run_torch(cell.setup, cell.seed, diagnostics=cell.diagnostics)
                res.pop("params", None)
            else:
                res = run_keras(cell.setup, cell.seed, cell.mode)
        except Exception as exc:       # noqa: BLE001 -- a failed cell is reported, not fatal
            res = {"status": "failed", "message": f"{type(exc).__name__}: {exc}"}
    res["wall_s"] = time.perf_counter() - t0
    res["cell"] = cell.to_dict()
    from rnnlab.lab.experiments import json_safe

    return json_safe(res)


def keras_available(backend: str) -> str | None:
    """None if Keras can run on ``backend`` here, else why not."""
    import importlib.util

    for mod in ("keras", backend):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install keras {backend})"
    return None


def keras_env(backend: str, threads: int) -> dict[str, str]:
    from benchmarks.train import thread_env

    return {**thread_env(threads, backend), "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_keras_cells(cells: list[Cell], threads: int, timeout: float = 7200.0
                    ) -> list[dict[str, Any]]:
    """Run Keras cells of one backend in one child process (``--keras-child``)."""
    backend = cells[0].lib.split("-", 1)[1]
    cmd = [sys.executable, "-m", "benchmarks.results_run", "--keras-child", str(threads)]
    payload = json.dumps([c.to_dict() for c in cells])
    root = Path(__file__).resolve().parent.parent
    env = keras_env(backend, threads)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, input=payload, capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=root)
    out = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    if len(out) != len(cells):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        done = {json.dumps(r["cell"], sort_keys=True) for r in out}
        for c in cells:
            if json.dumps(c.to_dict(), sort_keys=True) not in done:
                out.append({"status": "failed", "message": f"keras child: {tail}",
                            "cell": c.to_dict()})
    return out


def _keras_child(threads: int) -> None:
    cells = [Cell.from_dict(d) for d in json.loads(sys.stdin.read())]
    with contextlib.redirect_stderr(sys.stderr):
        for c in cells:
            print(json.dumps(run_cell(c, threads)), flush=True)


def group_keras(cells: Iterable[Cell]) -> dict[str, list[Cell]]:
    out: dict[str, list[Cell]] = {}
    for c in cells:
        out.setdefault(c.lib, []).append(c)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--keras-child":
        _keras_child(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m benchmarks.results_run --keras-child THREADS < cells.json")
