"""Shapes of the ladder network for odd and tiny images: pad to /64, latents at /16 and /64, crop back.

The codec relies on these sizes to know how many latent elements each level sends, so they are
pinned here for sizes that are not multiples of the stride.
"""

from __future__ import annotations

import math

import pytest
import torch

from raybb.model.ladder import TOTAL_STRIDE, LadderNetwork, LadderOutput, pad_to_stride
from raybb.model.layers import mirror_pad


def _ceil_to(n: int, k: int) -> int:
    return -(-n // k) * k


@pytest.mark.parametrize("h,w", [(37, 53), (64, 64), (65, 130), (100, 71)])
def test_pad_to_stride_replicates_bottom_right(h: int, w: int) -> None:
    x = torch.rand(2, 3, h, w)
    xp, size = pad_to_stride(x)
    assert size == (h, w)
    assert xp.shape == (2, 3, _ceil_to(h, TOTAL_STRIDE), _ceil_to(w, TOTAL_STRIDE))
    assert torch.equal(xp[..., :h, :w], x)  # original untouched, top-left aligned
    # padding replicates the last row / column (no zeros, no reflection of interior content)
    assert torch.equal(xp[..., h:, :w], x[..., h - 1 : h, :].expand(-1, -1, xp.shape[-2] - h, -1))
    assert torch.equal(xp[..., :h, w:], x[..., :, w - 1 : w].expand(-1, -1, -1, xp.shape[-1] - w))
    if (h, w) == (64, 64):
        assert xp is x  # already aligned: no copy


@pytest.mark.parametrize("h,w", [(37, 53), (65, 130)])
def test_forward_shapes_odd_sizes(tiny_model: LadderNetwork, h: int, w: int) -> None:
    c = tiny_model.config
    x = torch.rand(2, 3, h, w)
    xp, (h0, w0) = pad_to_stride(x)
    H, W = xp.shape[-2:]
    with torch.no_grad():
        out = tiny_model(xp)
    assert isinstance(out, LadderOutput)
    z1_shape = (2, c.M, H // 16, W // 16)
    z2_shape = (2, c.G, H // 64, W // 64)
    for g in (out.q1, out.p1):
        assert g.mean.shape == g.std.shape == z1_shape
    assert out.z1.shape == z1_shape
    assert out.q2.mean.shape == out.q2.std.shape == out.z2.shape == z2_shape
    assert out.x_hat.shape == xp.shape
    for t in (out.kl1, out.kl2, out.nll):
        assert t.shape == (2,)
        assert torch.isfinite(t).all()
    assert (out.kl1 >= 0).all() and (out.kl2 >= 0).all()
    rec = out.x_hat[..., :h0, :w0]
    assert rec.shape == x.shape
    # 37x53 -> 64x64 -> z1 4x4, z2 1x1 (exact numbers, not just the formula)
    if (h, w) == (37, 53):
        assert z1_shape[-2:] == (4, 4) and z2_shape[-2:] == (1, 1)


def test_codec_pieces_compose_like_forward(tiny_model: LadderNetwork) -> None:
    """The codec calls bottom_up/posterior2/prior1/posterior1/synthesize separately; with the
    posterior means they must give exactly what forward(sample=False) gives."""
    xp, _ = pad_to_stride(torch.rand(1, 3, 70, 90))
    with torch.no_grad():
        out = tiny_model(xp, sample=False)
        bu = tiny_model.bottom_up(xp)
        q2 = tiny_model.posterior2(bu)
        p1 = tiny_model.prior1(q2.mean)
        q1 = tiny_model.posterior1(bu, p1)
        x_hat = tiny_model.synthesize(q1.mean)
    assert torch.equal(out.z2, q2.mean) and torch.equal(out.z1, q1.mean)
    assert torch.equal(out.p1.mean, p1.mean) and torch.equal(out.p1.std, p1.std)
    assert torch.equal(out.x_hat, x_hat)
    p2 = tiny_model.prior2_like(q2)
    assert torch.equal(p2.mean, torch.zeros_like(q2.mean)) and torch.equal(p2.std, torch.ones_like(q2.std))


def test_sample_vs_mean_pass(tiny_model: LadderNetwork) -> None:
    xp, _ = pad_to_stride(torch.rand(1, 3, 40, 40))
    with torch.no_grad():
        torch.manual_seed(1)
        a = tiny_model(xp, sample=True)
        torch.manual_seed(1)
        b = tiny_model(xp, sample=True)
        m1 = tiny_model(xp, sample=False)
        m2 = tiny_model(xp, sample=False)
    assert torch.equal(a.x_hat, b.x_hat)  # sampling only uses the global torch RNG
    assert torch.equal(m1.x_hat, m2.x_hat)  # the mean pass is deterministic
    assert not torch.equal(a.z1, m1.z1)  # and a sample is not the mean


@pytest.mark.parametrize("h,w", [(1, 1), (5, 3), (3, 70)])
def test_tiny_images(tiny_model: LadderNetwork, h: int, w: int) -> None:
    x = torch.rand(1, 3, h, w)
    xp, size = pad_to_stride(x)
    assert size == (h, w)
    assert xp.shape[-2:] == (_ceil_to(h, 64), _ceil_to(w, 64))
    with torch.no_grad():
        out = tiny_model(xp)
    rec = out.x_hat[..., :h, :w]
    assert rec.shape == (1, 3, h, w)
    assert torch.isfinite(out.x_hat).all()
    assert math.isfinite(float(out.kl1 + out.kl2 + out.nll))


def test_mirror_pad_small_maps_fall_back_to_replicate() -> None:
    """Reflection needs size > pad: a 1x1 (z2 of a 64x64 image) or 2x2 map is replicated instead."""
    one = torch.arange(3.0).reshape(1, 3, 1, 1)
    p = mirror_pad(one, 2)
    assert p.shape == (1, 3, 5, 5)
    assert torch.equal(p, one.expand(1, 3, 5, 5))
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    r = mirror_pad(x, 2)
    assert r.shape == (1, 1, 8, 8)
    assert torch.equal(r[0, 0, 2:6, 2:6], x[0, 0])
    assert torch.equal(r[0, 0, 0, 2:6], x[0, 0, 2])  # reflection (row 2 mirrored above row 0), not zeros
    assert torch.equal(mirror_pad(x, 0), x)


@pytest.mark.parametrize("learn_scale", [True, False])
def test_gradients_reach_every_trainable_parameter(learn_scale: bool) -> None:
    """One ELBO backward pass gives a finite, non-zero gradient to every parameter that trains
    (the plain PLN's fixed Laplace scale does not train)."""
    from raybb.model.ladder import LadderConfig

    torch.manual_seed(3)
    net = LadderNetwork(LadderConfig(N=8, M=8, F=8, G=2, learn_scale=learn_scale))
    x = torch.rand(2, 3, 64, 64)
    out = net(x)
    (out.nll + 2.0 * (out.kl1 + out.kl2)).mean().backward()
    for name, p in net.named_parameters():
        if name == "likelihood.raw_gamma" and not learn_scale:
            assert not p.requires_grad and p.grad is None
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_batch_elements_are_independent(tiny_model: LadderNetwork) -> None:
    """An image's posterior and reconstruction do not depend on what else is in the batch (the
    codec may batch images in any order)."""
    torch.manual_seed(4)
    a, b = torch.rand(1, 3, 64, 128), torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        both = tiny_model(torch.cat([a, b]), sample=False)
        alone = tiny_model(b, sample=False)
    assert torch.allclose(both.q1.mean[1:], alone.q1.mean, atol=1e-5)
    assert torch.allclose(both.q2.std[1:], alone.q2.std, atol=1e-5)
    assert torch.allclose(both.x_hat[1:], alone.x_hat, atol=1e-5)
    assert torch.allclose(both.kl1[1:], alone.kl1, rtol=1e-5)
