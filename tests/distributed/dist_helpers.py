"""Helpers for the distributed tests: small crops of the committed test photos, deliberately bad files, uploads."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for _servers, _data

from _data import TEST_PHOTOS  # noqa: E402

#: The coded sampler the distributed tests use (registered by raybb.coding).
SAMPLER = "pfr"

#: Deliberately bad inputs: each must become an ``error`` row, never stop the job.
BAD_FILES = {
    "bad/not-an-image.png": b"this is text, not a PNG",
    "bad/empty.jpg": b"",
    "bad/truncated.png": None,  # filled in from a real PNG cut in half
    "bad/huge.png": None,  # a PNG header claiming 11000x10000 pixels: above the 100 MP limit
}


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR (+ IEND) announcing ``width``x``height``: tiny file, huge image."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def photo_crops(n: int, size: tuple[int, int] = (64, 96)) -> dict[str, bytes]:
    """``n`` distinct PNG crops (h, w) of the committed test photos, keyed ``photos/<photo>-NNN.png``."""
    from PIL import Image

    files = TEST_PHOTOS
    out = {}
    h, w = size
    for i in range(n):
        f = files[i % len(files)]
        img = np.asarray(Image.open(f).convert("RGB"))
        y, x = (i * 37) % (img.shape[0] - h), (i * 53) % (img.shape[1] - w)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img[y : y + h, x : x + w])).save(buf, format="PNG")
        out[f"photos/{f.stem}-{i:03d}.png"] = buf.getvalue()
    return out


def smooth_pngs(n: int, size: int, seed: int = 1) -> dict[str, bytes]:
    """``n`` smooth random ``size``x``size`` PNGs for training tests (never Kodak: evaluation only)."""
    from PIL import Image

    from raybb.imageio import encode_png

    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        out[f"p{i}.png"] = encode_png(np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC)))
    return out


def bad_files() -> dict[str, bytes]:
    good = next(iter(photo_crops(1).values()))
    files = dict(BAD_FILES)
    files["bad/truncated.png"] = good[: len(good) // 2]
    files["bad/huge.png"] = _png_header_only(11000, 10000)
    return files


def upload(loc, files: dict[str, bytes]) -> None:
    from raybb.storage import write_atomic

    for k, v in files.items():
        write_atomic(loc, k, v)
