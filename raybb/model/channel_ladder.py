"""The channel-conditional, variable-rate ladder network (architecture "channel-ladder").

Like the PLN it is a two-scale ladder coded by coded sampling, but

* the transforms are wide (N=128, M=192 by default: bmshj2018's width), and the synthesis
  upsamples with 3×3 sub-pixel convolutions (a 5×5 one costs 4× the weights of a transposed
  convolution; 3×3 keeps g_s at ~2 M parameters so the float16 file fits the 16 MiB budget);
* level 1 is coded as K channel slices z1 = (s_0, ..., s_{K-1}) (Minnen & Singh 2020 for
  quantised latents; here each slice is one more ladder step). Slice k has a top-down prior from
  z2 *and the slices already decoded*, p(s_k | z2, s_<k), and a precision-weighted posterior
  q(s_k | x, z2, s_<k) ∝ N(μx_k, σx_k²)·p(s_k | ...), as the PLN's level 1 has;
* one network serves all rates: encoder, priors and decoder are conditioned on β through learned
  per-channel gain vectors placed at ``beta_anchors`` points of the log-β axis and interpolated
  linearly between them (identity at initialisation). Training samples β per example,
  log-uniformly over [beta_min, beta_max]; the codec passes an integer rate index
  r ∈ [0, rate_levels): β = beta_max · (beta_min / beta_max)^(r / (rate_levels − 1)), so a higher
  index is a lower β, more bits and higher quality;
* the likelihood is a Gaussian (MSE, what PSNR judges) or the PLN's Laplace (L1).

Coding order and level ids: z2 (level 2, prior N(0, I)), then slice 0 (level 1, the PLN's z1 id),
slice k ≥ 1 (level k + 2). Data flow for an H×W image (strides 16 and 64)::

    x ─g_a─▶ N(μx, σx²) (M ch) ─h_a(μx)─▶ q(z2|x) ─▶ z2 ─h_s─▶ ctx (F ch, stride 16)
    for k: p(s_k) = prior_k([ctx, s_0..s_{k-1}]);  q(s_k) = N(μx_k, σx_k²)·p(s_k);  s_k ~ q(s_k)
    x̂ = g_s([s_0 .. s_{K-1}])
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from raybb.model.distributions import (
    STD_FLOOR,
    Gaussian,
    GaussianLikelihood,
    LaplaceLikelihood,
    positive_scale,
    precision_weighted,
)
from raybb.model.layers import GDN, MirrorConv2d, MirrorUpConv2d
from raybb.model.protocol import LatentSpec, RDTerms

__all__ = ["ChannelLadderConfig", "ChannelLadderNetwork", "GaussianLikelihood", "BetaGain", "LIKELIHOODS"]

TOTAL_STRIDE = 64
LIKELIHOODS = ("gaussian", "laplace")
MAX_SLICES = 32


@dataclass(frozen=True)
class ChannelLadderConfig:
    """Architecture hyper-parameters (stored in the weights metadata)."""

    N: int = 128  # level-1 transform channels
    M: int = 192  # channels of z1 (the sum of the slices)
    F: int = 128  # level-2 transform channels (and of the context h_s(z2))
    G: int = 32  # channels of z2
    slices: tuple[int, ...] = (16, 16, 32, 64, 64)  # z1's channel slices in coding order
    prior_hidden: int = 128  # width of each slice's prior network
    likelihood: str = "gaussian"  # "gaussian" (MSE) or "laplace" (L1)
    learn_scale: bool = False  # a learned likelihood scale ≥ gamma_floor (fixed-rate models only)
    gamma_floor: float = 1.0 / 255.0  # the fixed likelihood scale (or its floor), [0,1] pixel units
    #: β range of the variable-rate model. With the Gaussian at scale 1/255 the loss per pixel is
    #: 3·65025·MSE/2 + β·KL, i.e. CompressAI's λ·255²·MSE + bpp with λ = 3 / (2 ln2 · β):
    #: β 4…2048 is λ ≈ 0.54…0.0011 (CompressAI's eight qualities span 0.18…0.0018).
    beta_min: float = 4.0
    beta_max: float = 2048.0
    beta_anchors: int = 8  # gain vectors along log β; 0 = a fixed-rate model (no conditioning)
    rate_levels: int = 256  # rate indices a bitstream may carry (0 when beta_anchors == 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["slices"] = list(self.slices)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ChannelLadderConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ChannelLadderConfig fields: {sorted(unknown)}")
        d = dict(d)
        if isinstance(d.get("slices"), list):
            d["slices"] = tuple(d["slices"])
        return cls(**d)

    def check(self) -> None:
        """ValueError("bad architecture: ...") for values the network cannot be built from."""

        def bad(msg: str) -> ValueError:
            return ValueError(f"bad architecture: {msg}")

        for name in ("N", "M", "F", "G", "prior_hidden"):
            v = getattr(self, name)
            if type(v) is not int or not 1 <= v <= 4096:
                raise bad(f"{name}={v!r} (not an int in 1..4096)")
        s = self.slices
        if not isinstance(s, tuple) or not 1 <= len(s) <= MAX_SLICES or any(type(c) is not int or c < 1 for c in s):
            raise bad(f"slices={s!r} (1..{MAX_SLICES} positive ints)")
        if sum(s) != self.M:
            raise bad(f"slices {s} sum to {sum(s)}, not M={self.M}")
        if self.likelihood not in LIKELIHOODS:
            raise bad(f"likelihood={self.likelihood!r} (one of {LIKELIHOODS})")
        if type(self.learn_scale) is not bool:
            raise bad(f"learn_scale={self.learn_scale!r}")
        for name in ("gamma_floor", "beta_min", "beta_max"):
            v = getattr(self, name)
            if type(v) not in (int, float) or not (math.isfinite(v) and v > 0):
                raise bad(f"{name}={v!r} (expected a positive number)")
        if type(self.beta_anchors) is not int or not (self.beta_anchors == 0 or 2 <= self.beta_anchors <= 64):
            raise bad(f"beta_anchors={self.beta_anchors!r} (0, or 2..64)")
        if self.beta_anchors:
            if not self.beta_min < self.beta_max:
                raise bad(f"beta_min={self.beta_min} must be below beta_max={self.beta_max}")
            if type(self.rate_levels) is not int or not 2 <= self.rate_levels <= 65535:
                raise bad(f"rate_levels={self.rate_levels!r} (2..65535 for a variable-rate model)")
            if self.learn_scale:
                raise bad("a variable-rate model needs a fixed likelihood scale (learn_scale=False)")
        elif self.rate_levels != 0:
            raise bad("a fixed-rate model (beta_anchors=0) has rate_levels=0")

    # -- the rate index <-> β map (the integer in the bitstream) -----------------------------
    def beta_of_rate(self, rate: int) -> float:
        if not self.rate_levels or not 0 <= rate < self.rate_levels:
            raise ValueError(f"rate index {rate!r} outside 0..{self.rate_levels - 1}")
        return self.beta_max * (self.beta_min / self.beta_max) ** (rate / (self.rate_levels - 1))

    def rate_of_beta(self, beta: float) -> int:
        """The nearest rate index to β (clamped to the range)."""
        t = math.log(self.beta_max / beta) / math.log(self.beta_max / self.beta_min)
        return int(round(min(max(t, 0.0), 1.0) * (self.rate_levels - 1)))


class BetaGain(nn.Module):
    """Per-channel gains, learned at ``anchors`` points of t ∈ [0, 1] (t = position of log β in the
    range) and interpolated linearly in between; exp(0) = 1 at initialisation."""

    def __init__(self, channels: int, anchors: int):
        super().__init__()
        self.log_gain = nn.Parameter(torch.zeros(anchors, channels))

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.log_gain.shape[0]
        pos = t.float().clamp(0, 1) * (a - 1)
        i0 = pos.floor().clamp(max=a - 2).long()
        w = (pos - i0).unsqueeze(1)
        g = (1 - w) * self.log_gain[i0] + w * self.log_gain[i0 + 1]  # (B, C)
        return h * g.exp().to(h.dtype)[:, :, None, None]


class _Stack(nn.Module):
    """conv → act → [gain] → conv → ... → conv (no activation or gain after the last)."""

    def __init__(self, convs: list[nn.Module], acts: list[nn.Module], widths: list[int], anchors: int):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.acts = nn.ModuleList(acts)
        self.gains = nn.ModuleList(BetaGain(c, anchors) for c in widths) if anchors else None

    def forward(self, h: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        n = len(self.convs)
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < n - 1:
                h = self.acts[i](h)
                if self.gains is not None:
                    h = self.gains[i](h, t)
        return h


class ChannelLadderNetwork(nn.Module):
    """Implements ``raybb.model.protocol.LatentModel``; see the module docstring."""

    arch = "channel-ladder"
    pad_stride = TOTAL_STRIDE

    def __init__(self, config: ChannelLadderConfig | None = None):
        super().__init__()
        self.config = c = config or ChannelLadderConfig()
        c.check()
        self.rate_levels = c.rate_levels
        N, M, Fc, G, A = c.N, c.M, c.F, c.G, c.beta_anchors
        lrelu = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.g_a = _Stack(
            [MirrorConv2d(3, N, 5, 2), MirrorConv2d(N, N, 5, 2), MirrorConv2d(N, N, 5, 2),
             MirrorConv2d(N, 2 * M, 5, 2)],
            [GDN(N), GDN(N), GDN(N)], [N, N, N], A,
        )  # fmt: skip
        self.g_s = _Stack(
            [MirrorUpConv2d(M, N, 3), MirrorUpConv2d(N, N, 3), MirrorUpConv2d(N, N, 3), MirrorUpConv2d(N, 3, 3)],
            [GDN(N, inverse=True), GDN(N, inverse=True), GDN(N, inverse=True)], [N, N, N], A,
        )  # fmt: skip
        self.h_a = _Stack(
            [MirrorConv2d(M, Fc, 3, 1), MirrorConv2d(Fc, Fc, 5, 2), MirrorConv2d(Fc, 2 * G, 5, 2)],
            [lrelu(), lrelu()], [Fc, Fc], A,
        )  # fmt: skip
        self.h_s = _Stack(
            [MirrorUpConv2d(G, Fc, 3), MirrorUpConv2d(Fc, Fc, 3), MirrorConv2d(Fc, Fc, 3, 1)],
            [lrelu(), lrelu()], [Fc, Fc], A,
        )  # fmt: skip
        H = c.prior_hidden
        self.slice_priors = nn.ModuleList()
        offset = 0
        for ch in c.slices:
            self.slice_priors.append(
                _Stack(
                    [MirrorConv2d(Fc + offset, H, 3, 1), MirrorConv2d(H, H, 3, 1), MirrorConv2d(H, 2 * ch, 3, 1)],
                    [lrelu(), lrelu()],
                    [H, H],
                    A,
                )  # fmt: skip
            )
            offset += ch
        lik = GaussianLikelihood if c.likelihood == "gaussian" else LaplaceLikelihood
        self.likelihood = lik(3, learn_scale=c.learn_scale, gamma_floor=c.gamma_floor)
        #: training-only mixed precision, as LadderNetwork.compute_dtype (None in the codec)
        self.compute_dtype: torch.dtype | None = None
        self._ctx_cache: tuple | None = None
        self._init_posterior_scales()

    def _init_posterior_scales(self, std: float = 0.1) -> None:
        """Start the posteriors narrow, as the PLN does (see LadderNetwork._init_posterior_scales)."""
        raw = math.log(math.expm1(std - STD_FLOOR))
        with torch.no_grad():
            self.g_a.convs[-1].conv.bias[self.config.M :].fill_(raw)
            self.h_a.convs[-1].conv.bias[self.config.G :].fill_(raw)

    # -- helpers ------------------------------------------------------------------------------
    def _run(self, stack: _Stack, h: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        ctx = (
            torch.autocast(h.device.type, dtype=self.compute_dtype)
            if self.compute_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            y = stack(h, t)
        return y.float()

    @staticmethod
    def _split(t: torch.Tensor) -> Gaussian:
        mean, raw = t.chunk(2, dim=1)
        return Gaussian(mean, positive_scale(raw))

    def _device(self) -> torch.device:
        return self.likelihood.raw_gamma.device

    def beta_position(self, beta: torch.Tensor) -> torch.Tensor:
        """t ∈ [0,1]: where log β lies in [log beta_max, log beta_min] (0 = beta_max, the lowest rate)."""
        c = self.config
        b = torch.as_tensor(beta, dtype=torch.float32, device=self._device()).reshape(-1)
        return (math.log(c.beta_max) - b.log()) / math.log(c.beta_max / c.beta_min)

    def _bottom_up(self, x: torch.Tensor, t) -> Gaussian:
        return self._split(self._run(self.g_a, x * 2.0 - 1.0, t))

    def _context(self, z2: torch.Tensor, t) -> torch.Tensor:
        return self._run(self.h_s, z2, t)

    def _slice_prior(self, k: int, ctx: torch.Tensor, prev: list[torch.Tensor], t) -> Gaussian:
        inp = torch.cat([ctx, *prev], dim=1) if prev else ctx
        return self._split(self._run(self.slice_priors[k], inp, t))

    def _slice_bottom_up(self, bu: Gaussian, k: int) -> Gaussian:
        a = sum(self.config.slices[:k])
        b = a + self.config.slices[k]
        return Gaussian(bu.mean[:, a:b], bu.std[:, a:b])

    # -- the LatentModel protocol ---------------------------------------------------------------
    def latents(self) -> tuple[LatentSpec, ...]:
        c = self.config
        out = [LatentSpec(2, c.G, TOTAL_STRIDE)]
        out += [LatentSpec(1 if k == 0 else k + 2, ch, TOTAL_STRIDE // 4) for k, ch in enumerate(c.slices)]
        return tuple(out)

    def conditioning(self, rate: int | None, batch: int = 1, device=None) -> torch.Tensor | None:
        """t for a rate index (a (batch,) tensor), None for a fixed-rate model."""
        if not self.rate_levels:
            if rate is not None:
                raise ValueError("this is a fixed-rate model: it takes no rate index")
            return None
        if rate is None or type(rate) is not int or not 0 <= rate < self.rate_levels:
            raise ValueError(f"rate index {rate!r} outside 0..{self.rate_levels - 1}")
        return torch.full((batch,), rate / (self.rate_levels - 1), device=device or self._device())

    def analyze(self, x: torch.Tensor, cond) -> Gaussian:
        return self._bottom_up(x, cond)

    def prior(self, index: int, decoded: list[torch.Tensor], cond, shape: tuple[int, ...]) -> Gaussian:
        if index == 0:
            zeros = torch.zeros(shape, device=self._device())
            return Gaussian(zeros, torch.ones_like(zeros))
        z2 = decoded[0]
        cache = self._ctx_cache
        if cache is None or cache[0] is not z2 or cache[1] is not cond:
            cache = self._ctx_cache = (z2, cond, self._context(z2, cond))
        return self._slice_prior(index - 1, cache[2], decoded[1:index], cond)

    def posterior(self, index: int, features: Gaussian, decoded, prior: Gaussian, cond) -> Gaussian:
        if index == 0:
            return self._split(self._run(self.h_a, features.mean, cond))
        return precision_weighted(self._slice_bottom_up(features, index - 1), prior)

    def reconstruct(self, decoded: list[torch.Tensor], cond) -> torch.Tensor:
        self._ctx_cache = None  # coding of this image is over: drop the cached context
        return (self._run(self.g_s, torch.cat(decoded[1:], dim=1), cond) + 1.0) * 0.5

    def rd_terms(self, x: torch.Tensor, beta: torch.Tensor | None = None, sample: bool = True) -> RDTerms:
        """x: (B,3,H,W) in [0,1], H and W multiples of 64; ``beta`` (B,) for a variable-rate model."""
        if self.rate_levels:
            if beta is None:
                raise ValueError("a variable-rate model needs β per example")
            t = self.beta_position(beta)
            if t.numel() == 1:
                t = t.expand(x.shape[0])
        else:
            t = None
        bu = self._bottom_up(x, t)
        q2 = self._split(self._run(self.h_a, bu.mean, t))
        z2 = q2.rsample() if sample else q2.mean
        kl_by = {2: q2.kl_standard().flatten(1).sum(1)}
        ctx = self._context(z2, t)
        zs: list[torch.Tensor] = []
        for k, spec in enumerate(self.latents()[1:]):
            p = self._slice_prior(k, ctx, zs, t)
            q = precision_weighted(self._slice_bottom_up(bu, k), p)
            zs.append(q.rsample() if sample else q.mean)
            kl_by[spec.level] = q.kl(p).flatten(1).sum(1)
        x_hat = (self._run(self.g_s, torch.cat(zs, dim=1), t) + 1.0) * 0.5
        nll = self.likelihood.nll(x, x_hat).flatten(1).sum(1)
        return RDTerms(x_hat=x_hat, nll=nll, kl=sum(kl_by.values()), kl_by_level=kl_by)

    def forward(self, x: torch.Tensor, beta: torch.Tensor | None = None, sample: bool = True) -> RDTerms:
        return self.rd_terms(x, beta, sample)
