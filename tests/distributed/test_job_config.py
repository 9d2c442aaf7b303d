"""One settings object per bucket job: the API, `raybb bucket` and jobs/compress_bucket.py expose the
same names (the fields of CompressJobConfig / DecompressJobConfig); old names still work and warn.
No Ray is started here (bad settings are refused before it)."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import typer.main
from PIL import Image
from typer.testing import CliRunner

from raybb.cli import EXIT_MODEL, EXIT_USAGE, app
from raybb.distributed.config import (
    API_ONLY,
    DEPRECATED_NAMES,
    BucketJobConfig,
    CompressJobConfig,
    DecompressJobConfig,
    JobModelError,
    config_from,
)
from raybb.errors import ModelError

REPO = Path(__file__).parents[2]
TINY = REPO / "tests" / "codec" / "expected" / "tiny.safetensors"


def _job():
    spec = importlib.util.spec_from_file_location("compress_bucket_job", REPO / "jobs" / "compress_bucket.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cli_options(kind: str) -> set[str]:
    """The primary long name of every option of `raybb bucket <kind>`."""
    cmd = typer.main.get_command(app).commands["bucket"].commands[kind]
    names = set()
    for p in cmd.params:
        if p.param_type_name == "option":
            longs = [o for o in p.opts if o.startswith("--")]
            names.add(longs[0])
    return names - {"--help"}


def _config_options(cls: type[BucketJobConfig]) -> set[str]:
    return {_flag(n) for n in cls.option_names()}


def test_cli_options_are_the_config_fields():
    assert _cli_options("compress") == _config_options(CompressJobConfig)
    assert _cli_options("decompress") == _config_options(DecompressJobConfig)


def test_cli_defaults_are_the_config_defaults():
    for kind, cls in (("compress", CompressJobConfig), ("decompress", DecompressJobConfig)):
        cmd = typer.main.get_command(app).commands["bucket"].commands[kind]
        defaults = {p.name: p.default for p in cmd.params if p.param_type_name == "option"}
        for f in dataclasses.fields(cls):
            if f.name not in API_ONLY:
                assert defaults[f.name] == f.default, (kind, f.name)


def test_job_script_options_are_the_config_fields():
    p = _job().parser()
    longs = {s for a in p._actions for s in a.option_strings if s.startswith("--")}
    script_only = {"--help", "--src", "--dst", "--decompress", "--no-progress"}
    negations = {
        "--no-" + n.replace("_", "-") for n in CompressJobConfig.option_names() if CompressJobConfig.negatable(n)
    }
    deprecated = {_flag(old) for old in DEPRECATED_NAMES if old != "ray_address"}
    assert longs - script_only - negations - deprecated == _config_options(CompressJobConfig)


def test_api_takes_every_field_by_name_and_config_object():
    for cls in (CompressJobConfig, DecompressJobConfig):
        values = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
        assert config_from(cls, None, values) == cls()
    base = CompressJobConfig(workers=3, effort=1)
    merged = config_from(CompressJobConfig, base, {"shard_size": 4})
    assert (merged.workers, merged.effort, merged.shard_size) == (3, 1, 4)
    with pytest.raises(TypeError, match="num_shards"):
        config_from(CompressJobConfig, None, {"num_shards": 2})
    with pytest.raises(TypeError, match="CompressJobConfig"):
        config_from(CompressJobConfig, DecompressJobConfig(), {})
    with pytest.raises(TypeError, match="effort"):  # decompression has no encoder settings
        config_from(DecompressJobConfig, None, {"effort": 1})


def test_deprecated_api_names_warn_and_map():
    with pytest.warns(DeprecationWarning) as rec:
        cfg = config_from(CompressJobConfig, None, {"num_workers": 2, "use_gpu": False, "ray_address": "auto"})
    assert (cfg.workers, cfg.gpu, cfg.address) == (2, False, "auto")
    assert sorted(str(w.message) for w in rec) == [
        f"{old}= is deprecated, use {new}=" for old, new in sorted(DEPRECATED_NAMES.items())
    ]
    with pytest.raises(TypeError, match="both"):
        config_from(CompressJobConfig, None, {"num_workers": 2, "workers": 3})


def test_settings_are_checked_when_built():
    for bad in (
        {"workers": 0},
        {"shard_size": 0},
        {"gpu": "maybe"},
        {"cpus_per_worker": 0},
        {"effort": 9},
        {"metric": "ssim"},
        {"target_bpp": 0.5},  # needs effort >= 1
        {"effort": 1, "target_bpp": 0.5, "target_psnr": 30},
        {"model": "x", "quality": 3},
        {"worker_memory_mb": 100},  # too small for a CPU actor to code max_pixels images
    ):
        with pytest.raises(ValueError):
            CompressJobConfig(**bad)
    assert CompressJobConfig(gpu="yes").gpu is True and CompressJobConfig(gpu="no").gpu is False
    # a continuous quality is representable (the default codec's models take whole ones here)
    assert CompressJobConfig(quality=2.5, codec_factory="mod:fn").quality == 2.5
    assert CompressJobConfig(worker_memory_mb=100, gpu=True).worker_memory_mb == 100  # GPU actors: not used
    assert CompressJobConfig(worker_memory_mb=100, tile_pixels=65536).tile_pixels == 65536


def test_storage_options_are_not_in_the_repr():
    cfg = CompressJobConfig(storage_options={"secret": "hunter2"})
    assert "hunter2" not in repr(cfg)


def test_job_script_builds_the_same_config():
    job = _job()
    a = job.parser().parse_args(
        ["--src", "s", "--dst", "d", "--workers", "2", "--gpu", "no", "--shard-pixels", "1000",
         "--worker-memory-mb", "2500", "--no-resume", "--quality", "3", "--effort", "1", "--target-psnr", "30"]
    )  # fmt: skip
    cfg = CompressJobConfig(**job.settings(a))
    assert cfg == CompressJobConfig(
        workers=2, gpu=False, shard_pixels=1000, worker_memory_mb=2500, resume=False, quality=3, effort=1,
        target_psnr=30.0,
    )  # fmt: skip
    assert isinstance(cfg.quality, int)
    a = job.parser().parse_args(["--src", "s", "--dst", "d", "--quality", "2.5"])
    assert job.settings(a)["quality"] == 2.5  # parsed as a float (which model takes it is checked later)


def test_job_script_old_names_warn(capsys):
    job = _job()
    a = job.parser().parse_args(["--src", "s", "--dst", "d", "--num-workers", "3", "--use-gpu", "yes"])
    cfg = CompressJobConfig(**job.settings(a))
    assert (cfg.workers, cfg.gpu) == (3, True)
    err = capsys.readouterr().err
    assert "--num-workers is deprecated, use --workers" in err and "--use-gpu is deprecated, use --gpu" in err


def test_job_script_refuses_compress_settings_with_decompress(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _job().main(["--src", str(tmp_path), "--dst", str(tmp_path / "o"), "--decompress", "--effort", "1"])
    assert e.value.code == EXIT_USAGE
    assert "--effort" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        ["--gpu", "maybe"],
        ["--workers", "0"],
        ["--model", "x", "--quality", "2"],
        ["--shard-pixels", "0"],
        ["--worker-memory-mb", "100"],
    ],
)
def test_bad_bucket_settings_are_usage_errors(tmp_path, extra):
    src = tmp_path / "src"
    src.mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
    (src / "a.png").write_bytes(buf.getvalue())
    r = CliRunner().invoke(app, ["bucket", "compress", str(src), str(tmp_path / "dst"), *extra])
    assert r.exit_code == EXIT_USAGE, r.output
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize(
    "extra", [["--model", "no-such-model"], ["--model", "missing/model.safetensors"], ["--quality", "99"]]
)
def test_bad_bucket_model_is_a_model_error(tmp_path, extra):
    """Exit 5, as `raybb compress --model nope` gives, before Ray starts; nothing written."""
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a.png")
    r = CliRunner().invoke(app, ["bucket", "compress", str(src), str(tmp_path / "dst"), *extra])
    assert r.exit_code == EXIT_MODEL, r.output
    assert not (tmp_path / "dst").exists()


def _not_raybb_weights(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({"w": __import__("torch").zeros(2)}, str(path))
    return path


def test_bad_model_or_quality_is_refused_when_the_config_is_built(tmp_path):
    (tmp_path / "text.safetensors").write_text("not weights")
    bad_models = [
        "no-such-model",
        str(tmp_path / "missing.safetensors"),
        str(tmp_path / "text.safetensors"),
        str(_not_raybb_weights(tmp_path / "plain.safetensors")),
    ]
    for cls in (CompressJobConfig, DecompressJobConfig):
        for model in bad_models:
            with pytest.raises(JobModelError) as e:
                cls(model=model)
            assert isinstance(e.value, ModelError) and isinstance(e.value, ValueError)
    for quality in (0, 99):
        with pytest.raises(JobModelError, match="quality"):
            CompressJobConfig(quality=quality)
    with pytest.raises(ValueError, match="not both"):  # the settings' own check comes first
        CompressJobConfig(model="no-such-model", quality=3)
    # what the actors can load passes: a weights file, a registry name, a quality, or nothing
    assert DecompressJobConfig(model=str(TINY)).model == str(TINY)
    assert CompressJobConfig(model=TINY).model == TINY  # a PathLike too
    assert CompressJobConfig(model="pln-q2").model == "pln-q2"
    assert CompressJobConfig(quality=3).quality == 3


def test_only_the_weights_header_is_read(tmp_path):
    """A local weights file is checked by its safetensors header alone: one whose tensor data is cut
    off still passes (the actors' load would refuse it), one whose header is cut off does not."""
    data = TINY.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    (tmp_path / "head.safetensors").write_bytes(data[: header_end + 10])
    assert CompressJobConfig(model=str(tmp_path / "head.safetensors")).model
    (tmp_path / "cut.safetensors").write_bytes(data[: header_end - 10])
    with pytest.raises(JobModelError, match="not a safetensors file"):
        CompressJobConfig(model=str(tmp_path / "cut.safetensors"))


def test_models_the_driver_cannot_see_are_left_to_the_actors(monkeypatch):
    """Remote weights, a custom codec factory and a Ray client (whose cluster has its own files and
    registry) are not checked on the driver."""
    assert CompressJobConfig(model="s3://bucket/models/m.safetensors").model.startswith("s3://")
    assert CompressJobConfig(model="no-such-model", codec_factory="mod:fn").codec_factory == "mod:fn"
    assert CompressJobConfig(model="no-such-model", address="ray://head:10001").address == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert DecompressJobConfig(model="no-such-model").model == "no-such-model"


def test_bad_model_fails_before_ray_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "a.png")
    rc = _job().main(["--src", str(src), "--dst", str(tmp_path / "dst"), "--model", "no-such-model"])
    assert rc == EXIT_MODEL and "unknown model 'no-such-model'" in capsys.readouterr().err
    import ray

    from raybb.distributed import compress_bucket

    with pytest.raises(JobModelError, match="no quality 99"):
        compress_bucket(str(src), str(tmp_path / "dst"), quality=99)
    assert not ray.is_initialized() and not (tmp_path / "dst").exists()


def test_actor_settings_follow_the_config():
    from raybb.distributed.driver import _COMPRESS, _DECOMPRESS, _actor_kw

    kw = _actor_kw(_COMPRESS, CompressJobConfig(quality=3, effort=1, target_bpp=0.4, tile_pixels=65536), "r", False)
    assert kw["model"] == 3 and kw["effort"] == 1 and kw["target_bpp"] == 0.4 and kw["tile_pixels"] == 65536
    assert "metric" not in kw and "target_psnr" not in kw  # defaults are not sent (a custom codec need not know them)
    kw = _actor_kw(_COMPRESS, CompressJobConfig(worker_memory_mb=512, max_pixels=4_000_000), "r", False)
    assert 0 < kw["tile_pixels"] <= 4_000_000
    gpu_cfg = CompressJobConfig(worker_memory_mb=512, gpu=True)
    assert "tile_pixels" not in _actor_kw(_COMPRESS, gpu_cfg, "r", True)  # a GPU actor sizes tiles from its card
    kw = _actor_kw(_DECOMPRESS, DecompressJobConfig(model=str(TINY)), "r", False)
    assert kw["model"] == str(TINY) and "effort" not in kw and "verify" not in kw


def test_the_actor_passes_encoder_settings_to_the_codec(tmp_path):
    """A target and a metric given to the job reach each image's encode (effort 1 on a tiny model)."""
    from raybb.distributed.actor import CompressorActor
    from raybb.distributed.partition import Shard
    from raybb.storage import resolve, write_atomic

    src, dst = tmp_path / "src", tmp_path / "dst"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(buf, "PNG")
    write_atomic(resolve(str(src)), "a.png", buf.getvalue())
    seen = {}

    actor = CompressorActor(
        resolve(str(src)), resolve(str(dst)), run_id="t", model=str(TINY), torch_threads=None, effort=1,
        metric="mse", target_bpp=2.0,
    )  # fmt: skip
    real = actor.codec.compress_with_stats

    def spy(image, **kw):
        seen.update(kw)
        return real(image, **kw)

    actor.codec.compress_with_stats = spy
    (row,) = actor.compress_shard(Shard(index=0, keys=("a.png",), sizes=(0,)))
    assert row.status == "ok", row.error
    assert seen == {"effort": 1, "metric": "mse", "target_bpp": 2.0}
    assert row.effort == 1
