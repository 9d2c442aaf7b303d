"""`raybb bucket` end to end on a real local Ray instance (folders; S3 is covered in tests/distributed)."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from raybb.cli import EXIT_PARTIAL, app

TINY = Path(__file__).parents[1] / "codec" / "expected" / "tiny.safetensors"


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from raybb.distributed.driver import init_ray

    started = init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


def test_bucket_compress_then_decompress(tmp_path, ray_session):
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(src / f"p{i}.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    archive, restored = tmp_path / "archive", tmp_path / "restored"
    runner = CliRunner()
    r = runner.invoke(app, ["bucket", "compress", str(src), str(archive), "--model", str(TINY), "--workers", "1"])
    assert r.exit_code == EXIT_PARTIAL, r.output  # the broken file is an error row, the rest are ok
    rows = {row["key"]: row for row in pq.read_table(archive / "_manifest.parquet").to_pylist()}
    assert sorted(rows) == ["broken.jpg", "p0.png", "p1.png", "p2.png"]
    assert rows["broken.jpg"]["status"] == "error" and rows["broken.jpg"]["error"]
    assert all(rows[f"p{i}.png"]["status"] == "ok" for i in range(3))
    # rerun: nothing is recompressed
    r = runner.invoke(app, ["bucket", "compress", str(src), str(archive), "--model", str(TINY), "--workers", "1"])
    assert "3 already done" in r.output, r.output
    r = runner.invoke(
        app, ["bucket", "decompress", str(archive), str(restored), "--model", str(TINY), "--workers", "1"]
    )
    assert r.exit_code == 0, r.output
    assert len(list(restored.rglob("*.png"))) == 3


def test_bucket_allow_empty_accepts_a_missing_source(tmp_path, ray_session):
    r = CliRunner().invoke(
        app, ["bucket", "compress", str(tmp_path / "nothing"), str(tmp_path / "dst"), "--allow-empty"]
    )
    assert r.exit_code == 0, r.output
    assert "(of 0)" in r.output


def test_bucket_settings_reach_the_job(tmp_path, ray_session):
    """Settings that had no flag before (shard pixels, worker memory, flush size...) and --quality."""
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(src / f"p{i}.png")
    archive = tmp_path / "archive"
    r = CliRunner().invoke(
        app,
        ["bucket", "compress", str(src), str(archive), "--quality", "1", "--workers", "1", "--gpu", "no",
         "--worker-memory-mb", "1500", "--max-pixels", "4000000", "--shard-pixels", "1000",
         "--max-in-flight", "1", "--flush-rows", "1", "--cpus-per-worker", "0.25", "--max-attempts", "2"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = pq.read_table(archive / "_manifest.parquet").to_pylist()
    assert len(rows) == 2 and all(row["status"] == "ok" and row["model_name"] == "pln-q1" for row in rows)
    assert len(list((archive / "_manifest.parquet").glob("part-*.parquet"))) == 2  # one file per row
