"""Bjøntegaard metrics against known and analytic values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raybb.evaluation import bd_psnr, bd_rate

R = np.array([0.15, 0.3, 0.55, 0.9, 1.4])
D = np.array([28.0, 30.5, 33.0, 35.6, 38.1])


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_identical_curves_are_zero(method):
    assert bd_rate(R, D, R, D, method=method) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(R, D, R, D, method=method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_rates_times_0_9_is_minus_10_percent(method):
    assert bd_rate(R, D, 0.9 * R, D, method=method) == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate(0.9 * R, D, R, D, method=method) == pytest.approx(100 / 0.9 - 100, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_quality_plus_half_db(method):
    assert bd_psnr(R, D, R, D + 0.5, method=method) == pytest.approx(0.5, abs=1e-9)
    assert bd_psnr(R, D, R, D - 0.25, method=method) == pytest.approx(-0.25, abs=1e-9)


def test_analytic_linear_gap():
    # anchor: ln r = d/10; test: ln r = d/10 + 0.05 (d - 30). Over d in [30, 40] the mean gap in
    # ln r is 0.05 * 5 = 0.25, so BD-rate = e^0.25 - 1 = +28.4025%. pchip reproduces lines exactly.
    d = np.linspace(30, 40, 6)
    ra = np.exp(d / 10)
    rb = np.exp(d / 10 + 0.05 * (d - 30))
    assert bd_rate(ra, d, rb, d) == pytest.approx((math.exp(0.25) - 1) * 100, abs=1e-9)


def test_analytic_cubic_gap_with_cubic_fit():
    # ln r = cubic in d (4 points: the VCEG-M33 cubic fit is exact); gap 0.02 (d - 30) -> mean 0.1
    d = np.array([30.0, 33.0, 36.0, 40.0])
    f = 0.001 * (d - 35) ** 3 + 0.1 * d - 3
    ra, rb = np.exp(f), np.exp(f + 0.02 * (d - 30))
    assert bd_rate(ra, d, rb, d, method="cubic") == pytest.approx((math.exp(0.1) - 1) * 100, abs=1e-9)


def test_only_overlap_counts():
    # the test curve is the anchor 20% cheaper but covers only its upper half: the integral runs
    # over the overlapping quality interval only (linear ln-rate, so pchip is exact on any subset)
    d = np.linspace(28, 38, 6)
    r = np.exp(d / 8)
    assert bd_rate(r, d, 0.8 * r[3:], d[3:]) == pytest.approx(-20.0, abs=1e-9)
    assert bd_psnr(r, d, r[:3], d[:3] + 1.0) == pytest.approx(1.0, abs=1e-9)


def test_order_and_duplicates_do_not_matter():
    perm = np.array([3, 0, 4, 2, 1])
    a = bd_rate(R, D, 0.7 * R, D + 0.3)
    b = bd_rate(R[perm], D[perm], 0.7 * R[perm], (D + 0.3)[perm])
    assert a == pytest.approx(b, abs=1e-12)
    assert a < -30  # fewer bits *and* higher quality: clearly better
    rr = np.append(R, R[2])
    dd = np.append(D, D[2])
    assert bd_rate(rr, dd, 0.9 * R, D) == pytest.approx(-10.0, abs=1e-9)


def test_undefined_cases_are_nan():
    assert math.isnan(bd_rate(R, D, R, D + 20))  # no overlap in quality
    assert math.isnan(bd_psnr(R, D, R * 100, D))  # no overlap in rate
    assert math.isnan(bd_rate(R[:1], D[:1], R, D))  # one point is no curve
    assert math.isnan(bd_rate([np.nan, np.inf], [30, 31], R, D))


def test_bad_method():
    with pytest.raises(ValueError):
        bd_rate(R, D, R, D, method="spline")


def test_equivalent_rate_is_a_one_point_bd_rate():
    from raybb.evaluation.bd import equivalent_rate

    curve = [(0.1, 25.0), (0.2, 27.0), (0.4, 29.0)]
    assert equivalent_rate(curve, 0.2, 27.0) == pytest.approx(0.0, abs=1e-9)
    assert equivalent_rate(curve, 0.18, 27.0) == pytest.approx(-10.0)
    assert math.isnan(equivalent_rate(curve, 0.5, 30.0))  # above the curve's quality range
