"""Sweeps delete only what they wrote, take a lock, name their output safely and check every
cell before the first runs (issue 13, points 5, 7 and 9)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from rnnlab import sweep
from rnnlab.sweep import OUTPUTS, cell_name, run_sweep
from rnnlab.train import LockedError
from rnnlab.train.files import DirectoryLock


def writes_a_directory(cell: dict[str, Any]) -> dict[str, Any]:
    """A cell that writes its directory under the sweep's runs/, as run_cell does."""
    d = Path(cell["out"]) / "runs" / cell_name(cell)
    d.mkdir(parents=True, exist_ok=True)
    (d / "result.txt").write_text(str(cell["x"]))
    with open(Path(cell["out"]) / "calls.txt", "a") as f:
        f.write(f"{cell['x']}\n")
    return {"value": cell["x"]}


def _outputs(cell: dict[str, Any]) -> str:
    return f"runs/{cell_name(cell)}"


def _sweep(out: Path, xs: list[int], **kw: Any) -> Any:
    cells = [{"x": x, "out": str(out)} for x in xs]
    return run_sweep(writes_a_directory, cells, out, outputs=_outputs, **kw)


def test_overwrite_deletes_only_what_the_sweep_wrote(tmp_path: Path) -> None:
    """Point 5: ``rnnlab sweep cfg.toml -o . --overwrite`` deleted runs/precious (and a user's
    file inside it): overwrite removed all of out/runs."""
    out = tmp_path
    precious = out / "runs" / "precious"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("mine")
    (out / "notes.txt").write_text("mine too")
    _sweep(out, [1, 2])
    recorded = [json.loads(x) for x in (out / OUTPUTS).read_text().splitlines()]
    assert sorted(recorded) == sorted(_outputs({"x": x, "out": str(out)}) for x in (1, 2))
    rep = _sweep(out, [1, 2], overwrite=True)
    assert rep.ran == 2                                        # forgotten, run again
    assert (precious / "thesis.tex").read_text() == "mine"
    assert (out / "notes.txt").read_text() == "mine too"
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        ["precious"] + [cell_name({"x": x, "out": str(out)}) for x in (1, 2)])


def test_an_existing_directory_not_on_record_is_never_deleted(tmp_path: Path) -> None:
    """A cell's directory that existed before the sweep (a user's, an older run's) is not the
    sweep's: it is not recorded, and overwrite leaves it."""
    out = tmp_path / "s"
    cell = {"x": 7, "out": str(out)}
    theirs = out / "runs" / cell_name(cell)
    theirs.mkdir(parents=True)
    (theirs / "theirs.txt").write_text("keep")
    _sweep(out, [7])
    assert not (out / OUTPUTS).exists() or _outputs(cell) not in (out / OUTPUTS).read_text()
    _sweep(out, [7], overwrite=True)
    assert (theirs / "theirs.txt").read_text() == "keep"


def test_overwrite_of_a_sweep_without_a_record(tmp_path: Path) -> None:
    """A results file from before outputs.jsonl existed: the cells it lists are the sweep's
    (their directories are named by their hash), nothing else is."""
    out = tmp_path / "s"
    _sweep(out, [1, 2])
    (out / OUTPUTS).unlink()
    (out / "runs" / "mine").mkdir()
    _sweep(out, [3], overwrite=True)
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == sorted(["mine", cell_name({"x": 3, "out": str(out)})])


def test_two_sweeps_never_share_an_output(tmp_path: Path) -> None:
    """Point 7: two sweeps into one output ran every cell twice."""
    out = tmp_path / "s"
    out.mkdir()
    with DirectoryLock(out, "sweep directory"):
        with pytest.raises(LockedError, match=rf"sweep directory .* is in use by pid "
                                              rf"{os.getpid()}"):
            _sweep(out, [1, 2])
    assert not (out / "calls.txt").exists() and not (out / "results.jsonl").exists()
    _sweep(out, [1, 2])
    assert sorted((out / "calls.txt").read_text().split()) == ["1", "2"]


@pytest.mark.parametrize("name", ["..", ".", "../../evil", "a/b", "", "x y"])
def test_sweep_names_are_run_names(tmp_path: Path, name: str) -> None:
    """Point 5: a sweep named ``..`` deleted ./runs/*; ``../../evil`` wrote outside runs/."""
    conf = tmp_path / "s.toml"
    conf.write_text(f'[sweep]\nname = {json.dumps(name)}\ngrid = {{ seed = [0] }}\n')
    if name == "":                    # empty: the file's name is used, which is fine
        assert sweep.load_sweep(conf)[3] == "s"
        return
    with pytest.raises(ValueError, match=r"s.toml: the sweep's name must be a non-empty "
                                         r"directory name"):
        sweep.load_sweep(conf)


def test_an_output_path_outside_the_sweep_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not inside the sweep directory"):
        run_sweep(writes_a_directory, [{"x": 1, "out": str(tmp_path)}], tmp_path / "s",
                  outputs=lambda c: "../elsewhere")


def test_every_cell_is_checked_before_the_first_runs(tmp_path: Path) -> None:
    """Point 9: ``grid = {T = [4, 3]}`` trained T = 4 for minutes, then failed on T = 3."""
    pytest.importorskip("sklearn")
    from rnnlab.config import ExperimentConfig
    from rnnlab.experiments import check_cells

    base = ExperimentConfig().with_overrides({"hidden": 4, "epochs": 1})
    cells = sweep.config_cells(base, {"T": [4, 3]})
    with pytest.raises(ValueError, match=r'sweep cell \{"data.steps":3\}: steps=3 does not '
                                         r"divide the 64 values of an 8x8 digit"):
        check_cells(base, cells)
    bad = sweep.config_cells(base, {"train.patience": [None, 2], "train.monitor": ["val_mse"]})
    with pytest.raises(ValueError, match=r"sweep cell .*monitor 'val_mse' is not computed"):
        check_cells(base, bad)
    check_cells(base, sweep.config_cells(base, {"T": [4, 8], "seed": [0, 1]}))


def test_cli_sweep_checks_all_cells_and_overwrite_keeps_precious(tmp_path: Path,
                                                                 capsys: Any,
                                                                 monkeypatch: Any) -> None:
    """The command line end to end, as the issue ran it: ``-o .`` in a directory with a
    user's runs/precious, then --overwrite; and a grid with a bad cell exits 2 before any
    cell runs."""
    pytest.importorskip("click")
    pytest.importorskip("sklearn")
    from rnnlab.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "precious").mkdir(parents=True)
    (tmp_path / "runs" / "precious" / "data.csv").write_text("1,2,3")
    conf = tmp_path / "cfg.toml"
    conf.write_text('[data]\ndataset = "xor"\nsteps = 6\n[model]\nhidden_size = 2\n'
                    '[train]\nepochs = 1\nprogress = "off"\n[sweep]\ngrid = { seed = [0, 1] }\n')
    args = ["sweep", str(conf), "-o", "."]
    assert main(args) == 0
    assert main([*args, "--overwrite"]) == 0
    out, err = capsys.readouterr()
    assert "removed 2 output(s) of the earlier sweep" in out
    assert (tmp_path / "runs" / "precious" / "data.csv").read_text() == "1,2,3"
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    rc = main(["sweep", str(conf), "--grid", "bidirectional=false,true", "--set",
               "algorithm=tbptt", "--set", "k1=2", "-o", "bad"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1, err
    assert 'sweep cell {"model.bidirectional":true' in err and "walks time forwards" in err
    assert not (tmp_path / "bad").exists()
