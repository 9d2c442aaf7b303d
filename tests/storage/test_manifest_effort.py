"""The effort columns: written per row, and a manifest from before they existed still reads
(resume and compaction see them as null)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from raybb.storage import COMPRESS_SCHEMA, CompressRow, ManifestWriter, compact_manifest, read_manifest, resolve
from raybb.storage.manifest import manifest_location, new_run_id

NEW = ("effort", "refine_steps", "refine_seconds")


def test_old_manifest_without_effort_columns_reads_and_compacts(tmp_path):
    dst = resolve(str(tmp_path / "dst"))
    m = manifest_location(None, dst)
    old_schema = pa.schema([f for f in COMPRESS_SCHEMA if f.name not in NEW])
    (tmp_path / "dst").mkdir()
    cols = {f.name: pa.nulls(1, f.type) for f in old_schema}
    cols["key"], cols["status"] = pa.array(["a"]), pa.array(["ok"])
    pq.write_table(pa.table(cols, schema=old_schema), tmp_path / "dst" / "_manifest.parquet")
    t = read_manifest(m)
    assert t.schema == COMPRESS_SCHEMA
    assert [t[c].to_pylist() for c in NEW] == [[None], [None], [None]]
    w = ManifestWriter(m, COMPRESS_SCHEMA, new_run_id(), flush_rows=10, flush_seconds=3600)
    w.add([CompressRow(key="b", status="ok", effort=2, refine_steps=12, refine_seconds=3.5,
                       finished_at=datetime.now(UTC))])  # fmt: skip
    w.close(complete=True)
    assert compact_manifest(m) == 2
    rows = {r["key"]: r for r in read_manifest(m).to_pylist()}
    assert rows["a"]["effort"] is None
    assert (rows["b"]["effort"], rows["b"]["refine_steps"], rows["b"]["refine_seconds"]) == (2, 12, 3.5)
