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
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from ..core import network
from ..core.params import Params, check_params
from ..core.spec import RNNSpec
from ..data.base import Dataset
from ..learning import ONLINE
from ..learning.diagnostics import per_step_gradients
from . import checkpoint, optim, tracking
from .callbacks import Callback, LambdaCallback, ReduceLROnPlateau, StopTraining
from .config import ALGORITHMS, RESUME_KEYS, TrainConfig
from .files import DirectoryLock, finite_or_none, prepare_dir, remove_stale_temps, write_log
from .health import Health, chance_level
from .history import DivergenceError, History
from .metrics import Accumulator, EarlyStopping, metric_names, task_metrics
from .progress import Progress
from .schedules import Plateau, Warmup
from .signals import StopFlag, catch
from .splits import TrainData, as_data, check_fits, spec_for_dataset
from .steps import FastRuleStep, FastStep, fast_path_note, gradient_function, rule_rng

__all__ = [
    "ALGORITHMS",
    "DivergenceError",
    "History",
    "TrainConfig",
    "check_fit",
    "check_resume",
    "fit",
    "resume_config",
    "spec_for_dataset",
]


def _all_finite(arrays: Mapping[str, NDArray[Any]]) -> bool:
    return all(np.isfinite(a).all() for a in arrays.values())


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


def _callbacks(callbacks: Sequence[Callback] | None,
               callback: Callable[[dict[str, Any]], Any] | None) -> list[Callback]:
    out: list[Callback] = []
    for cb in callbacks or ():
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be rnnlab.train.callbacks.Callback objects; got "
                            f"{type(cb).__name__} (wrap a function in LambdaCallback)")
        out.append(cb)
    if callback is not None:
        if not callable(callback):
            raise TypeError(f"callback must be callable with an epoch record; got {callback!r}")
        out.append(LambdaCallback(on_epoch_end=lambda epoch, logs: callback(dict(logs))))
    return out


def _plateau(sched: Any) -> Plateau | None:
    if isinstance(sched, Warmup):
        sched = sched.schedule
    return sched if isinstance(sched, Plateau) else None


def _monitors(spec: RNNSpec, val: TrainData | None) -> list[str]:
    names = metric_names(spec)
    available = ["train_loss"] + [f"train_{m}" for m in ("accuracy", "perplexity")
                                  if m in names]
    if val is not None:
        available += [f"val_{m}" for m in names]
    return available


def _check(params: Params, spec: RNNSpec, cfg: TrainConfig, train: TrainData,
           val: TrainData | None, test: TrainData | None) -> np.dtype:
    """Everything :func:`fit` validates before it writes anything; returns the dtype."""
    dtype = check_params(params, spec)
    if cfg.stateful and spec.bidirectional:
        raise ValueError("stateful=True carries final states forward in time; it cannot be "
                         "used with a bidirectional network")
    if cfg.stateful and len(train) < cfg.batch_size:
        raise ValueError(f"stateful training reads batch_size={cfg.batch_size} streams of "
                         f"windows; the train split has only {len(train)} sequences")
    if cfg.algorithm != "bptt" and spec.bidirectional:
        raise ValueError(f"algorithm {cfg.algorithm!r} walks time forwards and needs a "
                         "unidirectional network (bidirectional=False); use algorithm='bptt'")
    if train.weight is not None and cfg.algorithm != "bptt":
        raise ValueError(f"sample_weight needs algorithm='bptt'; {cfg.algorithm!r} (a "
                         "learning rule of rnnlab.learning) takes no weights")
    for name, d in (("train", train), ("val", val), ("test", test)):
        if d is not None:
            check_fits(params, spec, d, name)
    available = _monitors(spec, val)
    if cfg.monitor not in available and cfg.patience is not None:
        why = " (there is no validation split)" if val is None else ""
        raise ValueError(f"monitor {cfg.monitor!r} is not computed for this run{why}; "
                         f"available: {available}")
    if cfg.log_path is not None and Path(cfg.log_path).is_dir():
        raise IsADirectoryError(f"log_path {cfg.log_path!r} is a directory; expected a file "
                                "path")
    if cfg.checkpoint_dir is not None and Path(cfg.checkpoint_dir).exists() \
            and not Path(cfg.checkpoint_dir).is_dir():
        raise NotADirectoryError(f"checkpoint_dir {cfg.checkpoint_dir!r} exists and is not a "
                                 "directory")
    return dtype


def check_fit(params: Params, spec: RNNSpec, data: Any, config: TrainConfig | None = None, *,
              val: Any = None, test: Any = None) -> None:
    """Validate a :func:`fit` call without training or writing anything.

    The same checks :func:`fit` makes before its first step, with the same errors: the
    parameters against ``spec``, every sequence of every split (shapes, finite values, labels
    and targets, masks), the config against the data (stateful streams, the monitor of early
    stopping, a bidirectional network with a forward-only rule), and that the configured paths
    can be used.  Sweeps call it for every cell before the first runs.
    """
    cfg = TrainConfig() if config is None else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(cfg).__name__}")
    if not isinstance(spec, RNNSpec):
        raise TypeError(f"spec must be an RNNSpec; got {type(spec).__name__}")
    check_params(params, spec)
    ds = data if isinstance(data, Dataset) else None
    train = as_data(ds.train if ds is not None else data, "train")
    if train is None:
        raise ValueError("the train split has no sequences")
    val_d = as_data(val if val is not None else (ds.val if ds is not None else None), "val")
    test_d = as_data(test if test is not None else (ds.test if ds is not None else None), "test")
    _check(params, spec, cfg, train, val_d, test_d)


def resume_config(cfg: TrainConfig, spec: RNNSpec, dtype: Any) -> dict[str, Any]:
    """The config a checkpoint of :func:`fit` records (``TrainConfig`` fields, ``spec``,
    ``dtype``), compared on resume over :data:`RESUME_KEYS`; ``clip_norm`` as the clip that
    applies (``"auto"`` resolved), so that ``"auto"`` and its value resume each other."""
    return {**cfg.to_dict(), "clip_norm": cfg.clip, "spec": spec.to_dict(),
            "dtype": str(np.dtype(dtype))}


def check_resume(path: str | os.PathLike[str], params: Params, spec: RNNSpec, cfg: TrainConfig,
                 train_shape: tuple[int, ...] | None = None) -> checkpoint.Checkpoint:
    """Load the checkpoint at ``path`` and check that :func:`fit` can resume from it with
    ``params``, ``spec`` and ``cfg`` (and a train split of ``train_shape``): the
    :data:`RESUME_KEYS` of the config, parameter keys, shapes and dtypes, the optimizer state.
    Raises ValueError listing every difference (``CheckpointError`` for an unreadable file);
    returns the checkpoint."""
    ck = checkpoint.load(path)
    dtype = check_params(params, spec)
    checkpoint.check_compatible(ck, params, resume_config(cfg, spec, dtype),
                                config_keys=RESUME_KEYS)
    shape = ck.extra.get("train_shape")
    if shape is not None and train_shape is not None and list(shape) != list(train_shape):
        raise ValueError(f"checkpoint {path} was trained on a train split of shape "
                         f"{tuple(shape)}; this one is {tuple(train_shape)} (resuming needs "
                         "the same data)")
    opt = cfg.make_optimizer()
    slots = {"step", *opt.slots()}
    if ck.opt_state is None or set(ck.opt_state) != slots:
        got = None if ck.opt_state is None else sorted(ck.opt_state)
        raise ValueError(f"checkpoint {path} holds optimizer state {got}; "
                         f"{opt!r} needs {sorted(slots)}")
    return ck


def updates_per_batch(spec: RNNSpec, cfg: TrainConfig, train: TrainData) -> int:
    """The optimizer updates one minibatch makes: one, but for an online rule
    (:data:`rnnlab.learning.ONLINE`) one per block of ``every`` steps that scores a target
    (eq. 42): ``ceil(T / every)`` when every step has an output, one when only the last step
    has.  With a mask, a block whose steps are all padding in a minibatch makes no update, so
    a run over padded sequences may make fewer than this counts."""
    if cfg.algorithm not in ONLINE or not spec.per_step_output:
        return 1
    T = int(train.y.shape[1] if spec.setup == "one_to_many" else train.X.shape[1])
    every = int(cfg.algorithm_kwargs.get("every", 1))
    return max(1, -(-T // every))


class _Loop:
    """One call of :func:`fit`: set-up, optional resume, the epochs.

    It is also what callbacks see as ``callback.trainer`` (:class:`rnnlab.train.callbacks.Trainer`:
    ``params``, ``spec``, ``config``, ``history``, ``epoch``, ``step``, ``lr_scale``,
    ``stop_training``, ``available_metrics``).
    """

    def __init__(self, params: Params, spec: RNNSpec, cfg: TrainConfig, train: TrainData,
                 val: TrainData | None, test: TrainData | None, *,
                 callbacks: list[Callback], stream: IO[str],
                 opt_state: Mapping[str, Any] | None = None,
                 dataset: Dataset | None = None) -> None:
        self.params, self.spec, self.cfg = params, spec, cfg
        self.config = cfg
        self.dataset = dataset          # its task metrics are scored on its own test split
        self.dtype = _check(params, spec, cfg, train, val, test)
        self.train, self.val, self.test = train, val, test
        n, B = len(train), cfg.batch_size
        self.batches_per_epoch = n // B if cfg.stateful else -(-n // B)
        self.opt = cfg.make_optimizer()
        # a schedule counts optimizer updates; its default length is the run's
        self.sched = cfg.make_schedule().with_length(
            cfg.epochs * self.batches_per_epoch * updates_per_batch(spec, cfg, train))
        self.opt_state: dict[str, Any] = self.opt.init(params)
        if opt_state is not None:
            self._set_opt_state(opt_state)
        self.rng = np.random.default_rng(cfg.seed)
        self.eval_bs = cfg.eval_batch_size or max(cfg.batch_size, 256)
        self.names = metric_names(spec)
        self.available_metrics = _monitors(spec, val)
        self.lr_scale = 1.0
        self.stop_training = False
        self.stop_reason = ""
        self.callbacks = list(callbacks)
        plateau = _plateau(self.sched)
        if plateau is not None:
            self.callbacks.insert(0, ReduceLROnPlateau(**plateau.callback_kwargs()))
        if cfg.tracking is not None:
            where = tracking.default_dir(cfg.tracking_dir, cfg.log_path, cfg.checkpoint_dir)
            self.callbacks.append(tracking.make_tracker(cfg.tracking, where))
        self.stopper: EarlyStopping | None = None
        if cfg.monitor in _monitors(spec, val):
            self.stopper = EarlyStopping(cfg.monitor, cfg.mode, cfg.patience, cfg.min_delta)
        self.log_path = None
        if cfg.log_path is not None:
            self.log_path = Path(cfg.log_path)
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot create the directory of log_path "
                                         f"{cfg.log_path!r}: {exc.strerror}") from None
        self.ckpt_dir = None if cfg.checkpoint_dir is None else prepare_dir(cfg.checkpoint_dir)
        self.history = History(monitor=self.stopper.monitor if self.stopper else None)
        self.epoch = self.step = self.batch = 0     # completed epochs / steps / batches of epoch
        self.partial: _EpochStats | None = None
        self.hidden: NDArray[Any] | None = None
        self.last_ckpt: tuple[str, int, int] | None = None     # path, epoch, step
        self.best_params: Params | None = None       # the parameters at the monitor's best epoch
        self.health = Health(chance_level(spec.loss, spec.reduction, spec.output_size)) \
            if cfg.health else None
        # the probe batch of the gradient-through-time check: sequence targets at the last step
        self.probe = (train.take(slice(0, min(32, len(train))))
                      if cfg.health and spec.setup == "many_to_one" and spec.label_steps == "last"
                      else None)
        self.finished_early = False
        self.flag = StopFlag()
        self.fast_path = fast_path_note(cfg, spec, self.dtype, train.mask is not None)
        t0 = time.perf_counter()
        self.rule_rng = rule_rng(cfg)          # a stochastic rule's random signs (UORO, KF-RTRL)
        self.grad_fn = gradient_function(cfg, spec, self.rule_rng)  # engine compiled now
        self.flat: optim.FlatUpdate | None = None         # the fast path's flat update
        self.startup_s = time.perf_counter() - t0
        self.progress = Progress(cfg.progress, stream, cfg.epochs)

    def _set_opt_state(self, state: Mapping[str, Any]) -> None:
        slots = {"step", *self.opt.slots()}
        if not isinstance(state, Mapping) or set(state) != slots:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"opt_state must hold {sorted(slots)} for {self.opt!r}; got {got}")
        for slot in self.opt.slots():
            optim.check_tree(self.params, state[slot], f"opt_state[{slot!r}]")
        self.opt_state = {s: v if s == "step" else {k: np.array(a, copy=True)
                                                     for k, a in v.items()}
                          for s, v in state.items()}

    # ------------------------------------------------------------------------ checkpoints

    def _config(self) -> dict[str, Any]:
        return resume_config(self.cfg, self.spec, self.dtype)

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
        ck = check_resume(path, self.params, self.spec, self.cfg, self.train.X.shape)
        assert ck.opt_state is not None
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
        if self.rule_rng is not None:
            if x.get("rule_rng") is None:
                raise ValueError(f"checkpoint {path} holds no state of the rule's Generator "
                                 f"(algorithm {self.cfg.algorithm!r} draws random numbers)")
            self.rule_rng.bit_generator.state = x["rule_rng"]
        self.history.epochs = [dict(r) for r in x.get("history", [])]
        self.history.skipped = int(x.get("skipped", 0))
        if self.stopper is not None and x.get("early_stopping") is not None:
            self.stopper.load_state_dict(x["early_stopping"])
            self.best_params = self._saved_best()
        self.finished_early = x.get("status") == "early_stopped"
        self.lr_scale = float(x.get("lr_scale", 1.0))
        states = x.get("callbacks") or []
        for cb, st in zip(self.callbacks, states, strict=False):
            if isinstance(st, Mapping) and st.get("class") == type(cb).__name__:
                cb.load_state_dict(st.get("state") or {})
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
            # where a stochastic rule's Generator stands after the last completed step
            "rule_rng": None if self.rule_rng is None else self.rule_rng.bit_generator.state,
            "lr_scale": self.lr_scale,
            "callbacks": [{"class": type(cb).__name__, "state": cb.state_dict()}
                          for cb in self.callbacks],
        }
        path = checkpoint.save(self.ckpt_dir / name, params=self.params,
                               opt_state=self.opt_state, rng=rng, epoch=self.epoch,
                               step=self.step, config=self._config(), extra=extra)
        if name == "last.npz":
            self.last_ckpt = (str(path), self.epoch, self.step)
            self.history.checkpoint = str(path)
        return str(path)

    # ------------------------------------------------------------------------ the run

    def _call(self, hook: str, *args: Any) -> Any:
        """Every callback's ``hook``; a StopTraining is remembered (training stops after the
        epoch) rather than raised."""
        stop = False
        for cb in self.callbacks:
            try:
                if getattr(cb, hook)(*args):
                    stop = True
                    self._stop(cb, "")
            except StopTraining as exc:
                stop = True
                self._stop(cb, str(exc))
        return stop

    def _stop(self, cb: Callback, why: str) -> None:
        if not self.stop_reason:
            self.stop_reason = f"stopped by {type(cb).__name__}" + (f": {why}" if why else "")
        self.stop_training = True

    def run(self) -> History:
        if self.log_path is not None:
            write_log(self.log_path, self.history.epochs, "w")
        for cb in self.callbacks:
            cb.set_trainer(self)
        self._call("on_train_begin", {"epoch": self.epoch, "step": self.step})
        with catch(self.flag):
            try:
                self._epochs()
            finally:
                self.progress.close()
        h = self.history
        h.epoch, h.step = self.epoch, self.step
        h.opt_state, h.startup_s, h.fast_path = self.opt_state, self.startup_s, self.fast_path
        h.lr_scale = self.lr_scale
        if self.stopper is not None:
            h.best_value, h.best_epoch = self.stopper.best, self.stopper.best_epoch
        if h.status in ("completed", "early_stopped"):
            self._restore_best()
        if h.status in ("completed", "early_stopped") and self.test is not None:
            h.test = {f"test_{k}": v for k, v in self._evaluate(self.test).items()}
            ds = self.dataset
            if ds is not None and not self.cfg.stateful and self.test.X is ds.test.X:
                # on the engine that scored the split above (the same forward pass)
                fs = self.grad_fn
                engine = fs.engine if isinstance(fs, FastStep) else (
                    "fast" if isinstance(fs, FastRuleStep) else "reference")
                h.test.update({f"test_{k}": v for k, v in task_metrics(
                    self.params, self.spec, ds, "test", batch_size=self.eval_bs,
                    engine=engine).items()})
        self._call("on_train_end", {"epoch": self.epoch, "step": self.step, "status": h.status})
        return h

    def _check_gradients(self, epoch: int) -> None:
        """The gradient-through-time check on the probe batch (eq. 35, reference engine)."""
        if self.probe is None or self.health is None:
            return
        X, Y, M = self.probe
        top = (self.spec.num_layers - 1) * self.spec.num_directions       # forward direction
        with np.errstate(all="ignore"):
            sg = per_step_gradients(self.params, X, Y, self.spec, mask=M)
        self.health.gradients(sg.dh_norm[top], epoch, self.step)

    def _saved_best(self) -> Params | None:
        """The best epoch's parameters from ``best.npz`` when resuming (None if absent or from
        another epoch: the run then ends with its last weights and says so)."""
        if not self.cfg.restore_best or self.ckpt_dir is None or self.stopper is None:
            return None
        path = self.ckpt_dir / "best.npz"
        if not path.exists():
            return None
        ck = checkpoint.load(path)
        if ck.epoch != self.stopper.best_epoch or set(ck.params) != set(self.params):
            return None
        return {k: np.array(ck.params[k], copy=True) for k in self.params}

    def _restore_best(self) -> None:
        """Keras' ``restore_best_weights``: end with the parameters of the monitor's best epoch
        (``TrainConfig.restore_best``); History says which weights the run ends with."""
        h = self.history
        h.weights, h.weights_epoch = "last", self.epoch
        best = None if self.stopper is None else self.stopper.best_epoch
        if not self.cfg.restore_best or best is None or best == self.epoch:
            return
        if self.best_params is None:
            h.message = (h.message + "; " if h.message else "") + (
                f"the best weights (epoch {best}) were not available to restore; the run ends "
                f"with epoch {self.epoch}'s")
            return
        for k in self.params:
            self.params[k] = self.best_params[k]
        h.weights, h.weights_epoch = "best", best

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
            self._call("on_epoch_begin", e + 1, {"epoch": e + 1, "step": self.step})
            self.progress.start(e + 1, len(batches), self.batch)
            for b in range(self.batch, len(batches)):
                t0 = time.perf_counter()
                loss, lr = self._step(batches[b], stats, e, b, len(batches))
                stats.seconds += time.perf_counter() - t0
                self.batch = b + 1
                self._show(stats)
                if self.callbacks:
                    self._call("on_train_batch_end", self.step,
                               {"loss": loss, "lr": lr, "epoch": e + 1, "batch": b + 1})
                if self.flag.signum is not None:
                    return self._interrupted(epoch_rng, stats, e, len(batches))
            stop = self._end_epoch(e, stats)
            if self.flag.signum is not None and e + 1 < self.cfg.epochs and not stop:
                return self._interrupted(self.rng, None, e, len(batches))
            if stop:
                self.history.status = "early_stopped"
                if self.stop_reason:
                    self.history.message = f"{self.stop_reason} (after epoch {e + 1})"
                else:
                    self.history.message = (
                        f"early stopping after epoch {e + 1}: {self.cfg.monitor} did not "
                        f"improve for {self.cfg.patience} evaluation(s); best "
                        f"{self.history.best_value} at epoch "
                        f"{self.stopper.best_epoch if self.stopper else None}")
                return
        return

    def _show(self, st: _EpochStats) -> None:
        """The progress bar's running numbers (rates from the steps' own time)."""
        if not self.progress.enabled:
            return
        info = {"loss": f"{st.loss_sum / st.count:.4f}" if st.count else "nan"}
        if "accuracy" in self.names:
            info["acc"] = f"{st.acc.result()['accuracy']:.3f}"
        if st.seconds > 0:
            info["seq/s"] = f"{st.seqs / st.seconds:.0f}"
        self.progress.update(info)

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

    def _step(self, idx: NDArray[np.intp], st: _EpochStats, e: int, b: int, n: int
              ) -> tuple[float, float]:
        """One minibatch: its gradient and update (never applied when non-finite), then the
        epoch's running totals; returns the loss and the learning rate."""
        X, Y, M = self.train.take(idx)
        W = self.train.take_weight(idx)
        steps = Y.shape[1] if self.spec.setup == "one_to_many" else None
        lr = self.sched(self.opt_state["step"]) * self.lr_scale
        h0 = self.hidden if self.cfg.stateful else None
        if self.cfg.algorithm in ONLINE:
            loss, out, bad = self._online_step(X, Y, M, steps, lr, h0)
            norm = math.nan
        elif isinstance(self.grad_fn, FastStep):
            loss, out, norm, bad = self._fast_step(self.grad_fn, X, Y, M, W, steps, lr, h0)
        else:
            loss, out, norm, bad = self._batch_step(X, Y, M, W, steps, lr, h0)
        self.history.step_losses.append(loss)
        if self.health is not None:
            self.health.step(loss, e + 1, self.step + 1)
        if bad is not None:
            if self.cfg.on_nonfinite == "stop":
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
        if self.cfg.stateful:
            h = out.h_n
            self.hidden = h if np.isfinite(h).all() else None
        return loss, lr

    def _batch_step(self, X: Any, Y: Any, M: Any, W: Any, steps: int | None, lr: float, h0: Any
                    ) -> tuple[float, Any, float, str | None]:
        """Gradient, clipping and one optimizer update, applied only when everything is finite:
        ``(loss, output, gradient norm, what was not finite or None)``."""
        params = self.params
        # overflow warnings are expected on a diverging step: finiteness is checked below
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss, g, out = self.grad_fn(params, X, Y, self.spec, h0, M, steps, W)
            loss = float(loss)
            grads = g.params
            clip = self.cfg.clip                      # clip_norm resolved: float or None
            if clip is not None:
                grads, norm = optim.clip_grad_norm(grads, clip)
            else:
                norm = optim.global_norm(grads)
            new_p, new_s = params, self.opt_state
            if math.isfinite(loss) and math.isfinite(norm):
                new_p, new_s = self.opt.update(params, grads, self.opt_state, lr=lr)
        if not math.isfinite(loss):
            return loss, out, norm, f"loss ({loss})"
        if not math.isfinite(norm):
            return loss, out, norm, f"gradient (global norm {norm})"
        if not _all_finite(new_p):
            return loss, out, norm, "parameters after the update"
        params.update(new_p)
        self.opt_state.clear()
        self.opt_state.update(new_s)
        return loss, out, norm, None

    def _fast_step(self, fs: FastStep, X: Any, Y: Any, M: Any, W: Any, steps: int | None,
                   lr: float, h0: Any) -> tuple[float, Any, float, str | None]:
        """:meth:`_batch_step` on the fast path: the gradients as one flat vector (the
        engine's buffer), clipped in place, and one optimizer update over flat parameters and
        state (:class:`rnnlab.train.optim.FlatUpdate`), undone when the new parameters are not
        all finite: the same rules, the same numbers as the per-parameter path would give."""
        params = self.params
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss, grads, out = fs(params, X, Y, self.spec, h0, M, steps, W)
            loss = float(loss)
            g = fs.flat_grad                          # grads.params are blocks of it
            # the global norm as optim.global_norm computes it (per array, then combined: the
            # same number as _batch_step's), and clipping as optim.clip_grad_norm, in place
            norm = optim.global_norm(grads.params)
            clip = self.cfg.clip                      # clip_norm resolved: float or None
            if clip is not None:
                g *= g.dtype.type(optim.clip_coefficient(norm, clip))
            if not math.isfinite(loss):
                return loss, out, norm, f"loss ({loss})"
            if not math.isfinite(norm):
                return loss, out, norm, f"gradient (global norm {norm})"
            if self.flat is None or self.flat.order != fs.grad_order:
                self.flat = optim.FlatUpdate(self.opt, fs.grad_order)
            if not self.flat.step(params, self.opt_state, g, lr):
                return loss, out, norm, "parameters after the update"
        return loss, out, norm, None

    def _online_step(self, X: Any, Y: Any, M: Any, steps: int | None, lr: float, h0: Any
                     ) -> tuple[float, Any, str | None]:
        """An online rule's updates along the minibatch, undone when anything is non-finite:
        ``(loss, output, what was not finite or None)``."""
        params = self.params
        saved_p = {k: v.copy() for k, v in params.items()}
        saved_s = copy.deepcopy(self.opt_state)
        kw = {} if steps is None else {"steps": steps}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss, out = self.grad_fn(params, X, Y, self.spec, opt=self.opt,
                                     opt_state=self.opt_state, lr=lr, h0=h0, mask=M, **kw)
        loss = float(loss)
        bad = (f"loss ({loss})" if not math.isfinite(loss) else
               "parameters after the online updates" if not _all_finite(params) else None)
        if bad is not None:                     # undo: the bad updates are never kept
            for k in params:
                params[k] = saved_p[k]
            self.opt_state.clear()
            self.opt_state.update(saved_s)
        return loss, out, bad

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

    def _forward(self, X: Any, h0: Any = None, mask: Any = None, steps: int | None = None
                 ) -> tuple[NDArray[Any], NDArray[Any] | None]:
        """``(logits, h_n)`` of a batch (``h_n`` None unless the run is stateful): on the
        training's fast engine when it has one (a forward pass only, with buffers of its own;
        the logits a view, valid until its next call), else the reference forward pass."""
        fs = self.grad_fn
        if isinstance(fs, FastStep | FastRuleStep):
            logits = fs.logits(self.params, X, h0=h0, mask=mask, steps=steps)
            return logits, (fs.h_n() if self.cfg.stateful else None)
        out, _ = network.forward(self.params, X, self.spec, h0=h0, mask=mask, steps=steps)
        return out.logits, out.h_n

    def _evaluate(self, d: TrainData) -> dict[str, float]:
        acc = Accumulator(self.spec)
        if not self.cfg.stateful:
            for start in range(0, len(d), self.eval_bs):
                X, Y, M = d.take(slice(start, start + self.eval_bs))
                steps = Y.shape[1] if self.spec.setup == "one_to_many" else None
                logits, _ = self._forward(X, mask=M, steps=steps)
                acc.add(logits, Y, M)
            return acc.result()
        # stateful: `rows` streams of consecutive windows (batch_size of them, as in training),
        # state carried; the < rows windows left over continue the last stream one by one
        rows = min(self.cfg.eval_batch_size or self.cfg.batch_size, len(d))
        L = len(d) // rows
        h: NDArray[Any] | None = None
        for k in range(L):
            X, Y, M = d.take(np.arange(rows) * L + k)
            logits, h = self._forward(X, h0=h, mask=M)
            acc.add(logits, Y, M)
        h_tail = None if h is None else h[:, -1:]
        for i in range(rows * L, len(d)):
            X, Y, M = d.take(slice(i, i + 1))
            logits, h_tail = self._forward(X, h0=h_tail, mask=M)
            acc.add(logits, Y, M)
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
        if self.health is not None:
            self._check_gradients(e + 1)
            rec["health"] = self.health.end_epoch(train_loss, e + 1, self.step)
            self.history.health = self.health.events
        rec = {k: finite_or_none(v) for k, v in rec.items()}
        improved = stop = False
        if self.stopper is not None and cfg.monitor in rec:
            value = rec[cfg.monitor]
            improved = self.stopper.update(math.nan if value is None else value, e + 1)
            stop = self.stopper.should_stop
            if improved and cfg.restore_best:
                self.best_params = {k: v.copy() for k, v in self.params.items()}
        self.epoch, self.batch = e + 1, 0
        self.hidden = None
        self.history.epochs.append(rec)
        # callbacks before the checkpoint: it holds their state (a lowered rate) and a stop
        if self._call("on_epoch_end", e + 1, dict(rec)) or self.stop_training:
            self.stop_training = stop = True
        if self.ckpt_dir is not None:
            status = "early_stopped" if stop else "running"
            if improved:
                self._save("best.npz", self.rng, None, status)
            if (e + 1) % cfg.checkpoint_every == 0 or e + 1 == cfg.epochs or stop:
                self._save("last.npz", self.rng, None, status)
        if self.log_path is not None:
            write_log(self.log_path, [rec], "a")
        self.progress.end(rec)
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
    callback: Callable[[dict[str, Any]], Any] | None = None,
    callbacks: Sequence[Callback] | None = None,
    sample_weight: Any = None,
    opt_state: Mapping[str, Any] | None = None,
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
        Called with each epoch's record after it is evaluated; a true return value stops
        training after that epoch.
    callbacks : list of Callback, optional
        Keras-style callbacks (:mod:`rnnlab.train.callbacks`): ``EarlyStopping``,
        ``ReduceLROnPlateau``, ``TensorBoard``, your own; any can stop training.
    sample_weight : array, optional
        Loss weights of the training split, ``(N,)`` per sequence or ``(N, T)`` per step (eq.
        15w of docs/derivation.md); ``algorithm="bptt"`` only.  Metrics stay unweighted.
    opt_state : dict, optional
        The optimizer state to start from (``History.opt_state`` of an earlier call), e.g. to
        continue training with the same Adam moments; ignored when resuming from a checkpoint.
    stream : file, optional
        Where the progress bar writes (default ``sys.stderr``).

    Returns
    -------
    History
        ``status`` is ``"interrupted"`` after SIGINT/SIGTERM (the step in flight is finished and
        a checkpoint saved if ``checkpoint_dir`` is set), else ``"completed"`` or
        ``"early_stopped"`` (the monitor's patience ran out or a callback stopped training).

    Raises
    ------
    ValueError, TypeError
        Before the first step, for anything :func:`check_fit` refuses: every sequence of every
        split is checked (non-finite inputs or targets, labels out of range, wrong shapes).
    LockedError
        ``checkpoint_dir`` is in use by another ``fit`` (another process, or another call in
        this one); the message names the holder's pid, host and command.
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
    train = as_data(ds.train if ds is not None else data, "train")
    if train is None:
        raise ValueError("the train split has no sequences")
    train = train.with_weight(sample_weight)
    val_d = as_data(val if val is not None else (ds.val if ds is not None else None), "val")
    test_d = as_data(test if test is not None else (ds.test if ds is not None else None), "test")
    loop = _Loop(params, spec, cfg, train, val_d, test_d,
                 callbacks=_callbacks(callbacks, callback),
                 stream=sys.stderr if stream is None else stream, opt_state=opt_state,
                 dataset=ds)
    if loop.ckpt_dir is None:
        if resume:
            loop.resume(resume)
        return loop.run()
    # one process at a time writes a checkpoint directory (LockedError names the holder); under
    # the lock no write is in flight, so what killed writes left behind can go
    with DirectoryLock(loop.ckpt_dir, "checkpoint directory"):
        remove_stale_temps(loop.ckpt_dir)
        if loop.log_path is not None:
            remove_stale_temps(loop.log_path.parent, (f".{loop.log_path.name}.tmp",))
        if resume:
            loop.resume(resume)
        return loop.run()
