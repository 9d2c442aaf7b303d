"""Helpers shared by the codec tests (a module, so tests can import it by name)."""

from pathlib import Path

import torch

from raybb.model.ladder import LadderConfig, LadderNetwork
from raybb.model.weights import save_weights

EXPECTED = Path(__file__).parent / "expected"
TINY = LadderConfig(N=8, M=8, F=8, G=4)


def make_tiny_weights(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_weights(path, LadderNetwork(TINY), {"name": f"tiny{seed}"})
    return path
