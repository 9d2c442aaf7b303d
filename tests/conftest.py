"""Repository-wide test setup: one torch thread (CI has 2 cores), no Ray usage reporting."""

import os
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED = Path(os.environ.get("RAYBB_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
KODAK = SHARED / "datasets" / "kodak"
TRAIN = SHARED / "datasets" / "train"


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    if not KODAK.is_dir():
        pytest.skip(f"Kodak images not found at {KODAK} (set RAYBB_SHARED)")
    return KODAK
