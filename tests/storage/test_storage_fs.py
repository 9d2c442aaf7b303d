"""Locations, listing, atomic writes and retries on local, memory and a real S3 server."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from raybb.errors import StorageError
from raybb.storage import (
    Location,
    count_objects,
    exists,
    iter_objects,
    object_size,
    read_bytes,
    remove,
    resolve,
    retry,
    write_atomic,
)

FILES = {
    "b/2.png": b"22",
    "a/1.jpg": b"1",
    "a/sub/3.JPEG": b"333",
    "z.webp": b"zzzz",
    "notes.txt": b"not an image",
    "_manifest.parquet": b"hidden",
    "a/.tmp-x.png": b"hidden temp",
}
EXPECTED = ["a/1.jpg", "a/sub/3.JPEG", "b/2.png", "z.webp"]


def _fill(loc: Location) -> None:
    for k, v in FILES.items():
        write_atomic(loc, k, v)


def _locations(tmp_path, s3=None):
    locs = [
        resolve(str(tmp_path / "plain")),
        resolve(f"file://{tmp_path}/url"),
        resolve(f"memory://raybb-{uuid.uuid4().hex[:8]}/p"),
    ]
    if s3 is not None:
        locs.append(resolve(f"s3://raybb-{uuid.uuid4().hex[:8]}/photos", s3.storage_options))
    return locs


def test_resolve_kinds(tmp_path):
    assert resolve(str(tmp_path)).protocol == "file"
    assert resolve(str(tmp_path)).root == str(tmp_path)
    assert resolve(f"file://{tmp_path}/x/").root == f"{tmp_path}/x"
    assert resolve("memory://bucket/x/").root == "/bucket/x"
    s = resolve("s3://bucket/pre/fix/", {"key": "AKIA-SECRET-ID", "secret": "TOPSECRET"})
    assert (s.protocol, s.root) == ("s3", "bucket/pre/fix")
    assert s.path("a/b.png") == "bucket/pre/fix/a/b.png"
    assert s.rel("bucket/pre/fix/a/b.png") == "a/b.png"
    # credentials never appear in reprs that end up in logs
    assert "TOPSECRET" not in repr(s) and "AKIA" not in repr(s)
    with pytest.raises(ValueError):
        resolve("s3://")


def test_env_endpoint_is_used_for_s3(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s = resolve("s3://bucket/x")
    assert s.options["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    explicit = resolve("s3://bucket/x", {"client_kwargs": {"endpoint_url": "http://other:1"}})
    assert explicit.options["client_kwargs"]["endpoint_url"] == "http://other:1"


@pytest.mark.s3
def test_list_read_write_everywhere(tmp_path, s3):
    for loc in _locations(tmp_path, s3):
        _fill(loc)
        got = [o.key for o in iter_objects(loc)]
        assert got == EXPECTED, loc
        assert [o.size for o in iter_objects(loc)] == [len(FILES[k]) for k in EXPECTED]
        assert count_objects(loc) == (4, 1 + 3 + 2 + 4)
        assert read_bytes(loc, "a/sub/3.JPEG") == b"333"
        assert exists(loc, "b/2.png") and not exists(loc, "b/nope.png")
        assert object_size(loc, "z.webp") == 4 and object_size(loc, "nope") is None
        with pytest.raises(FileNotFoundError):
            read_bytes(loc, "missing.png")
        write_atomic(loc, "b/2.png", b"new")  # overwrite
        assert read_bytes(loc, "b/2.png") == b"new"
        remove(loc, "b/2.png")
        remove(loc, "b/2.png")  # idempotent
        assert [o.key for o in iter_objects(loc)] == ["a/1.jpg", "a/sub/3.JPEG", "z.webp"]
        all_keys = [o.key for o in iter_objects(loc, None, include_hidden=True)]
        assert "_manifest.parquet" in all_keys and "notes.txt" in all_keys


def test_missing_prefix_lists_nothing(tmp_path):
    assert list(iter_objects(resolve(str(tmp_path / "nothing-here")))) == []


def test_local_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    loc = resolve(str(tmp_path))
    write_atomic(loc, "x/out.rbb", b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError):
        write_atomic(loc, "x/out.rbb", b"new-complete-content", attempts=2)
    monkeypatch.undo()
    assert (tmp_path / "x/out.rbb").read_bytes() == b"old"
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["out.rbb"]  # temp cleaned up


def test_concurrent_atomic_writes_never_mix(tmp_path):
    loc = resolve(str(tmp_path))
    payloads = [bytes([i]) * 200_000 for i in range(6)]
    threads = [threading.Thread(target=write_atomic, args=(loc, "same.rbb", p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tmp_path / "same.rbb").read_bytes() in payloads


def test_retry_backs_off_then_succeeds_or_raises_storage_error():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("peer reset")
        return "done"

    seen = []
    assert retry(flaky, what="k", base_delay=0.001, on_retry=lambda i, e: seen.append(i)) == "done"
    assert seen == [1, 2]
    with pytest.raises(StorageError, match="k: failed after 2 attempts"):
        retry(lambda: (_ for _ in ()).throw(TimeoutError("slow")), what="k", attempts=2, base_delay=0.001)
    n = []
    with pytest.raises(FileNotFoundError):  # not retried
        retry(lambda: n.append(1) or (_ for _ in ()).throw(FileNotFoundError("x")), what="k", base_delay=0.001)
    assert len(n) == 1


@pytest.mark.s3
def test_s3_survives_server_restart(tmp_path, s3):
    loc = resolve("s3://raybb-restart/x", s3.storage_options)
    write_atomic(loc, "a.png", b"before")
    done = threading.Event()
    t = threading.Thread(target=lambda: (s3.restart(down_seconds=1.0), done.set()))
    t.start()
    try:
        # issued while the server is down / starting: retried with backoff until it is back
        write_atomic(loc, "b.png", b"during")
        assert read_bytes(loc, "a.png") == b"before"
    finally:
        t.join()
    assert done.is_set()
    assert read_bytes(loc, "b.png") == b"during"


def test_only_transient_errors_are_retried():
    """Permission, bad-name and argument errors fail at once as StorageError, with the real cause."""
    import errno

    from raybb.storage import is_transient

    for exc in (
        PermissionError("Forbidden"),
        OSError(errno.ENAMETOOLONG, "File name too long"),
        ValueError("bad bucket name"),
        IsADirectoryError("x"),
    ):
        calls = []

        def fail(exc=exc, calls=calls):
            calls.append(1)
            raise exc

        with pytest.raises(StorageError, match=f"k: {type(exc).__name__}") as info:
            retry(fail, what="k", base_delay=0.001)
        assert len(calls) == 1 and info.value.__cause__ is exc and not info.value.transient
        assert not is_transient(exc)
    for exc in (ConnectionResetError("reset"), TimeoutError(), OSError(errno.EBUSY, "SlowDown")):
        assert is_transient(exc), exc
    with pytest.raises(StorageError) as info:
        retry(lambda: (_ for _ in ()).throw(ConnectionResetError("x")), what="k", attempts=2, base_delay=0.001)
    assert info.value.transient


def test_long_keys_write_atomically(tmp_path):
    """The temporary name must not grow with the key: a 250-byte name is legal on every local fs."""
    loc = resolve(str(tmp_path))
    key = "d/" + "k" * 246 + ".rbb"
    write_atomic(loc, key, b"data", attempts=1)
    assert (tmp_path / key).read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["k" * 246 + ".rbb"]
    # a name the file system refuses is a StorageError naming the cause, not retried for minutes
    with pytest.raises(StorageError, match="File name too long"):
        write_atomic(loc, "k" * 300 + ".rbb", b"data")


@pytest.mark.s3
def test_wrong_s3_secret_is_one_storage_error(s3):
    bad = dict(s3.storage_options, secret="not-the-secret")
    loc = resolve("s3://raybb-perm/x", bad)
    for call in (lambda: list(iter_objects(loc)), lambda: read_bytes(loc, "a.png"),
                 lambda: write_atomic(loc, "a.rbb", b"x")):  # fmt: skip
        with pytest.raises(StorageError, match="PermissionError"):
            call()
