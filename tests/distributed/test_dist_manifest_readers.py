"""Ray Data reads the manifest dataset as one table (the marker and temp files are not rows)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from _servers import local_ray

from raybb.storage import COMPRESS_SCHEMA, CompressRow, ManifestWriter, manifest_location, new_run_id, resolve

# Slow: Ray start + a Ray Data pipeline took 40 s on our loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_ray_data_reads_the_manifest_folder(tmp_path):
    pytest.importorskip("ray.data")
    m = manifest_location(None, resolve(str(tmp_path)))
    runs = [new_run_id(), new_run_id()]
    for run, keys in zip(runs, (["a", "b", "c"], ["b"]), strict=True):
        w = ManifestWriter(m, COMPRESS_SCHEMA, run, flush_rows=2)
        w.add([CompressRow(key=k, status="ok", run_id=run, finished_at=datetime.now(UTC)) for k in keys])
        w.close()
    (tmp_path / "_manifest.parquet" / ".part-x.parquet.tmp-123").write_bytes(b"half a write")
    with local_ray(num_cpus=1):
        import ray.data

        rows = ray.data.read_parquet(m.root).to_pandas()
    assert sorted(rows["key"]) == ["a", "b", "b", "c"]  # every row; the current one per key is the latest run_id
    cur = rows.sort_values("run_id").drop_duplicates("key", keep="last").set_index("key")
    assert cur.loc["b", "run_id"] == runs[1] and cur.loc["a", "run_id"] == runs[0]
