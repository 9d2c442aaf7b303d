import numpy as np
import pytest
from _codec_helpers import EXPECTED

from raybb.codec import Codec
from raybb.model.weights import load_weights


@pytest.fixture(scope="session")
def tiny_weights():
    """The golden tiny model (committed, so golden bitstreams stay decodable)."""
    return EXPECTED / "tiny.safetensors"


@pytest.fixture(scope="session")
def tiny_codec(tiny_weights) -> Codec:
    return Codec(load_weights(tiny_weights), "pfr")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A deterministic 'photo-like' test image (smooth gradients + texture), 70x90."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:70, 0:90]
    base = np.stack([128 + 100 * np.sin(xx / 13.0), 128 + 90 * np.cos(yy / 9.0), (xx + yy) * 1.5], axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
