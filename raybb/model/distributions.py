"""Densities used by the ladder network: diagonal Gaussians (posteriors and priors) and the
likelihoods p(x|z): Laplace (an L1 loss, the shipped PLNs') or Gaussian (an MSE loss, what PSNR
judges), each with a fixed scale or an optional learned one γ (the γ-PLN).

Kept free of any coding logic: the coded samplers receive plain (mean, std) tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Gaussian",
    "GaussianLikelihood",
    "LaplaceLikelihood",
    "LIKELIHOODS",
    "likelihood_class",
    "precision_weighted",
    "positive_scale",
]

#: Lower bound on every latent standard deviation: keeps log-densities finite and the KL of a
#: collapsed dimension bounded (σ=1e-3 in a standardized prior is ~10 bits).
STD_FLOOR = 1e-3


def positive_scale(raw: torch.Tensor) -> torch.Tensor:
    """Map an unconstrained network output to a standard deviation (softplus, floored)."""
    return F.softplus(raw) + STD_FLOOR


@dataclass
class Gaussian:
    """A diagonal Gaussian N(mean, std²) over a latent tensor of shape (B, C, H, W)."""

    mean: torch.Tensor
    std: torch.Tensor

    def rsample(self, noise: torch.Tensor | None = None) -> torch.Tensor:
        eps = torch.randn_like(self.mean) if noise is None else noise
        return self.mean + self.std * eps

    def kl(self, other: Gaussian) -> torch.Tensor:
        """Elementwise KL[self ‖ other] in nats (analytic)."""
        var_ratio = (self.std / other.std) ** 2
        t = ((self.mean - other.mean) / other.std) ** 2
        return 0.5 * (var_ratio + t - 1.0 - torch.log(var_ratio))

    def kl_standard(self) -> torch.Tensor:
        """Elementwise KL[self ‖ N(0, 1)] in nats."""
        return 0.5 * (self.std**2 + self.mean**2 - 1.0) - torch.log(self.std)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((z - self.mean) / self.std) ** 2 - torch.log(self.std) - 0.5 * math.log(2 * math.pi)


def precision_weighted(bottom_up: Gaussian, top_down: Gaussian) -> Gaussian:
    """Ladder posterior q(z1|z2,x) ∝ N(μx, σx²)·N(μp, σp²) (Sønderby et al. 2016).

    precision = 1/σx² + 1/σp²;  mean = (μx/σx² + μp/σp²) / precision.
    Each mean is weighted by *its own* precision. The seed's printed formula swaps the weights
    (μx/σp² + μp/σx²); that is not the product of the two Gaussians, so we do not reproduce it.
    """
    px = bottom_up.std.pow(-2)
    pp = top_down.std.pow(-2)
    prec = px + pp
    mean = (bottom_up.mean * px + top_down.mean * pp) / prec
    return Gaussian(mean, prec.rsqrt())


class LaplaceLikelihood(nn.Module):
    """-log Laplace(x | x̂, γ) per subpixel, x in [0, 1].

    ``learn_scale=True`` (γ-PLN): one γ per colour channel, γ = γ∞ + softplus(raw), so the model
    can trade distortion for rate on its own and γ never collapses below the floor γ∞.
    ``learn_scale=False`` (plain PLN): γ fixed to ``gamma_floor``.
    """

    def __init__(self, channels: int = 3, learn_scale: bool = True, gamma_floor: float = 1.0 / 255.0):
        super().__init__()
        self.learn_scale = learn_scale
        self.gamma_floor = gamma_floor
        # start at γ ≈ γ∞ + 0.05 (a typical untrained error of ~13/255)
        self.raw_gamma = nn.Parameter(torch.full((channels,), math.log(math.expm1(0.05))), requires_grad=learn_scale)

    def gamma(self) -> torch.Tensor:
        if not self.learn_scale:
            return torch.full_like(self.raw_gamma, self.gamma_floor)
        return self.gamma_floor + F.softplus(self.raw_gamma)

    def nll(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        g = self.gamma().view(1, -1, 1, 1)
        return (x - x_hat).abs() / g + torch.log(2 * g)


class GaussianLikelihood(LaplaceLikelihood):
    """-log N(x | x̂, γ²) per subpixel, x in [0,1]: an MSE loss (what PSNR judges). The same γ as
    ``LaplaceLikelihood`` (fixed at ``gamma_floor`` or learned above it) and the same parameter
    (``raw_gamma``), so a network's tensors do not depend on its likelihood; only the density does."""

    def nll(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        g = self.gamma().view(1, -1, 1, 1)
        return 0.5 * ((x - x_hat) / g) ** 2 + torch.log(g) + 0.5 * math.log(2 * math.pi)


#: likelihood names as written in weights metadata (never rename or reuse one)
LIKELIHOODS: dict[str, type[LaplaceLikelihood]] = {"laplace": LaplaceLikelihood, "gaussian": GaussianLikelihood}


def likelihood_class(name: str) -> type[LaplaceLikelihood]:
    """The likelihood module for a config's ``likelihood`` name; ValueError for an unknown one."""
    try:
        return LIKELIHOODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"bad architecture: likelihood={name!r} (one of {sorted(LIKELIHOODS)})") from None
