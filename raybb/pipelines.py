"""Named sampler pipelines: which coded sampler (and integer parameters) codes each latent level.

A pipeline is a pair (level-2 sampler, level-1 sampler). Bitstreams carry each level's sampler id
and parameters, so *decoding* never needs a pipeline name; names only choose how new streams are
encoded. Pure: imports only the sampler registry.

The default pipeline, ``pfr-dither``, codes level 2 with ``pfr`` and level 1 with ``dpfr``
(raybb.coding.dither): level 1's high-KL channels dim by dim with a dithered box posterior, its
other channels with ``pfr``. ``--sampler pfr`` is block PFR on both levels (the default before).

What bare ``pfr`` means, everywhere: budget 22 bits per block, 2^14 candidates, superblocks of 128
dims, dims above 22 bits of KL sent as outliers (``PFR_DEFAULT``):

* as a pipeline (``--sampler pfr``), in a pair (``importance/pfr``) or alone as a
  level's sampler, it is ``PFR_DEFAULT`` with coding-order parameter 0, which the codec replaces by
  the level's channel count (:func:`resolve_channels`): each level is then coded channel-major or
  position-major, whichever makes fewer blocks, one bit in the stream;
* ``PFRSampler()`` / ``get_sampler("pfr")`` on a flat vector (the sampler library alone, no channel
  structure) is the same (22, 14, 128, 22) with ``channels=1``: the flat order, no order bit.

Changing what a name means changes only how new streams are encoded: (22, 14, 64, 22, 0) streams,
the default before 128-dim superblocks, decode as before (``pfr:22,14,64,22,0`` still writes them).
"""

from __future__ import annotations

from raybb.coding import SAMPLERS, get_sampler
from raybb.coding.pfr import PFR_DEFAULT_PARAMS
from raybb.errors import RaybbError

__all__ = [
    "SamplerSpec",
    "PFR_DEFAULT",
    "PFR_MAX",
    "PFR_EXACT",
    "PIPELINES",
    "RETIRED",
    "DEFAULT_PIPELINE",
    "parse_pipeline",
    "resolve_channels",
]

#: A sampler for one level: registry name and integer parameters (None = the sampler's defaults).
SamplerSpec = tuple[str, tuple[int, ...] | None]

#: PFR truncated at 2^14 candidates on blocks of up to 22 bits of KL, 128-dim superblocks, adaptive
#: coding order. A block whose exact PFR rank would exceed 2^14 takes the best of its first 2^14
#: candidates: a less concentrated sample, but ~1.0x KL instead of ~1.45x for near-exact samples,
#: which wins on the image rate-distortion curve at this encode time (docs/coding.md, "Pipelines"
#: and "The coding gap").
PFR_DEFAULT: tuple[int, ...] = (*PFR_DEFAULT_PARAMS, 0)
#: dpfr (raybb.coding.dither): the channels whose dims carry several bits of KL each coded dim by
#: dim with a dithered box posterior, the rest by PFR with PFR_DEFAULT's parameters.
DPFR_DEFAULT: tuple[int, ...] = (*PFR_DEFAULT_PARAMS, 0)
#: 2^16 candidates on blocks of up to 25 bits: fewer bytes for the quality at 2-3x the encode time.
PFR_MAX: tuple[int, ...] = (25, 16, 64, 25, 0)
#: Near-exact samples (truncation bias within the exactness tests' noise), at ~1.45x KL.
PFR_EXACT: tuple[int, ...] = (14, 16, 64, 14, 0)

#: The pipelines to choose from: (level-2 sampler, level-1 sampler).
PIPELINES: dict[str, tuple[SamplerSpec, SamplerSpec]] = {
    "pfr-dither": (("pfr", PFR_DEFAULT), ("dpfr", DPFR_DEFAULT)),
    "pfr": (("pfr", PFR_DEFAULT), ("pfr", PFR_DEFAULT)),
    "pfr-max": (("pfr", PFR_MAX), ("pfr", PFR_MAX)),
    "pfr-exact": (("pfr", PFR_EXACT), ("pfr", PFR_EXACT)),
    "is-gs": (("importance", None), ("greedy", None)),  # importance sampling / greedy shards
    "rs": (("rejection", None), ("rejection", None)),  # per-dim rejection sampling (exact)
}
DEFAULT_PIPELINE = "pfr-dither"

#: Names that older versions accepted, with the explicit spec that encodes the same way. Files they
#: wrote decode with any pipeline (their parameters are in the stream).
RETIRED: dict[str, str] = {
    "pfr-hq": "pfr-exact",
    "pfr-v1": "pfr:20,14,64,20",
    "pfr-v0": "pfr:12,14,64,12",
}


#: What a bare sampler name means in a spec ('pfr', 'importance/dpfr', ...).
_BARE: dict[str, SamplerSpec] = {"pfr": ("pfr", PFR_DEFAULT), "dpfr": ("dpfr", DPFR_DEFAULT)}


def _bad(spec: str) -> ValueError:
    known = sorted(PIPELINES) + sorted(SAMPLERS)
    return ValueError(f"unknown sampler spec {spec!r}; use one of {known} or 'LEVEL2/LEVEL1'")


def parse_pipeline(spec: str | None) -> tuple[SamplerSpec, SamplerSpec]:
    """A named pipeline ('pfr', 'pfr-max', 'is-gs', ...), 'A/B' (level-2 sampler A, level-1 sampler
    B) or 'A' (both). Each sampler may carry integer parameters, e.g. 'pfr:22,14,128,22,0' (checked
    here; a fifth PFR parameter 0 stands for the level's channel count); a bare 'pfr' is
    ``PFR_DEFAULT``. ValueError (a usage error) for anything else, and for a retired name, with the
    spec to use instead."""
    spec = spec or DEFAULT_PIPELINE
    if spec in PIPELINES:
        return PIPELINES[spec]
    if spec in RETIRED:
        raise ValueError(
            f"the sampler pipeline {spec!r} was retired; --sampler {RETIRED[spec]} encodes the same way "
            "(files written with it still decode: their parameters are in the stream)"
        )
    parts = spec.split("/")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise _bad(spec)
    out: list[SamplerSpec] = []
    for part in parts:
        name, _, params = part.partition(":")
        if name not in SAMPLERS:
            raise _bad(spec)
        if not params:
            out.append(_BARE[name] if name in _BARE else (name, None))
            continue
        try:
            values = tuple(int(v) for v in params.split(","))
            get_sampler(name, values)  # the sampler validates count and ranges
        except (ValueError, RaybbError) as e:
            raise ValueError(f"bad parameters {params!r} for sampler {name!r}: {e}") from e
        out.append((name, values))
    return out[0], out[1]


def resolve_channels(spec: SamplerSpec, channels: int) -> SamplerSpec:
    """A pfr/dpfr spec whose channel parameter is 0 ('the level's channels') gets this latent's channel count."""
    name, params = spec
    if name in ("pfr", "dpfr") and params is not None and len(params) == 5 and params[4] == 0:
        return name, (*params[:4], channels)
    return spec
