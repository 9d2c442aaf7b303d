"""Defects an adversarial test run found in the CLI (issue 19): data loss, messages, exit codes."""

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from raybb.cli import EXIT_STORAGE, EXIT_USAGE, app

TINY = Path(__file__).parents[1] / "codec" / "expected" / "tiny.safetensors"
runner = CliRunner()


def _png(path: Path, seed: int, size=(24, 32)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def test_inputs_sharing_a_name_are_refused_before_anything_is_written(tmp_path):
    src = tmp_path / "in"
    _png(src / "a.png", 0)
    _png(src / "a.jpg", 1)
    _png(tmp_path / "d1" / "x.png", 2)
    _png(tmp_path / "d2" / "x.png", 3)
    cases = {
        "two files": [src / "a.png", src / "a.jpg"],
        "one folder": [src],
        "two folders' files": [tmp_path / "d1" / "x.png", tmp_path / "d2" / "x.png"],
    }
    for name, inputs in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        r = runner.invoke(app, ["compress", *map(str, inputs), "-o", str(out), "--model", str(TINY)])
        assert r.exit_code == EXIT_USAGE, (name, r.output)
        assert not out.exists(), name  # nothing written, not even the folder
        text = " ".join(r.output.split())
        for f in inputs if name != "one folder" else [src / "a.png", src / "a.jpg"]:
            assert str(f) in text, (name, r.output)
    # the same file reached twice (folder + file inside it) is one input, not a collision
    out = tmp_path / "out-same"
    r = runner.invoke(app, ["compress", str(tmp_path / "d1"), str(tmp_path / "d1" / "x.png"), "-o", str(out),
                            "--model", str(TINY)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["x.rbb"]
    # decompress applies the same rule
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    (out / "x.rbb").rename(tmp_path / "r1" / "x.rbb")
    (tmp_path / "r2" / "x.rbb").write_bytes((tmp_path / "r1" / "x.rbb").read_bytes())
    r = runner.invoke(app, ["decompress", str(tmp_path / "r1"), str(tmp_path / "r2"), "-o", str(tmp_path / "png")])
    assert r.exit_code == EXIT_USAGE and not (tmp_path / "png").exists(), r.output


def test_tiny_and_animated_images_say_what_was_not_measured_or_kept(tmp_path):
    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(one)
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50, loop=0)
    r = runner.invoke(app, ["compress", str(one), str(gif), "-o", str(tmp_path / "out"), "--model", str(TINY)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "MS-SSIM n/a" in text and "under 11 px" in text and "nan" not in text.lower()
    assert "3 frames" in text and "only the first" in text


def test_undecodable_image_message_has_no_python_object_repr(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"definitely not an image")
    r = runner.invoke(app, ["compress", str(bad), "-o", str(tmp_path / "o.rbb"), "--model", str(TINY)])
    assert r.exit_code == 4, r.output
    assert "BytesIO" not in r.output and "object at 0x" not in r.output


@pytest.mark.s3
def test_bucket_with_wrong_secret_is_one_line_and_exit_6(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _servers import seaweedfs_server

    from raybb.storage import resolve, write_atomic

    with seaweedfs_server(tmp_path / "s3") as s3:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16)).save(buf, format="PNG")
        write_atomic(resolve("s3://raybb-secret/src", s3.storage_options), "a.png", buf.getvalue())
        env = dict(s3.env, AWS_SECRET_ACCESS_KEY="wrong-secret", RAY_ADDRESS="")
        r = runner.invoke(app, ["bucket", "compress", "s3://raybb-secret/src", "s3://raybb-secret/dst"], env=env)
    assert r.exit_code == EXIT_STORAGE, r.output
    assert "Traceback" not in r.output and "PermissionError" in r.output
    assert "wrong-secret" not in r.output


def test_bucket_source_that_does_not_exist_is_a_storage_error(tmp_path):
    """Refused before Ray starts (a typo must not cost a cluster start and print '0 of 0')."""
    for kind in ("compress", "decompress"):
        r = runner.invoke(app, ["bucket", kind, str(tmp_path / "no-such-dir"), str(tmp_path / "dst")])
        assert r.exit_code == EXIT_STORAGE, r.output
        assert "--allow-empty" in r.output and "no-such-dir" in r.output
    assert not (tmp_path / "dst").exists()


def test_job_script_refuses_a_missing_source_with_exit_6(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compress_bucket_job", Path(__file__).parents[2] / "jobs" / "compress_bucket.py"
    )
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    code = job.main(["--src", str(tmp_path / "typo"), "--dst", str(tmp_path / "dst"), "--no-progress"])
    assert code == EXIT_STORAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-empty" in err and "Traceback" not in err
