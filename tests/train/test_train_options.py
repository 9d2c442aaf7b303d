"""`raybb train` and `raybb sweep` speak one TrainConfig vocabulary: the same option names, the
same defaults (those of the shipped default model), old names kept as warned aliases. Nothing is
trained here: the training call is replaced by one that records its config."""

from __future__ import annotations

import json

import pytest
import typer.main
from typer.testing import CliRunner

from raybb.cli import EXIT_USAGE, app
from raybb.distributed.train import _config_from_args, _parser
from raybb.train import loop
from raybb.train.loop import (
    DEFAULT_CHANNELS,
    DEFAULT_VARIANT,
    TrainConfig,
    model_config,
    option_flag,
    train_option_names,
)

runner = CliRunner()


def _train_command():
    return typer.main.get_command(app).commands["train"]


def _long_names_typer(cmd) -> set[str]:
    return {o for p in cmd.params if p.param_type_name == "option" for o in p.opts if o.startswith("--")}


def test_train_and_sweep_share_every_option_name():
    shared = set(train_option_names())
    assert {"--warmup-steps", "--channels", "--variant", "--beta", "--threads", "--lr-final-factor"} <= shared
    train_opts = _long_names_typer(_train_command())
    sweep_opts = {s for a in _parser()._actions for s in a.option_strings}
    assert shared <= train_opts, shared - train_opts
    assert shared <= sweep_opts, shared - sweep_opts


def test_train_defaults_are_the_config_defaults():
    defaults = {p.name: p.default for p in _train_command().params}
    cfg = TrainConfig()
    for name in train_option_names():
        field = name[2:].replace("-", "_")
        if field in ("channels", "variant", "init_weights", "data", "exclude", "val_data"):
            continue
        attr = "num_threads" if field == "threads" else field
        assert defaults[field] == getattr(cfg, attr), name
    assert model_config(defaults["channels"], defaults["variant"]) == cfg.model


def test_defaults_are_the_shipped_default_models_recipe():
    from raybb.model.weights import load_weights
    from raybb.registry import resolve_model

    loaded = load_weights(resolve_model(None))  # the default model (pln-q3)
    cfg = TrainConfig()
    assert cfg.model == loaded.config.to_dict()
    assert cfg.beta == pytest.approx(loaded.meta["beta"])
    assert loaded.meta.get("variant") == DEFAULT_VARIANT
    assert {k: cfg.model[k] for k in DEFAULT_CHANNELS} == DEFAULT_CHANNELS


@pytest.fixture
def recorded(monkeypatch):
    """``raybb train`` runs up to the training call, which records the config instead."""
    seen = {}

    def fake(cfg, out_dir, **kw):
        seen["cfg"], seen["kw"] = cfg, kw

    monkeypatch.setattr(loop, "train_to_directory", fake)
    return seen


def test_train_builds_the_config_from_the_shared_names(tmp_path, recorded):
    r = runner.invoke(
        app,
        ["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path), "--beta", "0.2", "--warmup-steps", "7",
         "--channels", "16,16,16,4", "--variant", "gamma-pln", "--val-images", "3", "--grad-clip", "2",
         "--log-every", "5", "--val-every", "0", "--checkpoint-every", "9", "--threads", "1"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = recorded["cfg"]
    assert (cfg.beta, cfg.warmup_steps, cfg.val_images, cfg.grad_clip) == (0.2, 7, 3, 2.0)
    assert (cfg.log_every, cfg.val_every, cfg.checkpoint_every, cfg.num_threads) == (5, 0, 9, 1)
    assert cfg.model == model_config("16,16,16,4", "gamma-pln")
    assert "deprecated" not in r.output


def test_train_warmup_is_a_deprecated_alias(tmp_path, recorded):
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path), "--warmup", "7"])
    assert r.exit_code == 0, r.output
    assert recorded["cfg"].warmup_steps == 7
    assert "--warmup is deprecated, use --warmup-steps" in r.output


@pytest.mark.parametrize("bad", [["--channels", "1,2,3"], ["--channels", "a,b,c,d"], ["--variant", "nope"]])
def test_train_bad_model_options_are_usage_errors(tmp_path, recorded, bad):
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path), *bad])
    assert r.exit_code == EXIT_USAGE, r.output
    assert "cfg" not in recorded


def test_sweep_builds_the_same_config_as_train(tmp_path, recorded):
    common = ["--data", str(tmp_path), "--warmup-steps", "7", "--channels", "16,16,16,4", "--lr-final-factor",
              "0.5", "--grad-clip", "2", "--val-images", "3"]  # fmt: skip
    assert runner.invoke(app, ["train", "--out", str(tmp_path / "r"), *common]).exit_code == 0
    a = _parser().parse_args(["--beta", "0.1", "0.05", *common])
    sweep_cfg = _config_from_args(a)
    train_cfg = recorded["cfg"]
    # the sweep adds each trial's variant fields and β itself
    assert sweep_cfg.model == {k: train_cfg.model[k] for k in DEFAULT_CHANNELS}
    for f in ("warmup_steps", "lr_final_factor", "grad_clip", "val_images", "data", "steps", "lr", "batch"):
        assert getattr(sweep_cfg, f) == getattr(train_cfg, f), f
    assert a.beta == [0.1, 0.05] and a.variant == [DEFAULT_VARIANT]


def test_sweep_old_names_warn_and_still_work(capsys):
    a = _parser().parse_args(
        ["--betas", "0.1", "--variants", "gamma-pln", "--warmup", "3", "--model", json.dumps({"N": 8, "G": 2})]
    )
    err = capsys.readouterr().err
    for old, new in (("--betas", "--beta"), ("--variants", "--variant"), ("--warmup", "--warmup-steps")):
        assert f"{old} is deprecated, use {new}" in err
    assert "--model JSON is deprecated" in err
    cfg = _config_from_args(a)
    assert a.beta == [0.1] and a.variant == ["gamma-pln"] and cfg.warmup_steps == 3
    assert cfg.model == {"N": 8, "G": 2}


def test_sweep_channels_and_model_json_conflict():
    from raybb.distributed.train import sweep_main

    with pytest.raises(SystemExit) as e:
        sweep_main(["--beta", "1", "--channels", "8,8,8,2", "--model", "{}"])
    assert e.value.code == EXIT_USAGE


def test_option_flags():
    assert option_flag("num_threads") == "--threads" and option_flag("warmup_steps") == "--warmup-steps"
    with pytest.raises(ValueError, match="four integers"):
        model_config("8,8,8")
    with pytest.raises(ValueError, match="variant"):
        model_config(None, "nope")
