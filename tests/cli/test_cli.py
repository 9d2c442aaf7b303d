import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from raybb.cli import EXIT_BITSTREAM, EXIT_IMAGE, EXIT_MODEL, EXIT_PARTIAL, EXIT_USAGE, app

TINY = Path(__file__).parents[1] / "codec" / "expected" / "tiny.safetensors"
runner = CliRunner()


@pytest.fixture()
def images(tmp_path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(d / name)
    return d


@pytest.fixture()
def models_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(TINY, d / "tiny-q1.safetensors")
    monkeypatch.setenv("RAYBB_MODELS_DIR", str(d))
    return d


def test_help_everywhere():
    for cmd in ([], ["compress"], ["decompress"], ["inspect"], ["eval"], ["train"], ["models"], ["bucket"], ["widen"]):
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0, (cmd, r.output)
        assert "Usage" in r.output


def test_compress_decompress_inspect_folder(images, tmp_path, models_dir):
    out = tmp_path / "rbb"
    r = runner.invoke(app, ["compress", str(images), "-o", str(out), "--model", "tiny-q1"])
    assert r.exit_code == 0, r.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.rbb"))
    assert files == ["a.rbb", "sub/b.rbb"]
    # decompress finds the model from the bitstream's fingerprint (RAYBB_MODELS_DIR)
    png = tmp_path / "png"
    r = runner.invoke(app, ["decompress", str(out), "-o", str(png)])
    assert r.exit_code == 0, r.output
    img = np.asarray(Image.open(png / "sub" / "b.png"))
    assert img.shape == (40, 56, 3)
    r = runner.invoke(app, ["inspect", "--json", str(out / "a.rbb")])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert (info["width"], info["height"]) == (56, 40)
    assert [s["level"] for s in info["sections"]] == [2, 1]
    assert sum(s["payload_bytes"] for s in info["sections"]) + info["header_bytes"] == info["bytes"]


def test_single_file_to_named_output(images, tmp_path, models_dir):
    dst = tmp_path / "one.rbb"
    r = runner.invoke(app, ["compress", str(images / "a.png"), "-o", str(dst), "--model", str(TINY), "--seed", "5"])
    assert r.exit_code == 0, r.output
    assert dst.read_bytes()[:4] == b"\x89RBB"
    png = tmp_path / "one.png"
    assert runner.invoke(app, ["decompress", str(dst), "-o", str(png)]).exit_code == 0
    assert png.exists()


def test_exit_codes(images, tmp_path, models_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    r = runner.invoke(app, ["compress", str(bad), "-o", str(tmp_path / "o"), "--model", str(TINY)])
    assert r.exit_code == EXIT_IMAGE
    shutil.copy(images / "a.png", bad / "y.png")
    r = runner.invoke(app, ["compress", str(bad), "-o", str(tmp_path / "o"), "--model", str(TINY)])
    assert r.exit_code == EXIT_PARTIAL  # one good, one bad: the good one is written
    assert (tmp_path / "o" / "y.rbb").exists()
    corrupt = tmp_path / "c.rbb"
    corrupt.write_bytes(b"\x89RBB\x01garbage")
    r = runner.invoke(app, ["decompress", str(corrupt), "-o", str(tmp_path / "c.png")])
    assert r.exit_code == EXIT_BITSTREAM
    assert not (tmp_path / "c.png").exists()
    r = runner.invoke(app, ["compress", str(tmp_path / "missing.png"), "-o", str(tmp_path / "z")])
    assert r.exit_code == EXIT_USAGE
    r = runner.invoke(
        app, ["compress", str(images), "-o", str(tmp_path / "z"), "--model", str(tmp_path / "nope.safetensors")]
    )
    assert r.exit_code == EXIT_MODEL
    r = runner.invoke(
        app, ["compress", str(images), "-o", str(tmp_path / "z"), "--model", str(TINY), "--sampler", "bogus"]
    )
    assert r.exit_code == EXIT_USAGE


def test_unusable_device_is_a_usage_error(images, tmp_path):
    import torch

    bad = ["nonsense"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        for cmd in (
            ["compress", str(images), "-o", str(tmp_path / "o"), "--model", str(TINY)],
            ["train", "--out", str(tmp_path / "run"), "--steps", "1"],
        ):
            r = runner.invoke(app, [*cmd, "--device", device])
            assert r.exit_code == EXIT_USAGE, (cmd[0], device, r.output)
            assert "--device" in r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


def test_models_lists_user_registry(models_dir):
    r = runner.invoke(app, ["models", "--json"])
    assert r.exit_code == 0, r.output
    names = [m["name"] for m in json.loads(r.output)]
    assert "tiny-q1" in names


def test_widen_writes_a_wider_model_with_the_same_output(tmp_path, images):
    from raybb.model.weights import load_weights

    wide = tmp_path / "wide.safetensors"
    r = runner.invoke(app, ["widen", str(TINY), "-o", str(wide), "--channels", "24", "--seed", "1"])
    assert r.exit_code == 0, r.output
    small, big = load_weights(TINY), load_weights(wide)
    assert big.config.N == 24 > small.config.N
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(big.model(x, sample=False).x_hat, small.model(x, sample=False).x_hat)
    # the widened file is a model like any other: it compresses and decompresses
    out = tmp_path / "a.rbb"
    assert runner.invoke(app, ["compress", str(images / "a.png"), "-o", str(out), "--model", str(wide)]).exit_code == 0
    png = tmp_path / "a.png"
    assert runner.invoke(app, ["decompress", str(out), "-o", str(png), "--model", str(wide)]).exit_code == 0
    # narrowing and unknown models are clear errors
    r = runner.invoke(app, ["widen", str(TINY), "-o", str(tmp_path / "n.safetensors"), "--channels", "2"])
    assert r.exit_code == EXIT_USAGE and "narrow" in r.output
    r = runner.invoke(app, ["widen", "no-such-model", "-o", str(tmp_path / "n.safetensors")])
    assert r.exit_code == EXIT_MODEL


@pytest.fixture()
def channel_ladder(tmp_path) -> Path:
    from codec._codec_helpers import save_tiny_channel_ladder

    return save_tiny_channel_ladder(tmp_path / "cl-tiny.safetensors")


def test_channel_ladder_through_the_cli(images, tmp_path, channel_ladder, monkeypatch):
    """A 4-latent variable-rate model: --model PATH --quality X compresses, decompress (by --model or
    by fingerprint from $RAYBB_MODELS_DIR) returns exactly the encoder's reconstruction."""
    from raybb import bitstream
    from raybb.codec import load_codec
    from raybb.imageio import load_image
    from raybb.levels import rate_of_quality

    src = images / "a.png"
    codec = load_codec(channel_ladder, quality=3.5)
    expected = codec.compress_with_stats(load_image(src))
    sizes = {}
    for q in ("1", "3.5", "8"):
        dst = tmp_path / f"q{q}.rbb"
        r = runner.invoke(app, ["compress", str(src), "-o", str(dst), "--model", str(channel_ladder), "--quality", q])
        assert r.exit_code == 0, r.output
        assert bitstream.parse(dst.read_bytes()).rate == rate_of_quality(codec.model, float(q))
        png = tmp_path / f"q{q}.png"
        r = runner.invoke(app, ["decompress", str(dst), "-o", str(png), "--model", str(channel_ladder)])
        assert r.exit_code == 0, r.output
        sizes[q] = dst.stat().st_size
    assert (tmp_path / "q3.5.rbb").read_bytes() == expected.data
    assert np.array_equal(np.asarray(Image.open(tmp_path / "q3.5.png")), expected.reconstruction)
    reg = tmp_path / "reg"
    reg.mkdir()
    shutil.copy(channel_ladder, reg / "cl-tiny.safetensors")
    monkeypatch.setenv("RAYBB_MODELS_DIR", str(reg))
    r = runner.invoke(app, ["decompress", str(tmp_path / "q8.rbb"), "-o", str(tmp_path / "byfp.png")])
    assert r.exit_code == 0, r.output
    # --quality alone: the default model's, here the variable-rate one
    monkeypatch.setenv("RAYBB_DEFAULT_MODEL", "cl-tiny")
    r = runner.invoke(app, ["compress", str(src), "-o", str(tmp_path / "d.rbb"), "--quality", "3.5"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d.rbb").read_bytes() == expected.data
    r = runner.invoke(app, ["compress", str(src), "-o", str(tmp_path / "x.rbb"), "--quality", "9"])
    assert r.exit_code == EXIT_MODEL and not (tmp_path / "x.rbb").exists()


def test_eval_draws_a_variable_rate_models_curve(images, tmp_path, channel_ladder):
    """`raybb eval` evaluates a variable-rate model at each --quality (one point per quality, all on
    the raybb curve), from one loaded model."""
    import pandas as pd

    out_dir = tmp_path / "ev"
    r = runner.invoke(
        app,
        ["eval", str(images), "-o", str(out_dir), "--model", str(channel_ladder), "--no-baselines",
         "--no-theoretical", "--limit", "1", "--quality", "1", "--quality", "8"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(out_dir / "per_image.csv")
    assert sorted(rows["quality"].astype(str)) == ["cl-tiny@q1", "cl-tiny@q8"]
    assert (rows["bpp"] > 0).all()
    # two different points (this random-init model's rate barely moves; its reconstruction does)
    assert len({(b, round(p, 6)) for b, p in zip(rows["bpp"], rows["psnr"], strict=True)}) == 2


def test_quality_on_fixed_rate_models(images, tmp_path, models_dir, monkeypatch):
    """The PLN family keeps integer presets: --quality N picks <family>-qN; a fraction, or --quality
    with a fixed-rate --model, is refused."""
    monkeypatch.setenv("RAYBB_DEFAULT_MODEL", "tiny-q1")
    src = images / "a.png"
    r = runner.invoke(app, ["compress", str(src), "-o", str(tmp_path / "a.rbb"), "--quality", "1", "--seed", "5"])
    assert r.exit_code == 0, r.output
    r2 = runner.invoke(app, ["compress", str(src), "-o", str(tmp_path / "b.rbb"), "--model", "tiny-q1", "--seed", "5"])
    assert r2.exit_code == 0 and (tmp_path / "a.rbb").read_bytes() == (tmp_path / "b.rbb").read_bytes()
    r = runner.invoke(app, ["compress", str(src), "-o", str(tmp_path / "c.rbb"), "--quality", "1.5"])
    assert r.exit_code == EXIT_MODEL and "variable-rate" in r.output
    r = runner.invoke(app, ["compress", str(src), "-o", str(tmp_path / "c.rbb"), "--model", str(TINY), "-q", "2"])
    assert r.exit_code == EXIT_USAGE and "fixed-rate" in r.output


def test_models_shows_arch_quality_range_and_curve(models_dir, channel_ladder):
    shutil.copy(channel_ladder, models_dir / "cl-tiny.safetensors")
    curve = [{"quality": q, "rate": r, "bpp": b, "psnr": p} for q, r, b, p in ((1, 0, 0.1, 26.0), (8, 15, 1.9, 36.5))]
    (models_dir / "cl-tiny.json").write_text(json.dumps({"kodak_curve": curve}))
    r = runner.invoke(app, ["models", "--json"])
    assert r.exit_code == 0, r.output
    by = {m["name"]: m for m in json.loads(r.output)}
    cl, tiny = by["cl-tiny"], by["tiny-q1"]
    assert (cl["arch"], cl["rate_levels"], cl["quality_range"]) == ("channel-ladder", 16, [1.0, 8.0])
    assert [p["bpp"] for p in cl["kodak_curve"]] == [0.1, 1.9] and cl["kodak_curve"][1]["rate"] == 15
    assert (tiny["arch"], tiny["quality"], tiny["quality_range"], tiny["kodak_curve"]) == ("pln", 1, None, [])
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "Kodak curve" in r.output and "36.50" in r.output  # the curve table
