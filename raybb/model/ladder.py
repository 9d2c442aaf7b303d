"""The two-level Probabilistic Ladder Network (PLN / γ-PLN) of raybb.

Data flow (shapes for an input of H×W; strides 16 and 64)::

      x (B,3,H,W) ──g_a──▶ bottom-up N(μx, σx²)  (B,M,H/16,W/16)
                               │ μx
                               ▼
                      h_a ──▶ q(z2|x) = N(μ2, σ2²)  (B,G,H/64,W/64)     p(z2) = N(0, I)
                               │ z2 ~ q(z2|x)
                               ▼
                      h_s ──▶ p(z1|z2) = N(μp, σp²)  (B,M,H/16,W/16)
                               │
          q(z1|z2,x) = N(μx,σx²)·N(μp,σp²)  (precision-weighted product)
                               │ z1 ~ q(z1|z2,x)
                               ▼
      x̂ (B,3,H,W) ◀──g_s──  z1          likelihood: Laplace(x | x̂, γ) or Gaussian N(x | x̂, γ²)

The rate of a coded sample is ≈ KL[q(z2|x)‖p(z2)] + KL[q(z1|z2,x)‖p(z1|z2)].
Level 1 follows Ballé et al. 2016/2018 (5×5 stride-2 convs, GDN/IGDN, mirror padding);
level 2 uses leaky ReLU (α=0.2) as in the seed.

The codec uses the pieces separately (``bottom_up``, ``posterior2``, ``prior1``,
``posterior1``, ``synthesize``) because it must compute p(z1|z2) from the *decoded* z2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from raybb.model.distributions import STD_FLOOR, Gaussian, likelihood_class, positive_scale, precision_weighted
from raybb.model.layers import GDN, MirrorConv2d, MirrorUpConv2d
from raybb.model.protocol import LatentSpec, RDTerms

__all__ = [
    "LadderConfig",
    "LadderNetwork",
    "LadderOutput",
    "TOTAL_STRIDE",
    "VARIANTS",
    "pad_to_stride",
    "parse_channels",
    "variant_of",
]

#: Level 1 downsamples by 16, level 2 by a further 4.
TOTAL_STRIDE = 64


@dataclass(frozen=True)
class LadderConfig:
    """Architecture hyper-parameters (stored in the weights metadata).

    Defaults are sized for training on 2 CPU cores: N=M=96 transform/latent channels instead of the
    seed's N=196, M=128 (a 4× cheaper g_a/g_s), with the seed's level-2 sizes F=128 → F=96, G=24.
    """

    N: int = 96  # channels of the level-1 transforms
    M: int = 96  # channels of z1
    F: int = 96  # channels of the level-2 transforms
    G: int = 24  # channels of z2
    learn_scale: bool = True  # γ-PLN (True) or plain PLN with a fixed scale (False)
    #: γ∞ for the γ-PLN, in units of the [0,1] pixel range; for the plain PLN the fixed scale
    #: itself (1.0 = the seed's unit-scale PLN, whose β range 0.01…1 assumes it).
    gamma_floor: float = 1.0 / 255.0
    #: p(x|z): "laplace" (an L1 loss; every shipped PLN) or "gaussian" (an MSE loss, what PSNR
    #: judges), both at scale γ as above. The codec does not depend on it (only training does).
    likelihood: str = "laplace"

    def to_dict(self) -> dict:
        """The metadata form. The default likelihood is omitted, so every config written before the
        field existed serialises (and fingerprints) exactly as it did."""
        d = asdict(self)
        if d["likelihood"] == "laplace":
            del d["likelihood"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LadderConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown LadderConfig fields: {sorted(unknown)}")
        return cls(**d)


#: The two model variants of the original PLN, as LadderConfig overrides. The plain PLN uses a *unit*
#: Laplace scale (its β range 0.01…1 assumes it); the γ-PLN learns γ ≥ γ∞ = 1/255.
VARIANTS: dict[str, dict] = {
    "pln": {"learn_scale": False, "gamma_floor": 1.0},
    "gamma-pln": {"learn_scale": True, "gamma_floor": 1.0 / 255.0},
}


def variant_of(config: LadderConfig) -> str:
    return "gamma-pln" if config.learn_scale else "pln"


def parse_channels(text: str) -> dict:
    """``"64,96,96,24"`` -> ``{"N": 64, "M": 96, "F": 96, "G": 24}`` (``--channels`` of every trainer;
    ValueError otherwise)."""
    try:
        n, m, f, g = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--channels needs four integers N,M,F,G, not {text!r}") from None
    if min(n, m, f, g) < 1:
        raise ValueError(f"--channels must be positive, not {text!r}")
    return {"N": n, "M": m, "F": f, "G": g}


@dataclass
class LadderOutput:
    """Everything one training/evaluation pass produces (per batch)."""

    x_hat: torch.Tensor  # reconstruction mean, (B,3,H,W), unclamped
    q2: Gaussian
    q1: Gaussian
    p1: Gaussian
    z2: torch.Tensor
    z1: torch.Tensor
    kl2: torch.Tensor  # (B,) nats, KL[q(z2|x) ‖ N(0,I)]
    kl1: torch.Tensor  # (B,) nats, KL[q(z1|z2,x) ‖ p(z1|z2)]
    nll: torch.Tensor  # (B,) nats, -log p(x | z1)


def pad_to_stride(x: torch.Tensor, stride: int = TOTAL_STRIDE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad (B,C,H,W) on the bottom/right to a multiple of ``stride``; returns (padded, (H, W))."""
    h, w = x.shape[-2:]
    ph = (-h) % stride
    pw = (-w) % stride
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class LadderNetwork(nn.Module):
    """The seed's PLN / γ-PLN; implements ``raybb.model.protocol.LatentModel`` (arch "pln")."""

    arch = "pln"
    pad_stride = TOTAL_STRIDE
    rate_levels = 0  # fixed rate: one network per β

    def __init__(self, config: LadderConfig | None = None):
        super().__init__()
        self.config = c = config or LadderConfig()
        N, M, Fc, G = c.N, c.M, c.F, c.G
        self.g_a = nn.Sequential(
            MirrorConv2d(3, N, 5, 2), GDN(N),
            MirrorConv2d(N, N, 5, 2), GDN(N),
            MirrorConv2d(N, N, 5, 2), GDN(N),
            MirrorConv2d(N, 2 * M, 5, 2),
        )  # fmt: skip
        self.g_s = nn.Sequential(
            MirrorUpConv2d(M, N, 5), GDN(N, inverse=True),
            MirrorUpConv2d(N, N, 5), GDN(N, inverse=True),
            MirrorUpConv2d(N, N, 5), GDN(N, inverse=True),
            MirrorUpConv2d(N, 3, 5),
        )  # fmt: skip
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.h_a = nn.Sequential(
            MirrorConv2d(M, Fc, 3, 1), act(),
            MirrorConv2d(Fc, Fc, 5, 2), act(),
            MirrorConv2d(Fc, 2 * G, 5, 2),
        )  # fmt: skip
        self.h_s = nn.Sequential(
            MirrorUpConv2d(G, Fc, 5), act(),
            MirrorUpConv2d(Fc, Fc, 5), act(),
            MirrorConv2d(Fc, 2 * M, 3, 1),
        )  # fmt: skip
        self.likelihood = likelihood_class(c.likelihood)(3, learn_scale=c.learn_scale, gamma_floor=c.gamma_floor)
        # Training-only mixed precision (``TrainConfig.precision``): the four convolution stacks
        # run under autocast in this dtype; their outputs, the Gaussians, KLs and likelihood stay
        # float32. None (the default, and always in the codec) = plain float32, bit-reproducible.
        self.compute_dtype: torch.dtype | None = None
        self._init_posterior_scales()

    def _init_posterior_scales(self, std: float = 0.1) -> None:
        """Start the posteriors narrow (σ ≈ 0.1 instead of softplus(0) ≈ 0.69).

        A wide initial posterior drowns the small initial latent means in noise, and only the
        output biases can narrow it coherently, at ~lr per step: training then spends thousands
        of steps at a low rate and low PSNR. Starting narrow lets the model first learn as an
        autoencoder while the KL warm-up keeps β small.
        """
        raw = math.log(math.expm1(std - STD_FLOOR))
        with torch.no_grad():
            self.g_a[-1].conv.bias[self.config.M :].fill_(raw)
            self.h_a[-1].conv.bias[self.config.G :].fill_(raw)

    # -- the pieces the codec composes ------------------------------------------------------
    def _stack(self, stack: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.compute_dtype is None:
            return stack(x)
        with torch.autocast(x.device.type, dtype=self.compute_dtype):
            y = stack(x)
        return y.float()

    @staticmethod
    def _split(t: torch.Tensor) -> Gaussian:
        mean, raw = t.chunk(2, dim=1)
        return Gaussian(mean, positive_scale(raw))

    def bottom_up(self, x: torch.Tensor) -> Gaussian:
        """N(μx, σx²): the level-1 encoder's estimate of z1 from the (padded) image in [0,1]."""
        return self._split(self._stack(self.g_a, x * 2.0 - 1.0))

    def posterior2(self, bottom_up: Gaussian) -> Gaussian:
        """q(z2|x), computed from the bottom-up *mean* only."""
        return self._split(self._stack(self.h_a, bottom_up.mean))

    @staticmethod
    def prior2_like(q2: Gaussian) -> Gaussian:
        """p(z2) = N(0, I)."""
        return Gaussian(torch.zeros_like(q2.mean), torch.ones_like(q2.std))

    def prior1(self, z2: torch.Tensor) -> Gaussian:
        """p(z1|z2) from a (decoded) z2 sample."""
        return self._split(self._stack(self.h_s, z2))

    @staticmethod
    def posterior1(bottom_up: Gaussian, prior1: Gaussian) -> Gaussian:
        return precision_weighted(bottom_up, prior1)

    def synthesize(self, z1: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean x̂ in [0,1] units (unclamped; callers clamp for display)."""
        return (self._stack(self.g_s, z1) + 1.0) * 0.5

    # -- the LatentModel protocol (raybb.model.protocol): z2 is coded first (level 2), then z1 (level 1)
    def latents(self) -> tuple[LatentSpec, ...]:
        c = self.config
        return (LatentSpec(2, c.G, TOTAL_STRIDE), LatentSpec(1, c.M, TOTAL_STRIDE // 4))

    def conditioning(self, rate: int | None = None, batch: int = 1, device=None) -> None:
        if rate is not None:
            raise ValueError("the PLN is a fixed-rate model: it takes no rate index")
        return None

    def analyze(self, x: torch.Tensor, cond=None) -> Gaussian:
        return self.bottom_up(x)

    def prior(self, index: int, decoded: list[torch.Tensor], cond, shape: tuple[int, ...]) -> Gaussian:
        if index == 0:
            zeros = torch.zeros(shape, device=self.g_s[0].conv.conv.weight.device)
            return Gaussian(zeros, torch.ones_like(zeros))
        if index == 1:
            return self.prior1(decoded[0])
        raise IndexError(f"the PLN has 2 latents, not {index + 1}")

    def posterior(self, index: int, features: Gaussian, decoded, prior: Gaussian, cond=None) -> Gaussian:
        if index == 0:
            return self.posterior2(features)
        if index == 1:
            return self.posterior1(features, prior)
        raise IndexError(f"the PLN has 2 latents, not {index + 1}")

    def reconstruct(self, decoded: list[torch.Tensor], cond=None) -> torch.Tensor:
        return self.synthesize(decoded[-1])

    def rd_terms(self, x: torch.Tensor, beta: torch.Tensor | None = None, sample: bool = True) -> RDTerms:
        out = self.forward(x, sample=sample)
        return RDTerms(x_hat=out.x_hat, nll=out.nll, kl=out.kl1 + out.kl2, kl_by_level={2: out.kl2, 1: out.kl1})

    # -- training / evaluation pass ---------------------------------------------------------
    def forward(self, x: torch.Tensor, sample: bool = True) -> LadderOutput:
        """x: (B,3,H,W) in [0,1], H and W multiples of 64 (use ``pad_to_stride``).

        ``sample=False`` uses posterior means instead of samples (the "posterior mean" reconstruction).
        """
        bu = self.bottom_up(x)
        q2 = self.posterior2(bu)
        z2 = q2.rsample() if sample else q2.mean
        p1 = self.prior1(z2)
        q1 = self.posterior1(bu, p1)
        z1 = q1.rsample() if sample else q1.mean
        x_hat = self.synthesize(z1)
        kl2 = q2.kl_standard().flatten(1).sum(1)
        kl1 = q1.kl(p1).flatten(1).sum(1)
        nll = self.likelihood.nll(x, x_hat).flatten(1).sum(1)
        return LadderOutput(x_hat=x_hat, q2=q2, q1=q1, p1=p1, z2=z2, z1=z1, kl2=kl2, kl1=kl1, nll=nll)
