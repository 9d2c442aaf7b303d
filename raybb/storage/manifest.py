"""The Parquet manifest of a batch job: one row per source object, written incrementally.

Layout (``M`` is the manifest URL, by default ``<dst>/_manifest.parquet``)::

    M                              the compacted manifest: exactly one row per key
    M.parts/part-<run>-<seq>.parquet   rows flushed while a run is going (crash-safe)

While a job runs, rows are appended to new part files every ``flush_rows`` rows / ``flush_seconds``
(each part is written atomically), so a killed driver loses at most the unflushed rows, and those
images are found again on resume as existing outputs. At the end of a run the previous manifest and
all parts are merged (the *latest* row per key wins), written to ``M`` atomically, and the parts
are deleted. Any reader that understands Parquet reads ``M`` as is.

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

import io
import posixpath
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raybb.storage.fs import Location, resolve, retry
from raybb.storage.objects import remove, write_atomic

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
    """Sortable, unique run id: UTC time then randomness (part files sort chronologically)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def manifest_location(manifest: str | None, dst: Location) -> Location:
    """The manifest's Location: ``manifest`` URL if given (same options as dst), else under dst."""
    if manifest is None:
        return dst.child("_manifest.parquet")
    loc = resolve(manifest)
    return resolve(manifest, dst.options) if loc.protocol == dst.protocol else loc


def _parts_location(manifest: Location) -> Location:
    return Location(
        url=manifest.url + ".parts",
        protocol=manifest.protocol,
        root=manifest.root + ".parts",
        options=manifest.options,
    )


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


class ManifestWriter:
    """Buffers rows and flushes them as atomic Parquet part files; ``close()`` compacts.

    The driver's memory holds at most ``flush_rows`` rows at a time, whatever the job size.
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
        self._parts = _parts_location(manifest)
        self._buf: list[Any] = []
        self._seq = 0
        self._last_flush = time.monotonic()
        self.rows_written = 0

    def add(self, rows: Iterable[Any]) -> None:
        self._buf.extend(rows)
        if len(self._buf) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows to a new part file (atomic); no-op when empty."""
        self._last_flush = time.monotonic()
        if not self._buf:
            return
        table = _to_table(self._buf, self.schema)
        key = f"part-{self.run_id}-{self._seq:06d}.parquet"
        write_atomic(self._parts, key, _table_bytes(table))
        self._seq += 1
        self.rows_written += len(self._buf)
        self._buf = []

    def close(self, *, compact: bool = True) -> None:
        """Flush, then (by default) merge manifest + parts into the manifest and remove the parts."""
        self.flush()
        if compact:
            compact_manifest(self.manifest, self.schema)


def _part_keys(manifest: Location) -> list[str]:
    parts = _parts_location(manifest)
    fs = parts.fs

    def call() -> list[str]:
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(parts.root)
        try:
            names = fs.ls(parts.root, detail=False)
        except FileNotFoundError:
            return []
        return sorted(
            parts.rel(n) for n in names if n.rsplit("/", 1)[-1].startswith("part-") and n.endswith(".parquet")
        )

    return retry(call, what="list manifest parts")


def _read_table(loc: Location, key: str | None, schema: pa.Schema) -> pa.Table | None:
    fs = loc.fs
    path = loc.path(key) if key else loc.root

    def call() -> bytes | None:
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            return None

    data = retry(call, what=f"read manifest {key or ''}".strip())
    if data is None:
        return None
    table = pq.read_table(io.BytesIO(data))
    for name in schema.names:  # written by a version without this column
        if name not in table.column_names:
            typ = schema.field(name).type
            table = table.append_column(pa.field(name, typ), pa.nulls(table.num_rows, typ))
    return table.select(schema.names).cast(schema)


def read_manifest(manifest: Location, schema: pa.Schema = COMPRESS_SCHEMA) -> pa.Table:
    """The merged manifest (compacted file + any parts left by an interrupted run), latest row per key."""
    tables = []
    main = _read_table(manifest, None, schema)
    if main is not None:
        tables.append(main)
    parts = _parts_location(manifest)
    for key in _part_keys(manifest):
        t = _read_table(parts, key, schema)
        if t is not None:
            tables.append(t)
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables)
    return _latest_per_key(table)


def _latest_per_key(table: pa.Table) -> pa.Table:
    """Keep the last row for each key (tables are concatenated oldest first)."""
    n = table.num_rows
    if n == 0:
        return table
    idx = pa.array(range(n), pa.int64())
    t = table.append_column("__i", idx)
    last = t.group_by("key").aggregate([("__i", "max")])
    keep = pc.sort_indices(last["__i_max"])
    rows = pc.take(last["__i_max"], keep)
    return table.take(rows)


def compact_manifest(manifest: Location, schema: pa.Schema = COMPRESS_SCHEMA) -> pa.Table:
    """Merge manifest and parts into one file (written atomically), then delete the parts."""
    part_keys = _part_keys(manifest)
    table = read_manifest(manifest, schema)
    if part_keys or not manifest.fs.exists(manifest.root):
        table = table.sort_by("key")
        parent, name = posixpath.split(manifest.root)
        parent_loc = Location(
            url=manifest.url, protocol=manifest.protocol, root=parent, options=manifest.options
        )
        write_atomic(parent_loc, name, _table_bytes(table))
        parts = _parts_location(manifest)
        for key in part_keys:
            remove(parts, key)
    return table
