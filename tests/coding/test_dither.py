"""dpfr: dithered (box-posterior) coding of the high-KL channels, block PFR for the rest."""

import math

import numpy as np
import pytest
import torch

from raybb.coding import DiagGaussian, DitheredPFRSampler, StreamKey, get_sampler
from raybb.errors import CorruptPayload
from raybb.pipelines import DPFR_DEFAULT, parse_pipeline

C, H, W = 6, 48, 64
KEY = StreamKey(5, 0, 1)


def _latent(seed: int = 0, high: tuple[int, ...] = (0, 2, 3)) -> tuple[DiagGaussian, DiagGaussian]:
    """Channels in ``high`` carry ~4-6 bits of KL per dim (posterior 24x narrower than the prior,
    as the PLN's busiest level-1 channels), the others well under a bit."""
    g = torch.Generator().manual_seed(seed)
    # the prior scale varies smoothly over the image (as the hyperprior's does)
    coarse = torch.randn(1, C, H // 4, W // 4, generator=g)
    ps = torch.exp(0.7 * torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear")[0])
    pm = 0.5 * torch.randn(C, H, W, generator=g)
    ratio = torch.full((C, 1, 1), 1.3)
    ratio[list(high)] = 24.0
    qs = ps / ratio * torch.exp(0.1 * torch.randn(C, H, W, generator=g))
    qm = pm + ps * torch.randn(C, H, W, generator=g) * torch.sqrt(1 - 1 / ratio**2)
    flat = lambda m, s: DiagGaussian(m.reshape(-1).contiguous(), s.reshape(-1).contiguous(), W)  # noqa: E731
    return flat(qm, qs), flat(pm, ps)


def test_round_trip_box_posterior_and_determinism():
    q, p = _latent()
    s = DitheredPFRSampler(22, 12, 64, 22, C, noise=1.6, noise_slope=0.0)
    enc = s.encode(q, p, KEY)
    assert enc.stats["dithered_channels"] == 3
    dec = get_sampler("dpfr", s.params()).decode(p, KEY, enc.payload)
    assert torch.equal(dec, enc.sample)  # the decoder rebuilds the encoder's sample bit for bit
    assert s.encode(q, p, KEY).payload == enc.payload  # same key, same bytes
    assert s.encode(q, p, StreamKey(6, 0, 1)).payload != enc.payload  # the dither comes from the key
    # a dithered channel's error is a box of the channel's step around the posterior mean
    z, qm, qs = (t.view(C, -1) for t in (enc.sample, q.mean, q.std))
    for ch in (0, 2, 3):
        step = 1.6 * math.sqrt(12) * float(torch.exp(torch.log(qs[ch]).mean()))
        err = (z[ch] - qm[ch]).abs()
        assert float(err.max()) <= 0.5 * step * 2 ** (1 / 16) + 1e-5  # the 8-bit step code rounds by <= 1/16 bit
        assert float(err.mean()) > 0.15 * step  # and it is a box, not a point (uniform: mean 1/4 step)


def test_rate_is_close_to_the_kl_for_dithered_channels():
    """Dithered channels cost a little more than their KL at noise 1.0 (the box has the posterior's
    std): uniform instead of Gaussian costs ~0.25 bit/dim, and the contexts (neighbours' indices)
    recover only part of what the prior's scale says; measured 0.74 bit/dim here, ~4.6 bits of KL/dim."""
    q, p = _latent(1, high=tuple(range(C)))
    s = DitheredPFRSampler(22, 12, 64, 22, C, noise=1.0, noise_slope=0.0)
    enc = s.encode(q, p, KEY)
    assert enc.stats["dithered_channels"] == C
    dims = C * H * W
    excess = (enc.stats["coded_bits"] - enc.stats["kl_bits"]) / dims
    assert 0.0 < excess < 0.9, excess
    dec = get_sampler("dpfr", s.params()).decode(p, KEY, enc.payload)
    assert torch.equal(dec, enc.sample)


def test_no_channel_dithered_is_pfr_with_a_small_header():
    q, p = _latent(2, high=())
    s = DitheredPFRSampler(22, 12, 64, 22, C)
    enc = s.encode(q, p, KEY)
    assert enc.stats["dithered_channels"] == 0
    assert torch.equal(get_sampler("dpfr", s.params()).decode(p, KEY, enc.payload), enc.sample)


def test_flat_vector_without_width_codes_as_one_row():
    q, p = _latent(3)
    q, p = DiagGaussian(q.mean, q.std), DiagGaussian(p.mean, p.std)  # width 0: not an image latent
    s = DitheredPFRSampler(22, 12, 64, 22, C)
    enc = s.encode(q, p, KEY)
    assert torch.equal(s.decode(p, KEY, enc.payload), enc.sample)


def test_corrupt_payloads_raise_typed_errors():
    q, p = _latent()
    s = DitheredPFRSampler(22, 12, 64, 22, C)
    data = s.encode(q, p, KEY).payload
    rng = np.random.default_rng(0)
    for bad in (b"", data[:3], data[:-4], (10**6).to_bytes(4, "little") + data[4:], data + b"\0\0\0\0"):
        with pytest.raises(CorruptPayload):
            s.decode(p, KEY, bad)
    for _ in range(20):  # flipped bits: the CRCs (dither section, PFR payload) catch them
        b = bytearray(data)
        i = int(rng.integers(4, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(CorruptPayload):
            s.decode(p, KEY, bytes(b))
    with pytest.raises(CorruptPayload):
        DitheredPFRSampler(22, 12, 64, 22, 7).decode(p, KEY, data)  # 7 does not divide the latent
    with pytest.raises(CorruptPayload):
        DitheredPFRSampler(22, 12, 64, 22, 0).encode(q, p, KEY)  # channels not resolved


def test_pipeline_specs():
    assert parse_pipeline("pfr/dpfr")[1] == ("dpfr", DPFR_DEFAULT)
    assert parse_pipeline("dpfr:22,14,128,22,0")[1] == ("dpfr", (22, 14, 128, 22, 0))
    with pytest.raises(ValueError):
        parse_pipeline("dpfr:22,14,128")


def test_garbage_dither_sections_with_valid_checksums_are_handled():
    """Random bodies in the dither section under a valid CRC: a typed error or a finite sample."""
    import zlib

    from raybb.errors import BitstreamError

    q, p = _latent(4)
    s = DitheredPFRSampler(22, 12, 64, 22, C, threshold=-100.0)
    data = s.encode(q, p, KEY).payload
    n = int.from_bytes(data[:4], "little")
    body = data[8 : 4 + n]  # the section's words, after its CRC
    rng = np.random.default_rng(1)
    decoded = 0
    for i in range(60):
        b = bytearray(body)
        if i % 3 == 0:
            b = bytearray(rng.integers(0, 256, len(b) // 4 * 4, dtype=np.uint8).tobytes())
        else:
            for _ in range(int(rng.integers(1, 6))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
        sec = zlib.crc32(bytes(b)).to_bytes(4, "little") + bytes(b)
        try:
            out = s.decode(p, KEY, len(sec).to_bytes(4, "little") + sec)
        except BitstreamError:
            continue
        decoded += 1
        assert out.shape == p.mean.shape and torch.isfinite(out).all()
    assert decoded < 60  # most garbage is caught by the counts and symbol checks


@pytest.mark.parametrize("rows", [(0, 2, 3), (1, 4), (5,)])
def test_pfr_reads_a_channel_subset_in_place(rows):
    """dpfr's PFR part: PFR over some channels of q and p, read in place, writes the bytes PFR writes
    for a copy of those channels (either coding order); decoded in the standardized space and moved
    out of it per channel, it is the same sample."""
    from raybb.coding.base import prior_sample
    from raybb.coding.pfr import PFRSampler, _Rows

    q, p = _latent(7, high=(0,))
    n = H * W
    idx = torch.as_tensor(rows)
    sub = lambda g: DiagGaussian(g.mean.view(C, n)[idx].reshape(-1), g.std.view(C, n)[idx].reshape(-1))  # noqa: E731
    pfr = PFRSampler(22, 12, 64, 22, len(rows))
    copied = pfr.encode(sub(q), sub(p), KEY)
    in_place = pfr._encode(q, p, KEY, _Rows(n, np.array(rows)))
    assert in_place.payload == copied.payload
    z = pfr._decode_std(len(rows) * n, torch.device("cpu"), KEY, in_place.payload)  # standardized
    assert torch.equal(prior_sample(sub(p), z), copied.sample)
