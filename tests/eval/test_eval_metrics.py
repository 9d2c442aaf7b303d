"""Metrics against hand-computed values and the reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eval_helpers import synthetic_image
from pytorch_msssim import ms_ssim as reference_ms_ssim

from raybb import metrics


def test_psnr_hand_computed_uniform_error():
    a = np.zeros((2, 2, 3), np.uint8)
    b = np.ones((2, 2, 3), np.uint8)  # MSE = 1 -> PSNR = 20 log10 255
    assert metrics.mse(a, b) == 1.0
    assert metrics.psnr(a, b) == pytest.approx(48.130803608679, abs=1e-9)


def test_psnr_hand_computed_single_channel_error():
    a = np.full((4, 4, 3), 100, np.uint8)
    b = a.copy()
    b[1, 2, 0] = 110  # one error of 10 over 48 samples: MSE = 100/48 (all channels count)
    expected = 10 * math.log10(255**2 / (100 / 48))
    assert metrics.psnr(a, b) == pytest.approx(expected, abs=1e-12)
    assert metrics.psnr(b, a) == metrics.psnr(a, b)


def test_psnr_no_uint8_wraparound():
    a = np.zeros((1, 1, 3), np.uint8)
    b = np.full((1, 1, 3), 255, np.uint8)
    assert metrics.psnr(a, b) == pytest.approx(0.0, abs=1e-12)


def test_psnr_identical_is_inf(image_64):
    assert metrics.psnr(image_64, image_64.copy()) == math.inf


@pytest.mark.parametrize(
    "a,b",
    [
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.float32)),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)),
    ],
)
def test_metrics_reject_bad_input(a, b):
    with pytest.raises(ValueError):
        metrics.psnr(a, b)
    with pytest.raises(ValueError):
        metrics.ms_ssim(a, b)


def test_ms_ssim_identical_is_one():
    img = synthetic_image(176, 200, seed=5)
    assert metrics.ms_ssim(img, img.copy()) == pytest.approx(1.0, abs=1e-6)
    small = synthetic_image(40, 52, seed=6)  # fewer scales, still 1 for identical inputs
    assert metrics.ms_ssim(small, small.copy()) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_matches_pytorch_msssim_at_full_size():
    a = synthetic_image(170, 180, seed=7)
    rng = np.random.default_rng(0)
    b = np.clip(a.astype(int) + rng.integers(-12, 13, a.shape), 0, 255).astype(np.uint8)
    ta = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None]
    tb = torch.from_numpy(b.astype(np.float32)).permute(2, 0, 1)[None]
    ref = float(reference_ms_ssim(ta, tb, data_range=255))
    assert metrics.ms_ssim(a, b) == pytest.approx(ref, abs=1e-6)
    assert 0.5 < metrics.ms_ssim(a, b) < 1.0


def test_ms_ssim_decreases_with_noise(image_64):
    rng = np.random.default_rng(1)
    vals = []
    for sigma in (2, 8, 30):
        noisy = np.clip(image_64 + rng.normal(0, sigma, image_64.shape), 0, 255).astype(np.uint8)
        vals.append(metrics.ms_ssim(image_64, noisy))
    assert vals[0] > vals[1] > vals[2]


@pytest.mark.parametrize(
    "side,scales", [(768, 5), (161, 5), (160, 4), (81, 4), (80, 3), (41, 3), (21, 2), (11, 1), (10, 0)]
)
def test_ms_ssim_scales(side, scales):
    assert metrics.ms_ssim_scales(side, 1000) == scales
    assert metrics.ms_ssim_scales(1000, side) == scales


def test_ms_ssim_too_small_is_nan():
    a = np.zeros((8, 30, 3), np.uint8)
    assert math.isnan(metrics.ms_ssim(a, a))


def test_ms_ssim_db():
    assert metrics.ms_ssim_db(0.9) == pytest.approx(10.0)
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)
    assert metrics.ms_ssim_db(0.0) == 0.0
    assert metrics.ms_ssim_db(1.0) == math.inf
    assert math.isnan(metrics.ms_ssim_db(math.nan))


def test_bpp():
    assert metrics.bpp(1000, 100, 80) == 1.0
    assert metrics.bpp(0, 10, 10) == 0.0
    assert metrics.bpp(3, 2, 3) == 4.0
    with pytest.raises(ValueError):
        metrics.bpp(10, 0, 5)


def test_fewer_scales_loop_reproduces_reference_with_five_scales():
    # the small-image path is our copy of pytorch-msssim's loop: with all 5 scales it must agree
    a = synthetic_image(168, 172, seed=8)
    b = np.clip(a.astype(int) + np.random.default_rng(2).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    ta = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None]
    tb = torch.from_numpy(b.astype(np.float32)).permute(2, 0, 1)[None]
    ours = float(metrics._ms_ssim_fewer_scales(ta, tb, 5))
    assert ours == pytest.approx(float(reference_ms_ssim(ta, tb, data_range=255)), abs=1e-6)
