"""The ``Codec`` facade: ``compress(image) -> bytes`` and ``decompress(bytes) -> image``.

Every caller (CLI, Ray actors, evaluation) goes through this class. It composes a model of any
registered architecture (raybb.model.protocol, raybb.model.arch), the coded samplers
(raybb.coding) and the container (raybb.bitstream)::

    image ─▶ pad ─▶ analyze ─▶ for each latent z_i in coding order:
                                   p(z_i | z_<i) from the *coded* z_<i,  q(z_i | x, z_<i)
                                   ──coded sample (its level id, its own shared randomness)──▶ z_i
                               ─▶ reconstruct(z_0 … z_K-1) ─▶ x̂ ─▶ crop

Each prior is computed from the *decoded* samples on both sides, so the decoder repeats exactly
what the encoder did: on the same device, ``decompress(compress(x))`` equals the encoder's own
reconstruction bit for bit. The stages run over tiles where the architecture has tiling rules
(raybb.tiling: the PLN, the channel-ladder), else over the whole image. A codec is ready as soon
as it is loaded (no ``update()`` step).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from raybb import bitstream
from raybb.coding import CodedSampler, StreamKey
from raybb.errors import (
    CodingError,
    CorruptPayload,
    DecodeOutOfMemory,
    EncodeOutOfMemory,
    ImageError,
    ModelMismatch,
    OutOfMemory,
    TooManyPixels,
)
from raybb.imageio import DEFAULT_MAX_PIXELS, decode_image, to_rgb_array
from raybb.levels import (
    decode_levels,
    flat_gaussian,
    quality_of_rate,
    rate_of_quality,
    sampler_for_section,
    samplers_for,
)
from raybb.model.distributions import Gaussian
from raybb.model.ladder import pad_to_stride
from raybb.model.weights import LoadedModel, load_weights

# the named pipelines live in raybb.pipelines; re-exported here for callers of raybb.codec
from raybb.pipelines import DEFAULT_PIPELINE, PFR_DEFAULT, PFR_EXACT, PFR_MAX, PIPELINES, parse_pipeline
from raybb.refine import (
    METRICS,
    REFINE_HALO,
    REFINE_MAX_PIXELS,
    REFINE_TILE_PIXELS,
    EffortLevel,
    Refiner,
    RefineStats,
    TiledRefiner,
    effort_level,
)
from raybb.tiling import stage_runner, tile_pixels_for, to_uint8

__all__ = [
    "Codec",
    "CompressResult",
    "load_codec",
    "PIPELINES",
    "DEFAULT_PIPELINE",
    "PFR_DEFAULT",
    "PFR_MAX",
    "PFR_EXACT",
    "parse_pipeline",
]


@dataclass
class CompressResult:
    data: bytes
    width: int
    height: int
    bpp: float  # actual: len(data) * 8 / pixels
    psnr: float  # of `reconstruction` against the input
    ms_ssim: float  # NaN when not computed (metrics.ms_ssim_missing_reason says why)
    kl_bits: float  # theoretical rate: Σ_i KL[q_i‖p_i] over the coded latents (bits)
    encode_seconds: float
    reconstruction: np.ndarray  # exactly what decompress(data) returns on this device
    kl_bits_per_level: dict[int, float] = field(default_factory=dict)
    coded_bits_per_level: dict[int, int] = field(default_factory=dict)
    theoretical_psnr: float | None = None  # reconstruction from exact posterior samples
    theoretical_ms_ssim: float | None = None
    seed: int = 0
    effort: int = 0  # encoder effort (raybb.refine.EFFORTS; -1 = a custom schedule)
    refine_steps: int = 0
    refine_seconds: float = 0.0
    rate: int | None = None  # the stream's rate index (variable-rate models)


@dataclass
class _Level:
    """One coded latent: its level id, posterior q, prior p and the sampler's encode result."""

    level: int
    q: Gaussian | None
    p: Gaussian | None
    enc: object  # raybb.coding.EncodeResult
    shape: tuple[int, ...]

    @property
    def z(self) -> torch.Tensor:
        return self.enc.sample.reshape(self.shape)


@dataclass
class _Encoded:
    """What :meth:`Codec._encode` produced: the bytes, and per latent (in coding order) q, p, result."""

    data: bytes
    rgb: np.ndarray
    seed: int
    rate: int | None
    cond: object  # the model's conditioning for ``rate``
    features: object  # analysis features, for the exact-sample reconstruction (None: tiled, recompute)
    levels: list[_Level]
    t0: float  # perf_counter at the start, for encode_seconds
    refine: RefineStats | None = None

    @property
    def latents(self) -> list[torch.Tensor]:
        return [lv.z for lv in self.levels]


def _seed_from_pixels(rgb: np.ndarray) -> int:
    """Default seed: a hash of the pixels, so the same image always gives the same bytes."""
    h = hashlib.sha256(memoryview(np.ascontiguousarray(rgb)).cast("B"))  # = tobytes(), without the copy
    h.update(repr(rgb.shape).encode())
    h = h.digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


@contextlib.contextmanager
def _float32_math(device: torch.device):
    """Run the network in true float32 on CUDA.

    PyTorch lets cuDNN convolutions use TF32 (10-bit mantissas) by default; the decoder would then
    compute a visibly different function from the float32 one on the CPU (docs/model.md, "Devices").
    Deterministic algorithm choice keeps repeated decodes on one GPU identical.
    """
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _in_float32(method):
    """Method decorator: run under :func:`_float32_math` on the codec's device."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _float32_math(self.device):
            return method(self, *args, **kwargs)

    return wrapper


def _check_effort(effort, metric: str) -> tuple[int | EffortLevel, str]:
    """ValueError (a usage error for the CLI) for an unknown effort level or refinement metric."""
    if not isinstance(effort, EffortLevel):
        effort_level(effort)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    return effort, metric


def _check_targets(target_bpp: float | None, target_psnr: float | None) -> None:
    if target_bpp is not None and target_psnr is not None:
        raise ValueError("give at most one of target_bpp and target_psnr")
    if target_bpp is not None and not (0 < target_bpp < 24):
        raise ValueError(f"target_bpp must be in (0, 24), got {target_bpp!r}")
    if target_psnr is not None and not (0 < target_psnr < 100):
        raise ValueError(f"target_psnr must be in (0, 100) dB, got {target_psnr!r}")


#: Rate targeting: λ multipliers 2^t searched by bisection over t in [-TARGET_SPAN, TARGET_SPAN]
#: with TARGET_PROBES full encodes (refinement + coding) at the requested effort.
TARGET_SPAN = 4.0
TARGET_PROBES = 6
_OOM_MESSAGES = ("not enough memory", "can't allocate memory", "out of memory", "failed to allocate")


def _oom_as(error: type[OutOfMemory]):
    """Method decorator: an allocation failure (torch.OutOfMemoryError, MemoryError, or torch's
    RuntimeError "not enough memory" on the CPU) becomes ``error``, a typed RaybbError."""

    def deco(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except (torch.OutOfMemoryError, MemoryError) as e:
                raise error(f"out of memory ({type(e).__name__}): {str(e)[:300]}") from e
            except RuntimeError as e:
                if not any(m in str(e).lower() for m in _OOM_MESSAGES):
                    raise
                raise error(f"out of memory: {str(e)[:300]}") from e

        return wrapper

    return deco


def _kl_bits(q: Gaussian, p: Gaussian) -> float:
    """KL[q‖p] in bits, summed channel by channel (no full-size temporaries for a large latent)."""
    if q.mean.numel() <= 1 << 22:
        return float(q.kl(p).sum()) / math.log(2)
    total = 0.0
    for c in range(q.mean.shape[1]):
        sl = (slice(None), slice(c, c + 1))
        total += float(Gaussian(q.mean[sl], q.std[sl]).kl(Gaussian(p.mean[sl], p.std[sl])).sum(dtype=torch.float64))
    return total / math.log(2)


def _ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    from raybb.metrics import ms_ssim_bounded  # pulls pytorch-msssim; keep import lazy

    return ms_ssim_bounded(a, b)


class Codec:
    """A loaded model plus a sampler pipeline. Thread-compatible, not thread-safe (one per worker).

    Works for every registered architecture through the model protocol (raybb.model.protocol):
    latents are coded in the model's coding order, each against its prior from the latents coded
    before it. ``quality`` (variable-rate models only) sets the default rate index of the streams
    this codec writes (raybb.levels.rate_of_quality; None = the middle of the range)."""

    def __init__(
        self,
        loaded: LoadedModel,
        sampler: str | None = None,
        *,
        device: str | torch.device = "cpu",
        model_name: str = "",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        effort: int = 0,
        metric: str = "mse",
        tile_pixels: int | None = None,
        quality: float | None = None,
    ):
        self.effort, self.metric = _check_effort(effort, metric)
        self.device = torch.device(device)
        self.loaded = loaded
        self.model = loaded.model.to(self.device).eval().requires_grad_(False)
        self.model_name = model_name or loaded.meta.get("name", "") or loaded.fingerprint[:12]
        self.pipeline = sampler or DEFAULT_PIPELINE
        self.samplers: dict[int, CodedSampler] = samplers_for(self.model, *parse_pipeline(sampler))
        self.rate = self._rate_for(None, quality, default=True)
        self.max_pixels = max_pixels
        # the model's stages, run over tiles of at most this many pixels (None: sized for the
        # device) where the architecture has tiling rules (raybb.tiling), else over the whole image
        self.tiler = stage_runner(self.model, tile_pixels_for(self.device, tile_pixels))

    @property
    def fingerprint(self) -> str:
        return self.loaded.fingerprint

    @property
    def sampler_name(self) -> str:
        """The pipeline spec (e.g. 'pfr', 'is-gs', 'importance/pfr'): passing it back to
        ``load_codec(sampler=...)`` gives the same samplers and parameters."""
        return self.pipeline

    @property
    def quality(self) -> float | None:
        """The quality of the default rate index (None for a fixed-rate model)."""
        return None if self.rate is None else quality_of_rate(self.model, self.rate)

    def _rate_for(self, rate: int | None, quality: float | None, default: bool = False) -> int | None:
        """The rate index to code at: ``rate``, or ``quality`` mapped onto the model's range, or
        the codec's default. ValueError for a rate setting a fixed-rate model cannot take."""
        m = self.model
        if rate is not None and quality is not None:
            raise ValueError("give at most one of rate and quality")
        if not m.rate_levels:
            if rate is not None or quality is not None:
                raise ValueError(
                    f"{self.model_name} is a fixed-rate model: it takes no rate or quality "
                    "(its family's other rates are other models: --quality N alone picks one)"
                )
            return None
        if quality is not None:
            return rate_of_quality(m, quality)
        if rate is not None:
            if type(rate) is not int or not 0 <= rate < m.rate_levels:
                raise ValueError(f"rate index must be an integer in 0..{m.rate_levels - 1}, got {rate!r}")
            return rate
        return (m.rate_levels - 1) // 2 if default else self.rate

    def _beta(self, rate: int | None) -> float:
        """The β the refinement objective weighs the rate with: the rate index's for a variable-rate
        model, the training β (weights meta) for a fixed-rate one."""
        if rate is not None:
            return float(self.model.config.beta_of_rate(rate))
        return float(self.loaded.meta.get("beta", 1.0))

    # -- helpers --------------------------------------------------------------------------
    def _to_rgb(self, image) -> np.ndarray:
        if isinstance(image, bytes | bytearray | memoryview):
            return decode_image(bytes(image), max_pixels=self.max_pixels)
        if isinstance(image, Image.Image):
            return to_rgb_array(image, max_pixels=self.max_pixels)
        if isinstance(image, str | Path):
            return decode_image(Path(image).read_bytes(), max_pixels=self.max_pixels)
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ImageError(f"expected an HxWx3 uint8 array, got shape {arr.shape} dtype {arr.dtype}")
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ImageError(f"image has no pixels ({arr.shape[1]}x{arr.shape[0]})")
        if arr.shape[0] * arr.shape[1] > self.max_pixels:
            raise ImageError(f"image has {arr.shape[0] * arr.shape[1]} pixels, above the limit of {self.max_pixels}")
        return np.ascontiguousarray(arr)

    def _image_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """The whole image as a (1,3,H,W) float tensor (the untiled path posterior refinement takes)."""
        return torch.from_numpy(rgb.transpose(2, 0, 1).copy()).to(self.device, torch.float32).div_(255.0)[None]

    def _to_uint8(self, x_hat: torch.Tensor, h: int, w: int) -> np.ndarray:
        return to_uint8(x_hat, h, w)

    def _padded(self, h: int, w: int) -> tuple[int, int]:
        s = self.model.pad_stride
        return -(-h // s) * s, -(-w // s) * s

    def _latent_shapes(self, h: int, w: int) -> list[tuple[int, ...]]:
        """Each coded latent's shape for an h x w image, in coding order."""
        hp, wp = self._padded(h, w)
        return [spec.shape(hp, wp) for spec in self.model.latents()]

    # -- encode ---------------------------------------------------------------------------
    def _encode(
        self,
        image,
        seed: int | None,
        refine: EffortLevel | None = None,
        metric: str = "mse",
        lam_scale: float = 1.0,
        rate: int | None = None,
    ) -> _Encoded:
        """Image -> bitstream, keeping what the statistics need (the caller holds no_grad/float32).

        Latent i's prior comes from the latents already coded (as the decoder will compute it),
        its posterior from the image's analysis features. ``refine`` (an effort level's schedule)
        refines each posterior against that prior before it is coded (raybb.refine: the first
        stage jointly with the analysis features); None codes the amortised posteriors (effort 0)."""
        t0 = time.perf_counter()
        rgb = self._to_rgb(image)
        h, w = rgb.shape[:2]
        if h > bitstream.MAX_DIMENSION or w > bitstream.MAX_DIMENSION:
            raise ImageError(f"image {w}x{h} exceeds the format limit of {bitstream.MAX_DIMENSION} per side")
        seed = _seed_from_pixels(rgb) if seed is None else int(seed)
        if not 0 <= seed < 2**63:
            raise CodingError("seed must be in [0, 2**63)")
        m, t = self.model, self.tiler
        cond = m.conditioning(rate, 1, self.device)
        hp, wp = self._padded(h, w)
        specs = m.latents()
        ref = tiled = None
        if refine is not None and h * w <= REFINE_MAX_PIXELS:
            # refinement back-propagates through the whole image (~0.55 GiB/MP): untiled up to the limit
            x, _ = pad_to_stride(self._image_tensor(rgb), m.pad_stride)
            feats = m.analyze(x, cond)
            ref = Refiner(m, x, h, w, beta=self._beta(rate), seed=seed, metric=metric, lam_scale=lam_scale, cond=cond)
            keep = True
        else:
            feats = t.analyze(rgb, self.device, cond)  # tiled g_a for the PLN: memory bounded by the tile budget
            keep = t.single_tile(h, w)
            if refine is not None:  # larger: refined over crops of REFINE_TILE_PIXELS (raybb.refine)
                keep = True  # the refined features cannot be recomputed (the exact-sample pass needs them)
                tiled = TiledRefiner(
                    m,
                    rgb,
                    beta=self._beta(rate),
                    seed=seed,
                    metric=metric,
                    lam_scale=lam_scale,
                    cond=cond,
                    device=self.device,
                    tile_pixels=REFINE_TILE_PIXELS,
                    halo=REFINE_HALO,
                )
        refiner = ref if ref is not None else tiled
        decoded: list[torch.Tensor] = []
        levels: list[_Level] = []
        for i, spec in enumerate(specs):
            shape = spec.shape(hp, wp)
            p = t.prior(i, decoded, cond, shape)
            # a tiled image: the last posterior overwrites the features (recomputed if ever needed again)
            consume = ref is None and not keep and i == len(specs) - 1
            if ref is not None:  # untiled, as the refinement that follows
                q = m.posterior(i, feats, decoded, p, cond)
            else:
                q = t.posterior(i, feats, decoded, p, cond, consume=consume)
            if consume:
                feats = None
            if refiner is not None:
                steps = refine.steps2 if i == 0 else refine.steps1
                q, feats = refiner.stage(i, q, p, feats, decoded, steps, refine.lr)
            enc = self.samplers[spec.level].encode(flat_gaussian(q), flat_gaussian(p), StreamKey(seed, 0, spec.level))
            levels.append(_Level(spec.level, q, p, enc, tuple(q.mean.shape)))
            decoded.append(levels[-1].z)
        t.release()
        sections = []
        for lv in levels:
            s = self.samplers[lv.level]
            n = math.prod(lv.shape)
            sections.append(bitstream.Section(lv.level, s.sampler_id, tuple(s.params()), n, lv.enc.payload))
        data = bitstream.pack(
            bitstream.Container(
                fingerprint=self.loaded.short_fingerprint,
                width=w,
                height=h,
                seed=seed,
                sections=tuple(sections),
                rate=rate,
            )
        )
        stats = refiner.stats if refiner is not None else None
        return _Encoded(data, rgb, seed, rate, cond, feats, levels, t0, stats)

    def _encode_with(self, image, seed, effort, metric, target_bpp, target_psnr, rate=None, quality=None) -> _Encoded:
        """:meth:`_encode` at an effort level (None = the codec's), optionally aiming at a target.

        A target searches the refinement's λ multiplier (TARGET_PROBES encodes) and keeps, for a
        bpp target, the best-quality stream at or below it, for a PSNR target the smallest stream
        at or above it; when the model cannot reach the target, the closest probe."""
        effort, metric = _check_effort(self.effort if effort is None else effort, metric or self.metric)
        _check_targets(target_bpp, target_psnr)
        rate = self._rate_for(rate, quality)
        level = effort if isinstance(effort, EffortLevel) else effort_level(effort)
        if target_bpp is None and target_psnr is None:
            return self._encode(image, seed, level, metric, rate=rate)
        if level is None:
            raise ValueError("target_bpp/target_psnr need an effort of 1 or more (effort 0 does not refine)")
        from raybb.metrics import psnr

        rgb = self._to_rgb(image)
        t0 = time.perf_counter()
        lo, hi, t = -TARGET_SPAN, TARGET_SPAN, 0.0
        probes: list[tuple[float, float, _Encoded]] = []  # (bpp, psnr, encoded)
        for _ in range(TARGET_PROBES):
            e = self._encode(rgb, seed, level, metric, lam_scale=2.0**t, rate=rate)
            bpp = len(e.data) * 8 / (rgb.shape[0] * rgb.shape[1])
            q = float("nan")
            if target_psnr is not None:
                q = psnr(rgb, self.tiler.reconstruct_uint8(e.latents, e.cond, *rgb.shape[:2]))
            probes.append((bpp, q, e))
            below = bpp <= target_bpp if target_bpp is not None else q < target_psnr
            lo, hi = (t, hi) if below else (lo, t)
            t = (lo + hi) / 2
        if target_bpp is not None:
            ok = [p for p in probes if p[0] <= target_bpp]
            best = max(ok, key=lambda p: p[0]) if ok else min(probes, key=lambda p: p[0])
        else:
            ok = [p for p in probes if p[1] >= target_psnr]
            best = min(ok, key=lambda p: p[0]) if ok else max(probes, key=lambda p: p[1])
        e = best[2]
        e.t0 = t0
        e.refine.steps = sum(p[2].refine.steps for p in probes)
        e.refine.seconds = sum(p[2].refine.seconds for p in probes)
        return e

    @_oom_as(EncodeOutOfMemory)
    @torch.no_grad()
    @_in_float32
    def compress_with_stats(
        self,
        image,
        *,
        seed: int | None = None,
        theoretical: bool = False,
        effort: int | EffortLevel | None = None,
        metric: str | None = None,
        target_bpp: float | None = None,
        target_psnr: float | None = None,
        rate: int | None = None,
        quality: float | None = None,
    ) -> CompressResult:
        """Compress and report rate, distortion and time (``theoretical`` adds exact-sample quality).

        ``effort`` (None = the codec's), ``metric``, ``target_bpp``, ``target_psnr``, ``rate`` and
        ``quality``: see :meth:`compress`."""
        from raybb.metrics import psnr  # metrics pulls pytorch-msssim; keep import lazy

        e = self._encode_with(image, seed, effort, metric, target_bpp, target_psnr, rate, quality)
        rgb, seed, m = e.rgb, e.seed, self.model
        h, w = rgb.shape[:2]
        kl = {lv.level: _kl_bits(lv.q, lv.p) for lv in e.levels}
        coded = {lv.level: 8 * len(lv.enc.payload) for lv in e.levels}
        q0 = e.levels[0].q  # the exact-sample reconstruction starts from it
        for lv in e.levels:  # a 100 MP image's level-1 q and p are 600 MB: free them before synthesis
            lv.q = lv.p = None
        rec = self.tiler.reconstruct_uint8(e.latents, e.cond, h, w)
        seconds = time.perf_counter() - e.t0
        res = CompressResult(
            data=e.data,
            width=w,
            height=h,
            bpp=len(e.data) * 8 / (w * h),
            psnr=psnr(rgb, rec),
            ms_ssim=_ms_ssim(rgb, rec),
            kl_bits=sum(kl.values()),
            encode_seconds=seconds,
            reconstruction=rec,
            kl_bits_per_level=kl,
            coded_bits_per_level=coded,
            seed=seed,
            effort=self._effort_number(effort),
            refine_steps=e.refine.steps if e.refine else 0,
            refine_seconds=e.refine.seconds if e.refine else 0.0,
            rate=e.rate,
        )
        if theoretical:
            # exact posterior samples instead of coded ones: the first latent from its coded
            # posterior, every later one from its posterior given the exact samples before it
            g = torch.Generator(device=self.device).manual_seed(seed)
            feats = e.features if e.features is not None else self.tiler.analyze(rgb, self.device, e.cond)
            hp, wp = self._padded(h, w)
            zs: list[torch.Tensor] = []
            for i, spec in enumerate(m.latents()):
                if i == 0:
                    q = q0
                else:
                    p = self.tiler.prior(i, zs, e.cond, spec.shape(hp, wp))
                    q = self.tiler.posterior(i, feats, zs, p, e.cond)
                zs.append(q.mean + q.std * torch.randn(q.mean.shape, generator=g, device=self.device))
            rec_e = self.tiler.reconstruct_uint8(zs, e.cond, h, w)
            res.theoretical_psnr = psnr(rgb, rec_e)
            res.theoretical_ms_ssim = _ms_ssim(rgb, rec_e)
        return res

    @_oom_as(EncodeOutOfMemory)
    @torch.no_grad()
    @_in_float32
    def compress(
        self,
        image,
        *,
        seed: int | None = None,
        effort: int | EffortLevel | None = None,
        metric: str | None = None,
        target_bpp: float | None = None,
        target_psnr: float | None = None,
        rate: int | None = None,
        quality: float | None = None,
    ) -> bytes:
        """The bitstream only: skips the reconstruction and quality metrics of :meth:`compress_with_stats`
        (a third of the encode time on a Kodak image).

        ``effort`` 0 codes the amortised posteriors; 1..MAX_EFFORT refine them for this image first
        (raybb.refine.EFFORTS: more steps, more time, fewer bits for the quality); None = the codec's
        default. ``metric`` ('mse' or 'ms-ssim') is what refinement optimises. ``target_bpp`` /
        ``target_psnr`` (effort ≥ 1) search the refinement's rate-quality trade-off per image.
        ``rate`` (a rate index) or ``quality`` (raybb.levels.QUALITY_MIN..QUALITY_MAX) pick the
        point of a variable-rate model (None: the codec's); a fixed-rate model takes neither
        (ValueError). Every stream decodes with the same :meth:`decompress`."""
        return self._encode_with(image, seed, effort, metric, target_bpp, target_psnr, rate, quality).data

    def _effort_number(self, effort) -> int:
        effort = self.effort if effort is None else effort
        return -1 if isinstance(effort, EffortLevel) else int(effort)

    # -- decode ---------------------------------------------------------------------------
    def inspect(self, data: bytes) -> bitstream.Container:
        return bitstream.parse(data)

    @_oom_as(DecodeOutOfMemory)
    @torch.no_grad()
    @_in_float32
    def decompress(self, data: bytes) -> np.ndarray:
        """Decode a .rbb byte string to an HxWx3 uint8 array; raises BitstreamError subclasses
        (``TooManyPixels`` for a header above ``max_pixels``, before anything is allocated)."""
        c = bitstream.parse(data)
        check_pixels(c, self.max_pixels)
        if c.fingerprint != self.loaded.short_fingerprint:
            raise ModelMismatch(
                f"bitstream made by model {c.fingerprint.hex()}, this codec has {self.loaded.short_fingerprint.hex()}"
            )
        m = self.model
        if (c.rate is None) != (m.rate_levels == 0):
            raise CorruptPayload("rate index present for a fixed-rate model, or missing for a variable-rate one")
        hp, wp = self._padded(c.height, c.width)
        z = decode_levels(m, c.sections, hp, wp, c.seed, rate=c.rate, device=self.device, prior=self.tiler.prior)
        cond = m.conditioning(c.rate, 1, self.device)
        return self.tiler.reconstruct_uint8(z, cond, c.height, c.width)

    def _sampler_for(self, s: bitstream.Section) -> CodedSampler:
        return sampler_for_section(s)

    def decompress_to_png(self, data: bytes) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.decompress(data), "RGB").save(buf, format="PNG")
        return buf.getvalue()


def check_pixels(c: bitstream.Container, max_pixels: int) -> None:
    """Refuse a header that declares more than ``max_pixels`` pixels (TooManyPixels, exit 3)."""
    if c.width * c.height > max_pixels:
        raise TooManyPixels(
            f"bitstream declares {c.width}x{c.height} = {c.width * c.height} pixels, above the limit of "
            f"{max_pixels} (raise it with --max-pixels / max_pixels=)"
        )


def load_codec(
    model: str | Path | int | None = None,
    *,
    sampler: str | None = None,
    device: str | torch.device | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    effort: int = 0,
    metric: str = "mse",
    tile_pixels: int | None = None,
    quality: float | None = None,
) -> Codec:
    """Load a model (registry name, path to .safetensors, or a quality number; None = default) into a Codec.

    ``quality``: for a variable-rate model, the point on its curve (raybb.levels.QUALITY_MIN ..
    QUALITY_MAX, any float); without ``model`` it is resolved like ``raybb compress --quality``
    (raybb.registry.resolve_quality: the default family's member pln-qN, or the default variable-rate
    model at that quality). ``effort``/``metric``: the default encoder effort (see :meth:`Codec.compress`)."""
    from raybb.registry import resolve_model, resolve_quality

    if isinstance(model, int | float) and not isinstance(model, bool) and quality is None:
        model, quality = None, model  # a number is a quality (what the bucket jobs pass)
    if model is None and quality is not None:
        path, quality = resolve_quality(quality)
    else:
        path = resolve_model(model)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    loaded = load_weights(path, device=dev)
    name = Path(path).stem
    return Codec(
        loaded,
        sampler,
        device=dev,
        model_name=name,
        max_pixels=max_pixels,
        effort=effort,
        metric=metric,
        tile_pixels=tile_pixels,
        quality=quality,
    )
