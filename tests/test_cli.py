"""The command line: every command's --help, train/evaluate/sample/gradcheck/sweep/plot/experiment,
every error as one line on stderr with its documented exit code and no traceback (user mistakes,
missing data, missing optional packages, unexpected errors), -q/-v, choices, resuming a run from
its config.toml, and what sweeps print."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("click")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from rnnlab.cli import main  # noqa: E402
from rnnlab.data.text import toy_text  # noqa: E402

COMMANDS = [[], ["train"], ["evaluate"], ["sample"], ["gradcheck"], ["sweep"], ["plot"],
            ["plot", "curves"], ["plot", "timesteps"], ["plot", "gradients"],
            ["plot", "activations"], ["experiment"], ["experiment", "timesteps"], ["datasets"]]
TINY = ["-T", "4", "--hidden", "8", "--epochs", "2", "--batch-size", "128", "--lr", "0.01",
        "--progress", "off"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "rnnlab")
def test_help_everywhere(capsys, cmd):
    rc, out, err = run(capsys, *cmd, "--help")
    assert rc == 0 and out.startswith("Usage: rnnlab") and not err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("cli")
    assert main(["train", "--runs-dir", str(runs), "--name", "digits", *TINY]) == 0
    return runs / "digits"


def test_train_writes_the_run_directory(trained):
    assert {p.name for p in trained.iterdir()} >= {"config.toml", "metrics.jsonl", "checkpoints",
                                                   "summary.json", "diagnostics.npz"}
    cfg = tomllib.loads((trained / "config.toml").read_text())
    assert cfg["data"]["steps"] == 4 and cfg["model"]["hidden_size"] == 8
    assert json.loads((trained / "summary.json").read_text())["status"] == "completed"


def test_flags_override_set_which_overrides_the_file(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text('name = "f"\n[model]\nhidden_size = 16\n[data]\nsteps = 8\n'
                    '[train]\nepochs = 1\nlr = 0.5\nprogress = "off"\n')
    rc, out, err = run(capsys, "train", "-c", str(conf), "--runs-dir", str(tmp_path),
                       "--set", "model.hidden_size=4", "--set", "lr=0.02", "--lr", "0.03",
                       "--option", "scale=standard", "--no-diagnostics")
    assert rc == 0, err
    cfg = tomllib.loads((tmp_path / "f" / "config.toml").read_text())
    assert cfg["model"]["hidden_size"] == 4 and cfg["train"]["lr"] == 0.03
    assert cfg["data"]["steps"] == 8 and cfg["data"]["options"] == {"scale": "standard"}
    assert cfg["diagnostics"] is False
    assert "test: test_loss" in out and "completed after 1 epoch(s)" in out


@pytest.mark.parametrize("flag,saved", [("auto", "auto"), ("none", "none"), ("0.5", 0.5)])
def test_clip_norm_flag_takes_a_number_auto_or_none(tmp_path, capsys, flag, saved):
    rc, out, err = run(capsys, "train", "--dataset", "digits", *TINY, "--runs-dir",
                       str(tmp_path), "--name", "c", "--clip-norm", flag, "--no-diagnostics")
    assert rc == 0, err
    cfg = tomllib.loads((tmp_path / "c" / "config.toml").read_text())
    assert cfg["train"]["clip_norm"] == saved
    rc, out, err = run(capsys, "train", "--dataset", "digits", *TINY, "--runs-dir",
                       str(tmp_path), "--name", "d", "--clip-norm", "often")
    assert_user_error(rc, err, "--clip-norm", "often")


def test_evaluate(trained, capsys):
    """The default checkpoint is the weights the run ended with (summary.json's weights)."""
    weights = json.loads((trained / "summary.json").read_text())["weights"]
    rc, out, _ = run(capsys, "evaluate", str(trained))
    assert rc == 0 and f"digits ({weights}) on digits test (359 sequences): loss" in out
    summary = json.loads((trained / "summary.json").read_text())
    for k, v in summary["test"].items():
        if k in ("test_loss", "test_accuracy"):
            assert f"{k[5:]} {v:.4f}" in out, (k, out)
    rc, out, _ = run(capsys, "evaluate", str(trained), "--checkpoint", "best", "--split", "val",
                     "--json")
    res = json.loads(out)
    assert rc == 0 and res["split"] == "val" and 0 <= res["accuracy"] <= 1


def test_sample_generates_text(tmp_path, capsys):
    corpus = tmp_path / "toy.txt"
    corpus.write_text(toy_text(200, np.random.default_rng(0)))
    rc, _, err = run(capsys, "train", "--runs-dir", str(tmp_path), "--name", "txt", "--dataset",
                     "text", "--option", f"path={corpus}", "-T", "20", "--hidden", "16",
                     "--epochs", "2", "--lr", "0.01", "--progress", "off")
    assert rc == 0, err
    rc, out, _ = run(capsys, "sample", str(tmp_path / "txt"), "--prime", "The ", "--length",
                     "50", "--temperature", "0.5")
    assert rc == 0 and out.startswith("The ") and len(out.rstrip("\n")) == 54
    rc, out2, _ = run(capsys, "sample", str(tmp_path / "txt"), "--prime", "The ", "--length",
                      "50", "--temperature", "0.5")
    assert out2 == out                                       # same seed, same text
    rc, _, err = run(capsys, "sample", str(tmp_path / "txt"), "--prime", "€")
    assert_user_error(rc, err, "characters the model never saw")


def test_gradcheck_prints_a_table_and_fails_above_tolerance(capsys):
    rc, out, _ = run(capsys, "gradcheck", "--layers", "2", "--bidirectional", "--masked")
    assert rc == 0
    assert "l1r.W_hh" in out and "finite differences" in out and "OK" in out
    rc, out, _ = run(capsys, "gradcheck", "--tol", "0", "--no-torch")
    assert rc == 1 and "FAILED" in out and "PyTorch" not in out.splitlines()[0]
    rc, out, _ = run(capsys, "gradcheck", "--nonlinearity", "sigmoid", "--setup", "one_to_many")
    assert rc == 0 and "PyTorch not compared: torch.nn.RNN has no 'sigmoid'" in out


def test_sweep_file_with_variants_and_resume(tmp_path, capsys):
    conf = tmp_path / "s.toml"
    conf.write_text('[data]\ndataset = "xor"\nsteps = 9\n[train]\nepochs = 1\n'
                    '[sweep]\nname = "demo"\ngrid = { seed = [0, 1] }\n'
                    '[[sweep.variants]]\nlabel = "tanh"\n'
                    '[[sweep.variants]]\nlabel = "relu"\n"model.nonlinearity" = "relu"\n')
    out_dir = tmp_path / "demo"
    rc, out, err = run(capsys, "sweep", str(conf), "--grid", "hidden=2,3", "-o", str(out_dir))
    assert rc == 0, err
    assert "8 of 8 cells done (0 from earlier runs), 0 failed" in out
    recs = [json.loads(x) for x in (out_dir / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 8 and {r["cell"]["label"] for r in recs} == {"tanh", "relu"}
    relu = [r for r in recs if r["cell"]["label"] == "relu"]
    assert all(r["summary"]["spec"]["nonlinearity"] == "relu" for r in relu)
    rc, out, _ = run(capsys, "sweep", str(conf), "--grid", "hidden=2,3", "-o", str(out_dir))
    assert rc == 0 and "8 of 8 cells already done" in out
    rc, out, _ = run(capsys, "sweep", str(conf), "--grid", "hidden=2,3", "--dry-run")
    assert rc == 0 and out.strip().endswith("8 cells -> runs/demo")
    rc, _, err = run(capsys, "sweep", str(conf), "--grid", "hiden=2,3")
    assert_user_error(rc, err, "unknown config key 'hiden'")
    rc, _, err = run(capsys, "sweep")
    assert_user_error(rc, err, "the sweep has no grid")
    rc, _, err = run(capsys, "sweep", str(conf), "--grid", "lr=0,1", "-o", str(tmp_path / "x"))
    assert_user_error(rc, err, "sweep cell", "lr must be a finite number > 0")


def test_plot_commands(trained, tmp_path, capsys):
    for args, stem in ((["curves", str(trained)], "curves"),
                       (["timesteps", str(trained.parent)], "accuracy_vs_T"),
                       (["gradients", str(trained)], "gradient_norms"),
                       (["activations", str(trained)], "activations")):
        out = tmp_path / args[0]                     # -o is a directory, as for sweeps
        rc, text, err = run(capsys, "plot", *args, "-o", str(out))
        assert rc == 0, err
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert "<svg" in (out / f"{stem}.svg").read_text()[:400]
    rc, _, err = run(capsys, "plot", "curves", str(trained), "-o", str(tmp_path / "f"),
                     "--filename", "mine")
    assert rc == 0 and (tmp_path / "f" / "mine.png").exists(), err
    rc, _, err = run(capsys, "plot", "gradients", str(trained), "--only-label", "nope")
    assert_user_error(rc, err, "no run with label 'nope'")
    rc, _, err = run(capsys, "plot", "gradients", str(trained), "--label", "x")
    assert_user_error(rc, err, "No such option '--label'")
    rc, _, err = run(capsys, "plot", "curves", str(trained), "--filename", "a/b")
    assert_user_error(rc, err, "--filename must be a file name without a directory")
    rc, _, err = run(capsys, "plot", "curves", str(tmp_path / "missing"))
    assert_user_error(rc, err, "does not exist")
    rc, _, err = run(capsys, "plot", "activations", str(tmp_path))
    assert_user_error(rc, err, "is not a run directory")


def test_experiment_timesteps_small(tmp_path, capsys):
    rc, out, err = run(capsys, "experiment", "timesteps", "--steps", "2,8", "--seeds", "0",
                       "--methods", "tanh,irnn", "--epochs", "1", "--hidden-size", "8", "-j",
                       "1", "-o", str(tmp_path / "t"))
    assert rc == 0, err
    assert "tanh, label at the last step" in out and "IRNN" in out
    assert (tmp_path / "t" / "accuracy_vs_T.png").exists()
    rc, _, err = run(capsys, "experiment", "timesteps", "--steps", "2,x")
    assert_user_error(rc, err, "--steps must be comma-separated integers")


@pytest.mark.parametrize("args,needles", [
    (["train", "--epochs", "abc"], ["Invalid value for '--epochs'", "rnnlab train --help"]),
    (["train", "--dataset", "cifar"], ["Invalid value for '--dataset': 'cifar' is not one of",
                                       "'digits'"]),
    (["train", "--optimizer", "adamx"], ["Invalid value for '--optimizer'", "'adam'"]),
    (["train", "--set", "data.dataset=cifar"], ["unknown dataset 'cifar'; valid names:"]),
    (["train", "--set", "model.hiden_size=3"], ["unknown config key 'model.hiden_size'"]),
    (["train", "--config", "/nonexistent/c.toml"], ["does not exist"]),
    (["train", "--lr", "-1"], ["lr must be a finite number > 0"]),
    (["train", "--nonlinearity", "tan"], ["Invalid value for '--nonlinearity': 'tan' is not "
                                          "one of 'tanh', 'sigmoid', 'relu', 'identity'"]),
    (["train", "--tracking", "wandb"], ["Invalid value for '--tracking'", "'tensorboard'"]),
    (["train", "-q", "-v"], ["--quiet and --verbose exclude each other"]),
    (["train", "--bogus"], ["No such option '--bogus'"]),
    (["train", "--set", "lr"], ["expected KEY=VALUE"]),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent"], ["/nonexistent"]),
    (["evaluate", "/nonexistent"], ["is not a run directory"]),
    (["gradcheck", "--layers", "0"], ["Invalid value for '--layers'"]),
    (["plot", "gradients"], ["Missing argument"]),
    (["frobnicate"], ["No such command 'frobnicate'"]),
])
def test_user_mistakes_are_one_line(capsys, tmp_path, args, needles):
    if args[0] == "train":
        args = [*args, "--runs-dir", str(tmp_path)]
    rc, _, err = run(capsys, *args)
    assert_user_error(rc, err, *needles)


def test_unknown_key_in_config_file(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text("[train]\nepoch = 3\n")
    rc, _, err = run(capsys, "train", "-c", str(conf))
    assert_user_error(rc, err, "c.toml: unknown key(s) ['epoch'] in [train]; valid keys are")


def test_resume_of_a_finished_run_does_not_train_again(trained, capsys):
    before = (trained / "metrics.jsonl").stat().st_mtime_ns
    args = ["train", "--runs-dir", str(trained.parent), "--name", "digits", *TINY[:-2]]
    rc, out, _ = run(capsys, *args, "--resume", "--progress", "auto")
    assert rc == 0 and "completed after 2 epoch(s)" in out
    assert (trained / "metrics.jsonl").stat().st_mtime_ns == before
    rc, _, err = run(capsys, *args, "--resume", "--overwrite")
    assert_user_error(rc, err, "--resume and --overwrite exclude each other")


def test_existing_run_directory(trained, capsys):
    rc, _, err = run(capsys, "train", "--runs-dir", str(trained.parent), "--name", "digits",
                     *TINY)
    assert_user_error(rc, err, "already exists; pass --resume")


def test_real_processes(tmp_path):
    """``python -m rnnlab`` and the ``rnnlab`` script: help, and a mistake without traceback."""
    env = {**os.environ, "RNNLAB_DEBUG": ""}
    py = [sys.executable, "-m", "rnnlab"]
    res = subprocess.run(py + ["--help"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and "experiment" in res.stdout and "main job" in res.stdout
    res = subprocess.run(py + ["--seeds", "zero"], capture_output=True, text=True, timeout=120,
                         env=env, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == "python -m rnnlab: error: --seeds must be comma-separated " \
                                 "integers; got 'zero'"
    res = subprocess.run(py + ["train", "--hidden", "x"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- issue 15


def assert_one_line(err: str, code: int, rc: int, *needles: str) -> str:
    assert rc == code, (rc, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_a_failed_download_is_one_line_naming_the_data_dir(tmp_path, capsys, monkeypatch):
    import dataclasses

    from rnnlab.data import images

    src = images.SOURCES["fashion-mnist"]       # no system copy; a mirror that refuses at once
    monkeypatch.setitem(images.SOURCES, "fashion-mnist", dataclasses.replace(
        src, mirrors=("http://127.0.0.1:9/",), system_dirs=(), debian_package=None))
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    rc, _, err = run(capsys, "train", "--dataset", "fashion-mnist", "--runs-dir", str(tmp_path))
    assert_one_line(err, 2, rc, "could not download train-images-idx3-ubyte.gz",
                    "127.0.0.1:9", "--data-dir DIR")


def test_missing_data_stops_a_sweep_once(tmp_path, capsys):
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    rc, out, err = run(capsys, "experiment", "timesteps", "--dataset", "fashion-mnist",
                       "--data-dir", str(empty), "-o", str(tmp_path / "t"))
    assert_one_line(err, 2, rc, "the fashion-mnist IDX files are not in data directory")
    assert "failed" not in out                      # not one failure line per cell
    res = subprocess.run([sys.executable, "-m", "rnnlab", "--dataset", "fashion-mnist",
                          "--data-dir", str(empty), "-o", str(tmp_path / "t")],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RNNLAB_DEBUG": ""})
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_missing_optional_packages_name_their_extra(tmp_path, capsys, monkeypatch):
    from rnnlab.cli import _import_hint

    monkeypatch.setitem(sys.modules, "distributed", None)     # import distributed -> ImportError
    rc, _, err = run(capsys, "sweep", "--dataset", "xor", "--grid", "seed=0,1", "-o",
                     str(tmp_path / "s"), "--cluster", "local-dask", "--epochs", "1")
    assert_one_line(err, 2, rc, "pip install 'rnnlab[distributed]'")
    exc = ImportError("No module named 'numba'", name="numba")
    assert _import_hint(exc).endswith("pip install 'rnnlab[fast]'")
    exc = ImportError("No module named 'sklearn.datasets'", name="sklearn.datasets")
    assert _import_hint(exc).endswith("pip install 'rnnlab[sklearn]'")


def test_an_unexpected_error_is_one_line_with_exit_code_1(tmp_path, capsys, monkeypatch):
    from rnnlab.lab import experiments

    def broken(*a, **k):
        raise KeyError("model")

    monkeypatch.setattr(experiments, "run", broken)
    rc, _, err = run(capsys, "train", "--runs-dir", str(tmp_path), *TINY)
    assert_one_line(err, 1, rc, "KeyError: 'model'", "RNNLAB_DEBUG=1")
    monkeypatch.setenv("RNNLAB_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["train", "--runs-dir", str(tmp_path), *TINY])


def test_epoch_lines_quiet_and_verbose(tmp_path, capsys):
    args = ["train", "--runs-dir", str(tmp_path), *TINY[:-2]]        # progress: the default
    rc, out, err = run(capsys, *args, "--name", "normal")
    assert rc == 0, err
    lines = out.splitlines()
    assert [ln.split("  ")[0] for ln in lines if ln.startswith("epoch ")] == \
        ["epoch 1/2", "epoch 2/2"]                 # stdout is not a terminal: a line per epoch
    assert "\r" not in out + err and lines[0].startswith("run normal:")
    rc, out, err = run(capsys, *args, "--name", "quiet", "-q")
    assert rc == 0 and not err
    assert [ln.split(":")[0].split(" ")[0] for ln in out.splitlines()] == ["test", "completed"]
    rc, out, _ = run(capsys, *args, "--name", "loud", "--verbose")
    assert rc == 0 and "start-up" in out and "fast path: " in out
    summary = json.loads((tmp_path / "loud" / "summary.json").read_text())
    assert summary["fast_path"] == "on" or summary["fast_path"].startswith("off: ")
    rc, out, _ = run(capsys, "-q", "datasets")                 # on the group too
    assert rc == 0 and "digits" in out


def test_help_is_not_truncated(capsys):
    from rnnlab.cli import cli

    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "..." not in out[out.index("Commands:"):]
    for name, cmd in cli.commands.items():
        assert cmd.get_short_help_str() in " ".join(out.split()), name
    assert "-q, --quiet" in out and "-v, --verbose" in out


def test_choices_take_aliases_case_and_none(capsys, tmp_path):
    rc, out, err = run(capsys, "sweep", "--dataset", "Fashion_MNIST", "--setup", "none",
                       "--optimizer", "ADAM", "--grid", "seed=0,1", "--dry-run")
    assert rc == 0, err
    assert "2 cells" in out


def test_bare_resume_continues_the_run_as_it_was(tmp_path, capsys):
    base = ["train", "--runs-dir", str(tmp_path), "--name", "r", "--progress", "off"]
    rc, _, err = run(capsys, *base, "--dataset", "xor", "-T", "6", "--hidden", "5",
                     "--epochs", "2", "--lr", "0.02", "--batch-size", "64", "--schedule",
                     "constant")
    assert rc == 0, err
    rc, out, err = run(capsys, "train", "--runs-dir", str(tmp_path), "--name", "r", "--resume")
    assert rc == 0, err
    assert "completed after 2 epoch(s)" in out and "xor (T=6), H=5" in out     # as it was
    rc, out, err = run(capsys, "train", "--runs-dir", str(tmp_path), "--name", "r", "--resume",
                       "--epochs", "3", "--lr", "0.01", "-q")
    assert rc == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["spec"]["hidden_size"] == 5
    assert summary["final"]["lr"] == 0.01
    cfg = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert cfg["model"]["hidden_size"] == 5 and cfg["train"]["epochs"] == 3
    rc, _, err = run(capsys, "train", "--runs-dir", str(tmp_path), "--name", "r", "--resume",
                     "--hidden", "7", "--batch-size", "32")
    assert_user_error(rc, err, "--resume continues run 'r' as its config.toml says",
                      "model.hidden_size 5 -> 7", "train.batch_size 64 -> 32")


def test_sweep_prints_an_eta_a_table_and_readable_folders(tmp_path, capsys):
    conf = tmp_path / "s.toml"
    conf.write_text('[data]\ndataset = "xor"\nsteps = 6\n[train]\nepochs = 1\n'
                    '[sweep]\nname = "demo"\ngrid = { seed = [0, 1], T = [4, 6] }\n'
                    '[[sweep.variants]]\nlabel = "tanh, label at the last step"\n')
    rc, out, err = run(capsys, "sweep", str(conf), "-o", str(tmp_path / "demo"))
    assert rc == 0, err
    progress = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert len(progress) == 4
    assert all(" ETA " in ln for ln in progress[:-1]) and " ETA " not in progress[-1]
    table = out[out.index("\nseed"):].splitlines()[1:6]
    assert table[0].split()[:4] == ["seed", "steps", "status", "test_accuracy"]
    assert all(row.split()[2] == "done" for row in table[1:])
    names = sorted(p.name for p in (tmp_path / "demo" / "runs").iterdir())
    assert len(names) == 4 and len(set(names)) == 4
    for n in names:
        assert re.fullmatch(r"tanh-label-at-the-last-(T[46]-seed[01]|seed[01]-T[46])-"
                            r"[0-9a-f]{8}", n), n
