"""The ``rnnlab`` command line (click): train, evaluate, sample, gradcheck, sweep, plot, experiment.

Every setting of :class:`rnnlab.config.ExperimentConfig` is a flag (``--hidden-size 64``,
``--lr 3e-3``, ``--option scale=standard``), and also ``--set KEY=VALUE`` with a dotted key;
flags override ``--set``, which overrides the ``--config`` file.  A user mistake (a bad flag value,
an unknown dataset or config key, a missing file, any ValueError/TypeError of rnnlab) is one line
``rnnlab: error: ...`` on stderr and exit code 2, never a traceback (``RNNLAB_DEBUG=1`` shows it).
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

__all__ = ["cli", "main"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, ImportError)
_FLAGS: dict[str, list[str]] = {
    "data.seed": ["--data-seed"], "train.seed": ["--seed"], "data.steps": ["--steps", "-T"],
    "data.options": ["--option"], "train.optimizer_kwargs": ["--optimizer-kwarg"],
    "train.schedule_kwargs": ["--schedule-kwarg"], "model.hidden_size": ["--hidden-size",
                                                                         "--hidden"],
    "model.num_layers": ["--num-layers", "--layers"],
}
_NONE = object()


class _Value(click.ParamType):
    """int/float/str parsed by click, plus ``none`` for optional fields."""

    def __init__(self, base: click.ParamType, optional: bool) -> None:
        self.base, self.optional = base, optional
        self.name = base.name + (" or none" if optional else "")

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if self.optional and isinstance(value, str) and value.strip().lower() == "none":
            return _NONE
        return self.base.convert(value, param, ctx)


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
            "train.on_nonfinite": train.ON_NONFINITE, "train.progress": train.PROGRESS}


def _config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per config field, named after it (``model.hidden_size`` -> ``--hidden-size``)."""
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
        if key in choices:
            where += f" {', '.join(choices[key])}."
        if defaults.get(key) not in (None, {}):
            where += f" Default: {defaults[key]}."
        t = str(typ)
        if t == "bool":
            long = names[0][2:]
            opt = click.option(f"--{long}/--no-{long}", dest, default=None, help=where)
        elif t.startswith("dict"):
            opt = click.option(*names, dest, multiple=True, metavar="KEY=VALUE",
                               help=f"{where} (one entry; repeatable)")
        else:
            base = bases[t.split("|")[0].strip()]
            opt = click.option(*names, dest, type=_Value(base, "None" in t), default=None,
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


def _echo(text: str = "") -> None:
    click.echo(text)


# ----------------------------------------------------------------------------- the group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rnnlab")
def cli() -> None:
    """rnnlab: vanilla (Elman) RNNs trained by backpropagation through time, on NumPy.

    `python -m rnnlab` with no command runs the main job, `rnnlab experiment timesteps`.
    """


@cli.command()
@click.option("--config", "-c", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set a config key (dotted, e.g. model.hidden_size=32); repeatable.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where the run directory <name>/ goes.")
@click.option("--resume", is_flag=True, help="Continue an existing run directory.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run directory first.")
@_config_options
def train(config: str | None, sets: tuple[str, ...], runs_dir: str, resume: bool,
          overwrite: bool, **kw: Any) -> int:
    """Train one config; write runs/<name>/ (config, metrics, checkpoints, summary)."""
    from .lab.experiments import run

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    cfg = _build_config(config, sets, _split_config_flags(kw))
    run_dir = Path(runs_dir) / cfg.name
    _echo(f"run {cfg.name}: {cfg.data.dataset} (T={cfg.data.steps or 'default'}), "
          f"H={cfg.model.hidden_size} x {cfg.model.num_layers} {cfg.model.nonlinearity}, "
          f"{cfg.train.algorithm}, {cfg.train.optimizer} lr={cfg.train.lr}, "
          f"{cfg.train.epochs} epochs -> {run_dir}")
    s = run(cfg, run_dir, resume=resume, overwrite=overwrite, progress=cfg.train.progress)
    last = s.get("final") or {}
    _echo("last epoch: " + _metrics_text({k: v for k, v in last.items()
                                          if k.startswith(("train_loss", "val_"))}))
    if s["test"]:
        _echo("test: " + _metrics_text(s["test"]))
    if s["baselines"]:
        _echo("baselines: " + _metrics_text(s["baselines"]))
    _echo(f"{s['status']} after {s['epochs']} epoch(s), {s['wall_time_s']:.1f} s; "
          f"{run_dir / 'summary.json'}")
    if s["status"] == "diverged":
        raise click.ClickException(s["message"])
    return 130 if s["status"] == "interrupted" else 0


def _metrics_text(d: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in d.items())


def _load_model(run_dir: str, checkpoint: str) -> tuple[Any, Any, Any]:
    """(config, RNN, dataset) of a run directory and one of its checkpoints."""
    from .model import RNN

    rdir = Path(run_dir)
    if not (rdir / "config.toml").is_file():
        raise FileNotFoundError(f"{run_dir!r} is not a run directory (no config.toml)")
    cfg = load_config(rdir / "config.toml")
    ckpt = Path(checkpoint) if checkpoint not in ("last", "best") else \
        rdir / "checkpoints" / f"{checkpoint}.npz"
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {str(ckpt)!r} does not exist")
    return cfg, RNN.load(ckpt), cfg.data.load()


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--checkpoint", default="last", show_default=True,
              help="'last', 'best' or a checkpoint file.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(run_dir: str, checkpoint: str, split: str, as_json: bool) -> int:
    """Evaluate a run's checkpoint on a split of its dataset."""
    import dataclasses

    from .train.metrics import evaluate as evaluate_metrics

    cfg, model, ds = _load_model(run_dir, checkpoint)
    data = getattr(ds, split)
    res = evaluate_metrics(model.params, model.spec, data.X, data.y, data.mask)
    if model.spec.setup == "many_to_one" and model.spec.label_steps == "all":
        last = dataclasses.replace(model.spec, label_steps="last")
        res.update({f"{k}_last": v for k, v in evaluate_metrics(
            model.params, last, data.X, data.y, data.mask).items()})
    if as_json:
        _echo(json.dumps({"split": split, **res, "baselines": dict(ds.baselines)}))
    else:
        _echo(f"{cfg.name} ({checkpoint}) on {ds.name} {split} ({len(data)} sequences): "
              + _metrics_text(res))
        if ds.baselines:
            _echo("baselines: " + _metrics_text(dict(ds.baselines)))
    return 0


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--prime", default=None, help="Text to start from (default: the corpus's first "
              "character).")
@click.option("--length", default=200, show_default=True, type=click.IntRange(min=0))
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="0 = greedy.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--checkpoint", default="last", show_default=True)
def sample(run_dir: str, prime: str | None, length: int, temperature: float, seed: int,
           checkpoint: str) -> int:
    """Generate text from a model trained on the 'text' dataset."""
    import numpy as np

    from .core import network
    from .data.text import generate_text

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

    def step(ids: Any, state: Any) -> tuple[Any, Any]:
        out, _ = network.forward(model.params, ids[:, None], spec, h0=state)
        return out.logits[:, -1, :], out.h_n

    text = generate_text(step, vocab, prime, length, temperature, np.random.default_rng(seed))
    _echo(prime + text)
    return 0


@cli.command()
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
          f"{'OK' if ok else 'FAILED'}")
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


@cli.command()
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
              help="Sweep directory (default runs/<sweep name>).")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--overwrite", is_flag=True, help="Forget earlier results in --out.")
@click.option("--dry-run", is_flag=True, help="List the cells and stop.")
@_config_options
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
            _echo(f"{sw.cell_hash(c)}  {sw.cell_name(c)}  {json.dumps(c)}")
        _echo(f"{len(cells)} cells -> {out_dir}")
        return 0
    check_cells(base, cells, remote=cluster is not None, echo=_echo)   # all, before any runs
    _echo(f"sweep {name}: {len(cells)} cells on {cluster or f'{jobs} local process(es)'} "
          f"-> {out_dir}")
    report = sw.run_sweep(cell_function(base, out_dir), cells, out_dir, jobs=jobs,
                          cluster=cluster, retries=retries, overwrite=overwrite,
                          meta={"base": base.to_dict()}, echo=_echo, outputs=cell_dir)
    done = len(report.records) - len(report.failed)
    _echo(f"{done} of {len(report.records)} cells done ({report.skipped} from earlier runs), "
          f"{len(report.failed)} failed, {report.wall_time_s:.0f} s; results in "
          f"{out_dir / sw.RESULTS}")
    return 1 if report.failed else 0


# ----------------------------------------------------------------------------- plots


@cli.group()
def plot() -> None:
    """Figures (PNG and SVG) from run directories alone."""


def _default_out(paths: Sequence[str], kind: str, out: str | None) -> str:
    if out:
        return out
    if len(paths) == 1:
        return str(Path(paths[0]) / kind)
    return str(Path(os.path.commonpath([os.path.abspath(p) for p in paths])) / kind)


def _plot_done(paths: Sequence[Path]) -> int:
    _echo("wrote " + ", ".join(str(p) for p in paths))
    return 0


_paths = click.argument("paths", nargs=-1, required=True, type=click.Path())
_out = click.option("--out", "-o", default=None, type=click.Path(dir_okay=False),
                    help="Output file stem (default: in the run or sweep directory).")


@plot.command("curves")
@_paths
@_out
def plot_curves(paths: tuple[str, ...], out: str | None) -> int:
    """Learning curves (loss, accuracy) of one or more runs."""
    from .lab import plots

    return _plot_done(plots.learning_curves(paths, _default_out(paths, "curves", out)))


@plot.command("timesteps")
@_paths
@_out
@click.option("--metric", default=None, help="Summary test metric (default test_accuracy_last).")
def plot_timesteps(paths: tuple[str, ...], out: str | None, metric: str | None) -> int:
    """Test accuracy against T, a line per label, error bars over seeds."""
    from .lab import plots

    return _plot_done(plots.accuracy_vs_steps(paths, _default_out(paths, "accuracy_vs_T", out),
                                              metric=metric))


@plot.command("gradients")
@_paths
@_out
@click.option("--label", default=None, help="Only runs with this label.")
@click.option("--when", type=click.Choice(["both", "init", "final"]), default="both",
              show_default=True)
@click.option("--layer", default=0, show_default=True, type=click.IntRange(min=0))
def plot_gradients(paths: tuple[str, ...], out: str | None, label: str | None, when: str,
                   layer: int) -> int:
    """||dL/dh_t|| against t on a log scale, a line per T."""
    from .lab import plots

    return _plot_done(plots.gradient_norms(paths, _default_out(paths, "gradient_norms", out),
                                           label=label, when=when, layer=layer))


@plot.command("activations")
@click.argument("run_dir", type=click.Path())
@_out
@click.option("--layer", default=None, type=click.IntRange(min=0),
              help="Row of the diagnostics (default: the top layer).")
def plot_activations(run_dir: str, out: str | None, layer: int | None) -> int:
    """Heat map of one test sequence's hidden activations over time."""
    from .lab import plots

    return _plot_done(plots.activations(run_dir, _default_out([run_dir], "activations", out),
                                        layer=layer))


# ----------------------------------------------------------------------------- experiments


@cli.group()
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


@experiment.command("timesteps")
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
              help="Default runs/timesteps-<dataset>.")
@click.option("--overwrite", is_flag=True, help="Forget earlier results and run again.")
def experiment_timesteps(dataset: str, data_dir: str | None, steps: str | None, methods: str,
                         seeds: str, epochs: int | None, hidden_size: int, jobs: int,
                         cluster: str | None, out: str | None, overwrite: bool) -> int:
    """Seed 000: test accuracy against the number of time steps T (the main job)."""
    from .lab.experiments import timesteps

    res = timesteps(dataset, data_dir=data_dir,
                    steps=None if steps is None else _int_list(steps, "--steps"),
                    methods=[m.strip() for m in methods.split(",") if m.strip()],
                    seeds=_int_list(seeds, "--seeds"), epochs=epochs, hidden_size=hidden_size,
                    jobs=jobs, cluster=cluster, out=out, overwrite=overwrite, echo=_echo)
    return 1 if res["report"].failed else 0


@cli.command()
def datasets() -> int:
    """List the datasets and their options."""
    from .data import registry

    for name in registry.names():
        opts = ", ".join(f"{k}={v!r}" for k, v in registry.options(name).items())
        _echo(f"{name:<15} {registry.describe(name)}" + (f"\n{'':<15} options: {opts}"
                                                          if opts else ""))
    return 0


# ----------------------------------------------------------------------------- entry point


def _one_line(text: str) -> str:
    return "; ".join(s.strip() for s in str(text).strip().splitlines() if s.strip())


def main(argv: Sequence[str] | None = None, prog_name: str = "rnnlab") -> int:
    """Run the command line; return the exit code (user mistakes: one line, code 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get("RNNLAB_DEBUG"))
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
    except USER_ERRORS as exc:
        if debug:
            raise
        msg = _one_line(str(exc)) or type(exc).__name__
        click.echo(f"{prog_name}: error: {msg}", err=True)
        return 2
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return rv if isinstance(rv, int) else 0


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt

