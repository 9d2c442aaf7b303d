"""Building blocks of the ladder network: GDN/IGDN and mirror-padded ("same") convolutions.

Why mirror padding: zero padding makes borders darker in the analysis transform and leaks a
constant into the latents near the edges, which costs bits; reflecting the signal (as
tensorflow-compression's ``SignalConv2D(padding="reflect")`` does) avoids it.

Upsampling is a mirror-padded convolution followed by a pixel shuffle (sub-pixel convolution),
so the synthesis transform is mirror-padded too; a transposed convolution cannot be.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GDN", "MirrorConv2d", "MirrorUpConv2d", "mirror_pad"]


def mirror_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad by ``pad`` on all sides; replicate when a map is too small to reflect.

    Reflection needs ``size > pad``; the deepest maps of a tiny image (e.g. 1x1 z2) are smaller.
    """
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    mode = "reflect" if (h > pad and w > pad) else "replicate"
    return F.pad(x, (pad, pad, pad, pad), mode=mode)


class MirrorConv2d(nn.Module):
    """k×k convolution, stride s, "same" output size ceil(n/s), mirror padding."""

    def __init__(self, cin: int, cout: int, kernel: int = 5, stride: int = 1):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError("kernel must be odd for symmetric 'same' padding")
        self.pad = kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(mirror_pad(x, self.pad))


class MirrorUpConv2d(nn.Module):
    """×2 upsampling: mirror-padded k×k conv to 4·cout channels, then pixel shuffle."""

    def __init__(self, cin: int, cout: int, kernel: int = 5):
        super().__init__()
        self.conv = MirrorConv2d(cin, cout * 4, kernel, stride=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


class _NonNegative(nn.Module):
    """Reparametrize a non-negative parameter as (p² − pedestal) bounded below (Ballé 2018).

    Optimizing p with p² = value + pedestal keeps gradients alive near zero, where a plain clamp
    would stop them. Mirrors CompressAI's ``NonNegativeParametrizer``.
    """

    def __init__(self, minimum: float = 0.0, reparam_offset: float = 2**-18):
        super().__init__()
        self.pedestal = reparam_offset**2
        self.bound = (minimum + self.pedestal) ** 0.5

    def init(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.clamp(x + self.pedestal, min=self.pedestal))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LowerBound.apply(x, self.bound) ** 2 - self.pedestal


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still flows when it would push x back above the bound.

    A plain clamp has zero gradient below the bound, so a GDN parameter that once crossed it
    could never recover (CompressAI's ``LowerBound`` behaves the same way as this).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return torch.clamp(x, min=bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (grad < 0)
        return grad * pass_through.to(grad.dtype), None


class GDN(nn.Module):
    """Generalized divisive normalization: y_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²) (IGDN multiplies).

    The Gaussianizing nonlinearity of Ballé et al. 2016: it makes the latents closer to
    independent Gaussians, which is exactly what a diagonal posterior/prior model needs.
    """

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta_reparam = _NonNegative(minimum=beta_min)
        self.gamma_reparam = _NonNegative()
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(channels)))
        self.gamma = nn.Parameter(self.gamma_reparam.init(gamma_init * torch.eye(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(c, c, 1, 1)
        norm = torch.sqrt(F.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm
