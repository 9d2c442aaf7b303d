"""The Parquet manifest of a batch job: a partitioned dataset, appended to, never merged in one process.

Layout (``M`` is the manifest URL, by default ``<dst>/_manifest.parquet``; it is a *directory*)::

    M/part-<run_id>-<seq>.parquet   rows, flushed every ``flush_rows`` rows / ``flush_seconds``
                                    (each file written atomically: a killed driver loses at most
                                    the unflushed rows)
    M/_SUCCESS                      small JSON marker of the last run that finished (run id, rows,
                                    files); hidden from Parquet readers (leading ``_``)

Nothing ever reads every row into one process: a run only appends its own files. Any Parquet
reader reads ``M`` as one table (``pd.read_parquet(M)``, ``pyarrow.dataset.dataset(M)``,
``ray.data.read_parquet(M)``, duckdb ``read_parquet('M/*.parquet')``). A key can have several rows
(an error retried by a later run, a ``--no-resume`` rerun): **the row with the greatest
``run_id`` is the current one** (run ids sort by start time; within a run a key has one row).
:func:`iter_manifest` / :func:`read_manifest` return only those rows, streaming; in SQL::

    SELECT * FROM read_parquet('M/*.parquet')
    QUALIFY row_number() OVER (PARTITION BY key ORDER BY run_id DESC, finished_at DESC) = 1

:func:`compact_manifest` rewrites the dataset as one file of current rows (streamed), for archives
that want one row per key on disk.

Older versions wrote ``M`` as a single file (plus ``M.parts/`` while running). Readers still read
that layout; the first new run on it moves the file to ``M/part-00000000T000000Z-legacy-000000.parquet``
and the parts into ``M/`` (renames or server-side copies, no rows loaded).

Compress manifest schema (:data:`COMPRESS_SCHEMA`)
--------------------------------------------------
==================  ==============  =============================================================
column              type            meaning
==================  ==============  =============================================================
key                 string          source key, relative to the source prefix
status              string          ``ok`` compressed (and verified with --verify) in this job;
                                    ``error`` see ``error``; ``skipped`` the bitstream already
                                    existed (from a run whose manifest rows were lost): it was
                                    decoded and checked against the source, not recompressed
error               string          error type and message (null unless status is error)
source_bytes        int64           size of the source object
source_sha256       string          sha256 of the source bytes (hex)
bitstream_key       string          key of the .rbb bitstream, relative to the destination prefix
bitstream_bytes     int64           size of the bitstream
bitstream_sha256    string          sha256 of the bitstream (hex)
width, height       int32           image size in pixels
bpp                 float64         bits per pixel of the bitstream (8 * bytes / pixels)
psnr                float64         PSNR of the decoded image vs. the source, dB
ms_ssim             float64         MS-SSIM of the decoded image vs. the source
kl_bits             float64         KL(q||p) of the coded latents, bits (null for skipped)
encode_seconds      float64         codec time for this image (null for skipped)
effort              int16           encoder effort (0 = amortised encoder; null for skipped)
refine_steps        int32           posterior-refinement steps taken (0 at effort 0)
refine_seconds      float64         time spent in them (part of encode_seconds)
model_fingerprint   string          hex fingerprint of the model weights
model_name          string          model registry name
sampler             string          coded sampler, e.g. ``pfr/greedy``
verified            bool            the bitstream was decoded again and matched
worker_id           string          Ray actor id that produced the row
node_id             string          Ray node id of that actor
run_id              string          job run that produced the row (resume keeps older runs' rows)
attempt             int16           1 + number of shard retries before this row
finished_at         timestamp[ms]   UTC time the row was produced
warning             string          what was read or reported differently from the usual, on an
                                    ``ok``/``skipped`` row: only the first frame of an animated or
                                    multi-page image was kept; MS-SSIM is null because the image's
                                    short side is under 11 px (null when there is nothing to say)
==================  ==============  =============================================================

Manifests written before a column existed are read with that column null.

Decompress manifest schema (:data:`DECOMPRESS_SCHEMA`): ``key`` (bitstream key), ``status``,
``error``, ``bitstream_bytes``, ``bitstream_sha256``, ``output_key`` (PNG key), ``output_bytes``,
``output_sha256``, ``width``, ``height``, ``model_fingerprint``, ``decode_seconds``, ``worker_id``,
``node_id``, ``run_id``, ``attempt``, ``finished_at``.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import posixpath
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raybb.storage.fs import Location, resolve, retry
from raybb.storage.listing import iter_objects
from raybb.storage.objects import write_atomic

__all__ = [
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
    "manifest_files",
    "migrate_legacy",
    "read_success",
    "done_keys",
    "KeySet",
    "manifest_location",
    "compact_manifest",
    "new_run_id",
]

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"

_TS = pa.timestamp("ms", tz="UTC")

COMPRESS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("source_bytes", pa.int64()),
        ("source_sha256", pa.string()),
        ("bitstream_key", pa.string()),
        ("bitstream_bytes", pa.int64()),
        ("bitstream_sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("bpp", pa.float64()),
        ("psnr", pa.float64()),
        ("ms_ssim", pa.float64()),
        ("kl_bits", pa.float64()),
        ("encode_seconds", pa.float64()),
        ("effort", pa.int16()),
        ("refine_steps", pa.int32()),
        ("refine_seconds", pa.float64()),
        ("model_fingerprint", pa.string()),
        ("model_name", pa.string()),
        ("sampler", pa.string()),
        ("verified", pa.bool_()),
        ("worker_id", pa.string()),
        ("node_id", pa.string()),
        ("run_id", pa.string()),
        ("attempt", pa.int16()),
        ("finished_at", _TS),
        ("warning", pa.string()),
    ]
)

DECOMPRESS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("bitstream_bytes", pa.int64()),
        ("bitstream_sha256", pa.string()),
        ("output_key", pa.string()),
        ("output_bytes", pa.int64()),
        ("output_sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("model_fingerprint", pa.string()),
        ("decode_seconds", pa.float64()),
        ("worker_id", pa.string()),
        ("node_id", pa.string()),
        ("run_id", pa.string()),
        ("attempt", pa.int16()),
        ("finished_at", _TS),
    ]
)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CompressRow:
    """One compress-manifest row (see the module docstring for each column)."""

    key: str
    status: str
    error: str | None = None
    source_bytes: int | None = None
    source_sha256: str | None = None
    bitstream_key: str | None = None
    bitstream_bytes: int | None = None
    bitstream_sha256: str | None = None
    width: int | None = None
    height: int | None = None
    bpp: float | None = None
    psnr: float | None = None
    ms_ssim: float | None = None
    kl_bits: float | None = None
    encode_seconds: float | None = None
    effort: int | None = None
    refine_steps: int | None = None
    refine_seconds: float | None = None
    model_fingerprint: str | None = None
    model_name: str | None = None
    sampler: str | None = None
    verified: bool | None = None
    worker_id: str | None = None
    node_id: str | None = None
    run_id: str | None = None
    attempt: int | None = None
    finished_at: datetime | None = None
    warning: str | None = None


@dataclass
class DecompressRow:
    """One decompress-manifest row."""

    key: str
    status: str
    error: str | None = None
    bitstream_bytes: int | None = None
    bitstream_sha256: str | None = None
    output_key: str | None = None
    output_bytes: int | None = None
    output_sha256: str | None = None
    width: int | None = None
    height: int | None = None
    model_fingerprint: str | None = None
    decode_seconds: float | None = None
    worker_id: str | None = None
    node_id: str | None = None
    run_id: str | None = None
    attempt: int | None = None
    finished_at: datetime | None = None


assert [f.name for f in fields(CompressRow)] == COMPRESS_SCHEMA.names
assert [f.name for f in fields(DecompressRow)] == DECOMPRESS_SCHEMA.names


def new_run_id() -> str:
    """Sortable, unique run id: UTC time to the microsecond, then randomness.

    Files are named after it, so name order is run order, and the greatest ``run_id`` of a key is
    its latest row.
    """
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond:06d}Z-" + uuid.uuid4().hex[:8]


def manifest_location(manifest: str | None, dst: Location) -> Location:
    """The manifest's Location: ``manifest`` URL if given (same options as dst), else under dst."""
    if manifest is None:
        return dst.child("_manifest.parquet")
    loc = resolve(manifest)
    return resolve(manifest, dst.options) if loc.protocol == dst.protocol else loc


def _parts_location(manifest: Location) -> Location:
    """``M.parts/``: where the old single-file layout kept a running job's rows."""
    return Location(
        url=manifest.url + ".parts",
        protocol=manifest.protocol,
        root=manifest.root + ".parts",
        options=manifest.options,
    )


def _sibling(manifest: Location, suffix: str) -> str:
    return manifest.root + suffix


def _to_table(rows: Iterable[Any], schema: pa.Schema) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in schema.names}
    for r in rows:
        d = asdict(r) if not isinstance(r, Mapping) else r
        for name in schema.names:
            cols[name].append(d.get(name))
    return pa.table(cols, schema=schema)


def _table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


#: Name the old single-file manifest gets inside the dataset: sorts before every run's files.
LEGACY_PART = "part-00000000T000000Z-legacy-000000.parquet"
SUCCESS_MARKER = "_SUCCESS"


def _is_part(name: str) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return base.startswith("part-") and base.endswith(".parquet")


def _ls_parts(fs: Any, root: str) -> list[str]:
    """Full paths of ``part-*.parquet`` directly under ``root``, sorted by name (oldest first)."""

    def call() -> list[str]:
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(root)
        try:
            names = fs.ls(root, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted((n for n in names if _is_part(n)), key=lambda n: n.rsplit("/", 1)[-1])

    return retry(call, what="list manifest files")


def _isfile(fs: Any, path: str) -> bool:
    def call() -> bool:
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(posixpath.dirname(path))
        return bool(fs.isfile(path))

    return retry(call, what="stat manifest")


def manifest_files(manifest: Location) -> list[str]:
    """Every Parquet file of the manifest, oldest first (later rows supersede earlier ones).

    Old layout first (the single file ``M``, a ``M.legacy`` left by an interrupted migration, its
    ``M.parts/``), then the dataset ``M/part-*.parquet``.
    """
    fs = manifest.fs
    files: list[str] = []
    for p in (manifest.root, _sibling(manifest, ".legacy")):
        if _isfile(fs, p):
            files.append(p)
    files += _ls_parts(fs, _parts_location(manifest).root)
    files += _ls_parts(fs, manifest.root)
    return files


def migrate_legacy(manifest: Location) -> bool:
    """Move an old single-file manifest (and its ``.parts``) into the dataset layout; True if moved.

    Renames locally, server-side copies on object stores: no row is loaded. Safe to rerun after a
    crash at any step (``M.legacy`` is read by :func:`manifest_files` until it is moved in).
    """
    fs = manifest.fs
    legacy = _sibling(manifest, ".legacy")
    moved = False
    if _isfile(fs, manifest.root):
        retry(lambda: fs.mv(manifest.root, legacy), what="move old manifest")
        moved = True
    if _isfile(fs, legacy):
        fs.makedirs(manifest.root, exist_ok=True)
        retry(lambda: fs.mv(legacy, manifest.path(LEGACY_PART)), what="move old manifest")
        moved = True
    for p in _ls_parts(fs, _parts_location(manifest).root):
        fs.makedirs(manifest.root, exist_ok=True)
        name = p.rsplit("/", 1)[-1]
        retry(lambda p=p, name=name: fs.mv(p, manifest.path(name)), what="move old manifest parts")
        moved = True
    if manifest.protocol == "file":
        try:
            os.rmdir(_parts_location(manifest).root)
        except OSError:
            pass
    return moved


class ManifestWriter:
    """Buffers rows and flushes them as atomic Parquet files of the dataset; ``close()`` marks success.

    The driver's memory holds at most ``flush_rows`` rows at a time, whatever the job size, and
    closing never reads earlier rows back.
    """

    def __init__(
        self,
        manifest: Location,
        schema: pa.Schema,
        run_id: str,
        *,
        flush_rows: int = 1000,
        flush_seconds: float = 20.0,
    ) -> None:
        self.manifest = manifest
        self.schema = schema
        self.run_id = run_id
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._buf: list[Any] = []
        self._seq = 0
        self._last_flush = time.monotonic()
        self.rows_written = 0
        migrate_legacy(manifest)

    def add(self, rows: Iterable[Any]) -> None:
        self._buf.extend(rows)
        if len(self._buf) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows to a new file of the dataset (atomic); no-op when empty."""
        self._last_flush = time.monotonic()
        if not self._buf:
            return
        table = _to_table(self._buf, self.schema)
        key = f"part-{self.run_id}-{self._seq:06d}.parquet"
        write_atomic(self.manifest, key, _table_bytes(table))
        self._seq += 1
        self.rows_written += len(self._buf)
        self._buf = []

    def close(self, *, complete: bool = True) -> None:
        """Flush; if the run is ``complete``, write the small ``_SUCCESS`` marker (no rows are merged)."""
        self.flush()
        if complete:
            marker = {
                "run_id": self.run_id,
                "rows": self.rows_written,
                "files": self._seq,
                "finished_at": _now().isoformat(),
                "latest_row_per_key": "greatest run_id (see raybb.storage.manifest)",
            }
            write_atomic(self.manifest, SUCCESS_MARKER, json.dumps(marker).encode())


def read_success(manifest: Location) -> dict | None:
    """The ``_SUCCESS`` marker of the last finished run, or None."""
    fs = manifest.fs

    def call() -> bytes | None:
        try:
            return fs.cat_file(manifest.path(SUCCESS_MARKER))
        except (FileNotFoundError, NotADirectoryError):
            return None

    data = retry(call, what="read manifest marker")
    return json.loads(data) if data else None


def _as_location(manifest: Location | str, storage_options: Mapping[str, Any] | None) -> Location:
    return manifest if isinstance(manifest, Location) else resolve(manifest, storage_options)


def _iter_file(
    fs: Any, path: str, schema: pa.Schema, columns: list[str] | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Batches of one Parquet file, in the manifest schema (columns missing from old files: null)."""
    names = columns or schema.names
    target = pa.schema([schema.field(n) for n in names])
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        have = set(pf.schema_arrow.names)
        read = [n for n in names if n in have]
        for b in pf.iter_batches(batch_size=batch_rows, columns=read):
            arrays = [
                b.column(n).cast(target.field(n).type) if n in have else pa.nulls(b.num_rows, target.field(n).type)
                for n in names
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=target)


def _trim() -> None:
    """Give freed heap back to the OS (glibc keeps it otherwise, and RSS stays at the peak)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


def _digests(keys: pa.Array) -> np.ndarray:
    return np.array([_digest(k) for k in keys.to_pylist()], dtype="S16")


def iter_manifest(
    manifest: Location | str,
    schema: pa.Schema = COMPRESS_SCHEMA,
    *,
    columns: list[str] | None = None,
    latest: bool = True,
    batch_rows: int = 65536,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the manifest as record batches; with ``latest`` only the current row of each key.

    Two passes over the files: the first reads only ``key`` and keeps 24 bytes per row (a 16-byte
    key digest and the row's position) to find each key's last row; the second yields those rows.
    Row data is never held beyond one batch.
    """
    loc = _as_location(manifest, storage_options)
    fs = loc.fs
    files = manifest_files(loc)
    if columns is not None and "key" not in columns:
        columns = ["key", *columns]
    keep: np.ndarray | None = None
    if latest and files:
        digests: list[np.ndarray] = []
        for path in files:
            for b in _iter_file(fs, path, schema, ["key"], batch_rows):
                digests.append(_digests(b.column(0)))
        d = np.concatenate(digests) if digests else np.empty(0, "S16")
        del digests
        n = len(d)
        order = np.argsort(d, kind="stable")  # equal digests keep row order: the last is the newest
        sd = d[order]
        del d
        last = np.ones(n, dtype=bool)
        last[:-1] = sd[1:] != sd[:-1]
        if not last.all():
            keep = np.zeros(n, dtype=bool)
            keep[order[last]] = True
        del order, sd, last
        _trim()
    pos = 0
    for path in files:
        for b in _iter_file(fs, path, schema, columns, batch_rows):
            m = b.num_rows
            if keep is not None:
                b = b.filter(pa.array(keep[pos : pos + m]))
            pos += m
            if b.num_rows:
                yield b


def read_manifest(
    manifest: Location | str,
    schema: pa.Schema = COMPRESS_SCHEMA,
    *,
    columns: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """The current row of every key as one table (built from :func:`iter_manifest`'s stream).

    Reads the dataset layout, an old single file, or both. For manifests too large for one table,
    iterate :func:`iter_manifest` instead.
    """
    batches = list(iter_manifest(manifest, schema, columns=columns, storage_options=storage_options))
    names = (["key", *columns] if "key" not in columns else columns) if columns else schema.names
    target = pa.schema([schema.field(n) for n in names])
    return pa.Table.from_batches(batches, schema=target)


def compact_manifest(
    manifest: Location | str,
    schema: pa.Schema = COMPRESS_SCHEMA,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Rewrite the manifest as one file of current rows (streamed); returns its number of rows.

    The new file is named for a new run id, so it supersedes every file it replaces even if a
    crash leaves some of them behind. Do not run it while a job writes to the same manifest.
    """
    loc = _as_location(manifest, storage_options)
    migrate_legacy(loc)
    old = manifest_files(loc)
    fs = loc.fs
    key = f"part-{new_run_id()}-compact-000000.parquet"
    tmp = loc.path(f".{key}.tmp-{uuid.uuid4().hex[:12]}")
    rows = 0
    with fs.open(tmp, "wb") as f, pq.ParquetWriter(f, schema, compression="zstd") as w:
        for b in iter_manifest(loc, schema):
            w.write_batch(b)
            rows += b.num_rows
    retry(lambda: fs.mv(tmp, loc.path(key)), what="publish compacted manifest")
    for p in old:
        retry(lambda p=p: fs.rm(p), what="remove compacted manifest file")
    return rows


# --------------------------------------------------------------------------------------------
# Resume: which keys are done, in 16 bytes per key
# --------------------------------------------------------------------------------------------
class KeySet:
    """A read-only set of keys stored as sorted 16-byte digests (``in`` is a binary search).

    About 16 bytes per key instead of ~100+ for a Python set of strings (``len`` counts digests);
    a false match needs a 128-bit digest collision.
    """

    def __init__(self, digests: np.ndarray) -> None:
        self._d = digests.astype("S16", copy=False)
        self._d.sort()  # in place; a duplicate key is harmless for ``in``

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or not len(self._d):
            return False
        x = np.array(_digest(key), dtype="S16")
        i = int(np.searchsorted(self._d, x))
        return i < len(self._d) and self._d[i] == x

    @property
    def nbytes(self) -> int:
        return int(self._d.nbytes)


def done_keys(
    manifest: Location,
    dst: Location,
    schema: pa.Schema,
    out_col: str,
    out_suffix: str | None,
    *,
    done_statuses: tuple[str, ...] = (STATUS_OK, STATUS_SKIPPED),
) -> KeySet:
    """Keys whose current manifest row is ok/skipped *and* whose output object exists at ``dst``.

    Streams the destination listing first (16 bytes per output object), then the manifest's
    current rows, keeping 16 bytes per done key; no row or key string is held.
    """
    chunks: list[np.ndarray] = []
    buf: list[bytes] = []
    for obj in iter_objects(dst, (out_suffix,) if out_suffix else None):
        buf.append(_digest(obj.key))
        if len(buf) >= 65536:
            chunks.append(np.array(buf, dtype="S16"))
            buf = []
    if buf:
        chunks.append(np.array(buf, dtype="S16"))
    if not chunks:
        return KeySet(np.empty(0, "S16"))
    outputs = np.concatenate(chunks)
    del chunks, buf
    outputs.sort()
    done: list[np.ndarray] = []
    wanted = pa.array(list(done_statuses))
    for b in iter_manifest(manifest, schema, columns=["status", out_col]):
        t = pa.Table.from_batches([b])
        t = t.filter(pc.and_(pc.is_in(t["status"], wanted), pc.is_valid(t[out_col])))
        if not t.num_rows:
            continue
        od = _digests(t[out_col].combine_chunks())
        i = np.minimum(np.searchsorted(outputs, od), len(outputs) - 1)
        found = outputs[i] == od
        if found.any():
            done.append(_digests(t["key"].combine_chunks())[found])
    keys = KeySet(np.concatenate(done) if done else np.empty(0, "S16"))
    del done, outputs
    _trim()
    return keys
