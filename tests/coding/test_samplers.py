import math

import numpy as np
import pytest
import torch

from raybb.coding import (
    SAMPLERS,
    DiagGaussian,
    GreedySampler,
    ImportanceSampler,
    PFRSampler,
    RejectionSampler,
    StreamKey,
    get_sampler,
    kl_bits,
)
from raybb.coding.pfr import PFR_DEFAULT_PARAMS
from raybb.coding.synthetic import make_pair
from raybb.errors import BitstreamError, CodingError, CorruptPayload

SMALL = {
    "pfr": PFRSampler(8, 11, 16, 8),
    "pfr-default": PFRSampler(),  # (22, 14, 128, 22): what a bare "pfr" means
    "pfr-max": PFRSampler(25, 16, 64, 25),
    "pfr-256": PFRSampler(22, 14, 256, 22, channels=6),  # the widest superblocks, the order bit
    "rejection": RejectionSampler(6),
    "greedy": GreedySampler(4, 8, 32),
    "importance": ImportanceSampler(6, 32, 6),
}


@pytest.fixture(scope="module")
def pair():
    return make_pair(3000, 3000, seed=11)


@pytest.mark.parametrize("name", list(SMALL))
def test_decode_is_bit_identical_and_params_round_trip(name, pair):
    q, p = pair
    smp = SMALL[name]
    key = StreamKey(seed=2**62 + 5, image=3, level=1)
    enc = smp.encode(q, p, key)
    again = get_sampler(smp.sampler_id, smp.params())
    assert type(again) is type(smp) and again.params() == smp.params()
    out = again.decode(p, key, enc.payload)
    assert out.dtype == torch.float32 and out.shape == q.mean.shape
    assert torch.equal(out, enc.sample)
    assert torch.isfinite(out).all()
    assert enc.stats["coded_bits"] == 8 * len(enc.payload)
    assert abs(enc.stats["kl_bits"] - float(kl_bits(q, p).sum())) < 1e-6 * enc.stats["kl_bits"] + 1e-6
    # encoding is deterministic given the key; another key gives another sample
    assert enc.payload == smp.encode(q, p, key).payload
    other = smp.encode(q, p, StreamKey(seed=1))
    assert not torch.equal(other.sample, enc.sample)


def test_registry():
    assert {"pfr", "rejection", "greedy", "importance"} <= set(SAMPLERS)
    ids = [cls.sampler_id for cls in SAMPLERS.values()]
    assert len(set(ids)) == len(ids)
    assert get_sampler("pfr").params() == PFRSampler().params() == PFR_DEFAULT_PARAMS == (22, 14, 128, 22)
    with pytest.raises(CorruptPayload):
        get_sampler(250)
    with pytest.raises(CorruptPayload):
        get_sampler("nope")


@pytest.mark.parametrize(
    "name,bad",
    [
        ("pfr", (0, 10, 16, 8)),
        ("pfr", (33, 10, 16, 8)),
        ("pfr", (12, 23, 16, 8)),
        ("pfr", (12, 14, 999, 8)),
        ("pfr", (12, 14)),
        ("pfr", (12, 14, 32, 2**40)),
        ("rejection", (13, 0)),
        ("rejection", (8, 1)),
        ("rejection", (8,)),
        ("greedy", (0, 16, 64)),
        ("greedy", (6, 10**9, 64)),
        ("importance", (8, 64, 9)),
        ("importance", (99, 64, 8)),
        ("importance", ("8", 64, 8)),
    ],
)
def test_from_params_rejects_nonsense(name, bad):
    with pytest.raises(CorruptPayload):
        get_sampler(name, bad)


@pytest.mark.parametrize("name", ["pfr", "rejection", "greedy", "importance"])
def test_wrong_prior_size_and_bad_input(name, pair):
    q, p = pair
    smp = SMALL[name]
    enc = smp.encode(q, p, StreamKey(1))
    short = DiagGaussian(p.mean[:-1].contiguous(), p.std[:-1].contiguous())
    with pytest.raises(BitstreamError):
        smp.decode(short, StreamKey(1), enc.payload)
    with pytest.raises(CodingError):
        smp.encode(DiagGaussian(q.mean, -q.std), p, StreamKey(1))
    with pytest.raises(CodingError):
        smp.encode(DiagGaussian(q.mean[:10], q.std[:10]), p, StreamKey(1))


@pytest.mark.parametrize("name", ["pfr", "rejection", "greedy", "importance"])
def test_empty_and_zero_kl_latents(name):
    smp = SMALL[name]
    z = torch.zeros(0)
    p0 = DiagGaussian(z, z + 1)
    enc = smp.encode(p0, p0, StreamKey(0))
    assert enc.sample.shape == (0,)
    p = DiagGaussian(torch.zeros(100), torch.ones(100))
    enc = smp.encode(p, p, StreamKey(0))  # q == p: nearly free
    assert torch.equal(smp.decode(p, StreamKey(0), enc.payload), enc.sample)
    assert enc.stats["coded_bits"] < 2000


def test_coded_bits_within_published_bounds(pair):
    q, p = pair
    kl = kl_bits(q, p).numpy()
    total = kl.sum()
    # PFR (Li & El Gamal 2018): per block H[K] <= KL + log2(KL + 1) + 4 bits; plus split flags,
    # 16-bit outliers with their positions (< 40 bits each) and a small header.
    smp = SMALL["pfr"]
    st = smp.encode(q, p, StreamKey(3)).stats
    bound = total + st["n_blocks"] * (math.log2(smp.budget_bits + 1) + 4) + 40 * st["n_outliers"] + 512
    assert st["coded_bits"] <= bound
    # Harsha et al. 2007: per dim E[len] <= KL + 2 log2(KL + 1) + O(1); O(1) ~ 2 bits with the table.
    st = SMALL["rejection"].encode(q, p, StreamKey(3)).stats
    assert st["coded_bits"] <= (kl + 2 * np.log2(kl + 1) + 2).sum() + 40 * st["n_outliers"] + 512
    # Importance sampling: index bits = sum ceil(KL_g) <= KL + n_groups.
    st = SMALL["importance"].encode(q, p, StreamKey(3)).stats
    assert st["index_bits"] <= total + st["n_blocks"]
    # Greedy: exactly shard_bits per shard, ceil(KL_c / B) shards per chunk.
    g = SMALL["greedy"]
    st = g.encode(q, p, StreamKey(3)).stats
    assert st["n_shards"] * g.shard_bits <= total + st["n_blocks"] * g.shard_bits
    assert st["coded_bits"] <= st["n_shards"] * g.shard_bits + 8 * st["n_blocks"] + 512


def test_pfr_rate_tracks_kl():
    q, p = make_pair(8000, 8000, seed=5)
    st = PFRSampler(14, 16, 64, 14).encode(q, p, StreamKey(9)).stats  # near-exact: above KL
    assert 1.0 < st["coded_bits"] / st["kl_bits"] < 1.8
    st = PFRSampler().encode(q, p, StreamKey(9)).stats  # truncated: close to KL
    assert 0.9 < st["coded_bits"] / st["kl_bits"] < 1.15


def test_pfr_default_beats_previous_defaults_and_old_params_still_decode():
    """Truncated blocks spend fewer bits than near-exact ones: the default (22, 14, 128, 22) and
    (25, 16, 64, 25) < (14, 16, 64, 14) < (12, 14, 64, 12) (smaller blocks, more overhead); payloads
    made with other params (written in older containers) still decode bit-exactly."""
    q, p = make_pair(12000, 12000, seed=21)
    bits = [
        get_sampler("pfr", prm).encode(q, p, StreamKey(4)).stats["coded_bits"]
        for prm in (None, (25, 16, 64, 25), (14, 16, 64, 14), (12, 14, 64, 12))
    ]
    assert max(bits[0], bits[1]) < bits[2] < bits[3]
    old = get_sampler("pfr", (12, 14, 64, 12)).encode(q, p, StreamKey(4))
    assert torch.equal(
        get_sampler(PFRSampler.sampler_id, (12, 14, 64, 12)).decode(p, StreamKey(4), old.payload), old.sample
    )


def _structured_latent(channels: int, positions: int, seed: int, *, active_channels: int | None = None):
    """A (C, H*W)-flattened latent like an image's. With ``active_channels`` only those channels carry
    KL (position-major makes fewer blocks); without, every channel does at a third of the positions
    (channel-major makes fewer blocks)."""
    g = torch.Generator().manual_seed(seed)
    d = channels * positions
    mp, sp = torch.randn(d, generator=g), torch.exp(0.3 * torch.randn(d, generator=g))
    on = torch.zeros(channels, positions, dtype=torch.bool)
    if active_channels is not None:
        on[torch.randperm(channels, generator=g)[:active_channels]] = True
    else:
        on[:, torch.randperm(positions, generator=g)[: positions // 3]] = True
    on = on.reshape(-1)
    mq, sq = mp.clone(), sp.clone()
    mq[on] += sp[on] * 1.5 * torch.randn(int(on.sum()), generator=g)
    sq[on] *= torch.exp(-1.0 - 0.7 * torch.rand(int(on.sum()), generator=g))
    return DiagGaussian(mq, sq), DiagGaussian(mp, sp)


def _transposed(g: DiagGaussian, perm: torch.Tensor) -> DiagGaussian:
    return DiagGaussian(g.mean[perm].contiguous(), g.std[perm].contiguous())


@pytest.mark.parametrize("active_channels", [4, None], ids=["channel-structured", "spatially-structured"])
def test_pfr_channels_codes_in_the_order_with_fewer_blocks(active_channels):
    """channels=C codes exactly what channels=1 codes in the order with fewer blocks (the original
    or the (H*W, C)-transposed latent), writes which in one bit, and decodes bit-identically."""
    C, P = 12, 300
    q, p = _structured_latent(C, P, seed=3, active_channels=active_channels)
    key = StreamKey(5, 0, 1)
    smp = PFRSampler(20, 11, 64, 20, channels=C)
    assert smp.params() == (20, 11, 64, 20, C)
    enc = smp.encode(q, p, key)
    perm = torch.arange(C * P).view(C, P).T.reshape(-1)
    plain = PFRSampler(20, 11, 64, 20)
    given, transposed = plain.encode(q, p, key), plain.encode(_transposed(q, perm), _transposed(p, perm), key)
    want_pm = transposed.stats["n_blocks"] < given.stats["n_blocks"]
    assert enc.stats["position_major"] == int(want_pm) == int(active_channels is not None)
    ref = transposed if want_pm else given
    assert enc.stats["n_blocks"] == ref.stats["n_blocks"]
    assert enc.stats["coded_bits"] <= min(given.stats["coded_bits"], transposed.stats["coded_bits"]) + 32
    assert torch.equal(enc.sample[perm] if want_pm else enc.sample, ref.sample)
    dec = get_sampler(PFRSampler.sampler_id, smp.params()).decode(p, key, enc.payload)
    assert torch.equal(dec, enc.sample)


def test_pfr_budgets_above_24_bits_truncate_and_decode():
    """Budgets up to 32 bits (2026-11-29: (25, 16, 64, 25) is the <= 1.05x KL point): blocks of more
    KL than log2 N are coded with at most log2 N bits of rank (the truncation bias), and decode."""
    q, p = make_pair(6000, 9000, seed=13)
    key = StreamKey(2, 0, 1)
    smp = get_sampler("pfr", (30, 10, 64, 30))
    enc = smp.encode(q, p, key)
    assert enc.stats["max_block_kl_bits"] > 20  # blocks far beyond the 10 bits of candidates
    assert enc.stats["coded_bits"] < enc.stats["kl_bits"]  # cheaper than KL: biased, by design
    assert torch.equal(get_sampler(PFRSampler.sampler_id, smp.params()).decode(p, key, enc.payload), enc.sample)


def test_pfr_original_order_keeps_four_parameters():
    assert PFRSampler(20, 11, 64, 20).params() == (20, 11, 64, 20)
    assert get_sampler("pfr", (20, 11, 64, 20)).channels == 1
    assert get_sampler("pfr", (20, 11, 64, 20, 1)).params() == (20, 11, 64, 20)


def test_pfr_channels_that_do_not_fit_the_latent_are_refused():
    q, p = _structured_latent(6, 50, seed=1, active_channels=2)
    with pytest.raises(CorruptPayload):
        PFRSampler(channels=7).encode(q, p, StreamKey(1))
    enc = PFRSampler(channels=6).encode(q, p, StreamKey(1))
    with pytest.raises(CorruptPayload):
        get_sampler("pfr", (14, 16, 64, 14, 7)).decode(p, StreamKey(1), enc.payload)
    with pytest.raises(CorruptPayload):  # 0 means "the latent's channels" and only the codec resolves it
        PFRSampler(channels=0).encode(q, p, StreamKey(1))
    for bad in ((14, 16, 64, 14, -1), (14, 16, 64, 14, 1 << 20), (14, 16, 64, 14, 1, 1)):
        with pytest.raises(CorruptPayload):
            get_sampler("pfr", bad)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SMALL))
def test_payload_encoded_on_cuda_decodes_to_the_same_floats_on_cpu(name, pair):
    """The bitstream, not the machine, fixes the sample (benchmarks/coding.py --device cuda checks
    the same on 200k-dim latents)."""
    q, p = pair
    on_gpu = (DiagGaussian(q.mean.cuda(), q.std.cuda()), DiagGaussian(p.mean.cuda(), p.std.cuda()))
    key = StreamKey(seed=7, image=1, level=1)
    enc = SMALL[name].encode(*on_gpu, key)
    assert enc.sample.is_cuda
    assert torch.equal(SMALL[name].decode(p, key, enc.payload), enc.sample.cpu())


def test_pfr_stats_split_the_payload():
    """The payload's split into outlier section, split tree and ranks (benchmarks/coding_gap.py)
    adds up to the coded bits, less the CRC and the range coder's final word."""
    q, p = make_pair(6000, 9000, seed=8)
    st = PFRSampler(12, 12, 64, 12, channels=6).encode(q, p, StreamKey(3)).stats
    parts = st["outlier_section_bits"] + st["tree_bits"] + st["rank_bits"]
    assert st["n_outliers"] > 0 and st["tree_bits"] > 0 and st["rank_bits"] > 8 * st["n_blocks"]
    assert 0 <= st["coded_bits"] - 32 - parts <= 64
