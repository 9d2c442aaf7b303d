"""The GPU trainer (raybb.train.fast) and its prepared command, dry-run on the CPU with a tiny model
on synthetic images (no ../shared needed)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raybb.model.channel_ladder import ChannelLadderConfig, ChannelLadderNetwork
from raybb.model.weights import load_weights
from raybb.train import fast
from raybb.train.fast import DeviceImages, FastConfig, load_run_weights, save_run_weights, train

REPO = Path(__file__).resolve().parents[2]
TINY = {"N": 16, "M": 24, "F": 16, "G": 8, "slices": [8, 16], "prior_hidden": 16}


def _photo(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 90 * np.sin(xx / (7.0 + seed)), 128 + 80 * np.cos(yy / 5.0), (xx + yy) % 256], -1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pack")
    (d / "train").mkdir()
    (d / "val").mkdir()
    for i, (h, w) in enumerate([(96, 80), (72, 100), (64, 64), (40, 200)]):  # the last is below the patch
        Image.fromarray(_photo(i, h, w)).save(d / "train" / f"{i:04d}.png")
    Image.fromarray(_photo(9, 70, 90)).save(d / "val" / "0000.png")
    return d


def test_device_crops_are_crops_of_the_images():
    imgs = [_photo(0, 20, 30), _photo(1, 25, 18)]
    data = DeviceImages(imgs + [_photo(2, 5, 40)], 16, torch.device("cpu"), seed=3)
    assert data.count == 2 and data.skipped == 1
    batch = (data.sample(64) * 255).round().to(torch.uint8)
    assert batch.shape == (64, 3, 16, 16)
    flipped = 0
    for crop in batch:
        c = crop.permute(1, 2, 0).numpy()
        hits = []
        for im in imgs:
            for y in range(im.shape[0] - 15):
                for x in range(im.shape[1] - 15):
                    win = im[y : y + 16, x : x + 16]
                    if np.array_equal(win, c):
                        hits.append(False)
                    elif np.array_equal(win[:, ::-1], c):
                        hits.append(True)
        assert hits, "a sampled crop is not a (flipped) window of a training image"
        flipped += hits[0]
    assert 10 < flipped < 54  # both orientations occur


def test_sharded_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    m = ChannelLadderNetwork(ChannelLadderConfig.from_dict(TINY))
    fp, files = save_run_weights(tmp_path, m, {"steps": 3}, max_file_mib=0.05)
    assert len(files) > 1 and all((tmp_path / f).stat().st_size <= 0.05 * 2**20 for f in files)
    loaded = load_run_weights(tmp_path)
    assert loaded.fingerprint == fp and loaded.arch == "channel-ladder"
    # one file when it fits; the shards are removed
    fp1, files1 = save_run_weights(tmp_path, m, {"steps": 3}, max_file_mib=15.5)
    assert files1 == ["model.safetensors"] and fp1 == fp
    assert sorted(p.name for p in tmp_path.glob("model*.safetensors")) == ["model.safetensors"]
    assert load_weights(tmp_path / "model.safetensors").fingerprint == fp


def test_training_windows_accumulate_and_record_lineage(pack, tmp_path):
    common = dict(data=[str(pack / "train")], val_data=[str(pack / "val")], model=TINY, device="cpu",
                  precision="fp32", channels_last=False, batch=2, patch=64, steps=6, minutes=2.0,
                  num_threads=1, log_every=3, warmup_steps=2, lr_warmup_steps=2)  # fmt: skip
    first = train(FastConfig(out=str(tmp_path / "w1"), **common))
    assert first["steps"] == 6 and first["steps_total"] == 6 and first["final"]
    assert first["data_images"] == 3 and first["train_pixels_per_s"] > 0 and first["lineage"] is None
    assert len(first["validation"]) == 4 and all(np.isfinite(r["psnr"]) for r in first["validation"])
    second = train(FastConfig(out=str(tmp_path / "w2"), init_weights=str(tmp_path / "w1"), **common))
    assert second["steps_total"] == 12 and second["pixels_total"] == 2 * first["pixels"]
    assert second["lineage"]["fingerprint"] == first["fingerprint"]
    assert second["fingerprint"] != first["fingerprint"]
    loaded = load_run_weights(tmp_path / "w2")
    assert loaded.meta["steps_total"] == 12 and loaded.meta["lineage"]["fingerprint"] == first["fingerprint"]
    # a fixed-rate PLN trains through the same command
    pln = train(FastConfig(out=str(tmp_path / "pln"), arch="pln", beta=0.05,
                           **{**common, "model": {"N": 8, "M": 8, "F": 8, "G": 4, "learn_scale": False,
                                                  "gamma_floor": 1.0}}))  # fmt: skip
    assert pln["arch"] == "pln" and load_run_weights(tmp_path / "pln").arch == "pln"


def test_gpu_command_dry_run_on_cpu(pack, tmp_path):
    """tools/gpu_train.sh itself, with DEVICE=cpu and a tiny model: the same command the GPU runs."""
    env = {**os.environ, "DEVICE": "cpu", "MODEL": json.dumps(TINY), "PATCH": "64", "BATCH": "2",
           "DATA": str(pack / "train"), "VAL": str(pack / "val"), "OUT": str(tmp_path),
           "PYTHON": sys.executable,
           "ARGS": "--steps 4 --threads 1 --log-every 2 --val-images 1 --checkpoint-minutes 0.0001"}  # fmt: skip
    r = subprocess.run(["bash", str(REPO / "tools" / "gpu_train.sh")], env=env, capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done: 4 steps" in r.stdout
    run = tmp_path / "run"
    names = sorted(p.name for p in run.iterdir())
    assert names == ["manifest.json", "metrics.jsonl", "model.safetensors"]
    m = json.loads((run / "manifest.json").read_text())
    assert m["steps"] == 4 and m["arch"] == "channel-ladder" and m["train_config"]["device"] == "cpu"
    assert load_run_weights(run).fingerprint == m["fingerprint"]
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    checkpoints = [e for e in events if e.get("event") == "checkpoint"]
    assert len(checkpoints) >= 2 and checkpoints[-1]["step"] == 4  # periodic checkpoints, then the final one


def test_shared_options_have_the_train_config_names():
    """Every trainer setting that is a TrainConfig field (or one of the model options of `raybb
    train`) is the same FastConfig field under `raybb train`'s option name; no option of the trainer
    uses one of those names for something else."""
    from raybb.train.loop import MODEL_OPTIONS, TrainConfig, option_flag, train_option_names

    dest = {s: a.dest for a in fast._parser()._actions for s in a.option_strings}
    shared = {f.name for f in dataclasses.fields(FastConfig)} & (
        set(TrainConfig.__dataclass_fields__) | set(MODEL_OPTIONS)
    )
    shared -= {"model", "arch"}  # set on the command line as --channels/--variant (and --model JSON here)
    assert {"steps", "warmup_steps", "beta", "lr", "lr_final_factor", "grad_clip", "init_weights", "num_threads",
            "precision", "val_images", "batch", "patch"} <= shared  # fmt: skip
    assert shared == set(fast.SHARED_OPTIONS)
    for name in shared:
        assert dest.get(option_flag(name)) == name, name
    assert {"--channels", "--variant"} <= set(dest)
    train_names = set(train_option_names())
    for flag, d in dest.items():
        if flag in train_names and flag not in ("--channels", "--variant"):
            assert option_flag(d) == flag, flag  # the same name means the same setting


def test_old_option_names_warn_and_still_work(capsys):
    cfg = fast.config_from_args(["--max-steps", "7", "--kl-warmup-steps", "3", "--init", "w.safetensors"])
    assert (cfg.steps, cfg.warmup_steps, cfg.init_weights) == (7, 3, "w.safetensors")
    err = capsys.readouterr().err
    for old, new in fast.DEPRECATED_OPTIONS.items():
        assert f"{old} is deprecated, use {new}" in err
    new = fast.config_from_args(["--steps", "7", "--warmup-steps", "3", "--init-weights", "w.safetensors"])
    assert new == cfg and capsys.readouterr().err == ""


def test_channels_and_variant_set_the_model_fields(capsys):
    cfg = fast.config_from_args(["--model", json.dumps(TINY), "--channels", "8,12,8,4", "--variant", "pln"])
    assert cfg.model == {**TINY, "N": 8, "M": 12, "F": 8, "G": 4, "learn_scale": False, "gamma_floor": 1.0}
    assert fast.config_from_args([]).model == {}
    with pytest.raises(SystemExit) as e:
        fast.config_from_args(["--channels", "8,12"])
    assert e.value.code == 2 and "--channels needs four integers" in capsys.readouterr().err


def test_trainer_imports_only_what_the_gpu_image_has():
    """The device image has torch, numpy, safetensors and Pillow but not constriction (the coder),
    Ray, typer or pytorch_msssim: the trainer must not pull them in (nor raybb.train.loop, which
    imports pytorch_msssim; so the trainer writes its shared option names out)."""
    code = (
        "import sys, raybb.train.fast; "
        "print(','.join(m for m in ('constriction', 'raybb.coding', 'ray', 'typer', 'fsspec', 'pytorch_msssim', "
        "'raybb.train.loop') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_training_loop_builds_registered_fixed_rate_architectures(pack, tmp_path):
    """``raybb train``'s loop trains any registered fixed-rate architecture through the protocol and
    refuses a variable-rate one (that needs β per example: raybb.train.fast)."""
    from raybb.train.loop import TrainConfig, TrainingLoop

    fixed = {**TINY, "beta_anchors": 0, "rate_levels": 0, "likelihood": "laplace", "gamma_floor": 1.0}
    cfg = TrainConfig(data=[str(pack / "train")], exclude=[], val_data=[str(pack / "val")], val_images=1,
                      arch="channel-ladder", model=fixed, beta=0.05, steps=2, batch=2, patch=64,
                      num_threads=1)  # fmt: skip
    loop = TrainingLoop(cfg)
    m = loop.train_step()
    assert m["step"] == 1 and np.isfinite(m["loss"]) and m["bpp_level2"] >= 0
    assert set(loop.validate()) >= {"val_bpp", "val_psnr_mean"}
    loop.save_checkpoint(tmp_path / "ck")
    assert load_weights(tmp_path / "ck" / "model.safetensors").arch == "channel-ladder"
    with pytest.raises(ValueError, match="variable-rate"):
        TrainingLoop(TrainConfig(**{**cfg.to_dict(), "model": TINY}))


@pytest.mark.slow
def test_briefly_trained_variable_rate_model_has_monotonic_rate(tmp_path):
    """1000 CPU steps of a tiny variable-rate channel-ladder (20-90 s on 2 cores): every rate index
    gives a decodable stream, and the stream grows with the index (measured: 455, 495, 543, 559
    bytes at indices 0, 5, 10, 15 on the 70x90 test image; 100-200 steps were not enough)."""
    from raybb.codec import parse_pipeline
    from raybb.levels import compress_rgb, decompress_rgb, samplers_for

    (tmp_path / "train").mkdir()
    for i in range(6):
        Image.fromarray(_photo(i, 128, 128)).save(tmp_path / "train" / f"{i}.png")
    train(FastConfig(out=str(tmp_path / "run"), data=[str(tmp_path / "train")], val_data=[],
                     model={**TINY, "rate_levels": 16}, device="cpu", precision="fp32", channels_last=False,
                     batch=4, patch=64, steps=1000, minutes=30, num_threads=1, log_every=1000, warmup_steps=0,
                     lr_warmup_steps=10, lr=1e-3, decay_fraction=0))  # fmt: skip
    loaded = load_run_weights(tmp_path / "run")
    samplers = samplers_for(loaded.model, *parse_pipeline("pfr"))
    img = _photo(11, 70, 90)
    sizes = []
    for r in (0, 5, 10, 15):
        data, rec, _ = compress_rgb(loaded.model, img, samplers, 1, loaded.short_fingerprint, rate=r)
        assert np.array_equal(decompress_rgb(loaded.model, data, loaded.short_fingerprint), rec)
        sizes.append(len(data))
    assert all(a < b for a, b in zip(sizes, sizes[1:], strict=False)), sizes
