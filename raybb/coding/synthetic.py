"""Synthetic (q, p) pairs shaped like a learned codec's latents, for tests, tables and benchmarks.

Per-dimension KL is heavy-tailed with many dims near zero (as in a Kodak latent of a trained
model: most channels are "off"): a fraction ``active`` of dims draws a log-normal KL, the rest a
tiny exponential one; the vector is rescaled to the requested total.  Each dim's KL is split at
random between a mean shift and a std shrink (solved exactly), and a few dims get a posterior
*wider* than the prior, which stresses the samplers' unbounded-ratio paths.
"""

from __future__ import annotations

import math

import torch

from raybb.coding.base import DiagGaussian

__all__ = ["make_pair", "std_pair"]


def _shrink_for(kl_nats: torch.Tensor) -> torch.Tensor:
    """Solve -log s + (s^2 - 1)/2 = k for s in (0, 1] (Newton on t = -log s, float64)."""
    t = kl_nats + 0.5  # start above the root: f(t) = t + (exp(-2t) - 1)/2 - k is increasing
    for _ in range(30):
        f = t + 0.5 * (torch.exp(-2 * t) - 1) - kl_nats
        t = (t - f / (1 - torch.exp(-2 * t)).clamp_min(1e-12)).clamp_min(0.0)
    return torch.exp(-t)


def std_pair(
    d: int, total_kl_bits: float, seed: int = 0, active: float = 0.35, max_dim_kl_bits: float = 24.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardized posterior (m, s) (prior N(0, 1)) with the requested total KL in bits."""
    g = torch.Generator().manual_seed(seed)
    is_on = torch.rand(d, generator=g, dtype=torch.float64) < active
    k = torch.where(
        is_on,
        torch.exp(torch.randn(d, generator=g, dtype=torch.float64) * 1.0),
        torch.empty(d, dtype=torch.float64).exponential_(1.0, generator=g) * 0.02,
    )
    k = k * (total_kl_bits / float(k.sum()))
    k = k.clamp(max=max_dim_kl_bits)
    k = k * (total_kl_bits / float(k.sum()))
    nats = k * math.log(2.0)
    phi = torch.rand(d, generator=g, dtype=torch.float64)  # share of KL in the variance
    s = _shrink_for(phi * nats)
    m = torch.sqrt(2 * (1 - phi) * nats) * torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0)
    wide = (torch.rand(d, generator=g, dtype=torch.float64) < 0.03) & ~is_on
    s = torch.where(wide, 1.0 + 0.3 * torch.rand(d, generator=g, dtype=torch.float64), s)
    return m.float(), s.float()


def make_pair(d: int, total_kl_bits: float, seed: int = 0, **kw) -> tuple[DiagGaussian, DiagGaussian]:
    """(q, p) in the original space: random prior mean/std, posterior from :func:`std_pair`."""
    m, s = std_pair(d, total_kl_bits, seed, **kw)
    g = torch.Generator().manual_seed(seed + 1_000_003)
    pm = torch.randn(d, generator=g)
    ps = torch.exp(0.5 * torch.randn(d, generator=g))
    q = DiagGaussian(pm + ps * m, ps * s)
    return q, DiagGaussian(pm, ps)
