"""Encoder effort (raybb.refine): refinement lowers the per-image objective, effort 0 is today's
encoder byte for byte, refined streams are deterministic and decode with the unchanged decoder,
and rate targets land within their stated tolerance."""

import hashlib

import numpy as np
import pytest
import torch
from _codec_helpers import EXPECTED

from raybb.codec import Codec, load_codec
from raybb.imageio import load_image
from raybb.metrics import psnr
from raybb.model.distributions import Gaussian
from raybb.model.ladder import pad_to_stride
from raybb.model.weights import load_weights
from raybb.refine import (
    EFFORTS,
    MAX_EFFORT,
    REFINE_HALO,
    REFINE_TILE_PIXELS,
    EffortLevel,
    Refiner,
    TiledRefiner,
    effort_level,
    refine_tiles,
)


def _setup(codec: Codec, rgb: np.ndarray):
    x, _ = pad_to_stride(codec._image_tensor(rgb))
    with torch.no_grad():
        bu = codec.model.bottom_up(x)
        q2 = codec.model.posterior2(bu)
    ref = Refiner(codec.model, x, *rgb.shape[:2], beta=float(codec.loaded.meta.get("beta", 1.0)), seed=7)
    return ref, bu, q2


def _p2(q2: Gaussian) -> Gaussian:
    return Gaussian(torch.zeros_like(q2.mean), torch.ones_like(q2.std))


@torch.no_grad()
def _objective2(ref: Refiner, q2: Gaussian, bu: Gaussian, k: int = 8) -> float:
    """E[KL2 + KL1 + λ·D] over k fixed noise draws (the same draws for every posterior compared)."""
    m, g, total = ref.model, torch.Generator().manual_seed(123), 0.0
    for _ in range(k):
        z2 = q2.mean + q2.std * torch.randn(q2.mean.shape, generator=g)
        p1 = m.prior1(z2)
        q1 = m.posterior1(bu, p1)
        z1 = q1.mean + q1.std * torch.randn(q1.mean.shape, generator=g)
        total += float(q2.kl_standard().sum() + q1.kl(p1).sum() + ref.lam * ref._distortion(m.synthesize(z1)))
    return total / k


@torch.no_grad()
def _objective1(ref: Refiner, q1: Gaussian, p1: Gaussian, k: int = 8) -> float:
    m, g, total = ref.model, torch.Generator().manual_seed(321), 0.0
    for _ in range(k):
        z1 = q1.mean + q1.std * torch.randn(q1.mean.shape, generator=g)
        total += float(q1.kl(p1).sum() + ref.lam * ref._distortion(m.synthesize(z1)))
    return total / k


@pytest.fixture(scope="module")
def q3():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_codec("pln-q3")


@pytest.fixture(scope="module")
def kodak_crop(kodak_dir) -> np.ndarray:
    return load_image(kodak_dir / "kodim23.png")[:128, :192]


def test_refinement_lowers_the_objective_on_a_real_image(q3, kodak_crop):
    """8 steps on a 128x192 Kodak crop with a shipped model: measured -8% (level 2) and the
    level-1 stage against a fixed coded z2 lowers its own objective too."""
    ref, bu, q2 = _setup(q3, kodak_crop)
    q2r, bur = ref.stage(0, q2, _p2(q2), bu, [], steps=8, lr=0.05)
    before, after = _objective2(ref, q2, bu), _objective2(ref, q2r, bur)
    assert after < 0.95 * before, (before, after)
    with torch.no_grad():
        p1 = q3.model.prior1(q2r.mean)
        q1 = q3.model.posterior1(bur, p1)
    q1r, _ = ref.stage(1, q1, p1, bur, [q2r.mean], steps=8, lr=0.05)
    b1, a1 = _objective1(ref, q1, p1), _objective1(ref, q1r, p1)
    assert a1 < 0.99 * b1, (b1, a1)  # measured -1.8% after the level-2 stage
    assert ref.stats.steps == 16 and ref.stats.seconds > 0


def test_refinement_lowers_the_objective_tiny_model(tiny_codec, photo):
    """Without ../shared: the golden tiny model (random weights) on the synthetic photo; its
    amortisation gap is small, but 8 steps must still lower the expected objective (measured 0.6%)."""
    ref, bu, q2 = _setup(tiny_codec, photo)
    q2r, bur = ref.stage(0, q2, _p2(q2), bu, [], steps=8, lr=0.05)
    before, after = _objective2(ref, q2, bu), _objective2(ref, q2r, bur)
    assert after < 0.997 * before, (before, after)


def test_effort_zero_is_the_golden_stream(tiny_weights, photo):
    data = (EXPECTED / "golden_pfr.rbb").read_bytes()
    assert Codec(load_weights(tiny_weights), "pfr:22,14,64,22,0", effort=0).compress(photo, seed=11) == data
    refined = Codec(load_weights(tiny_weights), "pfr:22,14,64,22,0", effort=1)
    assert refined.compress(photo, seed=11, effort=0) == data
    assert refined.compress(photo, seed=11) != data


def test_refined_stream_is_deterministic_and_decodes(tiny_weights, photo):
    codec = Codec(load_weights(tiny_weights), "pfr")
    res = codec.compress_with_stats(photo, seed=5, effort=1)
    assert res.effort == 1 and res.refine_steps == EFFORTS[1].steps and res.refine_seconds > 0
    assert codec.compress(photo, seed=5, effort=1) == res.data
    assert codec.compress(photo, seed=6, effort=1) != res.data
    # the unchanged decoder (a codec built without effort) reproduces the encoder's reconstruction
    assert np.array_equal(Codec(load_weights(tiny_weights), "pfr").decompress(res.data), res.reconstruction)
    # a custom schedule is accepted by the API and reported as effort -1
    custom = codec.compress_with_stats(photo, seed=5, effort=EffortLevel(2, 1, 0.05))
    assert custom.effort == -1 and custom.refine_steps == 3


@pytest.mark.parametrize("bad", [-1, MAX_EFFORT + 1, 1.5, True, "2"])
def test_bad_effort_is_a_value_error(tiny_weights, photo, bad):
    with pytest.raises(ValueError):
        effort_level(bad)
    with pytest.raises(ValueError):
        Codec(load_weights(tiny_weights), effort=bad)
    with pytest.raises(ValueError):
        Codec(load_weights(tiny_weights)).compress(photo, effort=bad)


def test_bad_targets_and_metric(tiny_codec, photo):
    with pytest.raises(ValueError):
        tiny_codec.compress(photo, effort=0, target_bpp=0.5)  # effort 0 does not refine
    with pytest.raises(ValueError):
        tiny_codec.compress(photo, effort=1, target_bpp=0.5, target_psnr=30)
    for kw in ({"target_bpp": 0}, {"target_bpp": -1}, {"target_psnr": 0}, {"target_psnr": float("nan")}):
        with pytest.raises(ValueError):
            tiny_codec.compress(photo, effort=1, **kw)
    with pytest.raises(ValueError):
        tiny_codec.compress(photo, effort=1, metric="vmaf")


def test_ms_ssim_metric_refines(tiny_codec, photo):
    res = tiny_codec.compress_with_stats(photo, seed=5, effort=1, metric="ms-ssim")
    assert res.refine_steps == EFFORTS[1].steps
    assert np.array_equal(tiny_codec.decompress(res.data), res.reconstruction)


#: Rate targeting tolerance, for targets inside the range the effort level can reach (on this
#: 64x128 crop effort 2 reaches 0.28-0.51 bpp for pln-q3): a bpp target is never exceeded and is
#: met within 10%; a PSNR target is met (never below) and exceeded by at most 0.5 dB.
BPP_TOL, PSNR_TOL = 0.10, 0.5


def test_target_bpp_and_psnr(q3, kodak_dir):
    crop = load_image(kodak_dir / "kodim23.png")[192:256, 256:384]
    plain = q3.compress_with_stats(crop, effort=2)
    target = 0.85 * plain.bpp
    res = q3.compress_with_stats(crop, effort=2, target_bpp=target)
    assert (1 - BPP_TOL) * target <= res.bpp <= target, (target, res.bpp)
    assert np.array_equal(q3.decompress(res.data), res.reconstruction)
    assert res.refine_steps == 6 * EFFORTS[2].steps  # TARGET_PROBES encodes
    goal = plain.psnr - 0.5  # "this quality, fewest bytes"
    res = q3.compress_with_stats(crop, effort=2, target_psnr=goal)
    assert goal <= res.psnr <= goal + PSNR_TOL, (goal, res.psnr)
    assert res.bpp < plain.bpp
    assert psnr(crop, q3.decompress(res.data)) == res.psnr


#: SHA-256 of untiled refined streams of the golden tiny model on ``photo`` (seed 5), written by the
#: code before tiled refinement existed: images at or below REFINE_MAX_PIXELS keep their bytes.
UNTILED_SHA256 = {
    (1, "mse"): "0b15af2f612a9663c62948e72ca9766ba2af4f366467aa9fa3c091e4b369df41",
    (2, "mse"): "af87e1bacb1b53bd8ede6c4d3d7e819147d06b8b98799de181888a13ca88312a",
    (1, "ms-ssim"): "49580d25a2817e48655baa6fa0a7c1d2ed12daaa35a98eebdc16346cf41edd31",
}


@pytest.mark.parametrize("effort, metric", sorted(UNTILED_SHA256))
def test_untiled_refinement_keeps_its_bytes(tiny_codec, photo, effort, metric):
    data = tiny_codec.compress(photo, seed=5, effort=effort, metric=metric)
    assert hashlib.sha256(data).hexdigest() == UNTILED_SHA256[effort, metric]


@pytest.fixture(scope="module")
def odd_photo() -> np.ndarray:
    """450 x 397 (not a multiple of the 64-px stride): 16 refinement tiles at 256 x 256, halo 1."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:450, 0:397]
    base = np.stack([128 + 90 * np.sin(xx / 17.0), 128 + 80 * np.cos(yy / 11.0), (xx + 2 * yy) * 0.2], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def force_tiles(monkeypatch):
    """Refine every image over tiles: 256 x 256 crops with a halo of one stride (128-px cores)."""
    import raybb.codec

    monkeypatch.setattr(raybb.codec, "REFINE_MAX_PIXELS", 0)
    monkeypatch.setattr(raybb.codec, "REFINE_TILE_PIXELS", 256 * 256)
    monkeypatch.setattr(raybb.codec, "REFINE_HALO", 1)


def test_refine_tiles_partition_the_grid():
    tiles = refine_tiles(448, 384, 64, 256 * 256, 1)
    cover = np.zeros((7, 6), int)
    for t in tiles:
        r0, r1, c0, c1 = t.core
        cover[r0 // 64 : r1 // 64, c0 // 64 : c1 // 64] += 1
        a0, a1, b0, b1 = t.crop
        assert a0 == max(0, r0 - 64) and a1 == min(448, r1 + 64) and b0 == max(0, c0 - 64) and b1 == min(384, c1 + 64)
        assert (a1 - a0) * (b1 - b0) <= 256 * 256
    assert (cover == 1).all() and len(tiles) == 4 * 3
    assert len(refine_tiles(4096, 4096, 64, REFINE_TILE_PIXELS, REFINE_HALO)) == 9  # 28-stride cores
    with pytest.raises(ValueError):
        refine_tiles(448, 384, 64, 191 * 191, 1)  # a 2-stride crop cannot hold a halo of 1 around a core


def _whole_objective(model, x, h, w, lam, q2: Gaussian, bu: Gaussian, k: int = 8) -> float:
    ref = Refiner(model, x, h, w, beta=1.0, seed=0)
    ref.lam = lam
    return _objective2(ref, q2, bu, k)


def test_tiled_refinement_lowers_the_whole_image_objective(tiny_codec, odd_photo):
    """Block-coordinate descent over 16 tiles lowers the objective of the *whole* image (not only
    the crops') about as much as the untiled refinement: measured -0.43% for both (tiny model)."""
    m, (h, w), x, bu, q2, beta = _amortised(tiny_codec, odd_photo)
    untiled = Refiner(m, x, h, w, beta=beta, seed=7)
    q2u, buu = untiled.stage(0, q2, _p2(q2), bu, [], steps=8, lr=0.05)
    tiled = TiledRefiner(m, odd_photo, beta=beta, seed=7, tile_pixels=256 * 256, halo=1)
    assert len(tiled.tiles) == 16
    q2t, but = tiled.stage(0, _clone(q2), _p2(q2), _clone(bu), [], steps=8, lr=0.05)
    assert tiled.lam == pytest.approx(untiled.lam, rel=1e-5)  # the whole image's λ, from the tiles' cores
    before = _whole_objective(m, x, h, w, untiled.lam, q2, bu)
    after_t = _whole_objective(m, x, h, w, untiled.lam, q2t, but)
    after_u = _whole_objective(m, x, h, w, untiled.lam, q2u, buu)
    assert after_t < 0.997 * before, (before, after_t)
    assert after_t < before - 0.8 * (before - after_u), (before, after_u, after_t)
    assert tiled.stats.steps == 8 and tiled.stats.tiles == 16 and tiled.stats.seconds > 0
    # only the cores moved: every parameter was written once, the stitched maps have the full size
    assert q2t.mean.shape == q2.mean.shape and but.mean.shape == bu.mean.shape
    assert not torch.equal(q2t.mean, q2.mean) and not torch.equal(but.std, bu.std)
    # the alternative scheme (independent tiles, cores stitched) lowers it too (measured: about as much)
    ind = TiledRefiner(m, odd_photo, beta=beta, seed=7, tile_pixels=256 * 256, halo=1, independent=True)
    q2i, bui = ind.stage(0, _clone(q2), _p2(q2), _clone(bu), [], steps=8, lr=0.05)
    assert _whole_objective(m, x, h, w, untiled.lam, q2i, bui) < 0.997 * before


def _amortised(codec, rgb):
    """The model, image size, padded input, bottom-up features, q(z2|x) and training β of ``rgb``."""
    m = codec.model
    x, _ = pad_to_stride(codec._image_tensor(rgb))
    with torch.no_grad():
        bu = m.bottom_up(x)
        q2 = m.posterior2(bu)
    return m, rgb.shape[:2], x, bu, q2, float(codec.loaded.meta.get("beta", 1.0))


def _clone(g: Gaussian) -> Gaussian:
    return Gaussian(g.mean.clone(), g.std.clone())


def test_tiled_refinement_lowers_the_objective_on_a_real_image(q3, kodak_dir):
    """pln-q3 on a 256x384 Kodak crop cut into 6 tiles (8 steps): measured -4.3% (untiled -4.7%)."""
    crop = load_image(kodak_dir / "kodim23.png")[:256, :384]
    m, (h, w), x, bu, q2, beta = _amortised(q3, crop)
    tiled = TiledRefiner(m, crop, beta=beta, seed=7, tile_pixels=256 * 256, halo=1)
    q2t, but = tiled.stage(0, _clone(q2), _p2(q2), _clone(bu), [], steps=8, lr=0.05)
    before = _whole_objective(m, x, h, w, tiled.lam, q2, bu)
    after = _whole_objective(m, x, h, w, tiled.lam, q2t, but)
    assert after < 0.97 * before, (before, after)


def test_images_above_the_refinement_limit_are_refined_over_tiles(tiny_weights, odd_photo, force_tiles):
    """Above REFINE_MAX_PIXELS the refinement runs over tiles: the stream differs from effort 0's,
    reports the effort's steps, is deterministic and decodes with the unchanged decoder."""
    codec = Codec(load_weights(tiny_weights), "pfr", tile_pixels=256 * 256)
    plain = codec.compress(odd_photo, seed=5, effort=0)
    res = codec.compress_with_stats(odd_photo, seed=5, effort=1, theoretical=True)
    assert res.data != plain and (res.effort, res.refine_steps) == (1, EFFORTS[1].steps)
    assert res.theoretical_psnr is not None and np.isfinite(res.theoretical_psnr)
    assert 0 < res.refine_seconds < res.encode_seconds
    assert codec.compress(odd_photo, seed=5, effort=1) == res.data  # deterministic
    assert codec.compress(odd_photo, seed=6, effort=1) != codec.compress(odd_photo, seed=6, effort=0)
    assert np.array_equal(Codec(load_weights(tiny_weights), "pfr").decompress(res.data), res.reconstruction)
    # a second stage (steps1 > 0) runs over the same tiles
    custom = codec.compress_with_stats(odd_photo, seed=5, effort=EffortLevel(2, 2, 0.05))
    assert custom.refine_steps == 4 and custom.data not in (res.data, plain)
    assert np.array_equal(codec.decompress(custom.data), custom.reconstruction)
    ms = codec.compress_with_stats(odd_photo, seed=5, effort=1, metric="ms-ssim")  # per-tile λ
    assert ms.refine_steps == EFFORTS[1].steps and ms.data != res.data
    assert np.array_equal(codec.decompress(ms.data), ms.reconstruction)


def test_small_images_keep_the_untiled_path(tiny_codec, photo, monkeypatch):
    """At the limit exactly the untiled path runs (the same bytes as before); one pixel less and
    the tiled one does."""
    import raybb.codec

    n = photo.shape[0] * photo.shape[1]
    monkeypatch.setattr(raybb.codec, "REFINE_TILE_PIXELS", 256 * 256)
    monkeypatch.setattr(raybb.codec, "REFINE_HALO", 1)
    monkeypatch.setattr(raybb.codec, "REFINE_MAX_PIXELS", n)
    data = tiny_codec.compress(photo, seed=5, effort=1)
    assert hashlib.sha256(data).hexdigest() == UNTILED_SHA256[1, "mse"]
    monkeypatch.setattr(raybb.codec, "REFINE_MAX_PIXELS", n - 1)
    assert tiny_codec.compress(photo, seed=5, effort=1) != data


def test_rate_target_on_a_tiled_image(tiny_weights, odd_photo, force_tiles):
    codec = Codec(load_weights(tiny_weights), "pfr", tile_pixels=256 * 256)
    plain = codec.compress_with_stats(odd_photo, seed=5, effort=1)
    res = codec.compress_with_stats(odd_photo, seed=5, effort=1, target_bpp=0.97 * plain.bpp)
    assert res.bpp <= 0.97 * plain.bpp and res.refine_steps == 6 * EFFORTS[1].steps
    assert np.array_equal(codec.decompress(res.data), res.reconstruction)
