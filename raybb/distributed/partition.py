"""Deterministic shard plan: a stream of objects cut into shards by count and by bytes.

Pure (no Ray, no I/O), so it is tested alone. The same listing always gives the same shards, with
the same ids, whatever the number of workers: a shard id is a hash of its keys, so a retried or
resumed shard is recognisable in logs.

A shard closes when adding the next object would exceed ``max_images``, ``max_bytes`` or
``max_pixels``. An object larger than a limit on its own becomes a shard of one (it is never
dropped: the actor decides whether it is too large and writes an error row).

Pixels, not image count, decide how long a shard takes (coding time is linear in pixels), so
shards are also bounded by an *estimate* of their pixels made from object sizes alone (the
listing has no image headers): ``size * 8 / min_bpp``, capped at the per-image pixel limit. The
assumed bits per pixel are low (photos rarely compress below 0.5 bpp, raybb's lowest-rate model
writes ~0.1), so the estimate errs high and shards err small. Memory does not depend on shards:
an actor codes one image at a time in tiles (raybb/tiling.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the shard plan (and the job settings) import no storage stack
    from raybb.storage.listing import ObjectInfo

__all__ = [
    "Shard",
    "plan_shards",
    "estimate_pixels",
    "DEFAULT_SHARD_IMAGES",
    "DEFAULT_SHARD_BYTES",
    "DEFAULT_SHARD_PIXELS",
    "SOURCE_MIN_BPP",
    "BITSTREAM_MIN_BPP",
]

DEFAULT_SHARD_IMAGES = 16
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
#: Estimated pixels per shard: a few of the largest images (100 MP) or many small ones.
DEFAULT_SHARD_PIXELS = 400_000_000
#: Bits per pixel assumed when estimating an object's pixels from its size (low = errs high).
SOURCE_MIN_BPP = 0.5
BITSTREAM_MIN_BPP = 0.08


def estimate_pixels(size: int, min_bpp: float, cap: int) -> int:
    """An upper-ish estimate of an object's pixels from its byte size (see the module docstring)."""
    return min(int(cap), math.ceil(max(size, 1) * 8 / min_bpp))


@dataclass(frozen=True, slots=True)
class Shard:
    """A unit of work: consecutive objects from the listing."""

    index: int
    keys: tuple[str, ...]
    sizes: tuple[int, ...]
    pixels: int = 0  # estimated pixels of the shard (0 when planned without a pixel budget)

    @property
    def nbytes(self) -> int:
        return sum(self.sizes)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def shard_id(self) -> str:
        """Stable id: 12 hex digits of sha256 over the keys."""
        h = hashlib.sha256()
        for k in self.keys:
            h.update(k.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()[:12]


def plan_shards(
    objects: Iterable[ObjectInfo],
    *,
    max_images: int = DEFAULT_SHARD_IMAGES,
    max_bytes: int = DEFAULT_SHARD_BYTES,
    max_pixels: int | None = None,
    pixels_of: Callable[[ObjectInfo], int] | None = None,
) -> Iterator[Shard]:
    """Cut ``objects`` (consumed lazily, in order) into shards; yields each shard as it closes.

    With ``max_pixels``, ``pixels_of(obj)`` (an estimate, see :func:`estimate_pixels`) also bounds
    a shard's pixels."""
    if max_images < 1:
        raise ValueError("max_images must be >= 1")
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")
    if max_pixels is not None and (max_pixels < 1 or pixels_of is None):
        raise ValueError("max_pixels must be >= 1 and needs pixels_of")
    keys: list[str] = []
    sizes: list[int] = []
    total = 0
    pixels = 0
    index = 0
    for obj in objects:
        px = pixels_of(obj) if max_pixels is not None and pixels_of is not None else 0
        if keys and (
            len(keys) >= max_images or total + obj.size > max_bytes or (max_pixels and pixels + px > max_pixels)
        ):
            yield Shard(index, tuple(keys), tuple(sizes), pixels)
            index += 1
            keys, sizes, total, pixels = [], [], 0, 0
        keys.append(obj.key)
        sizes.append(obj.size)
        total += obj.size
        pixels += px
    if keys:
        yield Shard(index, tuple(keys), tuple(sizes), pixels)
