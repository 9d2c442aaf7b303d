"""Deterministic shard plan: a stream of objects cut into shards by count and by bytes.

Pure (no Ray, no I/O), so it is tested alone. The same listing always gives the same shards, with
the same ids, whatever the number of workers: a shard id is a hash of its keys, so a retried or
resumed shard is recognisable in logs.

A shard closes when adding the next object would exceed ``max_images`` or ``max_bytes``. An
object larger than ``max_bytes`` on its own becomes a shard of one (it is never dropped: the actor
decides whether it is too large and writes an error row).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from raybb.storage.listing import ObjectInfo

__all__ = ["Shard", "plan_shards", "DEFAULT_SHARD_IMAGES", "DEFAULT_SHARD_BYTES"]

DEFAULT_SHARD_IMAGES = 16
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Shard:
    """A unit of work: consecutive objects from the listing."""

    index: int
    keys: tuple[str, ...]
    sizes: tuple[int, ...]

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
) -> Iterator[Shard]:
    """Cut ``objects`` (consumed lazily, in order) into shards; yields each shard as it closes."""
    if max_images < 1:
        raise ValueError("max_images must be >= 1")
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")
    keys: list[str] = []
    sizes: list[int] = []
    total = 0
    index = 0
    for obj in objects:
        if keys and (len(keys) >= max_images or total + obj.size > max_bytes):
            yield Shard(index, tuple(keys), tuple(sizes))
            index += 1
            keys, sizes, total = [], [], 0
        keys.append(obj.key)
        sizes.append(obj.size)
        total += obj.size
    if keys:
        yield Shard(index, tuple(keys), tuple(sizes))
