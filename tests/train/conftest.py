"""Fixtures for the Ray Train / sweep tests: a tiny image set, a tiny config, a real local Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for _servers, _data

from _data import load_photo  # noqa: E402
from _servers import local_ray  # noqa: E402

from raybb.imageio import encode_png  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """``train/``: the 4 test photos cropped to 160 px; ``val/``: 2 of them mirrored and cropped to
    176 px (5-scale MS-SSIM)."""
    root = tmp_path_factory.mktemp("tiny-data")
    imgs = [load_photo(i) for i in range(4)]
    (root / "train").mkdir()
    (root / "val").mkdir()
    for i, im in enumerate(imgs):
        (root / "train" / f"t{i}.png").write_bytes(encode_png(np.ascontiguousarray(im[8:168, 16:176])))
    for i, im in enumerate(imgs[2:]):
        (root / "val" / f"v{i}.png").write_bytes(encode_png(np.ascontiguousarray(im[:176, 16:192][:, ::-1])))
    return {"root": root, "train": str(root / "train"), "val": str(root / "val")}


def tiny_config(data: dict, **over) -> dict:
    """A TrainConfig dict for a model that trains a step in well under a second on one thread."""
    cfg = {
        "data": [data["train"]],
        "exclude": [],
        "val_data": [data["val"]],
        "val_images": 2,
        "model": {"N": 16, "M": 16, "F": 16, "G": 4},
        "steps": 12,
        "batch": 2,
        "patch": 64,
        "lr": 1e-3,
        "warmup_steps": 4,
        "log_every": 2,
        "val_every": 0,
        "checkpoint_every": 4,
        "num_threads": 1,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def ray_local():
    """One real local Ray instance per test module (2 CPUs, 127.0.0.1, small object store)."""
    with local_ray(num_cpus=2, object_store_mb=150) as info:
        yield info
