"""The Parquet manifest: incremental parts, crash-safe reading, compaction, readers as is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pandas as pd
import pyarrow.parquet as pq

from raybb.storage import (
    COMPRESS_SCHEMA,
    DECOMPRESS_SCHEMA,
    CompressRow,
    DecompressRow,
    ManifestWriter,
    compact_manifest,
    iter_objects,
    manifest_location,
    new_run_id,
    read_manifest,
    resolve,
)


def _row(key, status="ok", **kw):
    return CompressRow(
        key=key,
        status=status,
        bitstream_key=key + ".rbb",
        width=4,
        height=3,
        bpp=1.5,
        finished_at=datetime.now(UTC),
        **kw,
    )


def test_parts_are_flushed_incrementally_and_compacted(tmp_path):
    dst = resolve(str(tmp_path / "dst"))
    m = manifest_location(None, dst)
    assert m.root == str(tmp_path / "dst" / "_manifest.parquet")
    w = ManifestWriter(m, COMPRESS_SCHEMA, new_run_id(), flush_rows=2, flush_seconds=3600)
    w.add([_row("a"), _row("b", "error", error="ImageError: bad")])
    parts = sorted((tmp_path / "dst" / "_manifest.parquet.parts").iterdir())
    assert len(parts) == 1  # flushed at 2 rows, before close: a killed driver keeps it
    w.add([_row("c")])
    assert len(list((tmp_path / "dst" / "_manifest.parquet.parts").iterdir())) == 1  # buffered
    # readers see the flushed rows even before the run ends (this is what resume reads)
    assert read_manifest(m)["key"].to_pylist() == ["a", "b"]
    w.close()
    assert list((tmp_path / "dst" / "_manifest.parquet.parts").iterdir()) == []
    df = pd.read_parquet(tmp_path / "dst" / "_manifest.parquet")
    assert df["key"].tolist() == ["a", "b", "c"]
    assert df.set_index("key").loc["b", "error"] == "ImageError: bad"
    assert pq.read_schema(tmp_path / "dst" / "_manifest.parquet").names == COMPRESS_SCHEMA.names
    # the manifest is hidden from listings of the destination
    assert list(iter_objects(dst, None)) == []


def test_latest_row_per_key_wins_across_runs(tmp_path):
    m = manifest_location(None, resolve(str(tmp_path)))
    w1 = ManifestWriter(m, COMPRESS_SCHEMA, "20260101T000000Z-aaaa", flush_rows=1)
    w1.add([_row("x", "error", error="transient"), _row("y")])
    w1.close()
    w2 = ManifestWriter(m, COMPRESS_SCHEMA, "20260102T000000Z-bbbb", flush_rows=1)
    w2.add([_row("x", run_id="second")])
    w2.flush()  # a crashed second run: parts exist next to the compacted file
    t = read_manifest(m).to_pandas().set_index("key")
    assert sorted(t.index) == ["x", "y"]
    assert t.loc["x", "status"] == "ok" and t.loc["x", "run_id"] == "second"
    table = compact_manifest(m)
    assert table.num_rows == 2 and sorted(table["key"].to_pylist()) == ["x", "y"]


def test_manifest_on_s3_and_memory(s3):
    for url, opts in [
        (f"s3://raybb-man-{uuid.uuid4().hex[:6]}/out", s3.storage_options),
        (f"memory://m{uuid.uuid4().hex[:6]}/out", None),
    ]:
        dst = resolve(url, opts)
        m = manifest_location(None, dst)
        w = ManifestWriter(m, DECOMPRESS_SCHEMA, new_run_id(), flush_rows=1)
        w.add([DecompressRow(key="a.png.rbb", status="ok", output_key="a.png", width=2, height=2)])
        w.close()
        t = read_manifest(m, DECOMPRESS_SCHEMA)
        assert t.num_rows == 1 and t["output_key"].to_pylist() == ["a.png"]
        if url.startswith("s3://"):
            df = pd.read_parquet(m.url, storage_options=opts)
            assert df["key"].tolist() == ["a.png.rbb"]


def test_explicit_manifest_url(tmp_path):
    dst = resolve("memory://somewhere/out")
    m = manifest_location(str(tmp_path / "runs" / "m.parquet"), dst)
    assert m.protocol == "file" and m.root.endswith("runs/m.parquet")
    empty = read_manifest(m, COMPRESS_SCHEMA)  # nothing written yet: an empty table, right schema
    assert empty.num_rows == 0 and empty.schema == COMPRESS_SCHEMA
