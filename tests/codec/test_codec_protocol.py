"""The Codec on any registered architecture (raybb.model.protocol): a 4-latent channel-ladder
(z2 + 3 slices), variable- and fixed-rate, saved with raybb's weights writer and loaded with
load_codec, round-trips through compress/decompress with the decoder's image equal to the encoder's
reconstruction; effort and rate/quality settings go through the same path."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from _codec_helpers import save_tiny_channel_ladder

from raybb import bitstream
from raybb.codec import Codec, load_codec
from raybb.errors import CorruptPayload
from raybb.levels import QUALITY_MAX, QUALITY_MIN, quality_of_rate, rate_of_quality
from raybb.model.distributions import Gaussian
from raybb.model.ladder import pad_to_stride
from raybb.refine import Refiner


@pytest.fixture(scope="module")
def cl_path(tmp_path_factory):
    return save_tiny_channel_ladder(tmp_path_factory.mktemp("cl") / "cl-tiny.safetensors")


@pytest.fixture(scope="module")
def cl_codec(cl_path) -> Codec:
    return load_codec(cl_path)


def test_variable_rate_channel_ladder_round_trips(cl_path, cl_codec, photo):
    assert cl_codec.loaded.arch == "channel-ladder" and len(cl_codec.model.latents()) == 4
    assert cl_codec.rate == 7  # the middle of 0..15
    for rate in (0, 7, 15):
        res = cl_codec.compress_with_stats(photo, seed=3, rate=rate, theoretical=True)
        c = bitstream.parse(res.data)
        assert c.rate == rate == res.rate and [s.level for s in c.sections] == [2, 1, 3, 4]
        assert set(res.kl_bits_per_level) == set(res.coded_bits_per_level) == {2, 1, 3, 4}
        assert res.kl_bits == pytest.approx(sum(res.kl_bits_per_level.values()))
        assert all(v > 0 for v in res.coded_bits_per_level.values())
        assert res.theoretical_psnr is not None and np.isfinite(res.theoretical_psnr)
        out = load_codec(cl_path).decompress(res.data)  # a fresh decoder
        assert out.shape == photo.shape and np.array_equal(out, res.reconstruction)
        assert cl_codec.compress(photo, seed=3, rate=rate) == res.data


def test_quality_maps_onto_the_rate_indices(cl_path, cl_codec, photo):
    assert rate_of_quality(cl_codec.model, QUALITY_MIN) == 0
    assert rate_of_quality(cl_codec.model, QUALITY_MAX) == 15
    assert quality_of_rate(cl_codec.model, 15) == QUALITY_MAX
    rates = [rate_of_quality(cl_codec.model, q) for q in np.linspace(QUALITY_MIN, QUALITY_MAX, 9)]
    assert rates == sorted(rates) and len(set(rates)) == 9
    codec = load_codec(cl_path, quality=2.5)
    assert codec.rate == rate_of_quality(codec.model, 2.5)
    for q in (QUALITY_MIN, 2.5, 4.0, 6.75, QUALITY_MAX):  # every point in range decodes
        data = codec.compress(photo, seed=1, quality=q)
        assert bitstream.parse(data).rate == rate_of_quality(codec.model, q)
        assert codec.decompress(data).shape == photo.shape
    for bad in (QUALITY_MIN - 0.1, QUALITY_MAX + 1, float("nan")):
        with pytest.raises(ValueError):
            codec.compress(photo, quality=bad)
    with pytest.raises(ValueError):
        codec.compress(photo, rate=16)
    with pytest.raises(ValueError):
        codec.compress(photo, rate=1, quality=2.0)


def test_fixed_rate_models_take_no_rate(tmp_path, tiny_codec, photo):
    with pytest.raises(ValueError):
        tiny_codec.compress(photo, rate=0)
    with pytest.raises(ValueError):
        tiny_codec.compress(photo, quality=3.0)
    codec = load_codec(save_tiny_channel_ladder(tmp_path / "fixed.safetensors", beta_anchors=0, rate_levels=0))
    res = codec.compress_with_stats(photo[:40, :50], seed=2)
    assert bitstream.parse(res.data).rate is None and res.rate is None and codec.quality is None
    assert np.array_equal(codec.decompress(res.data), res.reconstruction)


def test_wrong_rate_flag_is_corrupt_payload(cl_codec, tmp_path, photo):
    c = bitstream.parse(cl_codec.compress(photo[:30, :30], seed=5, rate=3))
    for bad in (replace(c, rate=None, flags=0), replace(c, rate=16), replace(c, sections=c.sections[:3])):
        with pytest.raises(CorruptPayload):
            cl_codec.decompress(bitstream.pack(bad))
    fixed = load_codec(save_tiny_channel_ladder(tmp_path / "f.safetensors", beta_anchors=0, rate_levels=0))
    c = bitstream.parse(fixed.compress(photo[:30, :30], seed=5))
    with pytest.raises(CorruptPayload):
        fixed.decompress(bitstream.pack(replace(c, rate=2, flags=c.flags | bitstream.FLAG_RATE)))


@torch.no_grad()
def _objective(ref: Refiner, q0: Gaussian, feats, k: int = 8) -> float:
    """E[Σ KL + λ·D] over k fixed noise draws through the whole chain (the same draws for each q)."""
    m, g, total = ref.model, torch.Generator().manual_seed(99), 0.0
    shape = ref.x.shape[-2:]
    for _ in range(k):
        zs, kl = [], 0.0
        for i, spec in enumerate(m.latents()):
            p = m.prior(i, zs, ref.cond, spec.shape(*shape))
            q = q0 if i == 0 else m.posterior(i, feats, zs, p, ref.cond)
            zs.append(q.mean + q.std * torch.randn(q.mean.shape, generator=g))
            kl += float(q.kl(p).sum())
        total += kl + ref.lam * float(ref._distortion(m.reconstruct(zs, ref.cond)))
    return total / k


def test_refinement_lowers_the_channel_ladder_objective(cl_codec, photo):
    m, rate = cl_codec.model, 10
    cond = m.conditioning(rate, 1)
    x, _ = pad_to_stride(cl_codec._image_tensor(photo), m.pad_stride)
    with torch.no_grad():
        feats = m.analyze(x, cond)
        p0 = m.prior(0, [], cond, m.latents()[0].shape(*x.shape[-2:]))
        q0 = m.posterior(0, feats, [], p0, cond)
    ref = Refiner(m, x, *photo.shape[:2], beta=m.config.beta_of_rate(rate), seed=4, cond=cond)
    q0r, feats_r = ref.stage(0, q0, p0, feats, [], steps=8, lr=0.05)
    before, after = _objective(ref, q0, feats), _objective(ref, q0r, feats_r)
    assert after < before, (before, after)
    assert ref.stats.steps == 8 and ref.stats.objective_after < ref.stats.objective_before


def test_effort_on_the_channel_ladder_decodes(cl_codec, photo):
    plain = cl_codec.compress(photo, seed=8, rate=12)
    res = cl_codec.compress_with_stats(photo, seed=8, rate=12, effort=1)
    assert res.refine_steps == 4 and res.data != plain
    assert cl_codec.compress(photo, seed=8, rate=12, effort=1) == res.data  # deterministic
    assert np.array_equal(cl_codec.decompress(res.data), res.reconstruction)


def test_tiled_effort_on_the_channel_ladder(cl_path, monkeypatch):
    """Above the refinement limit the channel-ladder is refined over tiles through the same protocol
    (z2's posterior and the bottom-up features of every slice, per tile core): 4 tiles here."""
    import raybb.codec

    monkeypatch.setattr(raybb.codec, "REFINE_MAX_PIXELS", 0)
    monkeypatch.setattr(raybb.codec, "REFINE_TILE_PIXELS", 256 * 256)
    monkeypatch.setattr(raybb.codec, "REFINE_HALO", 1)
    codec = load_codec(cl_path, tile_pixels=256 * 256)
    img = _odd_image()[:256, :250]
    plain = codec.compress(img, seed=8, rate=12)
    res = codec.compress_with_stats(img, seed=8, rate=12, effort=1)
    assert res.refine_steps == 4 and res.data != plain
    assert codec.compress(img, seed=8, rate=12, effort=1) == res.data  # deterministic
    assert np.array_equal(codec.decompress(res.data), res.reconstruction)
    # a decoder with another tile budget computes the priors over other tiles: the same values up
    # to float rounding, so at most a level here and there (the golden files' tolerance)
    other = load_codec(cl_path).decompress(res.data)
    assert int(np.abs(other.astype(int) - res.reconstruction).max()) <= 1


@pytest.mark.slow
def test_briefly_trained_variable_rate_model_rate_grows_with_quality(tmp_path):
    """The trainer's 1000-step CPU run of a tiny variable-rate channel-ladder (the setup of
    tests/train_loop/test_fast.py, 20-90 s on 2 cores), coded through load_codec at four qualities
    across the range: every stream decodes to the encoder's reconstruction and the stream grows
    with the quality."""
    from PIL import Image
    from train_loop.test_fast import TINY, _photo

    from raybb.train.fast import FastConfig, train

    (tmp_path / "train").mkdir()
    for i in range(6):
        Image.fromarray(_photo(i, 128, 128)).save(tmp_path / "train" / f"{i}.png")
    train(FastConfig(out=str(tmp_path / "run"), data=[str(tmp_path / "train")], val_data=[],
                     model={**TINY, "rate_levels": 16}, device="cpu", precision="fp32", channels_last=False,
                     batch=4, patch=64, steps=1000, minutes=30, num_threads=1, log_every=1000, warmup_steps=0,
                     lr_warmup_steps=10, lr=1e-3, decay_fraction=0))  # fmt: skip
    codec = load_codec(tmp_path / "run" / "model.safetensors")  # a small model is one file
    img = _photo(11, 70, 90)
    sizes = []
    for q in (1.0, 1 + 7 * 5 / 15, 1 + 7 * 10 / 15, 8.0):  # rate indices 0, 5, 10, 15
        res = codec.compress_with_stats(img, seed=1, quality=q)
        assert np.array_equal(codec.decompress(res.data), res.reconstruction)
        sizes.append(len(res.data))
    assert [bitstream.parse(codec.compress(img, seed=1, quality=q)).rate for q in (1.0, 8.0)] == [0, 15]
    assert all(a < b for a, b in zip(sizes, sizes[1:], strict=False)), sizes


def _odd_image() -> np.ndarray:
    """450 x 397: not a multiple of the stride, several tiles at the smallest budget."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:450, 0:397]
    base = np.stack([128 + 90 * np.sin(xx / 17.0), 128 + 80 * np.cos(yy / 11.0), (xx + 2 * yy) * 0.2], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def test_channel_ladder_tiled_stages_equal_untiled(cl_codec):
    """Every stage of the channel-ladder's tiler against the model's own methods on a multi-tile image."""
    from raybb.tiling import MIN_TILE_PIXELS, ChannelLadderTiler, Untiled, stage_runner

    m, img = cl_codec.model, _odd_image()
    assert isinstance(cl_codec.tiler, ChannelLadderTiler)
    small, whole = stage_runner(m, MIN_TILE_PIXELS), Untiled(m)
    small._tile_h16, small._tile_z2 = 8, 2  # several h_a / h_s / slice-prior tiles on this latent too
    assert not small.single_tile(*img.shape[:2])
    cond, dev = m.conditioning(5, 1), torch.device("cpu")
    close = lambda a, b: torch.allclose(a, b, atol=1e-4, rtol=1e-4)  # noqa: E731
    with torch.no_grad():
        fa, fb = whole.analyze(img, dev, cond), small.analyze(img, dev, cond)
        assert close(fa.mean, fb.mean) and close(fa.std, fb.std)
        hp, wp = 512, 448
        zs = []
        for i, spec in enumerate(m.latents()):
            pa = whole.prior(i, zs, cond, spec.shape(hp, wp))
            pb = small.prior(i, zs, cond, spec.shape(hp, wp))
            assert close(pa.mean, pb.mean) and close(pa.std, pb.std), i
            qa, qb = whole.posterior(i, fa, zs, pa, cond), small.posterior(i, fa, zs, pa, cond)
            assert close(qa.mean, qb.mean) and close(qa.std, qb.std), i
            zs.append(qa.mean)
        ra, rb = whole.reconstruct_uint8(zs, cond, *img.shape[:2]), small.reconstruct_uint8(zs, cond, *img.shape[:2])
        assert np.abs(ra.astype(int) - rb.astype(int)).max() <= 1 and (ra != rb).mean() < 0.01


def test_channel_ladder_tiled_codec_round_trips(cl_path):
    from raybb.tiling import MIN_TILE_PIXELS

    img = _odd_image()
    tiled, untiled = load_codec(cl_path, tile_pixels=MIN_TILE_PIXELS), load_codec(cl_path, tile_pixels=1 << 30)
    res = tiled.compress_with_stats(img, seed=2, rate=9, theoretical=True)
    assert np.array_equal(tiled.decompress(res.data), res.reconstruction)
    other = untiled.decompress(res.data)  # the untiled decoder: the same image up to float rounding
    assert np.abs(other.astype(int) - res.reconstruction.astype(int)).max() <= 1


def test_a_number_for_model_is_a_quality(cl_path, monkeypatch):
    """What the bucket jobs pass: ``load_codec(2.5)`` is ``load_codec(quality=2.5)``."""
    monkeypatch.setenv("RAYBB_DEFAULT_MODEL", str(cl_path))
    a, b = load_codec(2.5), load_codec(quality=2.5)
    assert a.fingerprint == b.fingerprint and a.rate == b.rate == rate_of_quality(a.model, 2.5)
    assert load_codec(3).rate == rate_of_quality(a.model, 3)  # an integer preset: a point on the curve


def test_pln_effort_zero_runs_each_stack_once(tiny_codec, photo):
    """No extra passes on the PLN's effort-0 path: compress runs g_a, h_a and h_s once and never g_s;
    compress_with_stats adds one g_s (the reconstruction); decompress runs h_s and g_s once."""
    m = tiny_codec.model
    calls = dict.fromkeys(("g_a", "h_a", "h_s", "g_s"), 0)
    hooks = [
        getattr(m, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1)) for name in calls
    ]
    try:
        data = tiny_codec.compress(photo, seed=1)
        assert calls == {"g_a": 1, "h_a": 1, "h_s": 1, "g_s": 0}
        tiny_codec.compress_with_stats(photo, seed=1)
        assert calls == {"g_a": 2, "h_a": 2, "h_s": 2, "g_s": 1}
        tiny_codec.decompress(data)
        assert calls == {"g_a": 2, "h_a": 2, "h_s": 3, "g_s": 2}
    finally:
        for h in hooks:
            h.remove()
