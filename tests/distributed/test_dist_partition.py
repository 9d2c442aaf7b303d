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
