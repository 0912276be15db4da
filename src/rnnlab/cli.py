"""The ``rnnlab`` command line (click): train, evaluate, sample, gradcheck, sweep, plot, experiment.

Every setting of :class:`rnnlab.config.ExperimentConfig` is a flag (``--hidden-size 64``,
``--lr 3e-3``, ``--option scale=standard``), and also ``--set KEY=VALUE`` with a dotted key;
flags override ``--set``, which overrides the ``--config`` file; a flag with a fixed set of values
is a click choice.  Every error is one line ``rnnlab: error: ...`` on stderr with a documented exit
code (docs/cli.md), never a traceback (``RNNLAB_DEBUG=1`` shows it): 2 for a user mistake, missing
data or a missing optional dependency (the message names the pip extra), 1 for a failed check,
run or cell and for an unexpected error, 130 for an interruption.  ``-q``/``-v`` set how much
every command prints.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from .lab.config import (
    RUN_OWNED,
    ExperimentConfig,
    field_types,
    load_config,
    parse_assignment,
    parse_value,
)
from .version import __version__

__all__ = ["EXIT_CODES", "cli", "main"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, ImportError)
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "a failed check (gradcheck above --tol), a diverged run, a failed sweep cell, or an "
       "unexpected error",
    2: "a user mistake: a bad flag or config value, an unknown name, a missing file, missing "
       "data that cannot be downloaded, a missing optional dependency",
    130: "interrupted (Ctrl-C or SIGTERM); run the same command again (train: --resume)",
}
# the pip extra that brings each optional module (an ImportError names it)
EXTRAS: dict[str, str] = {
    "click": "cli", "matplotlib": "cli", "tqdm": "progress", "sklearn": "sklearn",
    "mnist1d": "data", "distributed": "distributed", "dask": "distributed", "numba": "fast",
    "threadpoolctl": "fast", "cffi": "fast", "_cffi_backend": "fast", "llvmlite": "fast",
    "tensorboardX": "tracking", "tensorboard": "tracking",
}
# fields a --resume may change: the model, the data and the trajectory stay those of the run
RESUMABLE: tuple[str, ...] = (
    "name", "label", "diagnostics", "train.epochs", "train.lr", "train.patience",
    "train.eval_every", "train.eval_batch_size", "train.checkpoint_every", "train.progress",
    "train.engine", "train.tracking", "train.tracking_dir", "train.checkpoint_dir",
    "train.log_path",
)
_FLAGS: dict[str, list[str]] = {
    "data.seed": ["--data-seed"], "train.seed": ["--seed"], "data.steps": ["--steps", "-T"],
    "data.options": ["--option"], "train.optimizer_kwargs": ["--optimizer-kwarg"],
    "train.schedule_kwargs": ["--schedule-kwarg"],
    "train.algorithm_kwargs": ["--algorithm-kwarg"], "model.hidden_size": ["--hidden-size",
                                                                         "--hidden"],
    "model.num_layers": ["--num-layers", "--layers"],
}
_NONE = object()


class _Value(click.ParamType):
    """int/float/str parsed by click, plus ``none`` for optional fields and the ``words`` a
    field takes besides numbers (``auto`` for ``train.clip_norm``)."""

    def __init__(self, base: click.ParamType, optional: bool, words: Sequence[str] = ()
                 ) -> None:
        self.base, self.optional, self.words = base, optional, tuple(words)
        self.name = " or ".join([base.name, *self.words] + (["none"] if optional else []))

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in self.words:
            return value.strip().lower()
        if self.optional and isinstance(value, str) and value.strip().lower() == "none":
            return _NONE
        return self.base.convert(value, param, ctx)


class _Choice(click.Choice):
    """A click choice (case-insensitive) that also takes what ``normalize`` maps to a choice (a
    dataset's alias) and, for optional fields, ``none``."""

    def __init__(self, choices: Sequence[str], optional: bool = False,
                 normalize: Callable[[str], str] | None = None) -> None:
        super().__init__(list(choices) + (["none"] if optional else []), case_sensitive=False)
        self.optional, self.normalize = optional, normalize

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and self.normalize is not None:
            try:
                value = self.normalize(value)
            except ValueError:
                pass                             # click's message lists the choices
        out = super().convert(value, param, ctx)
        return _NONE if self.optional and out == "none" else out


class _Output:
    """How much the commands print: 0 quiet, 1 normal, 2 verbose (``-q``/``-v``)."""

    level = 1


def _set_level(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value:
        return
    level = 0 if param.name == "quiet" else 2
    other = ctx.meta.get("rnnlab.level")
    if other is not None and other != level:
        raise click.UsageError("--quiet and --verbose exclude each other", ctx)
    ctx.meta["rnnlab.level"] = level
    _Output.level = level


def _verbosity(f: Callable[..., Any]) -> Callable[..., Any]:
    """``-q/--quiet`` and ``-v/--verbose`` on a command (or the group)."""
    f = click.option("--verbose", "-v", is_flag=True, expose_value=False, callback=_set_level,
                     help="Print more: every epoch's metrics, start-up time, why the compiled "
                     "fast path is off.")(f)
    return click.option("--quiet", "-q", is_flag=True, expose_value=False, callback=_set_level,
                        help="Print only results and errors.")(f)


def _choices() -> dict[str, Sequence[str]]:
    from .core import losses, spec
    from .core.activations import ACTIVATIONS
    from .core.params import INITS
    from .data import registry
    from .lab.config import DTYPES
    from .train import config as train
    from .train import optim, schedules

    return {"model.nonlinearity": list(ACTIVATIONS), "model.init": INITS,
            "model.dtype": DTYPES, "model.setup": spec.SETUPS, "model.loss": losses.LOSSES,
            "model.label_steps": spec.LABEL_STEPS, "data.dataset": registry.names(),
            "train.algorithm": train.ALGORITHMS, "train.engine": train.ENGINES,
            "train.optimizer": sorted(optim.OPTIMIZERS),
            "train.schedule": sorted(schedules.SCHEDULES), "train.mode": ("auto", "min", "max"),
            "train.on_nonfinite": train.ON_NONFINITE, "train.progress": train.PROGRESS,
            "train.tracking": train.TRACKING}


def _config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per config field, named after it (``model.hidden_size`` -> ``--hidden-size``)."""
    from .data import registry

    bases: dict[str, click.ParamType] = {"int": click.INT, "float": click.FLOAT,
                                         "str": click.STRING}
    choices = _choices()
    defaults = ExperimentConfig().flat()
    for key, typ in reversed(list(field_types().items())):
        if key in RUN_OWNED:
            continue
        names = _FLAGS.get(key, ["--" + key.rsplit(".", 1)[-1].replace("_", "-")])
        dest = key.replace(".", "__")
        where = f"[{key}]"
        if defaults.get(key) not in (None, {}):
            where += f" Default: {defaults[key]}."
        t = str(typ)
        if t == "bool":
            long = names[0][2:]
            opt = click.option(f"--{long}/--no-{long}", dest, default=None, help=where)
        elif t.startswith("dict"):
            opt = click.option(*names, dest, multiple=True, metavar="KEY=VALUE",
                               help=f"{where} (one entry; repeatable)")
        elif key in choices:
            normalize = registry.canonical_name if key == "data.dataset" else None
            opt = click.option(*names, dest, default=None, help=where,
                               type=_Choice(choices[key], "None" in t, normalize))
        else:
            base = bases[t.split("|")[0].strip()]
            words = ("auto",) if key == "train.clip_norm" else ()
            opt = click.option(*names, dest, type=_Value(base, "None" in t, words), default=None,
                               help=where)
        f = opt(f)
    return f


def _overrides(sets: Sequence[str], flags: dict[str, Any]) -> dict[str, Any]:
    """``--set`` assignments, then the config flags that were given."""
    out: dict[str, Any] = dict(parse_assignment(s) for s in sets)
    for dest, value in flags.items():
        key = dest.replace("__", ".")
        if value is None or value == ():
            continue
        if isinstance(value, tuple):                 # dict entries KEY=VALUE
            for item in value:
                k, v = parse_assignment(item)
                out[f"{key}.{k}"] = v
        else:
            out[key] = None if value is _NONE else value
    return out


def _build_config(config: str | None, sets: Sequence[str], flags: dict[str, Any]
                  ) -> ExperimentConfig:
    base = load_config(config) if config else ExperimentConfig()
    return base.with_overrides(_overrides(sets, flags))


def _split_config_flags(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw.pop(k) for k in list(kw) if "__" in k or k in ("name", "label", "diagnostics")}


def _echo(text: str = "", level: int = 1) -> None:
    """Print ``text`` on stdout when the verbosity is at least ``level`` (0: always)."""
    if _Output.level >= level:
        click.echo(text)


def _flat_file(path: str) -> dict[str, Any]:
    """The keys a config file sets, as dotted keys (not the defaults it leaves out)."""
    from .lab.config import SECTIONS, read_mapping

    data = read_mapping(path)
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k in SECTIONS and isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def _resume_config(cfg: ExperimentConfig, run_dir: Path, config: str | None,
                   sets: Sequence[str], flags: dict[str, Any]) -> ExperimentConfig:
    """The config a ``--resume`` continues: the run's ``config.toml``, with the flags given
    (and the keys of ``--config``) as overrides that may change only :data:`RESUMABLE` fields."""
    saved_path = run_dir / "config.toml"
    if not saved_path.is_file():
        return cfg                                   # nothing to continue: start it
    saved = load_config(saved_path)
    explicit = _flat_file(config) if config else {}
    explicit.update(_overrides(sets, flags))
    new = saved.with_overrides(explicit)
    before, after = saved.flat(), new.flat()
    changed = [k for k in after if after[k] != before.get(k) and k not in RESUMABLE]
    if changed:
        what = ", ".join(f"{k} {before.get(k)!r} -> {after[k]!r}" for k in changed)
        may = ", ".join(k.split(".")[-1] for k in RESUMABLE if k.startswith("train."))
        raise ValueError(f"--resume continues run {cfg.name!r} as its config.toml says; these "
                         f"settings would change it: {what}. On resume only {may} (and label, "
                         "diagnostics) may change; start a new run (another --name) to change "
                         "the rest")
    return new


# ----------------------------------------------------------------------------- the group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rnnlab")
@_verbosity
def cli() -> None:
    """rnnlab: vanilla (Elman) RNNs trained by backpropagation through time, on NumPy.

    `python -m rnnlab` with no command runs the main job, `rnnlab experiment timesteps`.
    Every command takes -q/--quiet and -v/--verbose; exit codes: 0 success, 1 a failed check,
    run or cell, 2 a user mistake or missing data/dependency, 130 interrupted.
    """


@cli.command(short_help="Train one config into runs/<name>/.")
@click.option("--config", "-c", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set a config key (dotted, e.g. model.hidden_size=32); repeatable.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where the run directory <name>/ goes.")
@click.option("--resume", is_flag=True, help="Continue the run <name> as its config.toml says "
              "(flags may change epochs, lr, patience, ...).")
@click.option("--overwrite", is_flag=True, help="Delete an existing run directory first.")
@_config_options
@_verbosity
def train(config: str | None, sets: tuple[str, ...], runs_dir: str, resume: bool,
          overwrite: bool, **kw: Any) -> int:
    """Train one config; write runs/<name>/ (config, metrics, checkpoints, summary).

    With --resume the run's own config.toml is the config: `rnnlab train --name X --resume`
    continues X as it was; flags may only change what keeps the model and its trajectory the
    same (epochs, lr, patience, eval_every, checkpoint_every, progress, tracking).
    """
    from .lab.experiments import run

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    flags = _split_config_flags(kw)
    progress_flag = flags.get("train__progress")
    cfg = _build_config(config, sets, flags)
    run_dir = Path(runs_dir) / cfg.name
    if resume:
        cfg = _resume_config(cfg, run_dir, config, sets, flags)
    _echo(f"run {cfg.name}: {cfg.data.dataset} (T={cfg.data.steps or 'default'}), "
          f"H={cfg.model.hidden_size} x {cfg.model.num_layers} {cfg.model.nonlinearity}, "
          f"{cfg.train.algorithm}, {cfg.train.optimizer} lr={cfg.train.lr}, "
          f"{cfg.train.epochs} epochs -> {run_dir}")
    # a bar on a terminal; elsewhere one line per epoch, on stdout with the rest of the output
    progress = "off" if _Output.level == 0 else (progress_flag or "auto")
    stream = sys.stderr if progress == "on" or sys.stderr.isatty() else sys.stdout
    s = run(cfg, run_dir, resume=resume, overwrite=overwrite, progress=progress,
            stream=stream)
    _echo(f"start-up {s.get('startup_s', 0.0):.1f} s (building the engine); fast path: "
          f"{s.get('fast_path', 'on')}", 2)
    last = s.get("final") or {}
    _echo("last epoch: " + _metrics_text({k: v for k, v in last.items()
                                          if k.startswith(("train_loss", "val_"))}))
    if s["test"]:
        _echo("test: " + _metrics_text(s["test"]) + f"  (the {s.get('weights', 'last')} "
              f"weights, epoch {s.get('weights_epoch')})", 0)
    if s["baselines"]:
        _echo("baselines: " + _metrics_text(s["baselines"]))
    _echo(f"{s['status']} after {s['epochs']} epoch(s), {s['wall_time_s']:.1f} s; "
          f"{run_dir / 'summary.json'}", 0)
    if s["status"] == "diverged":
        raise click.ClickException(s["message"])
    return 130 if s["status"] == "interrupted" else 0


def _metrics_text(d: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in d.items())


def _final_checkpoint(rdir: Path) -> str:
    """``"best"`` when the run ended with its best epoch's weights (summary.json), else
    ``"last"``."""
    summary = rdir / "summary.json"
    try:
        weights = json.loads(summary.read_text("utf-8")).get("weights")
    except (OSError, ValueError, AttributeError):
        weights = None
    return "best" if weights == "best" else "last"


def _load_model(run_dir: str, checkpoint: str) -> tuple[Any, Any, Any]:
    """(config, RNN, dataset) of a run directory and one of its checkpoints."""
    from .model import RNN

    rdir = Path(run_dir)
    if not (rdir / "config.toml").is_file():
        raise FileNotFoundError(f"{run_dir!r} is not a run directory (no config.toml)")
    cfg = load_config(rdir / "config.toml")
    if checkpoint == "final":                 # the weights the run ended with
        checkpoint = _final_checkpoint(rdir)
    ckpt = Path(checkpoint) if checkpoint not in ("last", "best") else \
        rdir / "checkpoints" / f"{checkpoint}.npz"
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {str(ckpt)!r} does not exist")
    return cfg, RNN.load(ckpt), cfg.data.load()


@cli.command(short_help="Metrics of a run's checkpoint on a split.")
@click.argument("run_dir", type=click.Path())
@click.option("--checkpoint", default="final", show_default=True,
              help="'final' (the weights the run ended with: its best epoch's when they were "
                   "restored, see its summary.json), 'last', 'best' or a checkpoint file.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@_verbosity
def evaluate(run_dir: str, checkpoint: str, split: str, as_json: bool) -> int:
    """Evaluate a run's checkpoint on a split of its dataset."""
    import dataclasses

    from .train.metrics import evaluate as evaluate_metrics
    from .train.metrics import task_metrics

    if checkpoint == "final":
        checkpoint = _final_checkpoint(Path(run_dir))
    cfg, model, ds = _load_model(run_dir, checkpoint)
    data = getattr(ds, split)
    res = evaluate_metrics(model.params, model.spec, data.X, data.y, data.mask)
    res.update(task_metrics(model.params, model.spec, ds, split))
    if model.spec.setup == "many_to_one" and model.spec.label_steps == "all":
        last = dataclasses.replace(model.spec, label_steps="last")
        res.update({f"{k}_last": v for k, v in evaluate_metrics(
            model.params, last, data.X, data.y, data.mask).items()})
    if as_json:
        _echo(json.dumps({"split": split, **res, "baselines": dict(ds.baselines)}), 0)
    else:
        _echo(f"{cfg.name} ({checkpoint}) on {ds.name} {split} ({len(data)} sequences): "
              + _metrics_text(res), 0)
        if ds.baselines:
            _echo("baselines: " + _metrics_text(dict(ds.baselines)))
    return 0


@cli.command(short_help="Generate text from a character model.")
@click.argument("run_dir", type=click.Path())
@click.option("--prime", default=None, help="Text to start from (default: the corpus's first "
              "character).")
@click.option("--length", default=200, show_default=True, type=click.IntRange(min=0))
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="0 = greedy.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--checkpoint", default="final", show_default=True,
              help="'final', 'last', 'best' or a checkpoint file (as for evaluate).")
@_verbosity
def sample(run_dir: str, prime: str | None, length: int, temperature: float, seed: int,
           checkpoint: str) -> int:
    """Generate text from a model trained on the 'text' dataset."""
    import numpy as np

    cfg, model, ds = _load_model(run_dir, checkpoint)
    spec = model.spec
    if ds.name != "text" or spec.input_kind != "index" or spec.setup != "many_to_many":
        raise ValueError(f"sample needs a character model (dataset 'text'); run {cfg.name!r} "
                         f"was trained on {ds.name!r}")
    if spec.bidirectional:
        raise ValueError("a bidirectional network reads the future; it cannot generate text")
    vocab = ds.meta["vocab"]
    if prime is None:
        prime = vocab.decode(ds.meta["streams"]["train"][:1])
    missing = sorted({c for c in prime if c not in vocab})
    if missing:
        raise ValueError(f"--prime has characters the model never saw: {missing}")
    ids = model.generate(vocab.encode(prime), length, temperature=temperature,
                         rng=np.random.default_rng(seed))
    _echo(prime + vocab.decode(ids), 0)
    return 0


@cli.command(short_help="Check gradients against finite differences and PyTorch.")
@click.option("--nonlinearity", default="tanh", show_default=True,
              type=click.Choice(["tanh", "relu", "sigmoid", "identity"]))
@click.option("--loss", default="softmax_ce", show_default=True,
              type=click.Choice(["softmax_ce", "sigmoid_bce", "identity_mse", "relu_mse"]))
@click.option("--setup", default="many_to_one", show_default=True,
              type=click.Choice(["many_to_one", "many_to_many", "one_to_many"]))
@click.option("--label-steps", default="last", show_default=True,
              type=click.Choice(["last", "all"]), help="many_to_one: score the last or every "
              "step.")
@click.option("--feed", default="every", show_default=True, type=click.Choice(["every", "first"]),
              help="one_to_many: input at every step or the first.")
@click.option("--layers", default=1, show_default=True, type=click.IntRange(1, 4))
@click.option("--bidirectional", is_flag=True)
@click.option("--masked", is_flag=True, help="Variable lengths (trailing padding).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--tol", default=1e-6, show_default=True, type=click.FloatRange(min=0.0))
@click.option("--torch/--no-torch", "use_torch", default=True, show_default=True,
              help="Also compare with PyTorch when it is installed.")
@_verbosity
def gradcheck(nonlinearity: str, loss: str, setup: str, label_steps: str, feed: str,
              layers: int, bidirectional: bool, masked: bool, seed: int, tol: float,
              use_torch: bool) -> int:
    """Check backward against finite differences (and PyTorch) on a small float64 problem."""
    from .lab.experiments import gradient_check

    rows, notes = gradient_check(nonlinearity=nonlinearity, loss=loss, setup=setup,
                        label_steps=label_steps, feed=feed, layers=layers,
                        bidirectional=bidirectional, masked=masked, seed=seed,
                        use_torch=use_torch)
    cols = ["finite differences"] + (["PyTorch"] if any(r.get("torch") is not None
                                                         for r in rows) else [])
    _echo(f"{'gradient':<12} {'shape':<10} " + " ".join(f"{c:>20}" for c in cols))
    worst = 0.0
    for r in rows:
        vals = [r["fd"]] + ([r.get("torch")] if len(cols) > 1 else [])
        cells = [f"{'-':>20}" if v is None else f"{v:>20.2e}" for v in vals]
        worst = max([worst] + [v for v in vals if v is not None])
        _echo(f"{r['name']:<12} {str(r['shape']):<10} " + " ".join(cells))
    for n in notes:
        _echo(n)
    ok = worst <= tol
    _echo(f"max relative error {worst:.2e} {'<=' if ok else '>'} tolerance {tol:.0e}: "
          f"{'OK' if ok else 'FAILED'}", 0)
    return 0 if ok else 1


def _parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise ValueError(f"--grid expects KEY=V1,V2,...; got {item!r}")
        text = text.strip()
        if text.startswith("["):
            values = parse_value(text)
            if not isinstance(values, list):
                raise ValueError(f"--grid {key}: {text!r} is not a list")
        else:
            values = [parse_value(v) for v in text.split(",") if v.strip()]
        axes[key.strip()] = values
    return axes


@cli.command(short_help="A resumable grid of runs, local or on Dask.")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--grid", "grid_items", multiple=True, metavar="KEY=V1,V2,...",
              help="An axis of the grid (e.g. T=1,2,4 or seed=0,1,2); repeatable.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set a config key of the base; repeatable.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Local worker processes (or LocalCluster workers).")
@click.option("--cluster", default=None, metavar="local-dask|tcp://HOST:PORT|FILE",
              help="Run on Dask: a LocalCluster on 127.0.0.1, a scheduler address or a "
              "scheduler file.")
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Output directory: the sweep's (default runs/<sweep name>).")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--overwrite", is_flag=True, help="Forget earlier results in --out.")
@click.option("--dry-run", is_flag=True, help="List the cells and stop.")
@_config_options
@_verbosity
def sweep(config: str | None, grid_items: tuple[str, ...], sets: tuple[str, ...], jobs: int,
          cluster: str | None, out: str | None, retries: int, overwrite: bool, dry_run: bool,
          **kw: Any) -> int:
    """Run a grid of configs; resumable (finished cells are skipped).

    CONFIG is a TOML config, optionally with a [sweep] table (grid, variants, name).
    """

    from .lab import sweep as sw
    from .lab.experiments import cell_dir, cell_function, check_cells

    flags = _split_config_flags(kw)
    if config:
        base, axes, variants, name = sw.load_sweep(config)
    else:
        base, axes, variants, name = ExperimentConfig(), {}, [], "sweep"
    base = base.with_overrides(_overrides(sets, flags))
    axes.update(_parse_grid(grid_items))
    if not axes and not variants:
        raise ValueError("the sweep has no grid: give --grid KEY=V1,V2 or a [sweep] grid in "
                         "the config file")
    cells = sw.config_cells(base, axes, variants)
    out_dir = Path(out) if out else Path("runs") / name
    if dry_run:
        for c in cells:
            _echo(f"{sw.cell_hash(c)}  {sw.cell_name(c)}  {json.dumps(c)}", 0)
        _echo(f"{len(cells)} cells -> {out_dir}", 0)
        return 0
    check_cells(base, cells, remote=cluster is not None, echo=_echo)   # all, before any runs
    _echo(f"sweep {name}: {len(cells)} cells on {cluster or f'{jobs} local process(es)'} "
          f"-> {out_dir}")
    report = sw.run_sweep(cell_function(base, out_dir), cells, out_dir, jobs=jobs,
                          cluster=cluster, retries=retries, overwrite=overwrite,
                          meta={"base": base.to_dict()}, echo=_echo, outputs=cell_dir)
    _echo("\n" + sw.results_table(report.records))
    paths = sorted({str(r["summary"].get("fast_path", "on")) for r in report.records
                    if isinstance(r.get("summary"), dict)})
    if paths:
        _echo("fast path: " + "; ".join(paths), 2)
    done = len(report.records) - len(report.failed)
    _echo(f"{done} of {len(report.records)} cells done ({report.skipped} from earlier runs), "
          f"{len(report.failed)} failed, {sw.format_duration(report.wall_time_s)}; results in "
          f"{out_dir / sw.RESULTS}", 0)
    return 1 if report.failed else 0


# ----------------------------------------------------------------------------- plots


@cli.group(short_help="Figures (PNG and SVG) from run directories.")
def plot() -> None:
    """Figures (PNG and SVG) from run directories alone."""


def _default_out(paths: Sequence[str], kind: str, out: str | None, filename: str | None
                 ) -> str:
    """``<out>/<filename>``: by default in the run directory (or the common parent of several),
    named after the kind of figure."""
    if out is None:
        out = paths[0] if len(paths) == 1 else os.path.commonpath(
            [os.path.abspath(p) for p in paths])
    name = filename or kind
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"--filename must be a file name without a directory; got {name!r} "
                         "(the directory is -o/--out)")
    return str(Path(out) / name)


def _plot_done(paths: Sequence[Path]) -> int:
    _echo("wrote " + ", ".join(str(p) for p in paths), 0)
    return 0


_paths = click.argument("paths", nargs=-1, required=True, type=click.Path())
_out = click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
                    help="Output directory (default: the run directory, or the common parent "
                    "of several).")


def _filename(default: str) -> Callable[..., Any]:
    return click.option("--filename", default=None, metavar="NAME",
                        help=f"File name without suffix; NAME.png and NAME.svg are written "
                        f"(default {default}).")


@plot.command("curves", short_help="Learning curves of runs.")
@_paths
@_out
@_filename("curves")
@_verbosity
def plot_curves(paths: tuple[str, ...], out: str | None, filename: str | None) -> int:
    """Learning curves (loss, accuracy) per epoch; for many runs (a sweep), the mean and its
    spread over seeds, a line per label."""
    from .lab import plots

    return _plot_done(plots.learning_curves(
        paths, _default_out(paths, "curves", out, filename)))


@plot.command("timesteps", short_help="A test metric against T, a line per label.")
@_paths
@_out
@_filename("accuracy_vs_T")
@click.option("--metric", default=None, help="Summary test metric (default test_accuracy_last).")
@_verbosity
def plot_timesteps(paths: tuple[str, ...], out: str | None, filename: str | None,
                   metric: str | None) -> int:
    """A test metric against T, a line per label, error bars over seeds."""
    from .lab import plots

    return _plot_done(plots.accuracy_vs_steps(
        paths, _default_out(paths, "accuracy_vs_T", out, filename), metric=metric))


@plot.command("gradients", short_help="||dL/dh_t|| against t, a line per T.")
@_paths
@_out
@_filename("gradient_norms")
@click.option("--only-label", "only_label", default=None, metavar="LABEL",
              help="Only runs with this label (default: the first label).")
@click.option("--when", type=click.Choice(["both", "init", "final"]), default="both",
              show_default=True)
@click.option("--layer", default=0, show_default=True, type=click.IntRange(min=0))
@_verbosity
def plot_gradients(paths: tuple[str, ...], out: str | None, filename: str | None,
                   only_label: str | None, when: str, layer: int) -> int:
    """||dL/dh_t|| against t on a log scale, a line per T."""
    from .lab import plots

    return _plot_done(plots.gradient_norms(
        paths, _default_out(paths, "gradient_norms", out, filename), label=only_label,
        when=when, layer=layer))


@plot.command("activations", short_help="Hidden activations of one test sequence.")
@click.argument("run_dir", type=click.Path())
@_out
@_filename("activations")
@click.option("--layer", default=None, type=click.IntRange(min=0),
              help="Row of the diagnostics (default: the top layer).")
@_verbosity
def plot_activations(run_dir: str, out: str | None, filename: str | None,
                     layer: int | None) -> int:
    """Heat map of one test sequence's hidden activations over time."""
    from .lab import plots

    return _plot_done(plots.activations(
        run_dir, _default_out([run_dir], "activations", out, filename), layer=layer))


# ----------------------------------------------------------------------------- experiments


@cli.group(short_help="Ready-made experiments (seed 000: accuracy against T).")
def experiment() -> None:
    """Ready-made experiments."""


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers; got {text!r}") from None
    if not values:
        raise ValueError(f"{what} is empty")
    return values


@experiment.command("timesteps", short_help="Seed 000: test accuracy against T (main job).")
@click.option("--dataset", default="digits", show_default=True,
              type=click.Choice(["digits", "mnist", "fashion-mnist"]))
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Directory with the IDX files (mnist, fashion-mnist).")
@click.option("--steps", "-T", default=None, metavar="T1,T2,...",
              help="Sequence lengths (default 1,2,4,...,64 for digits; 1,4,7,14,28,56,112 for "
              "28x28 images).")
@click.option("--methods", default="tanh,irnn,every-step", show_default=True,
              help="Lines of the figure: tanh, irnn, every-step.")
@click.option("--seeds", default="0,1,2", show_default=True, metavar="S1,S2,...")
@click.option("--epochs", default=None, type=click.IntRange(min=1),
              help="Default 60 for digits, 3 for 28x28 images.")
@click.option("--hidden-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--jobs", "-j", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--cluster", default=None, metavar="local-dask|tcp://HOST:PORT|FILE")
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Output directory (default runs/timesteps-<dataset>).")
@click.option("--overwrite", is_flag=True, help="Forget earlier results and run again.")
@_verbosity
def experiment_timesteps(dataset: str, data_dir: str | None, steps: str | None, methods: str,
                         seeds: str, epochs: int | None, hidden_size: int, jobs: int,
                         cluster: str | None, out: str | None, overwrite: bool) -> int:
    """Seed 000: test accuracy against the number of time steps T (the main job)."""
    from .lab.experiments import timesteps

    res = timesteps(dataset, data_dir=data_dir,
                    steps=None if steps is None else _int_list(steps, "--steps"),
                    methods=[m.strip() for m in methods.split(",") if m.strip()],
                    seeds=_int_list(seeds, "--seeds"), epochs=epochs, hidden_size=hidden_size,
                    jobs=jobs, cluster=cluster, out=out, overwrite=overwrite,
                    echo=lambda text: _echo(text, 0 if text.lstrip().startswith(
                        ("test accuracy", "chance", "figures")) or "±" in text else 1))
    return 1 if res["report"].failed else 0


@experiment.command("online-rules")
@click.option("--quick", is_flag=True,
              help="4 epochs of 160 windows, one seed: a few minutes (the full run: ~30-60).")
@click.option("--tasks", default="add,mimic,xor", show_default=True, metavar="T1,T2,...",
              help="Of: add, mimic (Marschall et al.'s families), xor.")
@click.option("--methods", default="bptt,tbptt,rtrl,uoro,kf_rtrl,snap1,rflo,eprop",
              show_default=True, metavar="M1,M2,...")
@click.option("--seeds", default=None, metavar="S1,S2,...",
              help="Default 0,1,2 (--quick: 0).")
@click.option("--epochs", default=None, type=click.IntRange(min=1),
              help="Default 25 (--quick: 4).")
@click.option("--online", is_flag=True,
              help="The online form of the rules that have one (an update at every step) "
                   "instead of one update per window.")
@click.option("--lr", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Adam's learning rate, every method alike (default 5e-3; --online: 5e-4).")
@click.option("--jobs", "-j", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--cluster", default=None, metavar="local-dask|tcp://HOST:PORT|FILE")
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Default runs/online-rules[-quick][-online].")
@click.option("--overwrite", is_flag=True, help="Forget earlier results and run again.")
def experiment_online_rules(quick: bool, tasks: str, methods: str, seeds: str | None,
                            epochs: int | None, online: bool, lr: float | None, jobs: int,
                            cluster: str | None, out: str | None, overwrite: bool) -> int:
    """Online learning rules side by side (docs/online.md): learning curves, gradient
    alignment, time and memory per step."""
    from .lab.online import online_rules

    res = online_rules(
        tasks=[t.strip() for t in tasks.split(",") if t.strip()],
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        seeds=_int_list(seeds or ("0" if quick else "0,1,2"), "--seeds"), quick=quick,
        epochs=epochs, online=online, lr=lr, jobs=jobs, cluster=cluster, out=out,
        overwrite=overwrite, echo=_echo)
    return 1 if res["report"].failed else 0


@cli.command(short_help="The datasets and their options.")
@_verbosity
def datasets() -> int:
    """List the datasets and their options."""
    from .data import registry

    for name in registry.names():
        opts = ", ".join(f"{k}={v!r}" for k, v in registry.options(name).items())
        _echo(f"{name:<15} {registry.describe(name)}" + (f"\n{'':<15} options: {opts}"
                                                          if opts else ""), 0)
    return 0


# ----------------------------------------------------------------------------- export

EXPORT_FORMATS = ("onnx", "torch", "safetensors")
EXPORT_TOLERANCE = 1e-4     # float32 runtimes against rnnlab's forward, relative to the scale


def _export_source(run: str, checkpoint: str) -> tuple[Any, Path]:
    """(RNN, checkpoint file) of a run directory's checkpoint, or of a checkpoint file."""
    from .model import RNN

    p = Path(run)
    if p.is_file():
        ckpt = p
    elif p.is_dir():
        if not (p / "config.toml").is_file() and not (p / "checkpoints").is_dir():
            raise FileNotFoundError(f"{run!r} is not a run directory (no config.toml, no "
                                    "checkpoints/) nor a checkpoint file")
        ckpt = Path(checkpoint) if checkpoint not in ("last", "best") else \
            p / "checkpoints" / f"{checkpoint}.npz"
    else:
        raise FileNotFoundError(f"{run!r} does not exist (expected a run directory or a "
                                "checkpoint file)")
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {str(ckpt)!r} does not exist")
    return RNN.load(ckpt), ckpt


def _differences_text(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1e}" for k, v in d.items())


@cli.command("export", short_help="A run's model as ONNX, PyTorch or safetensors.")
@click.argument("run", type=click.Path())
@click.option("--format", "-f", "fmt", required=True, type=click.Choice(EXPORT_FORMATS),
              help="onnx: the RNN operator, head and output activation (needs rnnlab[onnx]); "
              "torch: a torch.save file of the PyTorch module's state dict and the spec; "
              "safetensors: the parameters with the spec in the metadata.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The file to write.")
@click.option("--checkpoint", default="last", show_default=True,
              help="'last', 'best' or a checkpoint file (RUN may also be a checkpoint file).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--lengths", is_flag=True,
              help="onnx: a 'lengths' input (B,) int64 for variable-length sequences.")
@click.option("--initial-state", is_flag=True,
              help="onnx: an 'h0' input (num_layers * directions, B, H).")
@click.option("--opset", default=None, type=click.IntRange(min=1),
              help="onnx: the opset (default 17).")
@click.option("--identity", default="Affine", show_default=True,
              type=click.Choice(["Affine", "LeakyRelu"]),
              help="onnx: how nonlinearity=identity is spelt in the RNN operator.")
@click.option("--layout", default="rnnlab", show_default=True,
              type=click.Choice(["rnnlab", "torch"]),
              help="safetensors: rnnlab's keys (l0.W_xh ...) or the PyTorch module's "
              "(rnn.weight_ih_l0 ...).")
@click.option("--verify/--no-verify", default=None,
              help="Run the written file (onnx: in onnxruntime; torch: in PyTorch) on random "
              "inputs against rnnlab's forward, or read it back (safetensors). Default: when "
              "the runtime is installed.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the verification's random inputs.")
def export(run: str, fmt: str, output: str, checkpoint: str, overwrite: bool, lengths: bool,
           initial_state: bool, opset: int | None, identity: str, layout: str,
           verify: bool | None, seed: int) -> int:
    """Write a run's model as ONNX, PyTorch or safetensors (docs/interop.md).

    RUN is a run directory (its --checkpoint) or a checkpoint file. Exit code 1 when the
    verification finds a difference above 1e-4 of the outputs' scale.
    """
    import importlib.util

    import numpy as np

    if fmt != "onnx" and (lengths or initial_state or opset is not None):
        raise click.UsageError("--lengths, --initial-state and --opset are for --format onnx")
    if fmt != "safetensors" and layout != "rnnlab":
        raise click.UsageError("--layout is for --format safetensors")
    out = Path(output)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{output!r} exists; pass --overwrite to replace it")
    model, ckpt = _export_source(run, checkpoint)
    runtime = {"onnx": "onnxruntime", "torch": "torch", "safetensors": "safetensors"}[fmt]
    if verify is None:
        verify = importlib.util.find_spec(runtime) is not None
    rng = np.random.default_rng(seed)
    diffs: dict[str, float] | None = None
    if fmt == "onnx":
        from .interop import onnx as rx
        from .interop import verify as check

        path = model.export_onnx(out, lengths=lengths, initial_state=initial_state,
                                 opset=opset, identity=identity, overwrite=True)
        names = rx.input_names(model.spec, lengths=lengths, initial_state=initial_state)
        _echo(f"wrote {path} (ONNX opset {opset or rx.DEFAULT_OPSET}, "
              f"{path.stat().st_size / 1024:.1f} KiB) from {ckpt}: inputs {', '.join(names)}; "
              "outputs y, logits, h_n")
        if verify:
            batch = check.random_batch(model.spec, rng, lengths=lengths,
                                       initial_state=initial_state)
            diffs = check.onnx_file(path, model.params, model.spec, batch)
    elif fmt == "torch":
        from .interop import torch as rt
        from .interop import verify as check

        path = rt.save(model.params, model.spec, out, overwrite=True)
        _echo(f"wrote {path} (torch.save of the state dict and spec, "
              f"{path.stat().st_size / 1024:.1f} KiB) from {ckpt}")
        if verify:
            params, spec = rt.load(path)
            batch = check.random_batch(model.spec, rng, lengths=True, initial_state=True)
            diffs = check.torch_module(rt.to_torch(params, spec), model.params, model.spec,
                                       batch)
    else:
        from .interop import safetensors as rst

        path = model.save_safetensors(out, layout=layout, overwrite=True)
        _echo(f"wrote {path} (safetensors, {layout} layout, "
              f"{path.stat().st_size / 1024:.1f} KiB) from {ckpt}")
        if verify:
            params, spec = rst.load(path)
            same = spec == model.spec and all(
                np.array_equal(params[k], v) and params[k].dtype == v.dtype
                for k, v in model.params.items())
            _echo("verified: read back, the same spec and bit-identical parameters" if same
                  else "verification FAILED: the file reads back differently")
            return 0 if same else 1
    if diffs is None:
        _echo(f"not verified ({runtime} is not installed or --no-verify)")
        return 0
    worst = max(diffs.values())
    ok = worst <= EXPORT_TOLERANCE
    _echo(f"{'verified' if ok else 'verification FAILED'} in {runtime} against rnnlab's "
          f"forward on random inputs: max difference relative to scale "
          f"{_differences_text(diffs)} ({'<=' if ok else '>'} {EXPORT_TOLERANCE:.0e})")
    return 0 if ok else 1


# ----------------------------------------------------------------------------- entry point


def _one_line(text: str) -> str:
    return "; ".join(s.strip() for s in str(text).strip().splitlines()
                     if s.strip()).replace(":; ", ": ")


def _import_hint(exc: ImportError) -> str:
    """The error of a missing optional module, with the pip extra that installs it."""
    msg = _one_line(str(exc)) or type(exc).__name__
    if "pip install" in msg:
        return msg
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return msg
    return f"{msg}: this needs the optional package {top!r}: pip install 'rnnlab[{extra}]'"


def _warning_line(prog_name: str) -> Callable[..., None]:
    """``warnings.showwarning`` for the command line: one line, ``<prog>: warning: ...``."""
    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        click.echo(f"{prog_name}: warning: {_one_line(str(message))}", err=True)
    return show


def main(argv: Sequence[str] | None = None, prog_name: str = "rnnlab") -> int:
    """Run the command line; return the exit code (:data:`EXIT_CODES`): every error is one line
    on stderr."""
    import warnings

    from .data.download import DownloadError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get("RNNLAB_DEBUG"))
    _Output.level = 1
    old_show = warnings.showwarning
    warnings.showwarning = _warning_line(prog_name)     # warnings (training health) as a line
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _terminate)    # SIGTERM stops like Ctrl-C
    try:
        rv = cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):     # click turns Ctrl-C into Abort
        click.echo(f"{prog_name}: interrupted; to continue, run the same command again (train: "
                   "with --resume)", err=True)
        return 130
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"{prog_name}: error: {_one_line(exc.format_message())}{hint}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"{prog_name}: error: {_one_line(exc.format_message())}", err=True)
        return 1
    except DownloadError as exc:           # missing data: where to put it instead
        if debug:
            raise
        click.echo(f"{prog_name}: error: {_one_line(str(exc))} (on the command line: "
                   "--data-dir DIR with the files; docs/data.md)", err=True)
        return 2
    except ImportError as exc:
        if debug:
            raise
        click.echo(f"{prog_name}: error: {_import_hint(exc)}", err=True)
        return 2
    except USER_ERRORS as exc:
        if debug:
            raise
        msg = _one_line(str(exc)) or type(exc).__name__
        click.echo(f"{prog_name}: error: {msg}", err=True)
        return 2
    except RuntimeError as exc:            # a run or a sweep that failed (every cell, say)
        if debug:
            raise
        click.echo(f"{prog_name}: error: {_one_line(str(exc)) or type(exc).__name__}",
                   err=True)
        return 1
    except Exception as exc:               # a bug
        if debug:
            raise
        msg = _one_line(str(exc))
        click.echo(f"{prog_name}: error: {type(exc).__name__}{': ' + msg if msg else ''} "
                   "(unexpected; RNNLAB_DEBUG=1 shows the traceback)", err=True)
        return 1
    finally:
        warnings.showwarning = old_show
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return rv if isinstance(rv, int) else 0


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt

