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
its own graph; the model's parameters stay frozen. Above REFINE_MAX_PIXELS a step's graph over the
whole image would grow with it, so :class:`TiledRefiner` runs the same stages over crops of at most
REFINE_TILE_PIXELS (block-coordinate descent, one core of parameters at a time; docs/effort.md).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from raybb.model.distributions import STD_FLOOR, Gaussian, GaussianLikelihood

__all__ = [
    "EFFORTS",
    "LAMBDA_SCALE",
    "MAX_EFFORT",
    "METRICS",
    "REFINE_HALO",
    "REFINE_MAX_PIXELS",
    "REFINE_TILE_PIXELS",
    "EffortLevel",
    "RefineStats",
    "RefineTile",
    "Refiner",
    "TiledRefiner",
    "effort_level",
    "refine_tiles",
    "tile_seed",
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
#: megapixel for the PLN, docs/effort.md). Larger images are refined over tiles (:class:`TiledRefiner`)
#: whose crops hold at most REFINE_TILE_PIXELS pixels, halo included, so a bucket worker's memory
#: stays bounded whatever the image size; images up to this size keep the untiled path (and bytes).
REFINE_MAX_PIXELS = 4 * 1024 * 1024
#: Pixels per refinement crop (core + halo): the same graph bound as the largest untiled refinement.
REFINE_TILE_PIXELS = REFINE_MAX_PIXELS
#: Halo around each refinement tile's core, in units of the model's pad stride (64 px for the PLN):
#: the terms the core's parameters reach through the synthesis within this distance are in the
#: tile's objective (docs/effort.md, "Images above 4 MP", measures the choice).
REFINE_HALO = 2


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
    tiles: int = 0  # refinement tiles (0: untiled); a tiled run's objectives sum the tiles' crop objectives


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

    ``region`` (rows r0, r1, cols c0, c1 in the tensor's own units): only that block moves, the rest
    stays at its initial value (a tile's core in :class:`TiledRefiner`).
    """

    def __init__(self, g: Gaussian, region: tuple[int, int, int, int] | None = None):
        self.mean0, self.std0 = g.mean.detach(), g.std.detach()
        self.pad = None
        like = self.mean0
        if region is not None:
            r0, r1, c0, c1 = region
            h, w = like.shape[-2:]
            self.pad = (c0, w - c1, r0, h - r1)
            like = like[..., r0:r1, c0:c1]
        self.delta = torch.zeros_like(like, requires_grad=True)
        self.rho = torch.zeros_like(like, requires_grad=True)

    def params(self) -> list[torch.Tensor]:
        return [self.delta, self.rho]

    def gaussian(self) -> Gaussian:
        delta, rho = self.delta, self.rho
        if self.pad is not None:
            delta, rho = F.pad(delta, self.pad), F.pad(rho, self.pad)
        return Gaussian(self.mean0 + self.std0 * delta, (self.std0 * rho.exp()).clamp_min(STD_FLOOR))

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
        self,
        index: int,
        q: Gaussian,
        prior: Gaussian,
        features,
        decoded: list[torch.Tensor],
        steps: int,
        lr: float,
        region: tuple[int, int, int, int] | None = None,
    ):
        """Refine latent ``index``'s posterior ``q`` against ``prior`` (computed from the coded latents
        ``decoded``, fixed here) before it is coded; returns (q, features).

        When later latents remain, the analysis features they are computed from (a Gaussian: the
        PLN's and the channel-ladder's bottom-up N(μx, σx²)) are refined jointly with ``q``, through
        reparameterised samples of every later latent; for the last latent only its own posterior
        moves, with the synthesis in the loop. The objective is Σ KL + λ·D over the rest of the chain.
        For the PLN, stage 0 is the joint z2 + bottom-up refinement and stage 1 refines q(z1|z2, x).

        ``region`` (pixel rows r0, r1, cols c0, c1 of ``x``, multiples of the latents' strides): only
        the parameters of that block move (a tile's core, :class:`TiledRefiner`); None: all."""
        t0 = time.perf_counter()
        m = self.model
        last = index == len(m.latents()) - 1
        if self.lam is None:
            with torch.no_grad():
                self.calibrate(m.reconstruct(self._chain(index, q.mean, decoded, features, False)[0], self.cond))
        if steps <= 0:
            self._record([], t0)
            return q, features
        oq = _Offsets(q, _in_units(region, self.x, q.mean))
        of = (
            None
            if last or not isinstance(features, Gaussian)
            else _Offsets(features, _in_units(region, self.x, features.mean))
        )
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


def _copy(g):
    return Gaussian(g.mean.clone(), g.std.clone()) if isinstance(g, Gaussian) else g


def _in_units(region: tuple[int, int, int, int] | None, x: torch.Tensor, t: torch.Tensor):
    """A pixel region of the image ``x`` in the units of the map ``t`` (its stride: x's size / t's)."""
    if region is None:
        return None
    sy, sx = x.shape[-2] // t.shape[-2], x.shape[-1] // t.shape[-1]
    r0, r1, c0, c1 = region
    return r0 // sy, r1 // sy, c0 // sx, c1 // sx


@dataclass(frozen=True)
class RefineTile:
    """One refinement tile, in pixels of the padded image: the ``core`` whose parameters it refines
    and the ``crop`` (core plus halo, clipped to the image) its objective is computed on;
    (row start, row end, column start, column end), multiples of the model's pad stride."""

    core: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]


def refine_tiles(hp: int, wp: int, stride: int, tile_pixels: int, halo: int) -> list[RefineTile]:
    """Tiles of a padded hp x wp image for crops of at most ``tile_pixels`` pixels with a halo of
    ``halo`` strides around each core (ValueError when the budget cannot hold a one-stride core)."""
    side = math.isqrt(int(tile_pixels)) // stride  # crop side in strides, halo included
    core = side - 2 * halo
    if core < 1 or halo < 0:
        raise ValueError(f"a refinement tile of {tile_pixels} pixels cannot hold a halo of {halo} x {stride} px")

    def spans(n: int) -> list[tuple[int, int, int, int]]:
        return [(s, min(n, s + core), max(0, s - halo), min(n, s + core + halo)) for s in range(0, n, core)]

    out = []
    for ys, ye, yi0, yi1 in spans(hp // stride):
        for xs, xe, xi0, xi1 in spans(wp // stride):
            out.append(
                RefineTile(
                    (ys * stride, ye * stride, xs * stride, xe * stride),
                    (yi0 * stride, yi1 * stride, xi0 * stride, xi1 * stride),
                )
            )
    return out


def tile_seed(seed: int, index: int, tile: int) -> int:
    """The noise seed of stage ``index`` on tile ``tile``: a hash of the stream seed and both
    indices, so tiles draw independent noise and the same image, seed and device give the same bytes."""
    d = hashlib.sha256(f"raybb-refine-tile:{int(seed)}:{int(index)}:{int(tile)}".encode()).digest()
    return int.from_bytes(d[:8], "little") & (2**63 - 1)


class TiledRefiner:
    """:class:`Refiner`'s stages for an image too large to refine whole, in memory bounded by the tile
    budget (any ``raybb.model.protocol.LatentModel`` whose latents' strides divide its pad stride).

    Block-coordinate descent on the same objective: the pad-stride grid is cut into tiles; for each
    tile in turn, the parameters of its core (latent ``index``'s posterior and, in a stage with later
    latents, the analysis features) take the stage's Adam steps on the objective of a crop of core
    plus halo, with every parameter outside the core fixed at its current value (the neighbours
    refined before it, the amortised ones after it), and the refined core is written back into the
    full-size posterior and features before the next tile. The caller then codes the stitched
    posterior exactly as the untiled path does, with the tiled transforms.

    λ (``mse``) is the whole image's: the amortised error sums A and S over every tile's core. For
    ``ms-ssim`` each tile's λ is matched on its own crop (MS-SSIM is not a sum over tiles).
    ``rgb`` is the HxWx3 uint8 image; crops are read from it (replicate padding past its edge, as
    ``pad_to_stride``), so the float image is never whole.
    """

    def __init__(
        self,
        model,
        rgb: np.ndarray,
        *,
        beta: float,
        seed: int,
        metric: str = "mse",
        lam_scale: float = 1.0,
        cond=None,
        device: torch.device | str = "cpu",
        tile_pixels: int = REFINE_TILE_PIXELS,
        halo: int = REFINE_HALO,
        independent: bool = False,
    ):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if not (lam_scale > 0 and math.isfinite(lam_scale)):
            raise ValueError(f"lam_scale must be a positive number, got {lam_scale!r}")
        self.model, self.rgb, self.cond = model, rgb, cond
        self.independent = bool(independent)  # the measured alternative (docs/effort.md), not the codec's
        self.h, self.w = rgb.shape[:2]
        s = model.pad_stride
        self.hp, self.wp = -(-self.h // s) * s, -(-self.w // s) * s
        self.tiles = refine_tiles(self.hp, self.wp, s, tile_pixels, halo)
        self.beta, self.seed, self.metric, self.lam_scale = float(beta), int(seed), metric, float(lam_scale)
        self.device = torch.device(device)
        self.lam: float | None = None  # the whole image's (mse)
        self._tile_lam: dict[int, float] = {}  # per tile (ms-ssim)
        self.stats = RefineStats(tiles=len(self.tiles))

    # -- crops -----------------------------------------------------------------------------------
    def _image(self, tile: RefineTile) -> torch.Tensor:
        r0, r1, c0, c1 = tile.crop
        rows = np.minimum(np.arange(r0, r1), self.h - 1)  # replicate padding past the image
        cols = np.minimum(np.arange(c0, c1), self.w - 1)
        t = self.rgb[rows[:, None], cols[None, :]].transpose(2, 0, 1).copy()
        return torch.from_numpy(t).to(self.device, torch.float32).div_(255.0)[None]

    def _cut(self, t: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """The block of a full-size map (any stride dividing the pad stride) under a pixel box."""
        sy, sx = self.hp // t.shape[-2], self.wp // t.shape[-1]
        r0, r1, c0, c1 = box
        return t[..., r0 // sy : r1 // sy, c0 // sx : c1 // sx]

    def _cut_g(self, g, box):
        return Gaussian(self._cut(g.mean, box), self._cut(g.std, box)) if isinstance(g, Gaussian) else g

    def _paste(self, full: Gaussian, part: Gaussian, tile: RefineTile) -> None:
        """Write the core of ``part`` (a map over the tile's crop) into ``full``."""
        r0, r1, c0, c1 = tile.crop
        sy, sx = (r1 - r0) // part.mean.shape[-2], (c1 - c0) // part.mean.shape[-1]
        a0, a1, b0, b1 = self._relative(tile)
        self._cut(full.mean, tile.core).copy_(part.mean[..., a0 // sy : a1 // sy, b0 // sx : b1 // sx])
        self._cut(full.std, tile.core).copy_(part.std[..., a0 // sy : a1 // sy, b0 // sx : b1 // sx])

    def _refiner(self, k: int, tile: RefineTile, index: int) -> Refiner:
        r0, r1, c0, c1 = tile.crop
        hc, wc = min(self.h, r1) - r0, min(self.w, c1) - c0  # the crop's real pixels (top-left)
        ref = Refiner(
            self.model,
            self._image(tile),
            hc,
            wc,
            beta=self.beta,
            seed=tile_seed(self.seed, index, k),
            metric=self.metric,
            lam_scale=self.lam_scale,
            cond=self.cond,
        )
        ref.lam = self.lam if self.metric == "mse" else self._tile_lam.get(k)
        return ref

    @staticmethod
    def _relative(tile: RefineTile) -> tuple[int, int, int, int]:
        r0, _, c0, _ = tile.crop
        a0, a1, b0, b1 = tile.core
        return a0 - r0, a1 - r0, b0 - c0, b1 - c0

    # -- λ -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, index: int, q: Gaussian, features, decoded: list[torch.Tensor]) -> None:
        """λ from the amortised reconstruction, tile by tile (means through the rest of the chain):
        for mse the whole image's λ = A / (2βS) from A and S summed over the tiles' cores (the
        untiled :meth:`Refiner.calibrate`), for ms-ssim each tile's own."""
        a_sum = s_sum = 0.0
        for k, tile in enumerate(self.tiles):
            ref = self._refiner(k, tile, index)
            dec = [self._cut(d, tile.crop) for d in decoded]
            zs = ref._chain(index, self._cut(q.mean, tile.crop), dec, self._cut_g(features, tile.crop), False)[0]
            x_hat = self.model.reconstruct(zs, self.cond)
            if self.metric != "mse":
                self._tile_lam[k] = ref.calibrate(x_hat)
                continue
            a0, a1, b0, b1 = self._relative(tile)
            a1, b1 = min(a1, ref.h), min(b1, ref.w)  # the core's real pixels
            e = (x_hat - ref.x)[..., a0:a1, b0:b1]
            a_sum += nll_slope(self.model.likelihood, e)
            s_sum += float(e.pow(2).sum())
            del x_hat, e
        if self.metric == "mse":
            lam = a_sum / (2.0 * self.beta * max(s_sum, 1e-12))
            self.lam = lam * lambda_scale(self.model.likelihood, self.metric) * self.lam_scale

    # -- one stage -------------------------------------------------------------------------------
    def stage(
        self, index: int, q: Gaussian, prior: Gaussian, features, decoded: list[torch.Tensor], steps: int, lr: float
    ):
        """:meth:`Refiner.stage` over the tiles (block-coordinate descent, see the class); ``q`` and
        ``features`` are updated in place (the caller's own tensors) and returned."""
        t0 = time.perf_counter()
        if self.lam is None and not self._tile_lam:
            self.calibrate(index, q, features, decoded)
        if steps <= 0:
            self.stats.seconds += time.perf_counter() - t0
            return q, features
        last = index == len(self.model.latents()) - 1
        moves_features = not last and isinstance(features, Gaussian)
        before = after = 0.0
        # independent tiles: each refines its whole crop from the amortised values, only cores are kept
        q0, f0 = (_copy(q), _copy(features)) if self.independent else (q, features)
        for k, tile in enumerate(self.tiles):
            ref = self._refiner(k, tile, index)
            box = tile.crop
            qn, fn = ref.stage(
                index,
                self._cut_g(q0, box),
                self._cut_g(prior, box),
                self._cut_g(f0, box),
                [self._cut(d, box) for d in decoded],
                steps,
                lr,
                region=None if self.independent else self._relative(tile),
            )
            self._paste(q, qn, tile)
            if moves_features:
                self._paste(features, fn, tile)
            before += ref.stats.objective_before
            after += ref.stats.objective_after
            del ref, qn, fn
        if self.stats.steps == 0:
            self.stats.objective_before = before
        self.stats.objective_after = after
        self.stats.steps += steps  # every parameter takes the stage's steps once
        self.stats.seconds += time.perf_counter() - t0
        return q, features
