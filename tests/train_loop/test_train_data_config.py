"""Training data has no built-in location: --data, or $RAYBB_TRAIN_DATA, or a clear error."""

from __future__ import annotations

import pytest
import torch
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


def test_training_images_through_raybb_storage(test_photos, tmp_path):
    """Local folders and fsspec URLs list, read and fingerprint alike (raybb.storage, no global config)."""
    import fsspec

    from raybb.train.data import dataset_fingerprint, list_images, load_images

    local = tmp_path / "photos"
    (local / "val").mkdir(parents=True)
    mem = fsspec.filesystem("memory")
    for i, f in enumerate(test_photos):
        sub = "val/" if i == 0 else ""
        (local / f"{sub}{f.name}").write_bytes(f.read_bytes())
        mem.pipe(f"/raybb-train-test/{sub}{f.name}", f.read_bytes())
    (local / "notes.txt").write_text("not an image")
    lp = list_images(str(local), exclude=("/val/",))
    mp = list_images("memory://raybb-train-test", exclude=("/val/",))
    assert len(lp) == len(mp) == len(test_photos) - 1
    assert all(p.startswith("memory://raybb-train-test/") for p in mp)
    assert [p.rsplit("/", 1)[-1] for p in lp] == [p.rsplit("/", 1)[-1] for p in mp]
    assert dataset_fingerprint(lp) == dataset_fingerprint(mp)
    a, b = load_images(lp), load_images(mp, storage_options={})
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) and a[0].shape == (3, 176, 192)
    assert len(list_images([str(local), "memory://raybb-train-test"])) == 2 * len(test_photos)
    mem.rm("/raybb-train-test", recursive=True)
