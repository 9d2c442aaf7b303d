"""Streaming, deterministic listing of objects under a prefix.

The driver feeds this straight into the shard plan, so listing must (a) yield in a stable order
(the same bucket always gives the same shards) and (b) not hold the whole bucket in memory: we
walk one "directory" level at a time, sorted, depth first. A flat S3 prefix with millions of keys
is one directory, and s3fs pages through it internally; the memory then is that one level.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from raybb.imageio import IMAGE_SUFFIXES  # the one list of image suffixes (PIL/numpy only, no torch)
from raybb.storage.fs import Location, retry

__all__ = ["ObjectInfo", "iter_objects", "count_objects", "IMAGE_SUFFIXES", "is_hidden_key"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object: its key relative to the listed prefix and its size in bytes."""

    key: str
    size: int


def is_hidden_key(key: str) -> bool:
    """Keys with a path part starting with '.' or '_' (temp files, manifests, markers) are skipped."""
    return any(part.startswith((".", "_")) for part in key.split("/"))


def iter_objects(
    loc: Location, suffixes: Iterable[str] | None = IMAGE_SUFFIXES, *, include_hidden: bool = False
) -> Iterator[ObjectInfo]:
    """Yield every object under ``loc`` whose name ends in one of ``suffixes`` (None: all).

    Order: byte order of names within each directory, directories visited depth first in that
    same order; deterministic for a given bucket state. Hidden keys (see :func:`is_hidden_key`) are
    left out unless ``include_hidden``. A missing prefix yields nothing.
    """
    sfx = tuple(s.lower() for s in suffixes) if suffixes is not None else None
    fs = loc.fs
    root = loc.root

    def ls(path: str) -> list[dict]:
        def call() -> list[dict]:
            try:
                if hasattr(fs, "invalidate_cache"):
                    fs.invalidate_cache(path)
                return fs.ls(path, detail=True)
            except FileNotFoundError:
                return []

        return retry(call, what=f"list {loc.url}")

    def walk(path: str) -> Iterator[ObjectInfo]:
        entries = sorted(ls(path), key=lambda e: e["name"])
        for e in entries:
            name = e["name"]
            if name.rstrip("/") == path.rstrip("/") and e.get("type") != "directory":
                # ls on a file path returns the file itself
                key = ""
            else:
                key = loc.rel(name)
            if not key:
                continue
            if not include_hidden and is_hidden_key(key):
                continue
            if e.get("type") == "directory":
                yield from walk(name)
                continue
            if sfx is not None and not key.lower().endswith(sfx):
                continue
            yield ObjectInfo(key=key, size=int(e.get("size") or 0))

    yield from walk(root)


def count_objects(loc: Location, suffixes: Iterable[str] | None = IMAGE_SUFFIXES) -> tuple[int, int]:
    """(number, total bytes) of the objects :func:`iter_objects` would yield; for progress/ETA."""
    n = total = 0
    for o in iter_objects(loc, suffixes):
        n += 1
        total += o.size
    return n, total
