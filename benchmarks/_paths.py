"""Where the benchmarks find external data: ``$RAYBB_SHARED`` (default ``../shared`` beside the
repository) holding ``datasets/kodak`` and ``datasets/train``, the same variable the tests use.

Import as ``from benchmarks._paths import KODAK`` (the scripts put the repository on sys.path).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAYBB_SHARED") or REPO.parent / "shared")
KODAK = SHARED / "datasets" / "kodak"
TRAIN = SHARED / "datasets" / "train"
