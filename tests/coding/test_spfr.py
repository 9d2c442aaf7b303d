"""The shuffled PFR sampler (``spfr``): its permutation, its payload, its samples."""

import numpy as np
import pytest
import torch
from scipy import stats

from raybb.coding import DiagGaussian, PFRSampler, ShuffledPFRSampler, StreamKey, get_sampler
from raybb.coding import randomness as rnd
from raybb.coding.spfr import _TAG, shuffle_positions
from raybb.coding.synthetic import make_pair
from raybb.errors import CorruptPayload


@pytest.mark.parametrize("d", [1, 2, 3, 5, 64, 1000, 4097, 70_001])
def test_shuffle_is_a_bijection_fixed_by_key_and_size(d):
    pos = torch.arange(d)
    y = shuffle_positions(pos, d, 12345)
    assert y.dtype == torch.int64
    assert torch.equal(torch.sort(y).values, pos)
    assert torch.equal(shuffle_positions(pos, d, 12345), y)
    # any chunk of positions maps on its own to the same dims
    assert torch.equal(shuffle_positions(pos[d // 3 :], d, 12345), y[d // 3 :])
    if d >= 64:
        assert not torch.equal(shuffle_positions(pos, d, 54321), y)
        assert (y != pos).float().mean() > 0.9  # actually shuffled


def test_payload_is_a_pfr_payload_of_the_permuted_latent():
    q, p = make_pair(5000, 5000, seed=4)
    key = StreamKey(9, 0, 1)
    smp = ShuffledPFRSampler(12, 12, 64, 12)
    enc = smp.encode(q, p, key)
    perm = shuffle_positions(torch.arange(5000), 5000, rnd.fold_key(9, 0, 1, _TAG))
    plain = PFRSampler(12, 12, 64, 12).encode(
        DiagGaussian(q.mean[perm], q.std[perm]), DiagGaussian(p.mean[perm], p.std[perm]), key
    )
    assert enc.payload == plain.payload
    assert torch.equal(enc.sample[perm], plain.sample)
    dec = get_sampler(ShuffledPFRSampler.sampler_id, smp.params())
    assert torch.equal(dec.decode(p, key, enc.payload), enc.sample)


def test_params_and_registry():
    assert get_sampler("spfr").params() == (22, 14, 64, 22)
    assert get_sampler(5, (22, 14, 256, 22)).max_dims == 256
    for bad in ((22, 14, 64), (22, 14, 64, 22, 0), (0, 14, 64, 22), (22, 14, 257, 22)):
        with pytest.raises(CorruptPayload):
            get_sampler("spfr", bad)


def test_wrong_size_prior_is_refused():
    q, p = make_pair(3000, 3000, seed=2)
    enc = ShuffledPFRSampler(8, 11, 16, 8).encode(q, p, StreamKey(1))
    small = DiagGaussian(p.mean[:2999].contiguous(), p.std[:2999].contiguous())
    with pytest.raises(CorruptPayload):
        ShuffledPFRSampler(8, 11, 16, 8).decode(small, StreamKey(1), enc.payload)


def test_near_exact_params_give_q_distributed_noise():
    """With N >> 2^budget, blocks are sampled (near-)exactly, whatever the order: the standardized
    noise of a 4000-dim latent passes a KS test against N(0, 1)."""
    g = torch.Generator().manual_seed(3)
    pm = torch.randn(4000, generator=g)
    ps = torch.full((4000,), 0.5)
    m = 1.5 * torch.randn(4000, generator=g)
    s = torch.exp(0.3 * torch.randn(4000, generator=g)) * 0.6
    q, p = DiagGaussian(pm + ps * m, ps * s), DiagGaussian(pm, ps)
    enc = ShuffledPFRSampler(6, 11, 16, 6).encode(q, p, StreamKey(31))
    eps = ((enc.sample - q.mean) / q.std).double().numpy()
    assert stats.kstest(eps, "norm").pvalue > 1e-3
    assert abs(eps.std() - 1) < 0.05 and abs(eps.mean()) < 0.05
    # neighbours in the original order sit in different blocks: no correlation between them
    assert abs(np.corrcoef(eps[:-1], eps[1:])[0, 1]) < 0.06
