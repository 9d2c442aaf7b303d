"""Published Kodak reference points for codecs that cannot be run here.

Source: InterDigitalInc/CompressAI, ``results/image/kodak/<file>`` (24 Kodak images, averaged).
They are the comparison for BPG (not installable) and a pretrained hyperprior (none available).
"""

from __future__ import annotations

from typing import Any

__all__ = ["KODAK_ANCHORS", "PUBLISHED_CAPTION"]

KODAK_ANCHORS: dict[str, dict[str, Any]] = {
    "bmshj2018-hyperprior (published)": {
        "citation": (
            "Ballé et al. 2018, MSE; CompressAI results/image/kodak/compressai-bmshj2018-hyperprior_mse_cpu.json"
        ),
        "bpp": [0.1313, 0.2089, 0.3199, 0.4784, 0.6687, 0.9388, 1.2592, 1.6602],
        "psnr": [27.58, 29.20, 30.97, 32.84, 34.53, 36.74, 38.58, 40.56],
        "ms_ssim": [0.9174, 0.9421, 0.9611, 0.9749, 0.9836, 0.9893, 0.9929, 0.9955],
    },
    "BPG 4:4:4 (published)": {
        "citation": "BPG 0.9.8, x265, 4:4:4; CompressAI results/image/kodak/bpg_444_x265_ycbcr.json",
        "bpp": [0.0678, 0.1610, 0.3516, 0.6847, 1.1997, 1.9297],
        "psnr": [26.20, 28.68, 31.59, 34.86, 38.26, 41.48],
        "ms_ssim": [0.8686, 0.9242, 0.9611, 0.9808, 0.9905, 0.9949],
    },
}

PUBLISHED_CAPTION = (
    "Published Kodak averages (grey): InterDigitalInc/CompressAI results/image/kodak/ "
    "compressai-bmshj2018-hyperprior_mse_cpu.json (Ballé et al. 2018) and bpg_444_x265_ycbcr.json."
)
