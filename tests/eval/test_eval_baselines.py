"""Classical baselines: round trips, rate monotone in quality, rate matching."""

from __future__ import annotations

import numpy as np
import pytest
from eval_helpers import synthetic_image

from raybb import metrics
from raybb.baselines import BASELINES, baseline_names, get_baseline, library_versions
from raybb.errors import ImageError

NAMES = baseline_names()


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    return synthetic_image(72, 96, seed=11)


def test_all_four_codecs_available_here():
    assert set(NAMES) == {"jpeg", "webp", "avif", "jpegxl"}
    v = library_versions()
    assert v["pillow"] and v["libjxl"] and v["libwebp"]


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name, img):
    c = get_baseline(name)
    data = c.encode(img, c.default_qualities[-1])
    assert isinstance(data, bytes) and len(data) > 0
    rec = c.decode(data)
    assert rec.shape == img.shape and rec.dtype == np.uint8
    assert metrics.psnr(img, rec) > 30  # the top of the ladder is a good-quality encode


@pytest.mark.parametrize("name", NAMES)
def test_rate_and_quality_grow_with_quality_setting(name, img):
    c = get_baseline(name)
    sizes, psnrs = [], []
    for q in c.default_qualities:
        data = c.encode(img, q)
        sizes.append(len(data))
        psnrs.append(metrics.psnr(img, c.decode(data)))
    assert all(b >= a for a, b in zip(sizes, sizes[1:], strict=False)), sizes
    assert sizes[-1] > 2 * sizes[0]
    assert psnrs[-1] > psnrs[0] + 3, psnrs


@pytest.mark.parametrize("name", NAMES)
def test_decode_garbage_raises_image_error(name):
    with pytest.raises(ImageError):
        get_baseline(name).decode(b"\x00\x01 definitely not an image")


def test_encode_rejects_non_rgb():
    with pytest.raises(ImageError):
        get_baseline("jpeg").encode(np.zeros((8, 8), np.uint8), 50)
    with pytest.raises(ImageError):
        get_baseline("jpeg").encode(np.zeros((8, 8, 3), np.float32), 50)


def test_quality_is_clamped(img):
    c = get_baseline("jpeg")
    assert c.encode(img, 500) == c.encode(img, 100)


def test_aliases_and_unknown():
    assert get_baseline("JXL") is BASELINES["jpegxl"]
    assert get_baseline("jpg") is BASELINES["jpeg"]
    with pytest.raises(ValueError, match="unknown baseline"):
        get_baseline("bpg")


def test_encode_at_bpp_at_most(img):
    c = get_baseline("jpeg")
    h, w = img.shape[:2]
    target = 1.5
    m = c.encode_at_bpp(img, target)
    assert m.bpp <= target
    assert m.bpp == metrics.bpp(len(m.data), h, w)
    assert m.data == c.encode(img, m.quality)
    # maximal: one quality step more would exceed the target
    assert metrics.bpp(len(c.encode(img, m.quality + 1)), h, w) > target


def test_encode_at_bpp_closest_and_edges(img):
    c = get_baseline("webp")
    h, w = img.shape[:2]
    at_most = c.encode_at_bpp(img, 1.0)
    closest = c.encode_at_bpp(img, 1.0, mode="closest")
    assert abs(closest.bpp - 1.0) <= abs(at_most.bpp - 1.0)
    assert closest.quality in (at_most.quality, at_most.quality + 1)
    assert c.encode_at_bpp(img, 1e-4).quality == c.min_quality
    assert c.encode_at_bpp(img, 1e4).quality == c.max_quality
    with pytest.raises(ValueError):
        c.encode_at_bpp(img, 0)
    with pytest.raises(ValueError):
        c.encode_at_bpp(img, 1.0, mode="nearest")
    assert metrics.bpp(len(closest.data), h, w) == closest.bpp


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_default_ladder_spans_low_to_high_rate_on_kodak(name, kodak_dir):
    from raybb.imageio import load_image

    c = get_baseline(name)
    img = load_image(kodak_dir / "kodim05.png")  # a mid-difficulty Kodak image
    h, w = img.shape[:2]
    lo = metrics.bpp(len(c.encode(img, c.default_qualities[0])), h, w)
    hi = metrics.bpp(len(c.encode(img, c.default_qualities[-1])), h, w)
    assert lo < 0.45 and hi > 1.2, (lo, hi)
