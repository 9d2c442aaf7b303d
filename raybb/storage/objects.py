"""Reading and writing single objects, with retries, and writes that are atomic.

A crash (killed actor, lost node, killed driver) must never leave a half-written bitstream under
its final key, because resume treats an existing output as done. So:

* local files: write ``.raybb-tmp-<random>`` in the same directory, fsync, then ``os.replace``
  (atomic on POSIX); the temp name is hidden from listings (leading '.') and short whatever the
  key's length (a name near the 255-byte limit must not fail only because of its temp file).
* S3 and other object stores: one ``PUT`` of the whole body (``pipe_file``). An object store makes
  an object visible only when its upload completed, so the key is write-once-complete by design.
* ``memory://``: a single dict assignment.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid

from raybb.storage.fs import Location, retry

__all__ = ["read_bytes", "write_atomic", "exists", "remove", "sha256_hex", "object_size"]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(loc: Location, key: str) -> bytes:
    """Whole object ``key`` under ``loc`` (retried; FileNotFoundError if it does not exist)."""
    fs, path = loc.fs, loc.path(key)
    return retry(lambda: fs.cat_file(path), what=f"read {key}")


def exists(loc: Location, key: str) -> bool:
    """Whether ``key`` exists (fresh answer: listing caches are bypassed)."""
    fs, path = loc.fs, loc.path(key)

    def call() -> bool:
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(path)
        return bool(fs.exists(path))

    return retry(call, what=f"exists {key}")


def object_size(loc: Location, key: str) -> int | None:
    """Size in bytes of ``key``, or None when it does not exist."""
    fs, path = loc.fs, loc.path(key)

    def call() -> int | None:
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(path)
        try:
            return int(fs.size(path))
        except FileNotFoundError:
            return None

    return retry(call, what=f"size {key}")


def write_atomic(loc: Location, key: str, data: bytes, *, attempts: int = 8) -> None:
    """Write ``data`` to ``key`` so that readers see either nothing or the complete object."""
    fs, path = loc.fs, loc.path(key)
    if loc.is_local:
        retry(lambda: _write_local_atomic(path, data), what=f"write {key}", attempts=attempts)
        return

    def put() -> None:
        fs.pipe_file(path, data)
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(path)

    retry(put, what=f"write {key}", attempts=attempts)


def _write_local_atomic(path: str, data: bytes) -> None:
    d = os.path.dirname(path)
    os.makedirs(d or ".", exist_ok=True)
    tmp = os.path.join(d, f".raybb-tmp-{uuid.uuid4().hex[:16]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(loc: Location, key: str) -> None:
    """Delete ``key`` if it exists."""
    fs, path = loc.fs, loc.path(key)

    def call() -> None:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(path)

    retry(call, what=f"delete {key}")
