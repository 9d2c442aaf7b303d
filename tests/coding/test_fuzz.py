"""Corrupt or truncated payloads raise a BitstreamError subclass: never hang, crash or blow up."""

import zlib

import numpy as np
import pytest
import torch

from raybb.coding import (
    DitheredPFRSampler,
    GreedySampler,
    ImportanceSampler,
    PFRSampler,
    RejectionSampler,
    StreamKey,
)
from raybb.coding.synthetic import make_pair
from raybb.errors import BitstreamError

SAMPLERS = [
    PFRSampler(8, 11, 16, 8),
    PFRSampler(8, 11, 16, 8, channels=12),  # one order bit in the payload
    RejectionSampler(6),
    GreedySampler(4, 8, 32),
    ImportanceSampler(6, 32, 6),
    DitheredPFRSampler(8, 11, 16, 8, 12, threshold=-100.0),  # every channel dithered
    DitheredPFRSampler(8, 11, 16, 8, 12, threshold=1.0),  # some dithered, the rest PFR
]


@pytest.fixture(scope="module")
def pair():
    return make_pair(600, 600, seed=3)


def _with_crc(body: bytes) -> bytes:
    return zlib.crc32(body).to_bytes(4, "little") + body


@pytest.mark.timeout(120)
@pytest.mark.parametrize("smp", SAMPLERS, ids=lambda s: repr(s))
def test_flips_and_truncations_raise(smp, pair):
    q, p = pair
    key = StreamKey(17)
    payload = smp.encode(q, p, key).payload
    rng = np.random.default_rng(smp.sampler_id)
    for _ in range(150):
        bad = bytearray(payload)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
        with pytest.raises(BitstreamError):
            smp.decode(p, key, bytes(bad))
    for cut in sorted(set(rng.integers(0, len(payload), 60).tolist()) | {0, 3, 4, len(payload) - 1}):
        with pytest.raises(BitstreamError):
            smp.decode(p, key, payload[:cut])
    with pytest.raises(BitstreamError):
        smp.decode(p, key, payload + b"\0\0\0\0")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("smp", SAMPLERS, ids=lambda s: repr(s))
def test_garbage_that_passes_the_checksum_is_handled(smp, pair):
    """The parser itself validates every count: garbage bodies with a valid CRC either raise a
    BitstreamError or decode to a finite sample of the right shape."""
    q, p = pair
    key = StreamKey(17)
    body = smp.encode(q, p, key).payload[4:]
    rng = np.random.default_rng(100 + smp.sampler_id)
    for i in range(120):
        if i % 3 == 0:
            new = rng.integers(0, 256, int(rng.integers(0, 64)) * 4, dtype=np.uint8).tobytes()
        else:
            b = bytearray(body)
            for _ in range(int(rng.integers(1, 6))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
            new = bytes(b)
        try:
            out = smp.decode(p, key, _with_crc(new))
        except BitstreamError:
            continue
        assert out.shape == p.mean.shape and torch.isfinite(out).all()
