"""Experiment configs: TOML round trips, unknown keys, flat keys and overrides."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    dumps_toml,
    field_types,
    flat_keys,
    load_config,
    parse_assignment,
    parse_value,
    resolve_key,
    save_config,
)
from rnnlab.train import TrainConfig


def full_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="a-run.1", label="tanh, last step",
        model=ModelConfig(hidden_size=32, num_layers=2, nonlinearity="relu", bidirectional=True,
                          init="irnn", dtype="float64", label_steps="all"),
        data=DataConfig(dataset="fashion", steps=28, seed=3, data_dir="/tmp/idx",
                        options={"scale": "standard", "val_fraction": 0.2}),
        train=TrainConfig(epochs=3, batch_size=16, optimizer="adamw", lr=3e-4,
                          optimizer_kwargs={"weight_decay": 0.01, "betas": [0.8, 0.99]},
                          clip_norm=1.0, patience=2, seed=7),
    )


def test_defaults_round_trip_through_toml():
    cfg = ExperimentConfig()
    text = dumps_toml(cfg.to_dict())
    assert ExperimentConfig.from_dict(tomllib.loads(text)) == cfg
    assert "[model]" in text and "[data]" in text and "[train]" in text


def test_full_config_round_trip(tmp_path):
    cfg = full_config()
    assert cfg.data.dataset == "fashion-mnist"          # aliases are stored canonical
    path = save_config(cfg, tmp_path / "c.toml")
    text = path.read_text()
    assert "[data.options]" in text and "[train.optimizer_kwargs]" in text
    assert "clip_norm = 1.0" in text and "k1" not in text      # None is left out
    assert load_config(path) == cfg
    # and JSON works too
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    assert load_config(tmp_path / "c.json") == cfg


@settings(max_examples=40, deadline=None)
@given(label=st.text(min_size=1, max_size=30),
       lr=st.floats(min_value=1e-9, max_value=10.0, allow_nan=False),
       epochs=st.integers(1, 10_000), hidden=st.integers(1, 4096))
def test_round_trip_property(label, lr, epochs, hidden):
    cfg = ExperimentConfig().with_overrides({"label": label, "lr": lr, "epochs": epochs,
                                             "hidden": hidden})
    back = ExperimentConfig.from_dict(tomllib.loads(dumps_toml(cfg.to_dict())))
    assert back == cfg
    assert back.train.lr == lr                           # repr of a float is exact


@pytest.mark.parametrize("d,match", [
    ({"epochs": 3}, r"unknown key\(s\) \['epochs'\] at the top.*valid keys are \['data', "
                    r"'diagnostics', 'label', 'model', 'name', 'train'\]"),
    ({"model": {"hiden_size": 3}}, r"unknown key\(s\) \['hiden_size'\] in \[model\]; valid "
                                   r"keys are \['bidirectional', 'dtype', 'hidden_size'"),
    ({"data": {"T": 3}}, r"unknown key\(s\) \['T'\] in \[data\]; valid keys are \['data_dir'"),
    ({"train": {"epoch": 3}}, r"unknown key\(s\) \['epoch'\] in \[train\]; valid keys are "
                              r"\[.*'epochs'"),
    ({"data": {"dataset": "cifar"}}, r"unknown dataset 'cifar'; valid names: add-task, adding"),
    ({"data": {"options": {"scal": "unit"}}}, r"unknown data.options \['scal'\] for dataset "
                                              r"'digits'; valid options: scale='unit'"),
    ({"model": {"nonlinearity": "tan"}}, r"unknown activation 'tan'"),
    ({"model": {"init": "he"}}, r"unknown model.init 'he'; expected one of"),
    ({"model": {"dtype": "float16"}}, r"model.dtype must be one of"),
    ({"model": {"hidden_size": 0}}, r"hidden_size must be >= 1; got 0"),
    ({"data": {"steps": 0}}, r"data.steps must be an int >= 1; got 0"),
    ({"train": {"lr": -1.0}}, r"lr must be a finite number > 0"),
    ({"name": "a/b"}, r"name must be a non-empty directory name"),
    ({"model": 3}, r"\[model\] must be a table"),
])
def test_bad_configs_name_the_problem(d, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ExperimentConfig.from_dict(d)


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nhidden_size = 3\n")
    with pytest.raises(ValueError, match=r"bad.toml: not valid TOML"):
        load_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[model]\nhidden = 3\n")
    with pytest.raises(ValueError, match=r"unknown.toml: unknown key\(s\) \['hidden'\] in "
                                         r"\[model\]"):
        load_config(unknown)


def test_resolve_key():
    assert resolve_key("model.hidden_size") == "model.hidden_size"
    assert resolve_key("hidden_size") == "model.hidden_size"          # unique bare name
    assert resolve_key("lr") == "train.lr"
    assert resolve_key("T") == resolve_key("steps") == "data.steps"
    assert resolve_key("seed") == "train.seed"                         # alias wins
    assert resolve_key("data.options.scale") == "data.options.scale"
    with pytest.raises(ValueError, match=r"unknown config key 'hidden_sise'; valid keys are "
                                         r"name, label"):
        resolve_key("hidden_sise")
    with pytest.raises(ValueError, match=r"unknown config key 'model.options.x'"):
        resolve_key("model.options.x")
    assert flat_keys()[:3] == ["name", "label", "diagnostics"]
    assert set(field_types()) == set(flat_keys())
    assert field_types()["train.clip_norm"].replace(" ", "") == "float|str|None"   # or "auto"


def test_overrides_apply_and_validate():
    base = ExperimentConfig()
    cfg = base.with_overrides({"T": 16, "hidden": 8, "lr": 0.01, "seed": 2,
                               "data.options.scale": "standard",
                               "train.optimizer_kwargs.betas": [0.8, 0.9]})
    assert cfg.data.steps == 16 and cfg.model.hidden_size == 8 and cfg.train.lr == 0.01
    assert cfg.train.seed == 2 and cfg.data.seed == 0
    assert cfg.data.options == {"scale": "standard"}
    assert cfg.train.optimizer_kwargs == {"betas": [0.8, 0.9]}
    assert base == ExperimentConfig()                                   # frozen, untouched
    # a new dataset drops the options the old one had and the new one lacks
    xor = cfg.with_overrides({"dataset": "xor"})
    assert xor.data.dataset == "xor" and xor.data.options == {}
    with pytest.raises(ValueError, match=r"epochs must be an int >= 1; got 0"):
        base.with_overrides({"epochs": 0})
    with pytest.raises(ValueError, match=r"unknown config key 'bogus'"):
        base.with_overrides({"bogus": 1})


@pytest.mark.parametrize("text,value", [
    ("8", 8), ("1e-3", 1e-3), ("true", True), ("relu", "relu"), ('"8"', "8"),
    ("[1, 2]", [1, 2]), ("none", None), ("0.5", 0.5), ("a b", "a b"),
])
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_parse_assignment():
    assert parse_assignment("model.hidden_size=32") == ("model.hidden_size", 32)
    assert parse_assignment("data.options.path=a=b.txt") == ("data.options.path", "a=b.txt")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_assignment("lr")


def test_toml_writer_special_values():
    text = dumps_toml({"a": math.inf, "b": "quote \" and \\ and é\n", "t": {"k": [1.5, -2]},
                       "none": None, "empty": {}})
    back = tomllib.loads(text)
    assert back == {"a": math.inf, "b": "quote \" and \\ and é\n", "t": {"k": [1.5, -2]}}
    with pytest.raises(TypeError, match="cannot write x"):
        dumps_toml({"x": object()})


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs").glob("*.toml")),
                         ids=lambda p: p.name)
def test_example_configs_load(path):
    from rnnlab import sweep

    base, axes, variants, name = sweep.load_sweep(path)
    assert isinstance(base, ExperimentConfig) and name
    if axes or variants:
        cells = sweep.config_cells(base, axes, variants)
        assert len(cells) == max(1, len(variants)) * math.prod(len(v) for v in axes.values())
    else:
        assert load_config(path) == base


@pytest.mark.parametrize("clip", [None, "auto", 0.5])
def test_clip_norm_survives_a_toml_file(tmp_path, clip):
    """TOML has no null: a clip_norm of None (not the default, "auto") is written "none" and
    read back as None, so a saved run resumes with the clipping it ran with."""
    cfg = ExperimentConfig.from_dict({"train": {"clip_norm": clip}})
    path = save_config(cfg, tmp_path / "c.toml")
    back = load_config(path)
    assert back == cfg and back.train.clip_norm == clip
    assert ('clip_norm = "none"' in path.read_text()) == (clip is None)
