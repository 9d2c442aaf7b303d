"""The shard plan is deterministic, respects count and byte limits, and loses nothing."""

from __future__ import annotations

import pytest

from raybb.distributed.partition import Shard, plan_shards
from raybb.storage import ObjectInfo


def _objs(sizes):
    return [ObjectInfo(f"k{i:04d}.png", s) for i, s in enumerate(sizes)]


def test_by_count():
    shards = list(plan_shards(_objs([1] * 10), max_images=4, max_bytes=10**9))
    assert [len(s) for s in shards] == [4, 4, 2]
    assert [s.index for s in shards] == [0, 1, 2]
    assert [k for s in shards for k in s.keys] == [f"k{i:04d}.png" for i in range(10)]


def test_by_bytes_and_oversized_objects_alone():
    sizes = [40, 40, 40, 500, 10, 10, 90]
    shards = list(plan_shards(_objs(sizes), max_images=100, max_bytes=100))
    assert [s.sizes for s in shards] == [(40, 40), (40,), (500,), (10, 10), (90,)]
    assert all(s.nbytes <= 100 or len(s) == 1 for s in shards)


def test_deterministic_ids_and_lazy():
    a = list(plan_shards(iter(_objs(range(50))), max_images=7, max_bytes=200))
    b = list(plan_shards(iter(_objs(range(50))), max_images=7, max_bytes=200))
    assert a == b and [s.shard_id for s in a] == [s.shard_id for s in b]
    assert len({s.shard_id for s in a}) == len(a)

    consumed = []

    def gen():
        for o in _objs([1] * 1000):
            consumed.append(o)
            yield o

    first = next(plan_shards(gen(), max_images=3, max_bytes=10))
    assert isinstance(first, Shard) and len(first) == 3
    assert len(consumed) == 4  # the stream is not read ahead beyond the next object


def test_empty_and_bad_limits():
    assert list(plan_shards([], max_images=3, max_bytes=3)) == []
    with pytest.raises(ValueError):
        list(plan_shards(_objs([1]), max_images=0))
    with pytest.raises(ValueError):
        list(plan_shards(_objs([1]), max_bytes=0))


def test_by_estimated_pixels():
    from raybb.distributed.partition import estimate_pixels

    # 1 MB at >= 0.5 bpp is at most 16 MP; estimates are capped at the per-image limit
    assert estimate_pixels(10**6, 0.5, 10**9) == 16_000_000
    assert estimate_pixels(10**9, 0.5, 100_000_000) == 100_000_000
    sizes = [10**6, 10**6, 10**6, 10**8, 10**5]
    shards = list(
        plan_shards(
            _objs(sizes),
            max_images=100,
            max_bytes=10**12,
            max_pixels=40_000_000,
            pixels_of=lambda o: estimate_pixels(o.size, 0.5, 100_000_000),
        )
    )
    assert [len(s) for s in shards] == [2, 1, 1, 1]  # 16+16 MP; 16; 100 (alone); 1.6
    assert [s.pixels for s in shards] == [32_000_000, 16_000_000, 100_000_000, 1_600_000]
    with pytest.raises(ValueError):
        list(plan_shards(_objs([1]), max_pixels=10))


def test_worker_memory_sizes_tiles():
    from raybb.tiling import DEFAULT_TILE_PIXELS, MIN_TILE_PIXELS, tile_pixels_for_memory

    big = tile_pixels_for_memory(8 * 2**30, 100_000_000)
    small = tile_pixels_for_memory(2500 * 2**20, 100_000_000)
    assert MIN_TILE_PIXELS <= small < big <= 4 * DEFAULT_TILE_PIXELS
    with pytest.raises(ValueError):
        tile_pixels_for_memory(1 * 2**30, 100_000_000)
