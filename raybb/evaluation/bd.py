"""Bjøntegaard deltas: the average rate (or quality) difference between two rate-distortion curves.

Convention: ``bd_rate(rate_a, dist_a, rate_b, dist_b)`` is the average rate change of curve *b*
(test) relative to curve *a* (anchor) at equal quality, in percent; negative means *b* needs
fewer bits. ``bd_psnr`` is the average quality gap at equal rate, in dB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bd_rate", "bd_psnr", "equivalent_rate"]


def _curve(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Finite points sorted by x, duplicate x merged (mean y): what a monotone fit needs."""
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"rate and distortion lengths differ: {xa.shape} vs {ya.shape}")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if xa.size == 0:
        return xa, ya
    ux, inv = np.unique(xa, return_inverse=True)
    uy = np.bincount(inv, weights=ya) / np.bincount(inv)
    return ux, uy


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        return float(PchipInterpolator(x, y).integrate(lo, hi))
    if method == "cubic":
        p = np.polyint(np.polyfit(x, y, min(3, x.size - 1)))
        return float(np.polyval(p, hi) - np.polyval(p, lo))
    raise ValueError(f"method must be 'pchip' or 'cubic', not {method!r}")


def _log_rates(rate: Sequence[float]) -> np.ndarray:
    r = np.asarray(rate, dtype=np.float64).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, np.log(np.where(r > 0, r, 1.0)), np.nan)


def bd_rate(
    rate_a: Sequence[float],
    dist_a: Sequence[float],
    rate_b: Sequence[float],
    dist_b: Sequence[float],
    *,
    method: str = "pchip",
) -> float:
    """Bjøntegaard delta rate of curve b vs anchor a, in percent (negative = b saves bits).

    Fits log(rate) as a function of distortion (a quality in dB: PSNR or MS-SSIM dB) for each
    curve -- piecewise cubic Hermite (``"pchip"``, the modern VCEG/JVET practice, default) or a
    cubic polynomial (``"cubic"``, VCEG-M33) -- and integrates both over the overlapping quality
    interval. Returns NaN when a curve has fewer than two usable points or the curves do not
    overlap in quality.
    """
    xa, ya = _curve(dist_a, _log_rates(rate_a))
    xb, yb = _curve(dist_b, _log_rates(rate_b))
    if xa.size < 2 or xb.size < 2:
        return math.nan
    lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if not hi > lo:
        return math.nan
    avg = (_integral(xb, yb, lo, hi, method) - _integral(xa, ya, lo, hi, method)) / (hi - lo)
    return (math.exp(avg) - 1.0) * 100.0


def bd_psnr(
    rate_a: Sequence[float],
    dist_a: Sequence[float],
    rate_b: Sequence[float],
    dist_b: Sequence[float],
    *,
    method: str = "pchip",
) -> float:
    """Bjøntegaard delta quality of b vs a (dB; positive = b better at equal rate), or NaN.

    Fits distortion as a function of log(rate) and averages the gap over the overlapping
    log-rate interval. Works for any dB-scaled quality (PSNR, MS-SSIM dB).
    """
    xa, ya = _curve(_log_rates(rate_a), dist_a)
    xb, yb = _curve(_log_rates(rate_b), dist_b)
    if xa.size < 2 or xb.size < 2:
        return math.nan
    lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if not hi > lo:
        return math.nan
    return (_integral(xb, yb, lo, hi, method) - _integral(xa, ya, lo, hi, method)) / (hi - lo)


def equivalent_rate(curve: Sequence[tuple[float, float]], bpp: float, quality: float) -> float:
    """A one-point BD-rate: ``bpp`` against the curve's bpp at the same ``quality`` (pchip on
    log-bpp over the curve's (bpp, quality) points), minus 1, in percent; NaN outside the curve's
    quality range or on a curve whose quality is not increasing."""
    from scipy.interpolate import PchipInterpolator

    pts = sorted((q, math.log(b)) for b, q in curve)
    qs, lb = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    if not (qs[0] <= quality <= qs[-1]) or np.any(np.diff(qs) <= 0):
        return math.nan
    return (bpp / math.exp(float(PchipInterpolator(qs, lb)(quality))) - 1.0) * 100.0
