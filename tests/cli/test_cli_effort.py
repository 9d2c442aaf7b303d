"""`--effort` (and the refinement options) through the CLI, `raybb bucket compress` and
jobs/compress_bucket.py into the manifest; bad values are usage errors (exit 2)."""

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from raybb.cli import EXIT_USAGE, app
from raybb.codec import Codec
from raybb.model.weights import load_weights
from raybb.refine import EFFORTS, MAX_EFFORT

REPO = Path(__file__).parents[2]
TINY = REPO / "tests" / "codec" / "expected" / "tiny.safetensors"
runner = CliRunner()


def _job_main():
    spec = importlib.util.spec_from_file_location("compress_bucket_job", REPO / "jobs" / "compress_bucket.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture()
def photos(tmp_path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(d / f"p{i}.png")
    return d


def test_compress_with_effort_decodes(photos, tmp_path):
    out = tmp_path / "a.rbb"
    r = runner.invoke(app, ["compress", str(photos / "p0.png"), "-o", str(out), "-m", str(TINY), "--effort", "1"])
    assert r.exit_code == 0, r.output
    assert f"effort 1: {EFFORTS[1].steps} steps" in r.output
    plain = tmp_path / "b.rbb"
    r = runner.invoke(app, ["compress", str(photos / "p0.png"), "-o", str(plain), "-m", str(TINY)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() != plain.read_bytes()
    rgb = np.asarray(Image.open(photos / "p0.png").convert("RGB"))
    assert Codec(load_weights(TINY)).decompress(out.read_bytes()).shape == rgb.shape


@pytest.mark.parametrize(
    "extra",
    [
        ["--effort", str(MAX_EFFORT + 1)],
        ["--effort", "-1"],
        ["--effort", "x"],
        ["--metric", "vmaf"],
        ["--target-bpp", "0.5"],  # a target needs effort >= 1
        ["--effort", "1", "--target-bpp", "0.5", "--target-psnr", "30"],
        ["--effort", "1", "--target-bpp", "-2"],
        ["--effort", "1", "--target-psnr", "0"],
    ],
)
def test_bad_effort_options_are_usage_errors(photos, tmp_path, extra):
    r = runner.invoke(app, ["compress", str(photos), "-o", str(tmp_path / "o"), "-m", str(TINY), *extra])
    assert r.exit_code == EXIT_USAGE, r.output
    assert not (tmp_path / "o").exists()


def test_bad_effort_in_bucket_and_job_is_a_usage_error(photos, tmp_path):
    r = runner.invoke(app, ["bucket", "compress", str(photos), str(tmp_path / "a"), "--effort", "9"])
    assert r.exit_code == EXIT_USAGE, r.output
    with pytest.raises(SystemExit) as e:
        _job_main()(["--src", str(photos), "--dst", str(tmp_path / "a"), "--effort", "9"])
    assert e.value.code == EXIT_USAGE
    from raybb.distributed.driver import compress_bucket

    with pytest.raises(ValueError):
        compress_bucket(str(photos), str(tmp_path / "a"), effort=MAX_EFFORT + 1)
    assert not (tmp_path / "a").exists()


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from raybb.distributed.driver import init_ray

    started = init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


def test_effort_reaches_the_manifest(photos, tmp_path, ray_session):
    archive = tmp_path / "archive"
    r = runner.invoke(
        app, ["bucket", "compress", str(photos), str(archive), "-m", str(TINY), "--workers", "1", "--effort", "1"]
    )
    assert r.exit_code == 0, r.output
    rows = pq.read_table(archive / "_manifest.parquet").to_pylist()
    assert len(rows) == 2 and all(row["status"] == "ok" for row in rows)
    assert all(row["effort"] == 1 and row["refine_steps"] == EFFORTS[1].steps for row in rows)
    assert all(0 < row["refine_seconds"] <= row["encode_seconds"] for row in rows)


@pytest.mark.slow
def test_effort_reaches_the_manifest_through_the_job_script(photos, tmp_path, ray_session):
    dst = tmp_path / "job"
    code = _job_main()(["--src", str(photos), "--dst", str(dst), "--model", str(TINY), "--num-workers", "1",
                        "--effort", "2", "--no-progress"])  # fmt: skip
    assert code == 0
    rows = pq.read_table(dst / "_manifest.parquet").to_pylist()
    assert all(row["effort"] == 2 and row["refine_steps"] == EFFORTS[2].steps for row in rows)


def test_actor_rows_record_effort_zero(photos, tmp_path):
    """In-process (no Ray): the default effort writes 0 / 0 steps, a refined one its steps."""
    from raybb.distributed.actor import CompressorActor
    from raybb.distributed.partition import Shard
    from raybb.storage import resolve

    for effort in (0, 1):
        actor = CompressorActor(resolve(str(photos)), resolve(str(tmp_path / f"e{effort}")), run_id="t",
                                model=str(TINY), effort=effort)  # fmt: skip
        (row,) = actor.compress_shard(Shard(0, ("p0.png",), (0,)))
        assert row.status == "ok", row.error
        assert (row.effort, row.refine_steps) == (effort, EFFORTS[effort].steps if effort else 0)
