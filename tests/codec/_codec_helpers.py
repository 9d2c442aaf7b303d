"""Helpers shared by the codec tests (a module, so tests can import it by name)."""

from pathlib import Path

import numpy as np
import torch

from raybb.model.ladder import LadderConfig, LadderNetwork
from raybb.model.weights import save_weights

EXPECTED = Path(__file__).parent / "expected"
TINY = LadderConfig(N=8, M=8, F=8, G=4)

#: Golden PNGs hold the synthesis transform's float32 output, rounded to 8 bits; another CPU, BLAS
#: or torch build may round a few values the other way. So a decode may differ from its golden PNG
#: by at most GOLDEN_PNG_MAX_LEVELS in at most GOLDEN_PNG_MAX_FRACTION of the values. Golden
#: bitstreams (.rbb) are compared exactly: the coded integers must not change.
GOLDEN_PNG_MAX_LEVELS = 1
GOLDEN_PNG_MAX_FRACTION = 0.01


def assert_matches_golden_png(decoded: np.ndarray, expected: np.ndarray) -> None:
    assert decoded.shape == expected.shape and decoded.dtype == expected.dtype == np.uint8
    diff = np.abs(decoded.astype(np.int16) - expected.astype(np.int16))
    assert int(diff.max(initial=0)) <= GOLDEN_PNG_MAX_LEVELS, f"max difference {diff.max()} levels"
    frac = float(np.count_nonzero(diff)) / diff.size
    assert frac <= GOLDEN_PNG_MAX_FRACTION, f"{frac:.2%} of values differ"


def make_tiny_weights(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_weights(path, LadderNetwork(TINY), {"name": f"tiny{seed}"})
    return path
