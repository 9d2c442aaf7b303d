"""The Parquet manifest dataset: incremental files, latest row per key, old layout, readers as is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raybb.storage import (
    COMPRESS_SCHEMA,
    DECOMPRESS_SCHEMA,
    CompressRow,
    DecompressRow,
    ManifestWriter,
    compact_manifest,
    done_keys,
    iter_manifest,
    iter_objects,
    manifest_location,
    new_run_id,
    read_manifest,
    resolve,
)
from raybb.storage.manifest import read_success


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


def test_files_are_flushed_incrementally_and_never_merged(tmp_path):
    dst = resolve(str(tmp_path / "dst"))
    m = manifest_location(None, dst)
    assert m.root == str(tmp_path / "dst" / "_manifest.parquet")
    run = new_run_id()
    w = ManifestWriter(m, COMPRESS_SCHEMA, run, flush_rows=2, flush_seconds=3600)
    w.add([_row("a", run_id=run), _row("b", "error", error="ImageError: bad", run_id=run)])
    files = sorted(p.name for p in (tmp_path / "dst" / "_manifest.parquet").iterdir())
    assert files == [f"part-{run}-000000.parquet"]  # flushed at 2 rows, before close: a killed driver keeps it
    w.add([_row("c", run_id=run)])
    assert len(list((tmp_path / "dst" / "_manifest.parquet").iterdir())) == 1  # buffered
    # readers see the flushed rows even before the run ends (this is what resume reads)
    assert read_manifest(m)["key"].to_pylist() == ["a", "b"]
    assert read_success(m) is None  # the run has not finished
    w.close()
    names = sorted(p.name for p in (tmp_path / "dst" / "_manifest.parquet").iterdir())
    assert names == ["_SUCCESS", f"part-{run}-000000.parquet", f"part-{run}-000001.parquet"]
    assert read_success(m)["run_id"] == run and read_success(m)["rows"] == 3
    df = pd.read_parquet(tmp_path / "dst" / "_manifest.parquet")  # the directory, as one table
    assert sorted(df["key"]) == ["a", "b", "c"]
    assert df.set_index("key").loc["b", "error"] == "ImageError: bad"
    assert pq.read_schema(tmp_path / "dst" / "_manifest.parquet" / names[1]).names == COMPRESS_SCHEMA.names
    # the manifest is hidden from listings of the destination
    assert list(iter_objects(dst, None)) == []


def _two_runs(m):
    r1, r2 = new_run_id(), new_run_id()
    assert r1 < r2
    w1 = ManifestWriter(m, COMPRESS_SCHEMA, r1, flush_rows=1)
    w1.add([_row("x", "error", error="transient", run_id=r1), _row("y", run_id=r1)])
    w1.close()
    w2 = ManifestWriter(m, COMPRESS_SCHEMA, r2, flush_rows=1)
    w2.add([_row("x", run_id=r2)])
    w2.flush()  # a crashed second run: its files are there, no marker
    return r1, r2


def test_latest_row_per_key_wins_across_runs(tmp_path):
    m = manifest_location(None, resolve(str(tmp_path)))
    r1, r2 = _two_runs(m)
    t = read_manifest(m).to_pandas().set_index("key")
    assert sorted(t.index) == ["x", "y"]
    assert t.loc["x", "status"] == "ok" and t.loc["x", "run_id"] == r2
    # the documented pandas equivalent of "latest row per key"
    raw = pd.read_parquet(m.root)
    assert len(raw) == 3
    cur = raw.sort_values(["run_id", "finished_at"]).drop_duplicates("key", keep="last").set_index("key")
    assert cur.loc["x", "run_id"] == r2 and cur.loc["y", "run_id"] == r1
    # streaming: small batches, a column subset
    batches = list(iter_manifest(m, columns=["status"], batch_rows=1))
    assert all(b.num_rows <= 1 for b in batches) and batches[0].schema.names == ["key", "status"]
    assert sorted(zip(*[pa.Table.from_batches(batches)[c].to_pylist() for c in ("key", "status")], strict=True)) == [
        ("x", "ok"),
        ("y", "ok"),
    ]
    assert sum(b.num_rows for b in iter_manifest(m, latest=False)) == 3
    # compaction: one file of current rows, streamed; readers see the same thing
    assert compact_manifest(m) == 2
    files = [p.name for p in Path(m.root).glob("*.parquet")]
    assert len(files) == 1 and "compact" in files[0]
    assert sorted(pd.read_parquet(m.root)["key"]) == ["x", "y"]
    t2 = read_manifest(m).to_pandas().set_index("key")
    assert t2.loc["x", "run_id"] == r2 and t2.loc["y", "run_id"] == r1


def test_readers_agree_on_the_current_rows(tmp_path):
    """pyarrow.dataset and duckdb read the directory as one table; the documented query is right."""
    import pyarrow.dataset as ds

    m = manifest_location(None, resolve(str(tmp_path)))
    r1, r2 = _two_runs(m)
    assert ds.dataset(m.root, format="parquet").count_rows() == 3  # _SUCCESS is ignored
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(
        f"SELECT key, status, run_id FROM read_parquet('{m.root}/*.parquet') "
        "QUALIFY row_number() OVER (PARTITION BY key ORDER BY run_id DESC, finished_at DESC) = 1 ORDER BY key"
    ).fetchall()
    assert rows == [("x", "ok", r2), ("y", "ok", r1)]


def test_old_single_file_manifest_is_read_then_moved_into_the_dataset(tmp_path):
    """A manifest written by the previous layout: one compacted file plus a crashed run's parts."""
    dst = resolve(str(tmp_path))
    m = manifest_location(None, dst)
    old_run, crashed_run = "20261101T000000Z-aaaaaaaa", "20261102T000000Z-bbbbbbbb"
    old = pa.Table.from_pylist(
        [vars(_row("p", run_id=old_run)), vars(_row("q", "error", error="x", run_id=old_run))], schema=COMPRESS_SCHEMA
    )
    pq.write_table(old, m.root)
    (tmp_path / "_manifest.parquet.parts").mkdir()
    part = pa.Table.from_pylist([vars(_row("q", run_id=crashed_run))], schema=COMPRESS_SCHEMA)
    pq.write_table(part, tmp_path / "_manifest.parquet.parts" / f"part-{crashed_run}-000000.parquet")
    # readers understand the old layout as is
    t = read_manifest(m).to_pandas().set_index("key")
    assert t.loc["p", "run_id"] == old_run and t.loc["q", "run_id"] == crashed_run
    # a new run moves it (no rows loaded) and appends next to it
    run = new_run_id()
    w = ManifestWriter(m, COMPRESS_SCHEMA, run)
    assert Path(m.root).is_dir() and not (tmp_path / "_manifest.parquet.parts").exists()
    w.add([_row("r", run_id=run)])
    w.close()
    names = sorted(p.name for p in Path(m.root).iterdir())
    assert names == [
        "_SUCCESS",
        "part-00000000T000000Z-legacy-000000.parquet",
        f"part-{crashed_run}-000000.parquet",
        f"part-{run}-000000.parquet",
    ]
    t = read_manifest(m).to_pandas().set_index("key")
    assert dict(t["run_id"]) == {"p": old_run, "q": crashed_run, "r": run}
    assert t.loc["q", "status"] == "ok"


def test_done_keys_need_a_current_ok_row_and_the_output(tmp_path):
    dst = resolve(str(tmp_path))
    m = manifest_location(None, dst)
    r1, r2 = _two_runs(m)  # x: error then ok; y: ok
    (tmp_path / "x.rbb").write_bytes(b"1")  # y's output is missing
    done = done_keys(m, dst, COMPRESS_SCHEMA, "bitstream_key", ".rbb")
    assert "x" in done and "y" not in done and "z" not in done and len(done) == 1
    assert done.nbytes == 16


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
