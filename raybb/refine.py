"""Per-image posterior refinement ("encoder effort"): a better q(z|x) for *this* image.

The amortised encoder gives the posteriors in one pass; under the fixed decoder and priors a
few gradient steps on the posterior parameters lower the per-image objective (the amortisation
gap, Yang, Bamler & Mandt 2020). Without quantization the objective is exactly differentiable:
reparameterised samples through the synthesis transform plus the analytic KLs. Only what the
encoder hands the coded samplers changes, so every refined stream decodes with the unchanged
decoder.

Objective (nats): ``Σ_i KL[q_i ‖ p_i] + λ·D``, where D is the metric the user judges, on the
image's own pixels (the stride padding is cropped away before decoding, so it costs nothing here):

* ``mse``: D = Σ(x − x̂)² over the crop. λ is set so that the squared error has the slope of the
  model's training likelihood term at the image's *own* amortised error: if every error is scaled
  by s, the training term grows like s·A/β (A = Σ|e|/γ for the PLN's Laplace, an L1 loss) and
  λ·Σe² like s²·λ·S, so λ = A / (2βS) at s = 1 (S = Σe²), times LAMBDA_SCALE (tuned on held-out
  images). For a Gaussian-trained model (A = Σe²/γ², :func:`nll_slope`) this is exactly its
  training weight 1/(2βγ²). β is the model's training β, or for a variable-rate model the β of
  the stream's rate index. A further multiplier (``lam_scale``) moves along the model's RD curve;
  rate targeting searches it.
* ``ms-ssim``: D = N·(1 − MS-SSIM) with N the pixel count, λ matched the same way (slope of the
  likelihood term along the amortised error direction).

Order (:meth:`Refiner.stage`, one stage per latent in coding order): latent i's posterior is
refined against its prior from the latents *already coded*, then the caller codes it. The first
stage also refines the analysis features that every later posterior is formed from, jointly,
through reparameterised samples of all later latents (for the PLN: q(z2|x) and the bottom-up
N(μx, σx²), through z2 → p(z1|z2) → q(z1|z2,x) → x̂); a later stage moves only its own posterior,
against the prior of the latents actually coded. An :class:`EffortLevel` gives the first stage
``steps2`` steps and every later stage ``steps1``; the shipped levels spend all their steps in the
first stage (docs/effort.md says why); the later stages stay available through a custom one.

Deterministic for a given seed and device: the reparameterisation noise comes from a
``torch.Generator`` seeded with the stream seed. Memory is bounded: each step builds and frees
its own graph; the model's parameters stay frozen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from raybb.model.distributions import STD_FLOOR, Gaussian, GaussianLikelihood

__all__ = [
    "EFFORTS",
    "LAMBDA_SCALE",
    "MAX_EFFORT",
    "METRICS",
    "REFINE_MAX_PIXELS",
    "EffortLevel",
    "RefineStats",
    "Refiner",
    "effort_level",
]

METRICS = ("mse", "ms-ssim")
#: λ multiplier per metric on top of the slope match, for Laplace-trained models (chosen on held-out
#: cid22/validation images; docs/effort.md): for MSE, 2x keeps the rate near effort 0's and spends
#: the refinement on quality, where 1x lowers the rate but blurs; for MS-SSIM only 1x was tried.
LAMBDA_SCALE = {"mse": 2.0, "ms-ssim": 1.0}


@dataclass(frozen=True)
class EffortLevel:
    """Adam steps of the first, joint stage (``steps2``: before the PLN's level 2 is coded) and of
    every later stage (``steps1``: the PLN's level 1), and the step size."""

    steps2: int
    steps1: int
    lr: float

    @property
    def steps(self) -> int:
        return self.steps2 + self.steps1  # for a two-latent model (the PLN): steps2 + (K-1)·steps1 for K


#: Effort levels: 0 is the amortised encoder (no refinement). Chosen on held-out cid22/validation
#: images: spending every step in the first, joint stage (all latents through the features) was as
#: good as or better than splitting them with the later stages at the same step count, so the
#: levels use the joint one (docs/effort.md has the cost and gain on Kodak). One step costs about
#: one synthesis forward + backward.
EFFORTS: dict[int, EffortLevel | None] = {
    0: None,
    1: EffortLevel(4, 0, 0.1),
    2: EffortLevel(12, 0, 0.1),
    3: EffortLevel(32, 0, 0.1),
}
MAX_EFFORT = max(EFFORTS)
#: Refinement holds one step's graph of the synthesis transform over the whole image (~0.55 GiB per
#: megapixel for the PLN, docs/effort.md). Larger images are coded at effort 0 (the result reports
#: 0 refinement steps), so a bucket worker's memory stays bounded.
REFINE_MAX_PIXELS = 4 * 1024 * 1024


def effort_level(effort: int) -> EffortLevel | None:
    """The schedule of an effort level; ValueError for an unknown one (callers map it to usage)."""
    if isinstance(effort, bool) or not isinstance(effort, int) or effort not in EFFORTS:
        raise ValueError(f"effort must be an integer in 0..{MAX_EFFORT}, got {effort!r}")
    return EFFORTS[effort]


@dataclass
class RefineStats:
    steps: int = 0
    seconds: float = 0.0
    objective_before: float = float("nan")  # nats, first step's sampled objective
    objective_after: float = float("nan")  # nats, last step's


def _ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Differentiable MS-SSIM of (1,3,h,w) tensors in [0,255], the same function raybb.metrics
    reports (fewer scales below 161 px)."""
    from raybb.metrics import MS_SSIM_WEIGHTS, MS_SSIM_WIN_SIZE, _ms_ssim_fewer_scales, _pt_ms_ssim, ms_ssim_scales

    n = ms_ssim_scales(*x.shape[-2:])
    if n == 0:
        raise ValueError("the ms-ssim refinement metric needs images of at least 11 px per side")
    if n == len(MS_SSIM_WEIGHTS):
        return _pt_ms_ssim(x, y, data_range=255, size_average=True, win_size=MS_SSIM_WIN_SIZE)
    return _ms_ssim_fewer_scales(x, y, n)


def nll_slope(likelihood, e: torch.Tensor) -> float:
    """A = d/ds of the training likelihood's -log p at errors s·e, at s = 1: Σ|e|/γ for the Laplace
    (an L1 loss), Σe²/γ² for the Gaussian (MSE). For the Gaussian with metric mse the slope match
    λ = A / (2βS) is then exactly the training objective's weight 1 / (2βγ²)."""
    gamma = likelihood.gamma().detach().view(1, -1, 1, 1)  # 1 for the unit-scale PLN
    if isinstance(likelihood, GaussianLikelihood):
        return float((e / gamma).pow(2).sum())
    return float((e.abs() / gamma).sum())


def lambda_scale(likelihood, metric: str) -> float:
    """LAMBDA_SCALE for a Laplace-trained model (tuned on the PLN); 1 for a Gaussian-trained one,
    whose λ already is its training objective's (not tuned)."""
    return 1.0 if isinstance(likelihood, GaussianLikelihood) else LAMBDA_SCALE[metric]


class _Offsets:
    """A Gaussian's parameters as offsets from its initial value, in units of its initial std.

    μ = μ0 + σ0·δ, σ = σ0·e^ρ (floored): one Adam learning rate then means the same relative move
    for a narrow level-1 dimension (σ ~ 0.01) as for a wide level-2 one (σ ~ 1).
    """

    def __init__(self, g: Gaussian):
        self.mean0, self.std0 = g.mean.detach(), g.std.detach()
        self.delta = torch.zeros_like(self.mean0, requires_grad=True)
        self.rho = torch.zeros_like(self.std0, requires_grad=True)

    def params(self) -> list[torch.Tensor]:
        return [self.delta, self.rho]

    def gaussian(self) -> Gaussian:
        return Gaussian(self.mean0 + self.std0 * self.delta, (self.std0 * self.rho.exp()).clamp_min(STD_FLOOR))

    def detached(self) -> Gaussian:
        g = self.gaussian()
        return Gaussian(g.mean.detach(), g.std.detach())


class Refiner:
    """Refines one image's posteriors under a frozen model (any ``raybb.model.protocol.LatentModel``).

    ``x`` is the padded image (1,3,H,W) in [0,1]; ``h, w`` its real size; ``beta`` the β the rate is
    weighed with (sets λ with the model's likelihood scale γ); ``seed`` seeds the
    reparameterisation noise; ``cond`` is the model's conditioning for the stream's rate index.
    """

    def __init__(
        self,
        model,
        x: torch.Tensor,
        h: int,
        w: int,
        *,
        beta: float,
        seed: int,
        metric: str = "mse",
        lam_scale: float = 1.0,
        cond=None,
    ):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if not (lam_scale > 0 and math.isfinite(lam_scale)):
            raise ValueError(f"lam_scale must be a positive number, got {lam_scale!r}")
        self.model, self.x, self.h, self.w = model, x, h, w
        self.metric, self.beta, self.lam_scale = metric, float(beta), float(lam_scale)
        self.cond = cond  # the model's conditioning for the stream's rate index (None: fixed rate)
        self.gen = torch.Generator(device=x.device).manual_seed(int(seed))
        self.lam: float | None = None
        self.stats = RefineStats()

    # -- objective ---------------------------------------------------------------------------
    def _crop(self, x_hat: torch.Tensor) -> torch.Tensor:
        return x_hat[..., : self.h, : self.w]

    def _distortion(self, x_hat: torch.Tensor) -> torch.Tensor:
        xh = self._crop(x_hat)
        xr = self.x[..., : self.h, : self.w]
        if self.metric == "mse":
            return (xh - xr).pow(2).sum()
        return xr[0, 0].numel() * (1.0 - _ms_ssim(xh.clamp(0, 1) * 255.0, xr * 255.0))

    def calibrate(self, x_hat: torch.Tensor) -> float:
        """λ from the amortised reconstruction (see the module docstring)."""
        e = (self._crop(x_hat) - self.x[..., : self.h, : self.w]).detach()
        a = nll_slope(self.model.likelihood, e)
        if self.metric == "mse":
            s = float(e.pow(2).sum())
            lam = a / (2.0 * self.beta * max(s, 1e-12))
        else:
            # slope of N(1-MS-SSIM) along the error direction at s=1, by a central difference
            xr = self.x[..., : self.h, : self.w]
            d = [float(self._distortion(torch.nn.functional.pad(xr + k * e, self._pad()))) for k in (0.9, 1.1)]
            slope = max((d[1] - d[0]) / 0.2, 1e-12)
            lam = a / (self.beta * slope)
        self.lam = lam * lambda_scale(self.model.likelihood, self.metric) * self.lam_scale
        return self.lam

    def _pad(self) -> tuple[int, int, int, int]:
        return (0, self.x.shape[-1] - self.w, 0, self.x.shape[-2] - self.h)

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.gen, device=like.device, dtype=like.dtype)

    def _step(self, opt: torch.optim.Optimizer, loss_fn) -> float:
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = loss_fn()
            loss.backward()
        opt.step()
        return float(loss.detach())

    def _record(self, losses: list[float], t0: float) -> None:
        if losses:
            if self.stats.steps == 0:
                self.stats.objective_before = losses[0]
            self.stats.objective_after = losses[-1]
            self.stats.steps += len(losses)
        self.stats.seconds += time.perf_counter() - t0

    # -- one stage per latent, in coding order --------------------------------------------------
    def _chain(self, index: int, z: torch.Tensor, decoded: list[torch.Tensor], features, sample: bool):
        """Latents after ``index`` given z_index = ``z``: (all latents, their KL in nats). With
        ``sample`` they are reparameterised samples (noise from the seeded generator), else means."""
        m, cond = self.model, self.cond
        zs = [*decoded, z]
        kl = None
        specs = m.latents()
        for j in range(index + 1, len(specs)):
            p = m.prior(j, zs, cond, self._shape(specs[j]))
            q = m.posterior(j, features, zs, p, cond)
            zs.append(q.rsample(self._noise(q.mean)) if sample else q.mean)
            if sample:
                k = q.kl(p).sum()
                kl = k if kl is None else kl + k
        return zs, kl

    def _shape(self, spec) -> tuple[int, ...]:
        return spec.shape(*self.x.shape[-2:])

    def stage(
        self, index: int, q: Gaussian, prior: Gaussian, features, decoded: list[torch.Tensor], steps: int, lr: float
    ):
        """Refine latent ``index``'s posterior ``q`` against ``prior`` (computed from the coded latents
        ``decoded``, fixed here) before it is coded; returns (q, features).

        When later latents remain, the analysis features they are computed from (a Gaussian: the
        PLN's and the channel-ladder's bottom-up N(μx, σx²)) are refined jointly with ``q``, through
        reparameterised samples of every later latent; for the last latent only its own posterior
        moves, with the synthesis in the loop. The objective is Σ KL + λ·D over the rest of the chain.
        For the PLN, stage 0 is the joint z2 + bottom-up refinement and stage 1 refines q(z1|z2, x)."""
        t0 = time.perf_counter()
        m = self.model
        last = index == len(m.latents()) - 1
        if self.lam is None:
            with torch.no_grad():
                self.calibrate(m.reconstruct(self._chain(index, q.mean, decoded, features, False)[0], self.cond))
        if steps <= 0:
            self._record([], t0)
            return q, features
        oq = _Offsets(q)
        of = None if last or not isinstance(features, Gaussian) else _Offsets(features)
        p = Gaussian(prior.mean.detach(), prior.std.detach())
        standard = bool((p.mean == 0).all() and (p.std == 1).all())  # N(0, I): the closed form
        opt = torch.optim.Adam(oq.params() + (of.params() if of is not None else []), lr=lr)

        def loss_fn() -> torch.Tensor:
            g = oq.gaussian()
            z = g.rsample(self._noise(g.mean))
            kl = (g.kl_standard() if standard else g.kl(p)).sum()
            zs, kl_rest = self._chain(index, z, decoded, of.gaussian() if of is not None else features, True)
            if kl_rest is not None:
                kl = kl + kl_rest
            return kl + self.lam * self._distortion(m.reconstruct(zs, self.cond))

        losses = [self._step(opt, loss_fn) for _ in range(steps)]
        self._record(losses, t0)
        return oq.detached(), (of.detached() if of is not None else features)
