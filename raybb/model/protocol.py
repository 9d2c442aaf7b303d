"""The interface a raybb model implements, so the codec and the trainers are not wired to two levels.

A model is a chain of coded latents z_0, z_1, ..., z_{K-1} in *coding order* (the order the
encoder codes them and the decoder rebuilds them), plus a synthesis from all of them. For each
latent the model gives

* its prior p(z_i | z_<i), computed from the already-*decoded* latents only (so the decoder can
  repeat it exactly); the first latent's prior may be fixed (the PLN's N(0, I));
* its posterior q(z_i | x, z_<i), from the image's analysis features and the decoded latents;

and the codec codes each latent with a coded sampler against its prior, in order. This is what
CompressAI's ``CompressionModel`` is to quantised models, for coded sampling: the generic coding
path is ``raybb.levels`` (and ``raybb.codec.Codec``, which adds tiling, refinement and rate
settings), the architecture registry ``raybb.model.arch``.

Every latent has a *level id*, the integer that names its section in the bitstream and its stream
of shared randomness (``StreamKey(seed, 0, level)``); ids are unique within a model and never
change for a shipped architecture (the PLN: 2 = z2, 1 = z1).

Variable-rate models are conditioned on β. The codec passes an integer *rate index*
``r in [0, rate_levels)`` (written in the bitstream); ``conditioning(r)`` turns it into whatever the
network needs. Fixed-rate models have ``rate_levels == 0`` and take ``rate=None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from raybb.model.distributions import Gaussian

__all__ = ["LatentSpec", "RDTerms", "LatentModel"]


@dataclass(frozen=True)
class LatentSpec:
    """One coded latent: its level id, channel count and spatial stride (relative to the padded image)."""

    level: int
    channels: int
    stride: int

    def shape(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(1, C, H/stride, W/stride) for a *padded* image of height × width."""
        if height % self.stride or width % self.stride:
            raise ValueError(f"{height}x{width} is not a multiple of the stride {self.stride}")
        return (1, self.channels, height // self.stride, width // self.stride)


@dataclass
class RDTerms:
    """What one training pass yields per example: the pieces of the rate-distortion loss, in nats."""

    x_hat: torch.Tensor  # (B,3,H,W) reconstruction mean in [0,1] units, unclamped
    nll: torch.Tensor  # (B,) -log p(x | z)
    kl: torch.Tensor  # (B,) Σ_i KL[q_i ‖ p_i]
    kl_by_level: dict[int, torch.Tensor] = field(default_factory=dict)  # level id -> (B,)


@runtime_checkable
class LatentModel(Protocol):
    """What the generic coder (``raybb.levels``) and the trainers need from a model."""

    arch: ClassVar[str]  # the architecture's registry name (``raybb.arch`` in weights files)
    config: Any  # a dataclass with to_dict/from_dict (``raybb.config`` in weights files)
    pad_stride: int  # images are padded to a multiple of this
    rate_levels: int  # 0 = fixed rate; else the number of rate indices the bitstream may carry

    def latents(self) -> tuple[LatentSpec, ...]:
        """The coded latents in coding order."""
        ...

    def conditioning(self, rate: int | None, batch: int = 1, device: torch.device | None = None) -> Any:
        """The network's conditioning for a rate index (None for fixed-rate models)."""
        ...

    def analyze(self, x: torch.Tensor, cond: Any) -> Any:
        """Analysis features of a padded image in [0,1] (whatever ``posterior`` needs)."""
        ...

    def prior(self, index: int, decoded: list[torch.Tensor], cond: Any, shape: tuple[int, ...]) -> Gaussian:
        """p(z_index | z_<index) from the decoded latents (``shape`` = that latent's shape)."""
        ...

    def posterior(self, index: int, features: Any, decoded: list[torch.Tensor], prior: Gaussian, cond: Any) -> Gaussian:
        """q(z_index | x, z_<index); ``prior`` is ``prior(index, decoded, ...)``, passed to save recomputing it."""
        ...

    def reconstruct(self, decoded: list[torch.Tensor], cond: Any) -> torch.Tensor:
        """x̂ in [0,1] units (unclamped) from all decoded latents."""
        ...

    def rd_terms(self, x: torch.Tensor, beta: torch.Tensor | None = None, sample: bool = True) -> RDTerms:
        """A training pass; ``beta`` (B,) conditions a variable-rate model (ignored by fixed-rate ones)."""
        ...
