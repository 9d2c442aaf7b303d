"""Image reading rules found wanting by an adversarial run (issue 19): our pixel limit, clean
messages, and animated/multi-page inputs that say what was kept."""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from raybb.errors import ImageError
from raybb.imageio import ImageWarning, decode_image
from raybb.metrics import MS_SSIM_UNDEFINED, ms_ssim


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data",
    [
        b"plain text, no image",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 30,
        _png_header_only(9500, 9500),
        _png_header_only(20000, 20000),
    ],
    ids=["text", "bad-png", "90MP-header-only", "400MP-header-only"],
)
def test_errors_are_ours_and_clean(data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError) as info:
            decode_image(data)
    msg = str(info.value)
    assert "BytesIO" not in msg and "object at 0x" not in msg, msg
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    if data == _png_header_only(20000, 20000):  # Pillow refuses it itself; the message is still ours
        assert "400000000 pixels" in msg and "limit of 100000000" in msg, msg


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "TIFF", "WEBP"])
def test_multi_frame_inputs_warn(fmt):
    frames = [Image.new("RGB", (20, 16), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=40)
    with pytest.warns(ImageWarning, match="3 frames .* only the first"):
        rgb = decode_image(buf.getvalue())
    assert rgb.shape == (16, 20, 3)
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 1] < 50  # the first frame, not a later one
    single = io.BytesIO()
    frames[0].save(single, fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageWarning)
        decode_image(single.getvalue())


def test_ms_ssim_undefined_below_11_px_and_defined_from_11():
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (1, 50), (50, 1), (10, 10), (10, 300)]:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert np.isnan(ms_ssim(a, a)), (h, w)
    for h, w in [(11, 11), (11, 64), (40, 12), (161, 161)]:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-3), (h, w)
    assert "11 px" in MS_SSIM_UNDEFINED
