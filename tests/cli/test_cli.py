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
