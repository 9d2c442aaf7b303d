"""Fixtures for the evaluation tests (helpers live in eval_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import QuantizingCodec, synthetic_image

from raybb.imageio import encode_png

torch.set_num_threads(1)


@pytest.fixture
def image_64() -> np.ndarray:
    return synthetic_image(64, 80, seed=1)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two tiny PNGs (different sizes, one odd) in a folder, plus a non-image file to ignore."""
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.png").write_bytes(encode_png(synthetic_image(48, 64, seed=2)))
    (d / "b.png").write_bytes(encode_png(synthetic_image(57, 40, seed=3)))
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture
def fake_codecs() -> list[tuple[str, QuantizingCodec]]:
    return [(f"step{s}", QuantizingCodec(s)) for s in (48, 24, 12, 6)]
