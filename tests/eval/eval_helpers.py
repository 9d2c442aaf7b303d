"""Helpers for the evaluation tests: seeded photo-like images and a tiny codec test double.

(A uniquely named module, not conftest, so test files can import it whatever other conftest.py
files the test tree has.)
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from raybb import metrics


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB image: smooth gradients, a few soft blobs, edges and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        img[..., c] = 60 + 120 * (xx / w) * rng.uniform(0.3, 1) + 60 * (yy / h) * rng.uniform(0.3, 1)
    for _ in range(6):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(3, max(4.0, min(h, w) / 3))
        col = rng.uniform(-80, 80, size=3)
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * col
    img[:, w // 2 :, 1] += 25  # a hard edge
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


@dataclass
class FakeResult:
    """Same fields as raybb.codec.CompressResult (the ones evaluation reads)."""

    data: bytes
    width: int
    height: int
    bpp: float
    psnr: float
    ms_ssim: float
    kl_bits: float
    encode_seconds: float
    reconstruction: np.ndarray
    kl_bits_per_level: dict[int, float] = field(default_factory=dict)
    coded_bits_per_level: dict[int, int] = field(default_factory=dict)
    theoretical_psnr: float | None = None
    theoretical_ms_ssim: float | None = None


class QuantizingCodec:
    """Test double for a raybb Codec: uniform quantization with step ``step`` + zlib.

    A real lossy codec with a rate knob (so RD curves and BD-rate are meaningful), reporting a
    "KL" rate slightly below the file size and a level split, like the real codec does.
    ``corrupt_decode`` makes decompress differ from the reported reconstruction.
    """

    def __init__(self, step: int, corrupt_decode: bool = False, report_theory: bool = True):
        self.step = step
        self.corrupt_decode = corrupt_decode
        self.report_theory = report_theory

    def _recon(self, q: np.ndarray) -> np.ndarray:
        return np.clip(q.astype(np.int32) * self.step + self.step // 2, 0, 255).astype(np.uint8)

    def compress_with_stats(self, image: np.ndarray, seed: int | None = None) -> FakeResult:
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        q = (image // self.step).astype(np.uint8)
        data = h.to_bytes(4, "big") + w.to_bytes(4, "big") + zlib.compress(q.tobytes(), 9)
        rec = self._recon(q)
        kl = len(data) * 8 * 0.95
        return FakeResult(
            data=data,
            width=w,
            height=h,
            bpp=metrics.bpp(len(data), h, w),
            psnr=metrics.psnr(image, rec),
            ms_ssim=metrics.ms_ssim(image, rec),
            kl_bits=kl,
            encode_seconds=time.perf_counter() - t0,
            reconstruction=rec,
            kl_bits_per_level={1: 0.8 * kl, 2: 0.2 * kl} if self.report_theory else {},
            coded_bits_per_level={1: 6 * len(data), 2: 2 * len(data)} if self.report_theory else {},
            theoretical_psnr=metrics.psnr(image, rec) + 0.1 if self.report_theory else None,
            theoretical_ms_ssim=metrics.ms_ssim(image, rec) if self.report_theory else None,
        )

    def decompress(self, data: bytes) -> np.ndarray:
        h, w = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
        q = np.frombuffer(zlib.decompress(data[8:]), dtype=np.uint8).reshape(h, w, 3)
        rec = self._recon(q)
        if self.corrupt_decode:
            rec = rec.copy()
            rec[0, 0, 0] ^= 1
        return rec
