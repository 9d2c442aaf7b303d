"""Coded sampling (relative entropy coding) of diagonal-Gaussian latents with shared randomness.

Pure PyTorch/NumPy + constriction: no nn.Module, no I/O.  Every sampler follows
:class:`CodedSampler`; ``get_sampler(name_or_id, params)`` builds one from the integers written
in a bitstream.  ``decode(p, key, enc.payload)`` is bit-identical to ``enc.sample`` on the same
device.  Samplers: ``pfr`` (block Poisson functional representation), ``dpfr`` (the high-KL
channels of an image latent by dithering, the rest by pfr: the codec's level-1 default), and
``rejection``, ``greedy``, ``importance`` (the earlier, less efficient samplers, kept for
comparison).
"""

from __future__ import annotations

from raybb.coding.base import (
    SAMPLERS,
    CodedSampler,
    DiagGaussian,
    EncodeResult,
    StreamKey,
    get_sampler,
    kl_bits,
)
from raybb.coding.dither import DitheredPFRSampler
from raybb.coding.greedy import GreedySampler
from raybb.coding.importance import ImportanceSampler
from raybb.coding.pfr import PFRSampler
from raybb.coding.rejection import RejectionSampler, fit_index_table

DEFAULT_SAMPLER = "pfr"

__all__ = [
    "StreamKey",
    "DiagGaussian",
    "EncodeResult",
    "CodedSampler",
    "SAMPLERS",
    "get_sampler",
    "kl_bits",
    "PFRSampler",
    "DitheredPFRSampler",
    "RejectionSampler",
    "ImportanceSampler",
    "GreedySampler",
    "fit_index_table",
    "DEFAULT_SAMPLER",
]
