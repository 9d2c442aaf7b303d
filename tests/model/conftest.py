"""Fixtures for the ladder-network tests: a tiny seeded model (N=M=F=16, G=4) that runs in ms."""

from __future__ import annotations

import pytest
import torch

from raybb.model.ladder import LadderConfig, LadderNetwork

torch.set_num_threads(1)

TINY = LadderConfig(N=16, M=16, F=16, G=4)


@pytest.fixture
def tiny_config() -> LadderConfig:
    return TINY


@pytest.fixture
def tiny_model() -> LadderNetwork:
    torch.manual_seed(0)
    return LadderNetwork(TINY)
