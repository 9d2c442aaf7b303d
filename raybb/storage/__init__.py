"""Storage I/O for batch jobs: fsspec locations, streaming listings, atomic writes, the manifest.

Never imports torch or the codec: the Ray driver lists and plans with this alone.
"""

from __future__ import annotations

from raybb.storage.fs import Location, is_transient, join_key, resolve, retry
from raybb.storage.listing import IMAGE_SUFFIXES, ObjectInfo, count_objects, is_hidden_key, iter_objects
from raybb.storage.manifest import (
    COMPRESS_SCHEMA,
    DECOMPRESS_SCHEMA,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    CompressRow,
    DecompressRow,
    KeySet,
    ManifestWriter,
    compact_manifest,
    done_keys,
    iter_manifest,
    manifest_location,
    new_run_id,
    read_manifest,
)
from raybb.storage.objects import exists, object_size, read_bytes, remove, sha256_hex, write_atomic

__all__ = [
    "Location",
    "resolve",
    "retry",
    "is_transient",
    "join_key",
    "ObjectInfo",
    "iter_objects",
    "count_objects",
    "is_hidden_key",
    "IMAGE_SUFFIXES",
    "read_bytes",
    "write_atomic",
    "exists",
    "object_size",
    "remove",
    "sha256_hex",
    "COMPRESS_SCHEMA",
    "DECOMPRESS_SCHEMA",
    "STATUS_OK",
    "STATUS_ERROR",
    "STATUS_SKIPPED",
    "CompressRow",
    "DecompressRow",
    "ManifestWriter",
    "read_manifest",
    "iter_manifest",
    "done_keys",
    "KeySet",
    "compact_manifest",
    "manifest_location",
    "new_run_id",
]
