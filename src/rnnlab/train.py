"""The training loop: minibatches, gradient algorithms, metrics, early stopping, checkpoints.

::

    cfg = TrainConfig(epochs=20, batch_size=64, lr=1e-2, checkpoint_dir="runs/a",
                      log_path="runs/a/log.jsonl", patience=3)
    history = fit(params, spec, registry.load("digits", steps=8), cfg)
    history = fit(params, spec, dataset, cfg.replace(epochs=40), resume=True)   # continue

``fit`` updates ``params`` (a dict) in place.  Every source of randomness is one
``numpy.random.Generator`` seeded from ``TrainConfig.seed`` and saved in each checkpoint with the
optimizer state and the position in the epoch, so a resumed run repeats an uninterrupted run bit
for bit (docs/training.md).
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from . import checkpoint, network, optim
from .data.base import Dataset
from .metrics import Accumulator, EarlyStopping, metric_names
from .params import Params, check_params
from .progress import Progress
from .spec import RNNSpec
from .trainconfig import ALGORITHMS, RESUME_KEYS, TrainConfig
from .workspace import Workspace

__all__ = [
    "ALGORITHMS",
    "DivergenceError",
    "History",
    "TrainConfig",
    "fit",
    "spec_for_dataset",
]

# ----------------------------------------------------------------------------- results


class DivergenceError(RuntimeError):
    """A non-finite loss, gradient or update stopped training (``on_nonfinite="stop"``).

    Attributes: ``step`` (1-based minibatch count of the bad batch), ``epoch`` (1-based),
    ``checkpoint`` (path of the last good checkpoint or None), ``history``.
    """

    def __init__(self, message: str, *, step: int, epoch: int, checkpoint: str | None,
                 history: History) -> None:
        super().__init__(message)
        self.step, self.epoch, self.checkpoint, self.history = step, epoch, checkpoint, history


@dataclass
class History:
    """What :func:`fit` returns.

    Attributes
    ----------
    epochs : list of dict
        One record per completed epoch, also the lines of the JSONL log (a resumed run includes
        the epochs of the checkpoint): ``epoch``, ``step``, ``lr``, ``train_loss``,
        ``train_accuracy``, ``train_grad_norm``, ``train_skipped``, ``val_*`` on evaluation
        epochs, ``time`` and ``seq_per_s``.  Non-finite values are None.
    step_losses : list of float
        The loss of every minibatch run by this call, in order (non-finite for skipped ones).
    status : {"completed", "early_stopped", "interrupted", "diverged"}
    epoch, step : int
        Completed epochs and minibatches.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    status: str = "completed"
    epoch: int = 0
    step: int = 0
    skipped: int = 0
    monitor: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    checkpoint: str | None = None
    test: dict[str, float] | None = None
    message: str = ""

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"

    @property
    def stopped_early(self) -> bool:
        return self.status == "early_stopped"

    def __getitem__(self, name: str) -> list[Any]:
        """The values of one metric across epochs (None where it was not computed)."""
        if not any(name in r for r in self.epochs):
            keys = sorted({k for r in self.epochs for k in r})
            raise KeyError(f"no metric {name!r} in the history; recorded: {keys}")
        return [r.get(name) for r in self.epochs]


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class _Data:
    X: NDArray[Any]
    y: NDArray[Any]
    mask: NDArray[np.bool_] | None

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def take(self, idx: Any) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.bool_] | None]:
        return self.X[idx], self.y[idx], None if self.mask is None else self.mask[idx]


def _as_data(obj: Any, name: str) -> _Data | None:
    if obj is None:
        return None
    if hasattr(obj, "X") and hasattr(obj, "y"):
        X, y, mask = obj.X, obj.y, getattr(obj, "mask", None)
    elif isinstance(obj, tuple | list) and len(obj) in (2, 3):
        X, y, mask = obj[0], obj[1], obj[2] if len(obj) == 3 else None
    else:
        raise TypeError(f"{name} must be a Dataset, a Split or a tuple (X, y[, mask]); got "
                        f"{type(obj).__name__}")
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: X and y must have the same number of sequences (first axis); "
                         f"got X {X.shape} and y {y.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.ndim != 2 or mask.shape[0] != X.shape[0]:
            raise ValueError(f"{name}: mask must be (N, T) bool with N = {X.shape[0]}; got "
                             f"{mask.shape} {mask.dtype}")
    if X.shape[0] == 0:
        if name == "train":
            raise ValueError("the train split has no sequences")
        return None
    return _Data(X, y, mask)


def spec_for_dataset(ds: Dataset, hidden_size: int, **kwargs: Any) -> RNNSpec:
    """The :class:`RNNSpec` that fits ``ds``: sizes, input kind, set-up and loss from its task.

    ``sequence_*`` tasks read the last step (many-to-one), ``step_*`` tasks every step
    (many-to-many); classification uses the dataset's loss, regression its ``sigmoid_bce`` or
    ``identity_mse``.  ``kwargs`` go to RNNSpec (num_layers, nonlinearity, ...).
    """
    setup = "many_to_one" if ds.task.startswith("sequence") else "many_to_many"
    loss = ds.loss
    if ds.task.endswith("regression") and ds.loss != "sigmoid_bce":
        loss = "identity_mse"
    return RNNSpec(input_size=ds.input_size, hidden_size=hidden_size,
                   output_size=ds.output_size, setup=kwargs.pop("setup", setup),
                   loss=kwargs.pop("loss", loss), input_kind=ds.input_kind, **kwargs)


def _check_fits(params: Params, spec: RNNSpec, data: _Data, name: str) -> None:
    """Run the model on one sequence of ``data`` so mismatches surface before training."""
    X, y, mask = data.take(slice(0, 1))
    steps = y.shape[1] if spec.setup == "one_to_many" else None
    try:
        out, _ = network.forward(params, X, spec, mask=mask, steps=steps)
        network.loss_and_grad(spec, out, y, mask=mask)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"the {name} split does not fit the model ({spec.setup}, "
                        f"loss={spec.loss}): {exc}") from None


# ----------------------------------------------------------------------------- signals, files


class _StopFlag:
    """Signal handler: remember the first SIGINT/SIGTERM; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum


@contextmanager
def _signals(flag: _StopFlag) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield                      # handlers can only be installed from the main thread
        return
    # a signal the process ignores (SIGINT of a background job) stays ignored
    old = {s: h for s in (signal.SIGINT, signal.SIGTERM)
           if (h := signal.getsignal(s)) is not signal.SIG_IGN}
    try:
        for s in old:
            signal.signal(s, flag)
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def _prepare_dir(path: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"checkpoint_dir {str(p)!r} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create checkpoint_dir {str(p)!r}: {exc.strerror}") \
            from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(f"checkpoint_dir {str(p)!r} is not writable")
    return p


def _write_log(path: Path, records: list[dict[str, Any]], mode: str) -> None:
    """Write (``"w"``, atomically) or append (``"a"``) JSONL records."""
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    try:
        if mode == "a":
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
            return
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except IsADirectoryError:
        raise IsADirectoryError(f"log_path {str(path)!r} is a directory; expected a file path") \
            from None
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write log_path {str(path)!r}: {exc.strerror}") from None


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _all_finite(arrays: Mapping[str, NDArray[Any]]) -> bool:
    return all(np.isfinite(a).all() for a in arrays.values())


class _StepOutput(NamedTuple):
    """What a training step reads of the forward pass (a Workspace computes no predictions)."""

    logits: NDArray[Any]      # a view of the workspace's buffer: valid until its next call
    h_n: NDArray[Any]


def _gradient_function(cfg: TrainConfig) -> Callable[..., Any]:
    """``f(params, X, Y, spec, h0, mask, steps) -> (loss, Gradients, Output)``, or for
    ``rtrl_online`` the module's ``online_update``; tbptt/rtrl are imported only when asked for."""
    if cfg.algorithm == "bptt":
        # the fast path (docs/performance.md) with a fixed thread option: no tuner and no split,
        # so that a run and its resumed copy compute the same numbers, bit for bit
        spaces: dict[RNNSpec, Workspace] = {}

        def bptt(params: Params, X: Any, Y: Any, spec: RNNSpec, h0: Any, mask: Any,
                 steps: int | None) -> Any:
            ws = spaces.get(spec)
            if ws is None:
                ws = spaces[spec] = Workspace(spec, threads=1)
            loss, grads = ws.value_and_grad(params, X, Y, h0=h0, mask=mask, steps=steps)
            assert ws.logits is not None and ws.h0_grad is not None
            return (loss, network.Gradients(grads, None, ws.h0_grad),
                    _StepOutput(ws.logits, ws.h_n()))
        return bptt
    import importlib

    name = "tbptt" if cfg.algorithm == "tbptt" else "rtrl"
    try:
        mod: Any = importlib.import_module(f"rnnlab.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"rnnlab.{name}":
            raise
        raise ImportError(f"algorithm {cfg.algorithm!r} needs the module rnnlab.{name}, which "
                          "this installation does not have") from None
    if cfg.algorithm == "rtrl_online":
        return mod.online_update
    extra: dict[str, Any] = {}
    if cfg.algorithm == "tbptt":
        extra = {"k1": cfg.k1, "k2": cfg.k1 if cfg.k2 is None else cfg.k2}

    def truncated_or_rtrl(params: Params, X: Any, Y: Any, spec: RNNSpec, h0: Any, mask: Any,
                          steps: int | None) -> Any:
        kw = dict(extra) if steps is None else {**extra, "steps": steps}
        return mod.value_and_grad(params, X, Y, spec, h0=h0, mask=mask, **kw)
    return truncated_or_rtrl


@dataclass
class _EpochStats:
    """Running totals of one training epoch (JSON-serialisable for mid-epoch checkpoints)."""

    acc: Accumulator
    loss_sum: float = 0.0
    count: int = 0          # applied minibatches
    norm_sum: float = 0.0
    skipped: int = 0
    seqs: int = 0
    lr: float = math.nan
    seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("loss_sum", "count", "norm_sum", "skipped", "seqs",
                                           "lr", "seconds")}
        return {**d, "acc": self.acc.state_dict()}

    @classmethod
    def from_state(cls, spec: RNNSpec, d: Mapping[str, Any]) -> _EpochStats:
        st = cls(Accumulator.from_state(spec, d["acc"]))
        for k, v in d.items():
            if k != "acc":
                setattr(st, k, v)
        return st


def _encode_array(a: NDArray[Any] | None) -> dict[str, Any] | None:
    # float32/float64 -> Python float -> JSON repr -> back: exact
    return None if a is None else {"dtype": str(a.dtype), "shape": list(a.shape),
                                   "data": a.ravel().tolist()}


def _decode_array(d: Mapping[str, Any] | None) -> NDArray[Any] | None:
    if d is None:
        return None
    return np.array(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"])


class _Loop:
    """One call of :func:`fit`: set-up, optional resume, the epochs."""

    def __init__(self, params: Params, spec: RNNSpec, cfg: TrainConfig, train: _Data,
                 val: _Data | None, test: _Data | None, *,
                 callback: Callable[[dict[str, Any]], None] | None, stream: IO[str]) -> None:
        self.params, self.spec, self.cfg = params, spec, cfg
        self.dtype = check_params(params, spec)
        self.train, self.val, self.test = train, val, test
        if cfg.stateful and spec.bidirectional:
            raise ValueError("stateful=True carries final states forward in time; it cannot be "
                             "used with a bidirectional network")
        if cfg.stateful and len(train) < cfg.batch_size:
            raise ValueError(f"stateful training reads batch_size={cfg.batch_size} streams of "
                             f"windows; the train split has only {len(train)} sequences")
        for name, d in (("train", train), ("val", val), ("test", test)):
            if d is not None:
                _check_fits(params, spec, d, name)
        self.grad_fn = _gradient_function(cfg)
        self.opt, self.sched = cfg.make_optimizer(), cfg.make_schedule()
        self.opt_state: dict[str, Any] = self.opt.init(params)
        self.rng = np.random.default_rng(cfg.seed)
        self.eval_bs = cfg.eval_batch_size or max(cfg.batch_size, 256)
        self.names = metric_names(spec)
        self.callback = callback
        available = ["train_loss"] + [f"train_{m}" for m in ("accuracy", "perplexity")
                                      if m in self.names]
        if val is not None:
            available += [f"val_{m}" for m in self.names]
        self.stopper: EarlyStopping | None = None
        if cfg.monitor in available:
            self.stopper = EarlyStopping(cfg.monitor, cfg.mode, cfg.patience, cfg.min_delta)
        elif cfg.patience is not None:
            why = " (there is no validation split)" if val is None else ""
            raise ValueError(f"monitor {cfg.monitor!r} is not computed for this run{why}; "
                             f"available: {available}")
        self.ckpt_dir = None if cfg.checkpoint_dir is None else _prepare_dir(cfg.checkpoint_dir)
        self.log_path = None
        if cfg.log_path is not None:
            self.log_path = Path(cfg.log_path)
            if self.log_path.is_dir():
                raise IsADirectoryError(f"log_path {cfg.log_path!r} is a directory; expected a "
                                        "file path")
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot create the directory of log_path "
                                         f"{cfg.log_path!r}: {exc.strerror}") from None
        self.history = History(monitor=self.stopper.monitor if self.stopper else None)
        self.epoch = self.step = self.batch = 0     # completed epochs / steps / batches of epoch
        self.partial: _EpochStats | None = None
        self.hidden: NDArray[Any] | None = None
        self.last_ckpt: tuple[str, int, int] | None = None     # path, epoch, step
        self.finished_early = False
        self.flag = _StopFlag()
        self.progress = Progress(cfg.progress, stream, cfg.epochs)

    # ------------------------------------------------------------------------ checkpoints

    def _config(self) -> dict[str, Any]:
        return {**self.cfg.to_dict(), "spec": self.spec.to_dict(), "dtype": str(self.dtype)}

    def resume(self, resume: bool | str | os.PathLike[str]) -> None:
        if resume is True or resume == "auto":
            if self.ckpt_dir is None:
                raise ValueError(f"resume={resume!r} needs checkpoint_dir in the config (or pass "
                                 "the checkpoint's path)")
            path = self.ckpt_dir / "last.npz"
            if resume == "auto" and not path.exists():
                return
        elif isinstance(resume, str | os.PathLike):
            path = Path(resume)
        else:
            raise TypeError(f"resume must be True, 'auto' or a path; got {resume!r}")
        ck = checkpoint.load(path)
        checkpoint.check_compatible(ck, self.params, self._config(), config_keys=RESUME_KEYS)
        shape = ck.extra.get("train_shape")
        if shape is not None and shape != list(self.train.X.shape):
            raise ValueError(f"checkpoint {path} was trained on a train split of shape "
                             f"{tuple(shape)}; this one is {self.train.X.shape} (resuming needs "
                             "the same data)")
        slots = {"step", *self.opt.slots()}
        if ck.opt_state is None or set(ck.opt_state) != slots:
            got = None if ck.opt_state is None else sorted(ck.opt_state)
            raise ValueError(f"checkpoint {path} holds optimizer state {got}; "
                             f"{self.opt!r} needs {sorted(slots)}")
        for k in self.params:
            self.params[k] = np.array(ck.params[k], copy=True)
        self.opt_state = {s: v if s == "step" else {k: np.array(a, copy=True)
                                                     for k, a in v.items()}
                          for s, v in ck.opt_state.items()}
        self.rng = checkpoint.restore_rng(ck)
        self.epoch, self.step = ck.epoch, ck.step
        x = ck.extra
        self.batch = int(x.get("batch_in_epoch", 0))
        if x.get("partial") is not None:
            self.partial = _EpochStats.from_state(self.spec, x["partial"])
        self.hidden = _decode_array(x.get("hidden"))
        self.history.epochs = [dict(r) for r in x.get("history", [])]
        self.history.skipped = int(x.get("skipped", 0))
        if self.stopper is not None and x.get("early_stopping") is not None:
            self.stopper.load_state_dict(x["early_stopping"])
        self.finished_early = x.get("status") == "early_stopped"
        self.last_ckpt = (str(path), ck.epoch, ck.step)

    def _save(self, name: str, rng: np.random.Generator, stats: _EpochStats | None,
              status: str = "running") -> str:
        assert self.ckpt_dir is not None
        extra = {
            "batch_in_epoch": self.batch,
            "partial": None if stats is None else stats.state_dict(),
            "hidden": _encode_array(self.hidden) if stats is not None else None,
            "history": self.history.epochs,
            "early_stopping": None if self.stopper is None else self.stopper.state_dict(),
            "skipped": self.history.skipped,
            "status": status,
            "train_shape": list(self.train.X.shape),
        }
        path = checkpoint.save(self.ckpt_dir / name, params=self.params,
                               opt_state=self.opt_state, rng=rng, epoch=self.epoch,
                               step=self.step, config=self._config(), extra=extra)
        if name == "last.npz":
            self.last_ckpt = (str(path), self.epoch, self.step)
            self.history.checkpoint = str(path)
        return str(path)

    # ------------------------------------------------------------------------ the run

    def run(self) -> History:
        if self.log_path is not None:
            _write_log(self.log_path, self.history.epochs, "w")
        with _signals(self.flag):
            try:
                self._epochs()
            finally:
                self.progress.close()
        h = self.history
        h.epoch, h.step = self.epoch, self.step
        if self.stopper is not None:
            h.best_value, h.best_epoch = self.stopper.best, self.stopper.best_epoch
        if h.status in ("completed", "early_stopped") and self.test is not None:
            h.test = {f"test_{k}": v for k, v in self._evaluate(self.test).items()}
        return h

    def _plan(self) -> list[NDArray[np.intp]]:
        """This epoch's minibatches as index arrays (draws the permutation from the run's rng)."""
        n, B = len(self.train), self.cfg.batch_size
        if self.cfg.stateful:        # row b reads windows b*L, b*L+1, ...: chunk k continues k-1
            L = n // B
            base = np.arange(B) * L
            return [base + k for k in range(L)]
        order = self.rng.permutation(n) if self.cfg.shuffle else np.arange(n)
        return [order[i:i + B] for i in range(0, n, B)]

    def _epochs(self) -> None:
        if self.finished_early:
            self.history.status = "early_stopped"
            return
        for e in range(self.epoch, self.cfg.epochs):
            epoch_rng = copy.deepcopy(self.rng)     # the state this epoch's order comes from
            batches = self._plan()
            if self.partial is not None:
                stats, self.partial = self.partial, None
            else:
                stats, self.batch, self.hidden = _EpochStats(Accumulator(self.spec)), 0, None
            self.progress.start(e + 1, len(batches), self.batch)
            for b in range(self.batch, len(batches)):
                t0 = time.perf_counter()
                self._step(batches[b], stats, e, b, len(batches))
                stats.seconds += time.perf_counter() - t0
                self.batch = b + 1
                if self.flag.signum is not None:
                    return self._interrupted(epoch_rng, stats, e, len(batches))
            stop = self._end_epoch(e, stats)
            if self.flag.signum is not None and e + 1 < self.cfg.epochs and not stop:
                return self._interrupted(self.rng, None, e, len(batches))
            if stop:
                self.history.status = "early_stopped"
                self.history.message = (
                    f"early stopping after epoch {e + 1}: {self.cfg.monitor} did not improve "
                    f"for {self.cfg.patience} evaluation(s); best {self.history.best_value} "
                    f"at epoch {self.stopper.best_epoch if self.stopper else None}")
                return
        return

    def _interrupted(self, rng: np.random.Generator, stats: _EpochStats | None, e: int,
                     n: int) -> None:
        name = signal.Signals(self.flag.signum).name if self.flag.signum else "a signal"
        where = f"step {self.step} (epoch {e + 1}, batch {self.batch} of {n})"
        if stats is None:
            where = f"step {self.step} (end of epoch {e + 1})"
        if self.ckpt_dir is not None:
            path = self._save("last.npz", rng, stats)
            saved = f"checkpoint saved to {path}; continue with fit(..., resume=True)"
        else:
            saved = "no checkpoint_dir is set, so nothing was saved"
        self.history.status = "interrupted"
        self.history.message = f"interrupted by {name} after {where}; {saved}"

    def _step(self, idx: NDArray[np.intp], st: _EpochStats, e: int, b: int, n: int) -> None:
        cfg, params = self.cfg, self.params
        X, Y, M = self.train.take(idx)
        steps = Y.shape[1] if self.spec.setup == "one_to_many" else None
        lr = self.sched(self.opt_state["step"])
        h0 = self.hidden if cfg.stateful else None
        norm = math.nan
        bad: str | None = None
        if cfg.algorithm == "rtrl_online":
            saved_p = {k: v.copy() for k, v in params.items()}
            saved_s = copy.deepcopy(self.opt_state)
            kw = {} if steps is None else {"steps": steps}
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss, out = self.grad_fn(params, X, Y, self.spec, opt=self.opt,
                                         opt_state=self.opt_state, lr=lr, h0=h0, mask=M, **kw)
            loss = float(loss)
            if not math.isfinite(loss):
                bad = f"loss ({loss})"
            elif not _all_finite(params):
                bad = "parameters after the online updates"
            if bad is not None:                     # undo: the bad updates are never kept
                for k in params:
                    params[k] = saved_p[k]
                self.opt_state.clear()
                self.opt_state.update(saved_s)
        else:
            # overflow warnings are expected on a diverging step: finiteness is checked below
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss, g, out = self.grad_fn(params, X, Y, self.spec, h0, M, steps)
                loss = float(loss)
                grads = g.params
                if cfg.clip_norm is not None:
                    grads, norm = optim.clip_grad_norm(grads, cfg.clip_norm)
                else:
                    norm = optim.global_norm(grads)
                new_p, new_s = params, self.opt_state
                if math.isfinite(loss) and math.isfinite(norm):
                    new_p, new_s = self.opt.update(params, grads, self.opt_state, lr=lr)
            if not math.isfinite(loss):
                bad = f"loss ({loss})"
            elif not math.isfinite(norm):
                bad = f"gradient (global norm {norm})"
            elif not _all_finite(new_p):
                bad = "parameters after the update"
            else:
                params.update(new_p)
                self.opt_state.clear()
                self.opt_state.update(new_s)
        self.history.step_losses.append(loss)
        if bad is not None:
            if cfg.on_nonfinite == "stop":
                self._diverged(bad, e, b, n)
            st.skipped += 1
            self.history.skipped += 1
        else:
            st.loss_sum += loss
            st.count += 1
            st.norm_sum += norm
            st.acc.add(out.logits, Y, M, loss=False)
        st.seqs += len(X)
        st.lr = lr
        self.step += 1
        if cfg.stateful:
            h = out.h_n
            self.hidden = h if np.isfinite(h).all() else None
        if self.progress.enabled:
            info = {"loss": f"{st.loss_sum / st.count:.4f}" if st.count else "nan"}
            if "accuracy" in self.names:
                info["acc"] = f"{st.acc.result()['accuracy']:.3f}"
            info["seq/s"] = f"{st.seqs / max(st.seconds, 1e-9):.0f}"
            self.progress.update(info)

    def _diverged(self, what: str, e: int, b: int, n: int) -> None:
        step = self.step + 1
        if self.last_ckpt is not None:
            path, ce, cs = self.last_ckpt
            tail = f"last good checkpoint: {path} (epoch {ce}, step {cs})"
        elif self.ckpt_dir is not None:
            tail = f"no checkpoint has been written to {self.ckpt_dir} yet"
        else:
            tail = "there is no checkpoint (checkpoint_dir is not set)"
        msg = (f"training diverged: non-finite {what} at step {step} (epoch {e + 1}, batch "
               f"{b + 1} of {n}); the update was not applied; {tail}. Try a smaller lr, "
               "clip_norm, or on_nonfinite='skip'")
        h = self.history
        h.status, h.message, h.epoch, h.step = "diverged", msg, self.epoch, self.step
        h.checkpoint = None if self.last_ckpt is None else self.last_ckpt[0]
        raise DivergenceError(msg, step=step, epoch=e + 1, checkpoint=h.checkpoint, history=h)

    def _evaluate(self, d: _Data) -> dict[str, float]:
        acc = Accumulator(self.spec)
        if not self.cfg.stateful:
            for start in range(0, len(d), self.eval_bs):
                X, Y, M = d.take(slice(start, start + self.eval_bs))
                steps = Y.shape[1] if self.spec.setup == "one_to_many" else None
                out, _ = network.forward(self.params, X, self.spec, mask=M, steps=steps)
                acc.add(out.logits, Y, M)
            return acc.result()
        # stateful: `rows` streams of consecutive windows (batch_size of them, as in training),
        # state carried; the < rows windows left over continue the last stream one by one
        rows = min(self.cfg.eval_batch_size or self.cfg.batch_size, len(d))
        L = len(d) // rows
        h: NDArray[Any] | None = None
        for k in range(L):
            X, Y, M = d.take(np.arange(rows) * L + k)
            out, _ = network.forward(self.params, X, self.spec, h0=h, mask=M)
            acc.add(out.logits, Y, M)
            h = out.h_n
        h_tail = None if h is None else h[:, -1:]
        for i in range(rows * L, len(d)):
            X, Y, M = d.take(slice(i, i + 1))
            out, _ = network.forward(self.params, X, self.spec, h0=h_tail, mask=M)
            acc.add(out.logits, Y, M)
            h_tail = out.h_n
        return acc.result()

    def _end_epoch(self, e: int, st: _EpochStats) -> bool:
        cfg = self.cfg
        train_loss = st.loss_sum / st.count if st.count else math.nan
        rec: dict[str, Any] = {"epoch": e + 1, "step": self.step, "lr": st.lr,
                               "train_loss": train_loss}
        if "accuracy" in self.names:
            rec["train_accuracy"] = st.acc.result()["accuracy"]
        if "perplexity" in self.names and self.spec.reduction == "mean":
            rec["train_perplexity"] = math.exp(train_loss) if train_loss < 700 else math.inf
        rec["train_grad_norm"] = st.norm_sum / st.count if st.count else math.nan
        rec["train_skipped"] = st.skipped
        if self.val is not None and ((e + 1) % cfg.eval_every == 0 or e + 1 == cfg.epochs):
            rec.update({f"val_{k}": v for k, v in self._evaluate(self.val).items()})
        rec["time"] = st.seconds
        rec["seq_per_s"] = st.seqs / st.seconds if st.seconds > 0 else None
        rec = {k: _finite_or_none(v) for k, v in rec.items()}
        improved = stop = False
        if self.stopper is not None and cfg.monitor in rec:
            value = rec[cfg.monitor]
            improved = self.stopper.update(math.nan if value is None else value, e + 1)
            stop = self.stopper.should_stop
        self.epoch, self.batch = e + 1, 0
        self.hidden = None
        self.history.epochs.append(rec)
        if self.ckpt_dir is not None:
            status = "early_stopped" if stop else "running"
            if improved:
                self._save("best.npz", self.rng, None, status)
            if (e + 1) % cfg.checkpoint_every == 0 or e + 1 == cfg.epochs or stop:
                self._save("last.npz", self.rng, None, status)
        if self.log_path is not None:
            _write_log(self.log_path, [rec], "a")
        self.progress.end(rec)
        if self.callback is not None:
            self.callback(rec)
        return stop


def fit(
    params: Params,
    spec: RNNSpec,
    data: Any,
    config: TrainConfig | None = None,
    *,
    val: Any = None,
    test: Any = None,
    resume: bool | str | os.PathLike[str] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    stream: IO[str] | None = None,
) -> History:
    """Train ``params`` (updated in place) on ``data``.

    Parameters
    ----------
    params : dict
        The network's parameters (:func:`rnnlab.init_params`); after every applied update the
        dict's entries are the new arrays.
    spec : RNNSpec
    data : Dataset, Split or tuple
        A :class:`rnnlab.data.Dataset` (its train split is trained on, val evaluated each epoch,
        test at the end), or the training split as a ``Split`` / ``(X, y)`` / ``(X, y, mask)``.
    config : TrainConfig, optional
    val, test : Split or tuple, optional
        Override or supply the validation / test splits.
    resume : bool, "auto" or path, optional
        Continue from a checkpoint: a path, True for ``checkpoint_dir/last.npz``, or ``"auto"``
        to resume from it if it exists.  Shapes and the trajectory-defining config fields
        (:data:`RESUME_KEYS`) must match, else ValueError.
    callback : callable, optional
        Called with each epoch's record after it is logged.
    stream : file, optional
        Where the progress bar writes (default ``sys.stderr``).

    Returns
    -------
    History
        ``status`` is ``"interrupted"`` after SIGINT/SIGTERM (the step in flight is finished and
        a checkpoint saved if ``checkpoint_dir`` is set), else ``"completed"`` or
        ``"early_stopped"``.

    Raises
    ------
    DivergenceError
        A non-finite loss, gradient or update with ``on_nonfinite="stop"``; the message names the
        step and the last good checkpoint.
    """
    cfg = TrainConfig() if config is None else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(cfg).__name__}")
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    check_params(params, spec)
    ds = data if isinstance(data, Dataset) else None
    train = _as_data(ds.train if ds is not None else data, "train")
    assert train is not None
    val_d = _as_data(val if val is not None else (ds.val if ds is not None else None), "val")
    test_d = _as_data(test if test is not None else (ds.test if ds is not None else None), "test")
    loop = _Loop(params, spec, cfg, train, val_d, test_d, callback=callback,
                 stream=sys.stderr if stream is None else stream)
    if resume:
        loop.resume(resume)
    return loop.run()
