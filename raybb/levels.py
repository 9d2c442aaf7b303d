"""Model-agnostic coding of a model's latents, one bitstream section per latent.

Works for any ``raybb.model.protocol.LatentModel``: the encoder walks the model's latents in
coding order and, for each, computes the prior from the latents *decoded so far* and the posterior
from the image's analysis features, and codes the posterior against the prior with that level's
coded sampler and its own stream of shared randomness ``StreamKey(seed, 0, level)``. The decoder
repeats the priors from the decoded latents, so on one device it rebuilds the encoder's samples bit
for bit. For the PLN (levels 2 then 1) this is exactly what ``raybb.codec.Codec`` does, and it
reproduces the golden bitstreams in tests/codec/expected byte for byte
(tests/codec/test_levels.py).

The functions here hold no state and do no I/O; ``compress_rgb``/``decompress_rgb`` add the
container (``raybb.bitstream``), padding and cropping, as the Codec does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from raybb import bitstream
from raybb.coding import CodedSampler, DiagGaussian, EncodeResult, StreamKey, get_sampler
from raybb.errors import CorruptPayload, ImageError, ModelMismatch
from raybb.model.distributions import Gaussian
from raybb.model.ladder import pad_to_stride
from raybb.pipelines import SamplerSpec, resolve_channels

__all__ = [
    "SamplerSpec",
    "LevelCode",
    "EncodedLevels",
    "resolve_channels",
    "samplers_for",
    "encode_levels",
    "decode_levels",
    "compress_rgb",
    "decompress_rgb",
    "QUALITY_MIN",
    "QUALITY_MAX",
    "rate_of_quality",
    "quality_of_rate",
]

#: ``quality`` for a variable-rate model is a float in [QUALITY_MIN, QUALITY_MAX], linear in log β:
#: QUALITY_MIN is the model's beta_max (its lowest rate), QUALITY_MAX its beta_min (highest rate).
#: The integers 1..8 name eight points on it (as CompressAI's eight qualities do); the PLN family's
#: quality N instead names the member pln-qN (raybb.registry).
QUALITY_MIN, QUALITY_MAX = 1.0, 8.0


def _rate_config(model_or_config):
    c = getattr(model_or_config, "config", model_or_config)
    if not getattr(c, "rate_levels", 0):
        raise ValueError("a fixed-rate model has no quality range (pick another model of its family)")
    return c


def rate_of_quality(model_or_config, quality: float) -> int:
    """The rate index for a quality in [QUALITY_MIN, QUALITY_MAX] (ValueError outside it)."""
    c = _rate_config(model_or_config)
    q = float(quality)
    if not QUALITY_MIN <= q <= QUALITY_MAX:  # also refuses NaN
        raise ValueError(f"quality must be in {QUALITY_MIN:g}..{QUALITY_MAX:g} for this model, got {quality!r}")
    t = (q - QUALITY_MIN) / (QUALITY_MAX - QUALITY_MIN)
    return c.rate_of_beta(c.beta_max * (c.beta_min / c.beta_max) ** t)


def quality_of_rate(model_or_config, rate: int) -> float:
    """The quality a rate index stands for (the inverse of ``rate_of_quality`` on the index grid)."""
    c = _rate_config(model_or_config)
    if type(rate) is not int or not 0 <= rate < c.rate_levels:
        raise ValueError(f"rate index {rate!r} outside 0..{c.rate_levels - 1}")
    return QUALITY_MIN + (QUALITY_MAX - QUALITY_MIN) * rate / (c.rate_levels - 1)


def samplers_for(model, first: SamplerSpec, rest: SamplerSpec) -> dict[int, CodedSampler]:
    """Samplers by level id: ``first`` for the first latent in coding order, ``rest`` for every other
    (the codec's 'LEVEL2/LEVEL1' pipelines: for the PLN, first = level 2, rest = level 1)."""
    out: dict[int, CodedSampler] = {}
    for i, spec in enumerate(model.latents()):
        out[spec.level] = get_sampler(*resolve_channels(first if i == 0 else rest, spec.channels))
    return out


def flat_gaussian(g: Gaussian) -> DiagGaussian:
    """A latent's Gaussian as the coded samplers take it: flat, with the latent's width."""
    return DiagGaussian(g.mean.reshape(-1).contiguous(), g.std.reshape(-1).contiguous(), int(g.mean.shape[-1]))


@dataclass
class LevelCode:
    """One coded latent: its posterior, prior, the sampler's result and the (decoded) sample."""

    level: int
    q: Gaussian
    p: Gaussian
    result: EncodeResult
    z: torch.Tensor

    @property
    def kl_bits(self) -> float:
        return float(self.q.kl(self.p).sum()) / math.log(2)


@dataclass
class EncodedLevels:
    sections: tuple[bitstream.Section, ...]
    levels: list[LevelCode] = field(default_factory=list)
    features: object = None  # the model's analysis features (for exact-sample statistics)
    cond: object = None  # the model's conditioning for this rate

    @property
    def latents(self) -> list[torch.Tensor]:
        """The coded samples in coding order: exactly what ``decode_levels`` rebuilds."""
        return [lc.z for lc in self.levels]


@torch.no_grad()
def encode_levels(
    model, x: torch.Tensor, samplers: dict[int, CodedSampler], seed: int, *, rate: int | None = None
) -> EncodedLevels:
    """Code every latent of ``model`` for the padded image ``x`` (1,3,H,W) in [0,1] (H, W multiples of
    ``model.pad_stride``); ``samplers`` maps level id -> sampler; ``rate`` is a variable-rate
    model's rate index (None for fixed-rate models)."""
    h, w = x.shape[-2:]
    cond = model.conditioning(rate, 1, x.device)
    feats = model.analyze(x, cond)
    decoded: list[torch.Tensor] = []
    codes: list[LevelCode] = []
    sections = []
    for i, spec in enumerate(model.latents()):
        p = model.prior(i, decoded, cond, spec.shape(h, w))
        q = model.posterior(i, feats, decoded, p, cond)
        s = samplers[spec.level]
        enc = s.encode(flat_gaussian(q), flat_gaussian(p), StreamKey(seed, 0, spec.level))
        z = enc.sample.reshape(q.mean.shape)
        decoded.append(z)
        codes.append(LevelCode(spec.level, q, p, enc, z))
        sections.append(bitstream.Section(spec.level, s.sampler_id, tuple(s.params()), q.mean.numel(), enc.payload))
    return EncodedLevels(tuple(sections), codes, feats, cond)


def sampler_for_section(s: bitstream.Section) -> CodedSampler:
    """The sampler a section names, with its parameters; a bad id or parameters is CorruptPayload."""
    try:
        return get_sampler(s.sampler_id, tuple(s.params))
    except CorruptPayload:
        raise
    except (KeyError, ValueError, TypeError) as e:
        raise CorruptPayload(f"level {s.level}: unknown sampler id {s.sampler_id} or bad parameters: {e}") from e


@torch.no_grad()
def decode_levels(
    model,
    sections: tuple[bitstream.Section, ...] | list[bitstream.Section],
    height: int,
    width: int,
    seed: int,
    *,
    rate: int | None = None,
    device: torch.device | str = "cpu",
    prior=None,
) -> list[torch.Tensor]:
    """The latents, in coding order, from a file's sections (``height``/``width``: the *padded*
    size). Raises ``CorruptPayload`` when the sections do not fit the model. ``prior`` replaces
    ``model.prior`` (same signature; the Codec passes its tiled stages)."""
    specs = model.latents()
    by_level = {s.level: s for s in sections}
    if len(sections) != len(specs) or set(by_level) != {sp.level for sp in specs}:
        raise CorruptPayload(
            f"bitstream has sections for levels {sorted(s.level for s in sections)}; "
            f"this model codes {sorted(sp.level for sp in specs)}"
        )
    try:
        cond = model.conditioning(rate, 1, torch.device(device))
    except ValueError as e:
        raise CorruptPayload(f"rate index: {e}") from e
    prior = prior or model.prior
    for spec in specs:  # every section checked before anything is decoded
        s = by_level[spec.level]
        shape = spec.shape(height, width)
        if s.num_dims != math.prod(shape):
            raise CorruptPayload(f"level {s.level} has {s.num_dims} dims; {math.prod(shape)} expected for this size")
    samplers = [sampler_for_section(by_level[spec.level]) for spec in specs]
    decoded: list[torch.Tensor] = []
    for i, (spec, sampler) in enumerate(zip(specs, samplers, strict=True)):
        s = by_level[spec.level]
        shape = spec.shape(height, width)
        p = prior(i, decoded, cond, shape)
        decoded.append(sampler.decode(flat_gaussian(p), StreamKey(seed, 0, spec.level), s.payload).reshape(shape))
    return decoded


# -- whole images (what Codec.compress/decompress do, for any architecture) -----------------------
def _image_tensor(rgb: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy()).to(device, torch.float32).div_(255.0)[None]


def _to_uint8(x_hat: torch.Tensor, h: int, w: int) -> np.ndarray:
    x = x_hat[0, :, :h, :w].clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def compress_rgb(
    model,
    rgb: np.ndarray,
    samplers: dict[int, CodedSampler],
    seed: int,
    fingerprint: bytes,
    *,
    rate: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[bytes, np.ndarray, EncodedLevels]:
    """(bitstream, the reconstruction ``decompress_rgb`` will return on this device, the coding)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"expected an HxWx3 uint8 array, got shape {rgb.shape} dtype {rgb.dtype}")
    h, w = rgb.shape[:2]
    x, _ = pad_to_stride(_image_tensor(rgb, device), model.pad_stride)
    enc = encode_levels(model, x, samplers, seed, rate=rate)
    data = bitstream.pack(
        bitstream.Container(fingerprint=fingerprint, width=w, height=h, seed=seed, sections=enc.sections, rate=rate)
    )
    rec = _to_uint8(model.reconstruct(enc.latents, enc.cond), h, w)
    return data, rec, enc


@torch.no_grad()
def decompress_rgb(
    model, data: bytes, fingerprint: bytes, *, max_pixels: int | None = None, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Decode a .rbb byte string written by ``compress_rgb`` (or by the Codec, for the PLN)."""
    c = bitstream.parse(data)
    if c.fingerprint != fingerprint:
        raise ModelMismatch(f"bitstream made by model {c.fingerprint.hex()}, this model is {fingerprint.hex()}")
    if max_pixels is not None and c.width * c.height > max_pixels:
        raise CorruptPayload(f"bitstream declares {c.width}x{c.height}, above the pixel limit")
    if bool(model.rate_levels) != (c.rate is not None):
        raise CorruptPayload("rate index present for a fixed-rate model, or missing for a variable-rate one")
    stride = model.pad_stride
    hp, wp = -(-c.height // stride) * stride, -(-c.width // stride) * stride
    z = decode_levels(model, c.sections, hp, wp, c.seed, rate=c.rate, device=device)
    cond = model.conditioning(c.rate, 1, torch.device(device))
    return _to_uint8(model.reconstruct(z, cond), c.height, c.width)
