"""benchmarks/model_report.py on a randomly initialised tiny model (2 committed test photos + an odd-sized one).

The numbers of an untrained model are meaningless; what is checked is that the report is internally
consistent (rates, gains, averages, files) and that the JPEG matching does what it says.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _data import TEST_PHOTOS

from raybb import metrics
from raybb.baselines import get_baseline
from raybb.imageio import encode_png
from raybb.model.ladder import LadderConfig, LadderNetwork
from raybb.model.weights import save_weights

REPO = Path(__file__).resolve().parents[2]
PHOTOS = TEST_PHOTOS[:2]  # car.png, chain.png (192x176: full 5-scale MS-SSIM)
NAMES = [p.stem for p in PHOTOS]


def _load_script():
    spec = importlib.util.spec_from_file_location("model_report", REPO / "benchmarks" / "model_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mr = _load_script()


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([80 + 100 * xx / w, 60 + 120 * yy / h, 128 + 60 * np.sin(xx / 5.0)], -1)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    model = LadderNetwork(LadderConfig(N=16, M=16, F=16, G=4))
    save_weights(p, model, {"beta": 2.0, "steps": 0, "variant": "gamma-pln"})
    return p


@pytest.fixture(scope="module")
def report(weights: Path, tmp_path_factory) -> tuple[dict, Path]:
    d = tmp_path_factory.mktemp("photos")
    for f in PHOTOS:
        shutil.copy(f, d / f.name)
    (d / "odd.png").write_bytes(encode_png(_photo(37, 53, 1)))  # not a multiple of 64
    out = tmp_path_factory.mktemp("res") / "model_report"
    side = out.with_name("tiny.json")
    args = ["--weights", str(weights), "--kodak", str(d), "--out", str(out), "--quiet", "--sidecar", str(side)]
    args += ["--note", "smoke test of a random model"]
    assert mr.main(args) == 0
    return json.loads(out.with_name("model_report.json").read_text()), out


def test_report_files_and_metadata(report, weights: Path) -> None:
    rep, out = report
    md = out.with_name("model_report.md").read_text()
    assert rep["n_images"] == 3
    assert [r["image"] for r in rep["per_image"]] == [*NAMES, "odd"]
    assert rep["date"] and rep["machine"]["cpu"] and rep["machine"]["torch_threads"] == "1"
    assert "contended" in rep["note"]
    assert rep["weights"]["config"]["N"] == 16 and rep["weights"]["meta"]["beta"] == 2.0
    assert len(rep["weights"]["fingerprint"]) == 64
    for name in (*NAMES, "odd", "**average**", rep["weights"]["fingerprint"][:16]):
        assert name in md
    assert "PSNR gain over JPEG" in md and rep["date"] in md
    assert rep["user_note"] == "smoke test of a random model" and "**smoke test of a random model**" in md
    assert isinstance(rep["target"]["met"], bool)


def test_report_rows_consistent(report) -> None:
    rep, _ = report
    for r in rep["per_image"]:
        assert r["bpp"] == pytest.approx(r["bpp_level1"] + r["bpp_level2"])
        assert r["bpp"] > 0 and r["bpp_level2"] > 0
        assert r["level2_share"] == pytest.approx(r["bpp_level2"] / r["bpp"])
        assert 0 < r["psnr_sample"] < 60 and 0 < r["psnr_mean"] < 60
        assert r["psnr_gain_sample"] == pytest.approx(r["psnr_sample"] - r["jpeg_psnr_matched"])
        assert r["psnr_gain_mean"] == pytest.approx(r["psnr_mean"] - r["jpeg_psnr_matched"])
        assert r["jpeg_match"] in (
            "interpolated",
            "at_most",
            "quality_1_above_target",
            "quality_100_below_target",
        )
        if r["jpeg_match"] == "interpolated":
            assert r["jpeg_bpp"] <= r["bpp"] < r["jpeg_hi_bpp"]
        if r["jpeg_match"] == "quality_1_above_target":
            assert r["jpeg_quality"] == 1 and r["jpeg_bpp"] > r["bpp"]
    k = rep["per_image"][:2]
    assert all(0 < r["ms_ssim_sample"] <= 1 for r in k)  # >= 161 px: full 5-scale MS-SSIM
    a = rep["average"]
    for key in ("bpp", "psnr_sample", "psnr_mean", "jpeg_psnr_matched", "psnr_gain_sample"):
        assert a[key] == pytest.approx(np.mean([r[key] for r in rep["per_image"]]))
    assert a["level2_share_of_mean_bpp"] == pytest.approx(a["bpp_level2"] / a["bpp"])


def test_report_is_reproducible(report, weights: Path, tmp_path: Path) -> None:
    """Fixed seed per image: the sample reconstruction and its rate do not change between runs."""
    rep, _ = report
    d = tmp_path / "one"
    d.mkdir()
    shutil.copy(PHOTOS[1], d / PHOTOS[1].name)
    again = mr.run(weights, d, tmp_path / "r", progress=False)
    r0, r1 = rep["per_image"][1], again["per_image"][0]
    for key in ("bpp", "bpp_level2", "psnr_sample", "psnr_mean", "jpeg_psnr_matched"):
        assert r1[key] == r0[key], key
    other_seed = mr.run(weights, d, tmp_path / "r2", seed=5, progress=False)["per_image"][0]
    assert other_seed["psnr_sample"] != r0["psnr_sample"]
    assert other_seed["psnr_mean"] == r0["psnr_mean"]


def test_model_pass_matches_direct_computation(weights: Path) -> None:
    from raybb.model.weights import load_weights

    model = load_weights(weights).model
    rgb = _photo(70, 90, 3)
    row = mr.model_pass(model, rgb, seed=4)
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    xp = torch.nn.functional.pad(x, (0, 128 - 90, 0, 128 - 70), mode="replicate")
    with torch.no_grad():
        torch.manual_seed(4)
        out = model(xp)
    bits = (out.kl1 + out.kl2).item() / math.log(2)
    assert row["bpp"] == pytest.approx(bits / (70 * 90), rel=1e-6)
    rec = out.x_hat[0, :, :70, :90].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert row["psnr_sample"] == pytest.approx(metrics.psnr(rgb, rec))


def test_jpeg_matching_modes() -> None:
    rgb = _photo(96, 128, 2)
    jpeg = get_baseline("jpeg")
    h, w = rgb.shape[:2]
    b30 = metrics.bpp(len(jpeg.encode(rgb, 30)), h, w)
    b31 = metrics.bpp(len(jpeg.encode(rgb, 31)), h, w)
    assert b31 > b30
    target = (b30 + b31) / 2
    m = mr.jpeg_matched(rgb, target)
    assert m["jpeg_match"] == "interpolated" and m["jpeg_quality"] == 30 and m["jpeg_hi_quality"] == 31
    assert m["jpeg_bpp"] == pytest.approx(b30)
    lo_p, hi_p = sorted([m["jpeg_psnr"], m["jpeg_hi_psnr"]])
    assert lo_p <= m["jpeg_psnr_matched"] <= hi_p
    tiny = mr.jpeg_matched(rgb, 1e-3)
    assert tiny["jpeg_match"] == "quality_1_above_target" and tiny["jpeg_quality"] == 1
    huge = mr.jpeg_matched(rgb, 100.0)
    assert huge["jpeg_match"] == "quality_100_below_target" and huge["jpeg_quality"] == 100
    assert huge["jpeg_psnr_matched"] == huge["jpeg_psnr"]


def test_sidecar_is_read_by_the_registry(report, weights: Path, tmp_path: Path) -> None:
    """The --sidecar file is what raybb.registry reads as a model's Kodak numbers."""
    from raybb.registry import _kodak_fields

    rep, out = report
    side = json.loads(out.with_name("tiny.json").read_text())
    assert side["fingerprint"] == rep["weights"]["fingerprint"]
    assert _kodak_fields(side) == {
        "kodak_bpp": rep["average"]["bpp"],
        "kodak_psnr": rep["average"]["psnr_sample"],
        "kodak_ms_ssim": rep["average"]["ms_ssim_sample"],
    }


def test_resolve_weights_file_and_checkpoint_dir(weights: Path, tmp_path: Path) -> None:
    assert mr.resolve_weights(str(weights)) == weights
    ck = tmp_path / "checkpoint"
    ck.mkdir()
    shutil.copy(weights, ck / "model.safetensors")
    assert mr.resolve_weights(str(ck)) == ck / "model.safetensors"
    from raybb.errors import RaybbError

    with pytest.raises(RaybbError):
        mr.resolve_weights("no-such-model-name")


def test_report_agrees_with_training_validation_metrics(weights: Path) -> None:
    """Two implementations of "theoretical bpp + PSNR" (the report and the training loop's
    validation) give the same numbers on the same image and noise."""
    from raybb.model.weights import load_weights
    from raybb.train.loop import evaluate_images

    model = load_weights(weights).model
    rgb = _photo(80, 100, 5)
    row = mr.model_pass(model, rgb, seed=9)
    img = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    val = evaluate_images(model, [img], seed=9)
    assert val["val_bpp"] == pytest.approx(row["bpp"], rel=1e-6)
    assert val["val_bpp_level2"] == pytest.approx(row["bpp_level2"], rel=1e-6)
    assert val["val_psnr_sample"] == pytest.approx(row["psnr_sample"], abs=1e-6)
    assert val["val_psnr_mean"] == pytest.approx(row["psnr_mean"], abs=1e-6)
