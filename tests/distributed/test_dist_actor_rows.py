"""The actor's rows, in process (no Ray): per-image failures, the model of each bitstream, notes.

What is checked: one unwritable output key is one error row with its cause (not a failed
shard); `bucket decompress` picks each file's model by fingerprint; tiny images get a null
MS-SSIM with a note (not NaN); animated inputs keep a note that frames were dropped.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raybb.distributed.actor import CompressorActor
from raybb.distributed.partition import Shard
from raybb.storage import read_bytes, resolve, write_atomic

TINY = Path(__file__).parents[1] / "codec" / "expected" / "tiny.safetensors"


def _png(seed: int, size=(24, 40)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _shard(keys: list[str]) -> Shard:
    return Shard(index=0, keys=tuple(keys), sizes=tuple(0 for _ in keys))


def _actor(src, dst, model: str | None, **kw) -> CompressorActor:
    return CompressorActor(resolve(str(src)), resolve(str(dst)), run_id="t", model=model, torch_threads=None, **kw)


def test_an_unwritable_key_is_one_error_row_with_its_cause(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    keys = ["a.png", "k" * 240 + ".png", "z" * 249 + ".png", "b.png"]  # outputs: 248 bytes fit, 257 do not
    for i, k in enumerate(keys):
        write_atomic(resolve(str(src)), k, _png(i))
    rows = _actor(src, dst, str(TINY)).compress_shard(_shard(keys))
    by_key = {r.key: r for r in rows}
    assert [r.key for r in rows] == keys
    assert [by_key[k].status for k in keys] == ["ok", "ok", "error", "ok"], [r.error for r in rows]
    assert "File name too long" in by_key[keys[2]].error and "StorageError" in by_key[keys[2]].error
    assert (dst / (keys[1] + ".rbb")).exists() and (dst / "b.png.rbb").exists()
    assert not [p for p in dst.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_tiny_and_animated_images_get_notes_not_nan(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (9, 9, 9)).save(buf, "PNG")
    write_atomic(resolve(str(src)), "one.png", buf.getvalue())
    buf = io.BytesIO()
    Image.new("RGB", (30, 1), (9, 9, 9)).save(buf, "PNG")
    write_atomic(resolve(str(src)), "line.png", buf.getvalue())
    frames = [Image.new("RGB", (32, 24), c) for c in ((250, 0, 0), (0, 250, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40)
    write_atomic(resolve(str(src)), "anim.gif", buf.getvalue())
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    write_atomic(resolve(str(src)), "pages.tif", buf.getvalue())
    write_atomic(resolve(str(src)), "plain.png", _png(1))
    keys = ["one.png", "line.png", "anim.gif", "pages.tif", "plain.png"]
    rows = {r.key: r for r in _actor(src, dst, str(TINY)).compress_shard(_shard(keys))}
    assert all(r.status == "ok" for r in rows.values()), {k: r.error for k, r in rows.items()}
    for k in ("one.png", "line.png"):
        assert rows[k].ms_ssim is None and "under 11 px" in rows[k].warning
    for k in ("anim.gif", "pages.tif"):
        assert "2 frames" in rows[k].warning and "only the first" in rows[k].warning
        assert rows[k].ms_ssim is not None and np.isfinite(rows[k].ms_ssim)
    assert rows["plain.png"].warning is None
    # the manifest keeps the note and writes null, not NaN
    from raybb.storage import COMPRESS_SCHEMA, ManifestWriter, read_manifest

    mloc = resolve(str(tmp_path / "m.parquet"))
    w = ManifestWriter(mloc, COMPRESS_SCHEMA, "t")
    w.add(rows.values())
    w.close()
    t = {r["key"]: r for r in read_manifest(mloc).to_pylist()}
    assert t["one.png"]["ms_ssim"] is None and "under 11 px" in t["one.png"]["warning"]


def test_decompress_picks_each_bitstreams_model_by_fingerprint(tmp_path, monkeypatch):
    from raybb.model.ladder import LadderConfig, LadderNetwork
    from raybb.model.weights import save_weights

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(TINY, models / "tiny-a.safetensors")
    torch.manual_seed(5)
    save_weights(models / "tiny-b.safetensors", LadderNetwork(LadderConfig(N=16, M=16, F=16, G=4)), meta={})
    monkeypatch.setenv("RAYBB_MODELS_DIR", str(models))
    src, archive, restored = tmp_path / "src", tmp_path / "archive", tmp_path / "restored"
    for i in range(4):
        write_atomic(resolve(str(src)), f"p{i}.png", _png(10 + i))
    # an archive mixing two models (as two runs with different --model would make)
    for model, keys in (("tiny-a", ["p0.png", "p1.png"]), (str(models / "tiny-b.safetensors"), ["p2.png", "p3.png"])):
        rows = _actor(src, archive, model).compress_shard(_shard(keys))
        assert all(r.status == "ok" for r in rows), [r.error for r in rows]
    # no --model: the default model decodes none of them, the fingerprints find both
    dec = _actor(archive, restored, None)
    rows = dec.decompress_shard(_shard([f"p{i}.png.rbb" for i in range(4)]))
    assert [r.status for r in rows] == ["ok"] * 4, [r.error for r in rows]
    fps = [r.model_fingerprint for r in rows]
    assert fps[0] == fps[1] != fps[2] == fps[3]
    for i in range(4):
        img = np.asarray(Image.open(io.BytesIO(read_bytes(resolve(str(restored)), f"p{i}.png"))))
        assert img.shape == (24, 40, 3)
    # --model names one of them: it is used for its files, the other is still found
    rows = _actor(archive, tmp_path / "r2", "tiny-a").decompress_shard(_shard(["p0.png.rbb", "p3.png.rbb"]))
    assert [r.status for r in rows] == ["ok", "ok"], [r.error for r in rows]
    # a model that is nowhere: an error row that says which fingerprint is missing
    monkeypatch.setenv("RAYBB_MODELS_DIR", str(tmp_path / "empty"))
    rows = _actor(archive, tmp_path / "r3", str(TINY)).decompress_shard(_shard(["p0.png.rbb", "p2.png.rbb"]))
    assert [r.status for r in rows] == ["ok", "error"]
    assert "ModelMismatch" in rows[1].error and fps[2][:16] in rows[1].error


@pytest.mark.parametrize("size", [(0, 0), (0, 7), (5, 0)])
def test_empty_arrays_are_image_errors(size):
    from raybb.codec import load_codec
    from raybb.errors import ImageError

    codec = load_codec(str(TINY))
    with pytest.raises(ImageError, match="no pixels"):
        codec.compress(np.zeros((*size, 3), np.uint8))
