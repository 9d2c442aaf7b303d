"""Bucket -> bucket on a real local Ray and a real S3 server, with the real codec.

Kodak crops plus deliberately bad files (not an image, empty, truncated, too large) are uploaded,
compressed with --verify, and the manifest is
checked row by row; every ok bitstream must decode to the encoder's reconstruction. A rerun
recompresses nothing; the decompress job turns the bitstreams back into PNGs.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest
from _servers import local_ray, seaweedfs_server
from dist_helpers import SAMPLER, bad_files, photo_crops, upload
from PIL import Image

from raybb import metrics
from raybb.distributed import compress_bucket, decompress_bucket
from raybb.imageio import decode_image
from raybb.storage import iter_objects, read_bytes, read_manifest, resolve

pytestmark = [pytest.mark.s3, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model):
    with seaweedfs_server(tmp_path_factory.mktemp("s3")) as s3, local_ray(num_cpus=2):
        good = photo_crops(6)
        bad = bad_files()
        src = "s3://raybb-photos/in"
        upload(resolve(src, s3.storage_options), {**good, **bad, "kodak/readme.txt": b"not listed"})
        yield dict(s3=s3, good=good, bad=bad, src=src, model=tiny_model, expect=expected_results(good, tiny_model))


def expected_results(good: dict[str, bytes], model: str) -> dict:
    """What the codec does in this process for each good image: a CompressResult or an error text.

    The actors must produce exactly this (same bytes: the seed is derived from the pixels), and a
    codec failure on an image must become that image's error row, not a failed job.
    """
    from raybb.codec import load_codec

    codec = load_codec(model, sampler=SAMPLER)
    out = {}
    for key, data in good.items():
        try:
            out[key] = codec.compress_with_stats(decode_image(data))
        except Exception as e:  # noqa: BLE001 - recorded, compared with the manifest
            out[key] = f"{type(e).__name__}"
    return out


def _run(env, dst, **kw):
    events = []
    summary = compress_bucket(
        env["src"],
        dst,
        model=env["model"],
        sampler=SAMPLER,
        workers=2,
        shard_size=2,
        storage_options=env["s3"].storage_options,
        progress=events.append,
        **kw,
    )
    return summary, events


def test_compress_bucket_to_bucket_then_resume_then_decompress(env):
    from raybb.codec import load_codec

    opts = env["s3"].storage_options
    dst = "s3://raybb-archive/out"
    summary, events = _run(env, dst, verify=True)
    expect = env["expect"]
    oks = sorted(k for k, r in expect.items() if not isinstance(r, str))
    assert len(oks) >= 3, "the codec must compress most of the test images"
    n_good, n_bad = len(env["good"]), len(env["bad"])
    n_codec_err = n_good - len(oks)
    assert (summary.total, summary.processed) == (n_good + n_bad, n_good + n_bad)
    assert (summary.ok, summary.errors, summary.skipped) == (len(oks), n_bad + n_codec_err, 0), summary.error_samples
    assert summary.shards == 5 and summary.shard_retries == 0 and summary.actors_lost == 0
    assert summary.images_per_s > 0 and summary.megapixels == pytest.approx(len(oks) * 64 * 96 / 1e6)
    assert events and events[-1].done == n_good + n_bad and events[-1].total == n_good + n_bad
    assert all(e.done <= e.total for e in events)

    # The manifest, read as is by pandas (through s3fs), row by row.
    df = pd.read_parquet(summary.manifest, storage_options=opts)
    assert sorted(df["key"]) == sorted([*env["good"], *env["bad"]]) and df["key"].is_unique
    codec = load_codec(env["model"], sampler=SAMPLER)
    dst_loc = resolve(dst, opts)
    for row in df.itertuples():
        assert row.run_id == summary.run_id and row.attempt == 1
        assert row.worker_id and row.node_id and row.finished_at is not None
        if row.key in env["bad"]:
            assert row.status == "error" and row.error.startswith("ImageError"), row
            if row.key == "bad/huge.png":  # too large: refused before decoding any pixel
                assert "11000x10000" in row.error and "above the limit" in row.error
            assert row.source_bytes == len(env["bad"][row.key])
            continue
        src_bytes = env["good"][row.key]
        if isinstance(expect[row.key], str):  # the codec itself fails on this image
            assert row.status == "error" and row.error.startswith(expect[row.key]), row
            assert row.width == 96 and pd.isna(row.bitstream_bytes)
            continue
        assert row.status == "ok" and pd.isna(row.error), row
        assert row.source_bytes == len(src_bytes)
        assert row.source_sha256 == hashlib.sha256(src_bytes).hexdigest()
        assert row.bitstream_key == row.key + ".rbb"
        data = read_bytes(dst_loc, row.bitstream_key)
        assert row.bitstream_bytes == len(data) and row.bitstream_sha256 == hashlib.sha256(data).hexdigest()
        assert (row.width, row.height) == (96, 64)
        assert row.bpp == pytest.approx(len(data) * 8 / (96 * 64))
        assert row.verified and row.kl_bits > 0 and row.encode_seconds > 0
        assert row.model_fingerprint == codec.fingerprint and row.sampler == codec.sampler_name
        # every ok bitstream is what this process's codec makes, and decodes to its reconstruction
        src_rgb = decode_image(src_bytes)
        assert data == expect[row.key].data
        rec = codec.decompress(data)
        assert np.array_equal(rec, expect[row.key].reconstruction)
        assert row.psnr == pytest.approx(metrics.psnr(src_rgb, rec))
        assert row.ms_ssim == pytest.approx(metrics.ms_ssim(src_rgb, rec), abs=1e-6)
    outputs = sorted(o.key for o in iter_objects(dst_loc, None))
    assert outputs == sorted(k + ".rbb" for k in oks)

    # Rerun: the ok images are carried over, nothing is recompressed; failed ones are tried again.
    before = {o.key: o for o in iter_objects(dst_loc, None)}
    again, _ = _run(env, dst)
    assert again.already_done == len(oks) and again.processed == n_bad + n_codec_err
    assert again.ok + again.errors == again.processed and again.skipped == 0
    df2 = read_manifest(again.manifest, storage_options=opts).to_pandas().set_index("key")  # current rows
    assert len(df2) == n_good + n_bad and df2.index.is_unique
    assert set(df2.loc[oks, "run_id"]) == {summary.run_id}  # old rows kept, not redone
    assert set(df2.loc[list(env["bad"]), "run_id"]) == {again.run_id}
    assert (df2.loc[list(env["bad"]), "status"] == "error").all()
    after = {o.key: o for o in iter_objects(dst_loc, None)}
    assert {k: after[k] for k in before} == before
    oks = sorted(k for k in env["good"] if df2.loc[k, "status"] == "ok")

    # Decompress job: bitstreams back to PNG, pixel-identical to the codec's reconstruction.
    pngs = "s3://raybb-archive/png"
    d = decompress_bucket(dst, pngs, model=env["model"], sampler=SAMPLER, workers=2, shard_size=3, storage_options=opts)
    assert (d.total, d.ok, d.errors) == (len(oks), len(oks), 0)
    png_loc = resolve(pngs, opts)
    for key in oks:
        out = read_bytes(png_loc, key)  # a.png.rbb -> a.png
        got = np.asarray(Image.open(io.BytesIO(out)).convert("RGB"))
        assert np.array_equal(got, codec.decompress(read_bytes(dst_loc, key + ".rbb")))
    dm = pd.read_parquet(d.manifest, storage_options=opts)
    assert sorted(dm["output_key"]) == oks and (dm["status"] == "ok").all()
