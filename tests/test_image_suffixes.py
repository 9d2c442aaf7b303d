"""One list of image suffixes: ``raybb compress dir/``, bucket jobs, eval and training agree, and
every suffix in it is one that ``decode_image`` reads."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from raybb import imageio, storage
from raybb.baselines import get_baseline
from raybb.imageio import IMAGE_SUFFIXES, decode_image


def test_one_list_everywhere():
    from raybb.storage import listing

    assert storage.IMAGE_SUFFIXES is imageio.IMAGE_SUFFIXES is listing.IMAGE_SUFFIXES
    assert {".jxl", ".avif", ".png", ".jpg"} <= set(IMAGE_SUFFIXES)
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)


def _encode(rgb: np.ndarray, suffix: str) -> bytes:
    if suffix == ".jxl":
        return get_baseline("jpegxl").encode(rgb, 90)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".pgm": "PPM"}.get(suffix)
    fmt = fmt or suffix[1:].upper()
    img = Image.fromarray(rgb).convert("L") if suffix == ".pgm" else Image.fromarray(rgb)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
def test_every_listed_suffix_decodes(suffix):
    rgb = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    out = decode_image(_encode(rgb, suffix))
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8
