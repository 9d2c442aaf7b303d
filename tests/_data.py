"""Where tests find images: the committed crops in tests/data, and external data under $RAYBB_SHARED.

One variable for external data: ``RAYBB_SHARED`` (default ``../shared`` next to the repository)
holding ``datasets/kodak`` and ``datasets/train``. Import with ``tests/`` on ``sys.path`` (the
root conftest puts it there), or use the fixtures in tests/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
#: Four 192x176 (width x height) RGB crops of CID22 training photos (provenance and license: tests/data/README.md).
TEST_PHOTOS: list[Path] = sorted((TEST_DATA / "photos").glob("*.png"))

__all__ = ["REPO", "TEST_DATA", "TEST_PHOTOS", "shared_dir", "kodak_dir", "train_dir", "load_photo"]


def shared_dir() -> Path:
    """The external data folder: ``$RAYBB_SHARED``, else ``../shared`` beside the repository."""
    return Path(os.environ.get("RAYBB_SHARED") or REPO.parent / "shared").resolve()


def kodak_dir() -> Path:
    """Where the 24 Kodak images would be (check ``.is_dir()``: it may not exist)."""
    return shared_dir() / "datasets" / "kodak"


def train_dir() -> Path:
    """Where the training photos (bsds500, cid22) would be."""
    return shared_dir() / "datasets" / "train"


def load_photo(i: int = 0) -> np.ndarray:
    """Committed test photo ``i`` (sorted by name) as HxWx3 uint8."""
    from raybb.imageio import load_image

    return load_image(TEST_PHOTOS[i])
