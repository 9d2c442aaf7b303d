"""Fixtures for the training-loop tests: a few real photos copied into tmp, tiny configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from raybb.train.loop import TrainConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory, test_photos: list[Path]) -> Path:
    """The four committed 192x176 test photos (CID22 crops; never Kodak) in a private folder."""
    d = tmp_path_factory.mktemp("photos")
    for f in test_photos:
        shutil.copy(f, d / f.name)
    return d


@pytest.fixture
def tiny_cfg(photo_dir: Path):
    """TrainConfig factory: N=M=F=16, G=4, batch 4 of 64x64 patches, fixed beta, 1 thread."""

    def make(**over) -> TrainConfig:
        base = dict(
            data=[str(photo_dir)],
            exclude=[],
            val_data=[],
            model={"N": 16, "M": 16, "F": 16, "G": 4},
            beta=1.0,
            steps=40,
            batch=4,
            patch=64,
            lr=5e-4,
            lr_final_factor=1.0,
            warmup_steps=1,
            log_every=5,
            val_every=0,
            checkpoint_every=1000,
            num_threads=1,
            seed=0,
        )
        base.update(over)
        return TrainConfig(**base)

    return make
