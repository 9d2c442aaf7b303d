"""Training data has no built-in location: --data, or $RAYBB_TRAIN_DATA, or a clear error."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from raybb.cli import app
from raybb.train.loop import TrainConfig, TrainingLoop


def test_data_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RAYBB_TRAIN_DATA", raising=False)
    monkeypatch.delenv("RAYBB_VAL_DATA", raising=False)
    assert TrainConfig().data == [] and TrainConfig().val_data == []
    a, b = str(tmp_path / "a"), "s3://bucket/photos"
    monkeypatch.setenv("RAYBB_TRAIN_DATA", f"{a},{b}")
    monkeypatch.setenv("RAYBB_VAL_DATA", a)
    assert TrainConfig().data == [a, b] and TrainConfig().val_data == [a]


def test_no_data_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("RAYBB_TRAIN_DATA", raising=False)
    with pytest.raises(ValueError, match="RAYBB_TRAIN_DATA"):
        TrainingLoop(TrainConfig(model={"N": 16, "M": 16, "F": 16, "G": 4}))
    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "run"), "--steps", "1"])
    assert res.exit_code == 2, res.output
    assert "--data" in res.output and "RAYBB_TRAIN_DATA" in res.output
