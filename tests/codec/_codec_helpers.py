"""Helpers shared by the codec tests (a module, so tests can import it by name)."""

from pathlib import Path

import numpy as np
import torch

from raybb.model.channel_ladder import ChannelLadderConfig, ChannelLadderNetwork
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


#: A tiny variable-rate channel-ladder: z2 and three slices (4 coded latents), 16 rate indices.
TINY_CL = {"N": 8, "M": 12, "F": 8, "G": 4, "slices": (2, 4, 6), "prior_hidden": 8, "rate_levels": 16}


def save_tiny_channel_ladder(path: Path, **over) -> Path:
    """A tiny channel-ladder, random init with its β gains moved off identity (so the rate index
    changes the network), written with raybb's weights writer."""
    torch.manual_seed(0)
    m = ChannelLadderNetwork(ChannelLadderConfig(**{**TINY_CL, **over})).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "log_gain" in name:
                p.add_(torch.randn_like(p) * 0.3)
    save_weights(path, m, {"name": path.stem})
    return path
