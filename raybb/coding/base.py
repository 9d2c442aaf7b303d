"""The coded-sampler interface shared by every algorithm, plus the registry.

A coded sampler turns a posterior ``q`` and a prior ``p`` (both diagonal Gaussians of the same
shape ``(D,)``) and a :class:`StreamKey` into a ``payload``; the decoder, knowing ``p``, the key
and the sampler's integer parameters, rebuilds the identical sample.  Both sides call the same
``_reconstruct`` code on the same integers, which is why decode is bit-identical to the encoder's
sample on a given device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch

from raybb.errors import CodingError, CorruptPayload

__all__ = [
    "StreamKey",
    "DiagGaussian",
    "EncodeResult",
    "CodedSampler",
    "IntParams",
    "SAMPLERS",
    "register",
    "get_sampler",
    "kl_bits",
    "standardize",
    "check_pair",
    "check_prior",
]

LN2 = math.log(2.0)


@dataclass(frozen=True)
class StreamKey:
    """Identifies one stream of shared randomness (written in the bitstream as integers)."""

    seed: int
    image: int = 0
    level: int = 0

    def __post_init__(self) -> None:
        if not (0 <= int(self.seed) < 1 << 63):
            raise ValueError("seed must be in [0, 2**63)")
        if not (0 <= int(self.image) < 1 << 63) or not (0 <= int(self.level) < 1 << 16):
            raise ValueError("image must be in [0, 2**63) and level in [0, 2**16)")


@dataclass(frozen=True)
class DiagGaussian:
    """A diagonal Gaussian over a flat latent: ``mean`` and ``std`` of shape (D,), float32.

    ``width``: the last axis of the image latent it was flattened from (0: not an image latent), for
    samplers whose entropy contexts are spatial (dpfr writes it into its payload)."""

    mean: torch.Tensor
    std: torch.Tensor
    width: int = 0


@dataclass
class EncodeResult:
    """What ``encode`` returns: the bytes to store, the sample they decode to, and statistics."""

    payload: bytes
    sample: torch.Tensor
    stats: dict = field(default_factory=dict)


class IntParams:
    """``params()``, ``from_params()`` and ``repr`` for a sampler whose integer hyper-parameters are
    exactly its ``__init__`` arguments, named in ``PARAMS`` (the constructor validates them and
    raises ``CorruptPayload``, since a bitstream's parameters are untrusted input)."""

    PARAMS: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str]

    def params(self) -> tuple[int, ...]:
        return tuple(getattr(self, n) for n in self.PARAMS)

    @classmethod
    def from_params(cls, params: tuple[int, ...]):
        if len(params) != len(cls.PARAMS) or not all(isinstance(x, int) for x in params):
            raise CorruptPayload(f"{cls.name}: expected {len(cls.PARAMS)} integer parameters")
        return cls(*params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.params()}"


@runtime_checkable
class CodedSampler(Protocol):
    """Protocol every sampler implements (see the module docstring)."""

    sampler_id: ClassVar[int]
    name: ClassVar[str]

    def params(self) -> tuple[int, ...]: ...

    @classmethod
    def from_params(cls, params: tuple[int, ...]) -> CodedSampler: ...

    def encode(self, q: DiagGaussian, p: DiagGaussian, key: StreamKey) -> EncodeResult: ...

    def decode(self, p: DiagGaussian, key: StreamKey, payload: bytes) -> torch.Tensor: ...


SAMPLERS: dict[str, type] = {}
_BY_ID: dict[int, type] = {}


def register(cls: type) -> type:
    """Class decorator: ids are written in bitstreams, so they must never be reused."""
    if cls.name in SAMPLERS or cls.sampler_id in _BY_ID:
        raise RuntimeError(f"duplicate sampler registration {cls.name}/{cls.sampler_id}")
    SAMPLERS[cls.name] = cls
    _BY_ID[cls.sampler_id] = cls
    return cls


def get_sampler(name_or_id: str | int, params: tuple[int, ...] | None = None) -> CodedSampler:
    """Sampler by name or bitstream id, with default parameters when ``params`` is None."""
    if isinstance(name_or_id, str):
        cls = SAMPLERS.get(name_or_id)
    else:
        cls = _BY_ID.get(int(name_or_id))
    if cls is None:
        raise CorruptPayload(f"unknown coded sampler {name_or_id!r}")
    return cls() if params is None else cls.from_params(tuple(params))


def check_prior(p: DiagGaussian) -> int:
    """Validate a prior and return D (decoder side: p comes from the network)."""
    if p.mean.ndim != 1 or p.mean.shape != p.std.shape:
        raise CodingError("prior mean/std must be 1-D tensors of the same shape")
    if p.mean.dtype != torch.float32 or p.std.dtype != torch.float32:
        raise CodingError("prior must be float32")
    return int(p.mean.shape[0])


def check_pair(q: DiagGaussian, p: DiagGaussian) -> int:
    """Validate q and p (shapes, dtype, device, finiteness, std > 0); return D."""
    d = check_prior(p)
    if q.mean.shape != p.mean.shape or q.std.shape != p.std.shape:
        raise CodingError("q and p must have the same shape")
    if q.mean.dtype != torch.float32 or q.std.dtype != torch.float32:
        raise CodingError("posterior must be float32")
    if len({q.mean.device, q.std.device, p.mean.device, p.std.device}) != 1:
        raise CodingError("q and p must be on one device")
    for t in (q.mean, q.std, p.mean, p.std):
        if not bool(torch.isfinite(t).all()):
            raise CodingError("non-finite value in q or p")
    if not bool((q.std > 0).all()) or not bool((p.std > 0).all()):
        raise CodingError("standard deviations must be > 0")
    return d


def standardize(q: DiagGaussian, p: DiagGaussian) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior in the prior's standardized space z' = (z - mu_p)/sigma_p: (m, s), float32."""
    m = (q.mean - p.mean) / p.std
    s = q.std / p.std
    return m, s


def kl_bits(q: DiagGaussian, p: DiagGaussian) -> torch.Tensor:
    """Per-dimension KL[q || p] in bits (float64, on the inputs' device)."""
    mq, sq = q.mean.double(), q.std.double()
    mp, sp = p.mean.double(), p.std.double()
    r = sq / sp
    nats = -torch.log(r) + 0.5 * (r * r + ((mq - mp) / sp) ** 2 - 1.0)
    return nats / LN2


def kl_bits_std(m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per-dim KL[N(m, s^2) || N(0, 1)] in bits (float64)."""
    m, s = m.double(), s.double()
    return (-torch.log(s) + 0.5 * (s * s + m * m - 1.0)) / LN2


def prior_sample(p: DiagGaussian, z_std: torch.Tensor) -> torch.Tensor:
    """The one formula both sides use to leave the standardized space (separate mul then add)."""
    return torch.add(p.mean, torch.mul(p.std, z_std))
