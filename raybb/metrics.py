"""Image quality and rate metrics shared by the codec, the baselines and the evaluation.

One implementation for every caller, so a PSNR printed by ``raybb compress`` and one in the Kodak
table are the same number:

* ``psnr``: RGB, 8-bit, MSE over all pixels *and* channels (the convention of CompressAI and the
  learned-compression papers), in dB; ``inf`` for identical images.
* ``ms_ssim``: pytorch-msssim (the implementation those papers use; torchmetrics differs by up to
  ~1e-3) on float tensors with ``data_range=255``, averaged over the three RGB channels.
* ``ms_ssim_db``: ``-10 log10(1 - v)``, the scale on which MS-SSIM differences are readable.
* ``bpp``: file bytes x 8 / pixels.

Small images and MS-SSIM. The standard 5-scale MS-SSIM with an 11-tap window needs the smaller side
to exceed ``(11 - 1) * 2**4 = 160`` pixels. For smaller images we use *fewer scales* rather than
failing: the largest ``n`` with ``min(h, w) > 10 * 2**(n - 1)``, with the first ``n`` standard
weights rescaled to the full set's sum (``ms_ssim_scales`` tells how many were used). Such values are a
usable quality signal for tests and thumbnails but are **not comparable** with 5-scale values;
the evaluation tables record the scale count per image. Below 11 pixels no SSIM window fits and
``ms_ssim`` returns NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim as _pt_ms_ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

__all__ = [
    "MS_SSIM_WEIGHTS",
    "MS_SSIM_WIN_SIZE",
    "MS_SSIM_UNDEFINED",
    "MS_SSIM_MAX_PIXELS",
    "ms_ssim_bounded",
    "ms_ssim_missing_reason",
    "psnr",
    "mse",
    "ms_ssim",
    "ms_ssim_scales",
    "ms_ssim_db",
    "bpp",
]

#: The standard 5-scale weights (Wang et al. 2003), as used by pytorch-msssim.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: Gaussian window size (sigma 1.5), pytorch-msssim's default.
MS_SSIM_WIN_SIZE = 11
#: Why ``ms_ssim`` is NaN (a null in manifests): said wherever the value would have been reported.
MS_SSIM_UNDEFINED = f"MS-SSIM undefined: the image's short side is under {MS_SSIM_WIN_SIZE} px (no SSIM window fits)"
#: Above this many pixels the codec and the batch job report MS-SSIM as null: pytorch-msssim works
#: on the whole float image (~160 bytes per pixel measured at 6 MP), which would break the memory
#: bound of tiled coding (docs/tiling.md).
MS_SSIM_MAX_PIXELS = 6_000_000
MS_SSIM_TOO_LARGE = f"MS-SSIM not computed above {MS_SSIM_MAX_PIXELS:,} pixels (it would need the whole float image)"


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB arrays, got shape {a.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected uint8 arrays (8-bit RGB), got {a.dtype} and {b.dtype}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over all pixels and channels, on the 0..255 scale."""
    a, b = _check_pair(a, b)
    if a.size <= 1 << 24:
        d = a.astype(np.int32) - b.astype(np.int32)  # exact: no float rounding in the differences
        return float(np.mean(d * d, dtype=np.float64))
    total = 0  # large images: exact integer sums over row strips (no full-size int32 copies)
    step = max(1, (1 << 22) // (a.shape[1] * 3))
    for r in range(0, a.shape[0], step):
        d = a[r : r + step].astype(np.int32) - b[r : r + step].astype(np.int32)
        total += int(np.einsum("ijk,ijk->", d, d, dtype=np.int64))
    return total / a.size


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two HxWx3 uint8 images (peak 255, MSE over all channels); inf if identical."""
    m = mse(a, b)
    if m == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0 * 255.0 / m)


def ms_ssim_scales(height: int, width: int) -> int:
    """Number of MS-SSIM scales usable for an image of this size (5 from 161 px up; 0 below 11)."""
    side = min(height, width)
    n = 0
    for k in range(1, len(MS_SSIM_WEIGHTS) + 1):
        if side > (MS_SSIM_WIN_SIZE - 1) * 2 ** (k - 1):
            n = k
    return n


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two HxWx3 uint8 images (pytorch-msssim, data_range=255), in [0, 1].

    Uses fewer scales for images under 161 px on the short side (see module docstring); NaN when
    the short side is under 11 px.
    """
    a, b = _check_pair(a, b)
    h, w = a.shape[:2]
    n = ms_ssim_scales(h, w)
    if n == 0:
        return math.nan
    with torch.inference_mode():
        # astype copies into a writable float32 buffer (decoded arrays are often read-only)
        x = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
        y = torch.from_numpy(b.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
        if n == len(MS_SSIM_WEIGHTS):
            v = _pt_ms_ssim(x, y, data_range=255, size_average=True, win_size=MS_SSIM_WIN_SIZE)
        else:
            v = _ms_ssim_fewer_scales(x, y, n)
    return float(v)


def _ms_ssim_fewer_scales(x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """pytorch-msssim's MS-SSIM loop with ``n`` scales and renormalised weights.

    pytorch-msssim asserts a 161 px minimum whatever ``weights`` says, so for small images we run
    the same loop (same window, same per-level SSIM from its ``_ssim``, same pooling) ourselves.
    """
    # scale the first n weights to the full set's sum (1.0001, as published), so n=5 is the reference
    w = torch.tensor(MS_SSIM_WEIGHTS[:n], dtype=torch.float64)
    w = (w * (sum(MS_SSIM_WEIGHTS) / w.sum())).to(x.dtype)
    win = _fspecial_gauss_1d(MS_SSIM_WIN_SIZE, 1.5).repeat([x.shape[1], 1, 1, 1])
    mcs = []
    ssim_pc = None
    for i in range(n):
        ssim_pc, cs = _ssim(x, y, win=win, data_range=255, size_average=False, K=(0.01, 0.03))
        if i < n - 1:
            mcs.append(torch.relu(cs))
            pad = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
    assert ssim_pc is not None
    stack = torch.stack([*mcs, torch.relu(ssim_pc)], dim=0)
    return torch.prod(stack ** w.view(-1, 1, 1), dim=0).mean()


def ms_ssim_db(v: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - v); inf for v == 1, NaN for NaN."""
    v = float(v)
    if math.isnan(v):
        return math.nan
    if v >= 1.0:
        return math.inf
    return -10.0 * math.log10(1.0 - v)


def bpp(nbytes: int, height: int, width: int) -> float:
    """Bits per pixel of a file of ``nbytes`` bytes holding a height x width image."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    return nbytes * 8.0 / (height * width)


def ms_ssim_bounded(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`ms_ssim`, or NaN above :data:`MS_SSIM_MAX_PIXELS` (memory bound)."""
    return ms_ssim(a, b) if a.shape[0] * a.shape[1] <= MS_SSIM_MAX_PIXELS else math.nan


def ms_ssim_missing_reason(height: int, width: int) -> str:
    """Why :func:`ms_ssim_bounded` gave no value for an image of this size."""
    return MS_SSIM_TOO_LARGE if height * width > MS_SSIM_MAX_PIXELS else MS_SSIM_UNDEFINED
