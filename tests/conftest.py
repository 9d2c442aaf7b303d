"""Repository-wide test setup: one torch thread (CI has 2 cores), no Ray usage reporting, and the
fixtures that locate images (committed test photos; external data under $RAYBB_SHARED)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).parent))  # tests/_data.py, tests/_servers.py

import pytest  # noqa: E402
import torch  # noqa: E402
from _data import TEST_PHOTOS  # noqa: E402
from _data import kodak_dir as _kodak_dir

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def test_photos() -> list[Path]:
    """The committed test photos (tests/data/photos): always there, whatever the checkout's location."""
    assert len(TEST_PHOTOS) >= 4, "tests/data/photos is missing from this checkout"
    return TEST_PHOTOS


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    """The 24 Kodak images under $RAYBB_SHARED; tests that need them skip when they are missing."""
    d = _kodak_dir()
    if not d.is_dir():
        pytest.skip(f"Kodak images not found at {d} (set RAYBB_SHARED)")
    return d
