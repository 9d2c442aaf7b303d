"""Fixtures for the Ray tests: a tiny real model (helpers live in dist_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dist_helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for _servers


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a tiny random-weight ladder model (real codec, fast on 2 cores)."""
    import torch

    from raybb.model.ladder import LadderConfig, LadderNetwork
    from raybb.model.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny-dist.safetensors"
    save_weights(path, LadderNetwork(LadderConfig(N=16, M=16, F=16, G=4)), meta={"name": "tiny-dist"})
    return str(path)
