import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from _codec_helpers import EXPECTED, assert_matches_golden_png, make_tiny_weights
from PIL import Image

from raybb import bitstream
from raybb.codec import PFR_DEFAULT, PFR_EXACT, PFR_MAX, Codec, parse_pipeline
from raybb.coding import SAMPLERS, PFRSampler
from raybb.errors import BitstreamError, ChecksumMismatch, ImageError, ModelMismatch
from raybb.model.weights import load_weights
from raybb.pipelines import DPFR_DEFAULT


def test_round_trip_equals_encoder_reconstruction(tiny_codec, photo):
    res = tiny_codec.compress_with_stats(photo, seed=7)
    out = tiny_codec.decompress(res.data)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.array_equal(out, res.reconstruction)
    assert res.bpp == pytest.approx(len(res.data) * 8 / (70 * 90))
    assert res.kl_bits == pytest.approx(sum(res.kl_bits_per_level.values()))
    assert res.kl_bits > 0 and np.isfinite(res.psnr)


def test_compress_writes_the_same_bytes_as_compress_with_stats(tiny_codec, photo):
    """compress() skips the reconstruction and metrics, never the coding (default seed too)."""
    assert tiny_codec.compress(photo, seed=5) == tiny_codec.compress_with_stats(photo, seed=5).data
    assert tiny_codec.compress(photo) == tiny_codec.compress_with_stats(photo).data


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_round_trips(tiny_weights, photo, sampler):
    codec = Codec(load_weights(tiny_weights), sampler)
    res = codec.compress_with_stats(photo[:40, :50], seed=3)
    assert np.array_equal(codec.decompress(res.data), res.reconstruction)
    c = bitstream.parse(res.data)
    assert {s.sampler_id for s in c.sections} == {SAMPLERS[sampler].sampler_id}


def test_deterministic_bytes(tiny_codec, photo):
    a = tiny_codec.compress(photo)
    b = tiny_codec.compress(photo.copy())
    assert a == b  # default seed comes from the pixels
    assert tiny_codec.compress(photo, seed=1) == tiny_codec.compress(photo, seed=1)
    assert tiny_codec.compress(photo, seed=1) != tiny_codec.compress(photo, seed=2)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (37, 53), (64, 64), (65, 129)])
def test_any_size(tiny_codec, shape):
    rgb = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    res = tiny_codec.compress_with_stats(rgb, seed=0)
    out = tiny_codec.decompress(res.data)
    assert out.shape == rgb.shape
    assert np.array_equal(out, res.reconstruction)


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_input_modes(tiny_codec, photo):
    rgb = Image.fromarray(photo)
    gray = rgb.convert("L")
    res = tiny_codec.compress_with_stats(_png(gray))
    assert res.reconstruction.shape == (70, 90, 3)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited over white
    white = tiny_codec._to_rgb(_png(rgba))
    assert (white == 255).all()
    pal = rgb.convert("P")
    assert tiny_codec._to_rgb(_png(pal)).shape == (70, 90, 3)
    ramp = (np.arange(70 * 90).reshape(70, 90) * 10).astype(np.uint16)
    g16 = Image.fromarray(ramp)
    assert g16.mode.startswith("I")
    a16 = tiny_codec._to_rgb(_png(g16))
    assert a16.shape == (70, 90, 3)
    assert np.array_equal(a16[..., 0], (ramp >> 8).astype(np.uint8))  # documented rule: v >> 8


def test_exif_orientation_is_applied(tiny_codec, photo):
    img = Image.fromarray(photo)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    assert tiny_codec._to_rgb(buf.getvalue()).shape == (90, 70, 3)


def test_bad_images_raise_image_error(tiny_codec):
    with pytest.raises(ImageError):
        tiny_codec.compress(b"not an image at all")
    with pytest.raises(ImageError):
        tiny_codec.compress(b"")
    with pytest.raises(ImageError):
        tiny_codec.compress(np.zeros((4, 4), dtype=np.uint8))
    small = Codec(tiny_codec.loaded, "pfr", max_pixels=100)
    with pytest.raises(ImageError):
        small.compress(np.zeros((20, 20, 3), dtype=np.uint8))


def test_model_mismatch(tiny_codec, photo, tmp_path):
    other = Codec(load_weights(make_tiny_weights(tmp_path / "other.safetensors", seed=1)), "pfr")
    data = tiny_codec.compress(photo[:30, :30])
    with pytest.raises(ModelMismatch):
        other.decompress(data)


def _repack(data: bytes, mutate) -> bytes:
    """Mutate a parsed container and re-pack it with a *valid* CRC (corruption CRC cannot catch)."""
    c = bitstream.parse(data)
    return bitstream.pack(mutate(c))


def test_inconsistent_containers_raise_typed(tiny_codec, photo):
    from dataclasses import replace

    data = tiny_codec.compress(photo[:40, :40], seed=5)
    bad = [
        _repack(data, lambda c: replace(c, width=c.width + 64)),
        _repack(data, lambda c: replace(c, sections=c.sections[:1])),
        _repack(data, lambda c: replace(c, sections=tuple(replace(s, sampler_id=250) for s in c.sections))),
        _repack(
            data,
            lambda c: replace(
                c, sections=tuple(replace(s, payload=s.payload[: len(s.payload) // 2]) for s in c.sections)
            ),
        ),
        _repack(data, lambda c: replace(c, sections=tuple(replace(s, payload=b"") for s in c.sections))),
        _repack(
            data,
            lambda c: replace(c, sections=tuple(replace(s, params=(2**32 - 1,) * len(s.params)) for s in c.sections)),
        ),
    ]
    for b in bad:
        with pytest.raises(BitstreamError):
            tiny_codec.decompress(b)


def test_payload_fuzz_with_valid_crc_never_crashes(tiny_codec, photo):
    from dataclasses import replace

    rng = np.random.default_rng(0)
    data = tiny_codec.compress(photo[:40, :40], seed=5)
    c = bitstream.parse(data)
    for _ in range(60):
        secs = []
        for s in c.sections:
            p = bytearray(s.payload)
            for _ in range(int(rng.integers(1, 4))):
                if p:
                    p[int(rng.integers(len(p)))] = int(rng.integers(256))
            secs.append(replace(s, payload=bytes(p)))
        try:
            out = tiny_codec.decompress(bitstream.pack(replace(c, sections=tuple(secs))))
            assert out.shape == (40, 40, 3)  # a flip may still decode to *some* image
        except BitstreamError:
            pass


def test_flipped_and_truncated_files(tiny_codec, photo):
    data = tiny_codec.compress(photo[:40, :40], seed=5)
    b = bytearray(data)
    b[len(b) // 2] ^= 1
    with pytest.raises(ChecksumMismatch):
        tiny_codec.decompress(bytes(b))
    for cut in (0, 10, 40, len(data) - 1):
        with pytest.raises(BitstreamError):
            tiny_codec.decompress(data[:cut])


def test_pipelines():
    assert parse_pipeline("is-gs") == (("importance", None), ("greedy", None))
    assert parse_pipeline("pfr") == (("pfr", PFR_DEFAULT), ("pfr", PFR_DEFAULT))
    # the default: pfr on level 2, dpfr (dithered high-KL channels + pfr) on level 1
    assert parse_pipeline(None) == parse_pipeline("pfr-dither") == (("pfr", PFR_DEFAULT), ("dpfr", DPFR_DEFAULT))
    assert parse_pipeline("pfr/dpfr") == parse_pipeline("pfr-dither")
    assert parse_pipeline("dpfr") == (("dpfr", DPFR_DEFAULT),) * 2  # a sampler name alone: both levels
    assert parse_pipeline("pfr-max") == (("pfr", PFR_MAX), ("pfr", PFR_MAX))
    assert parse_pipeline("pfr-exact") == (("pfr", PFR_EXACT), ("pfr", PFR_EXACT))
    # a bare "pfr" means PFR_DEFAULT everywhere: alone, in a pair, as the sampler's own default
    assert parse_pipeline("importance/pfr") == (("importance", None), ("pfr", PFR_DEFAULT))
    assert parse_pipeline("pfr/pfr") == parse_pipeline("pfr")
    assert PFR_DEFAULT[:4] == PFRSampler().params()
    assert parse_pipeline("pfr:20,14,64,20") == (("pfr", (20, 14, 64, 20)),) * 2
    assert parse_pipeline("pfr:20,14,64,20,0") == (("pfr", (20, 14, 64, 20, 0)),) * 2
    for retired, explicit in (("pfr-v1", "pfr:20,14,64,20"), ("pfr-v0", "pfr:12,14,64,12"), ("pfr-hq", "pfr-exact")):
        with pytest.raises(ValueError, match=explicit):
            parse_pipeline(retired)
    assert parse_pipeline("pfr:14,16,64,14/greedy") == (("pfr", (14, 16, 64, 14)), ("greedy", None))
    with pytest.raises(ValueError):
        parse_pipeline("nope")
    for bad in ("pfr:1,2", "pfr:99,14,64,20", "pfr:x", "nope:1", "pfr/pfr/pfr", "pfr:20,14,64,20,-1"):
        with pytest.raises(ValueError):
            parse_pipeline(bad)


# golden_pfr_v0 pins the first default (12, 14, 64, 12) and golden_pfr_v1 the second (20, 14, 64, 20),
# both in channel-major order: files written before the default changed must keep decoding to the
# same pixels (and the old pipelines must keep producing the same bytes). golden_pfr_max pins the
# 25-bit-budget, 2^16-candidate search of `pfr-max`. Pipelines are spelled out (the bytes are pinned,
# a pipeline name may come to mean other parameters for new streams).
GOLDEN = [
    ("golden_pfr", "pfr:22,14,64,22,0", 11),
    ("golden_pfr_v1", "pfr:20,14,64,20", 11),
    ("golden_pfr_v0", "pfr:12,14,64,12", 11),
    ("golden_isgs", "is-gs", 12),
    ("golden_pfr_max", "pfr:25,16,64,25,0", 11),
]


@pytest.mark.parametrize("name,sampler,seed", GOLDEN)
def test_golden_bitstreams(tiny_weights, photo, name, sampler, seed):
    """Pinned files: the format and the samplers' choices must not drift silently.

    Regenerate deliberately with GENERATE_EXPECTED=1 (and bump the format version if old files
    can no longer be read).
    """
    codec = Codec(load_weights(tiny_weights), sampler)
    rbb, png = EXPECTED / f"{name}.rbb", EXPECTED / f"{name}.png"
    if os.environ.get("GENERATE_EXPECTED"):
        res = codec.compress_with_stats(photo, seed=seed)
        rbb.write_bytes(res.data)
        Image.fromarray(res.reconstruction).save(png)
    data = rbb.read_bytes()
    expected = np.asarray(Image.open(png).convert("RGB"))
    assert_matches_golden_png(codec.decompress(data), expected)  # float32 synthesis: a stated tolerance
    assert codec.compress(photo, seed=seed) == data  # the bitstream: exact
    c = bitstream.parse(data)
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert (c.width, c.height, c.seed) == (90, 70, seed)


def test_default_pipeline_codes_position_major_over_each_levels_channels(tiny_weights, photo):
    """PFR_DEFAULT's order 0 becomes this model's channel counts, written in every section."""
    codec = Codec(load_weights(tiny_weights), "pfr")
    cfg = codec.loaded.config
    assert codec.samplers[1].params() == (*PFR_DEFAULT[:4], cfg.M)
    assert codec.samplers[2].params() == (*PFR_DEFAULT[:4], cfg.G)
    data = codec.compress(photo[:64, :96], seed=3)
    c = bitstream.parse(data)
    assert tuple(c.section(1).params) == (*PFR_DEFAULT[:4], cfg.M)
    assert tuple(c.section(2).params) == (*PFR_DEFAULT[:4], cfg.G)
    # any codec decodes it (the order is in the stream), e.g. one built for the previous default
    assert np.array_equal(Codec(load_weights(tiny_weights), "pfr:20,14,64,20").decompress(data), codec.decompress(data))
    # an explicit spec with order 0 resolves the same way; order 1 is the previous channel-major order
    assert Codec(load_weights(tiny_weights), "pfr:22,14,128,22,0").compress(photo[:64, :96], seed=3) == data
    v1 = Codec(load_weights(tiny_weights), "pfr:20,14,64,20,1").compress(photo[:64, :96], seed=3)
    assert v1 == Codec(load_weights(tiny_weights), "pfr:20,14,64,20").compress(photo[:64, :96], seed=3) != data
    # the default pipeline's level 1 (dpfr) resolves its channel count the same way
    default = Codec(load_weights(tiny_weights))
    assert default.samplers[1].params() == (*DPFR_DEFAULT[:4], cfg.M) and default.samplers[1].name == "dpfr"
    assert default.samplers[2].params() == (*PFR_DEFAULT[:4], cfg.G) and default.samplers[2].name == "pfr"


@pytest.mark.parametrize("threshold", [2.5, -100.0])
def test_golden_dpfr_bitstreams(tiny_weights, photo, threshold):
    """Pinned dpfr files: with the default threshold (the tiny model dithers few or no channels) and
    with every level-1 channel dithered (the threshold is the encoder's choice, not in the stream,
    so both files decode with any codec). Regenerate deliberately with GENERATE_EXPECTED=1."""
    name = "golden_dpfr" if threshold == 2.5 else "golden_dpfr_all"
    codec = Codec(load_weights(tiny_weights), "pfr:22,14,128,22,0/dpfr:22,14,128,22,0")
    codec.samplers[1].threshold = threshold
    rbb, png = EXPECTED / f"{name}.rbb", EXPECTED / f"{name}.png"
    if os.environ.get("GENERATE_EXPECTED"):
        res = codec.compress_with_stats(photo, seed=11)
        rbb.write_bytes(res.data)
        Image.fromarray(res.reconstruction).save(png)
    data = rbb.read_bytes()
    expected = np.asarray(Image.open(png).convert("RGB"))
    assert_matches_golden_png(codec.decompress(data), expected)
    assert_matches_golden_png(Codec(load_weights(tiny_weights), "pfr").decompress(data), expected)  # any codec
    assert codec.compress(photo, seed=11) == data
    if threshold < 0:
        with torch.no_grad():
            levels = codec._encode(photo, 11).levels
        assert levels[1].enc.stats["dithered_channels"] == codec.loaded.config.M
