"""evaluate_folder end to end on two tiny images, with baselines and a codec test double."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from eval_helpers import QuantizingCodec

from raybb.evaluation import (
    KODAK_ANCHORS,
    average_table,
    bd_table,
    evaluate_folder,
    list_images,
    markdown_table,
)

QUALS = {"jpeg": [10, 40, 80], "webp": [10, 50, 90]}


def test_list_images_ignores_other_files(image_folder):
    assert [p.name for p in list_images(image_folder)] == ["a.png", "b.png"]


def test_evaluate_folder_writes_tables_and_plots(image_folder, tmp_path, fake_codecs):
    calls = []
    out = tmp_path / "out"
    rep = evaluate_folder(
        image_folder,
        raybb_codecs=fake_codecs,
        baselines=["jpeg", "webp"],
        baseline_qualities=QUALS,
        out_dir=out,
        progress=lambda done, total, msg: calls.append((done, total, msg)),
    )
    n_points = len(fake_codecs) + 3 + 3
    # per-image table: every (image, codec, quality)
    assert len(rep.per_image) == 2 * n_points
    assert rep.images == ["a.png", "b.png"]
    pi = rep.per_image
    assert set(pi["codec"]) == {"raybb", "jpeg", "webp"}
    assert (pi["bpp"] == pi["bytes"] * 8 / (pi["width"] * pi["height"])).all()
    assert pi["psnr"].between(10, 60).all() and pi["ms_ssim"].between(0, 1).all()
    assert (pi["encode_s"] >= 0).all() and (pi["decode_s"] >= 0).all()
    rb = pi[pi["kind"] == "raybb"]
    assert rb["decode_matches"].all()
    assert np.allclose(rb["theoretical_bpp"], 0.95 * rb["bpp"])
    assert np.allclose(rb["level2_share"], 0.2)
    assert np.allclose(rb["level2_share_coded"], 0.25)
    assert pi.loc[pi["kind"] == "classical", "theoretical_bpp"].isna().all()
    # averaged table: one row per (codec, quality), over both images
    avg = rep.average
    assert len(avg) == n_points and (avg["n_images"] == 2).all()
    one = pi[(pi["codec"] == "jpeg") & (pi["quality"] == "40")]
    row = avg[(avg["codec"] == "jpeg") & (avg["quality"] == "40")].iloc[0]
    assert row["bpp"] == pytest.approx(one["bpp"].mean())
    assert row["psnr"] == pytest.approx(one["psnr"].mean())
    assert row["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - one["ms_ssim"].mean()))
    # BD-rate: raybb vs each baseline and vs its own theoretical curve, all finite
    bd = rep.bd.set_index(["test", "anchor"])
    for anchor in ("jpeg", "webp"):
        assert math.isfinite(bd.loc[("raybb", anchor), "bd_rate_psnr_pct"])
        assert math.isfinite(bd.loc[("raybb", anchor), "bd_rate_ms_ssim_pct"])
    theo = [a for t, a in bd.index if t == "raybb" and "theoretical" in a]
    assert len(theo) == 1 and "exact sample" in theo[0]
    # actual rate = KL/0.95 at a theoretical PSNR 0.1 dB higher: the actual curve costs more
    assert bd.loc[("raybb", theo[0]), "bd_rate_psnr_pct"] > 100 / 95 - 1
    # files on disk
    expected = [
        "per_image.csv",
        "per_image.parquet",
        "average.csv",
        "average.parquet",
        "bd_rate.csv",
        "summary.md",
        "rd_psnr.png",
        "rd_ms_ssim.png",
        "coding_time.png",
        "level2_share.png",
    ]
    for name in expected:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert rep.files[name] == out / name
    assert (out / "rd_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(pd.read_parquet(out / "per_image.parquet")) == len(pi)
    back = pd.read_csv(out / "average.csv")
    assert np.allclose(back["bpp"], avg["bpp"])
    md = (out / "summary.md").read_text()
    assert "| codec |" in md and "BD-rate" in md
    # progress: once per evaluated point, ending at the total
    assert len(calls) == 2 * n_points and calls[-1][0] == calls[-1][1] == 2 * n_points
    # tiny folder: no published Kodak anchors
    assert not any("published" in a for _, a in bd.index)


def test_prefix_anchors_and_named_curves(image_folder, tmp_path):
    rep = evaluate_folder(
        image_folder,
        raybb_codecs=[
            ("pfr", "s32", QuantizingCodec(32)),
            ("pfr", "s8", QuantizingCodec(8)),
            ("greedy", "s24", QuantizingCodec(24)),
            ("greedy", "s6", QuantizingCodec(6)),
        ],
        baselines=["jpeg"],
        baseline_qualities={"jpeg": [20, 60, 95]},
        out_dir=tmp_path,
        prefix="kodak_",
        anchors=True,
        limit=1,
    )
    assert rep.images == ["a.png"]
    assert (tmp_path / "kodak_average.csv").is_file() and (tmp_path / "kodak_rd_ms_ssim.png").is_file()
    assert set(rep.average["codec"]) == {"pfr", "greedy", "jpeg"}
    anchors = set(rep.bd["anchor"])
    assert set(KODAK_ANCHORS) <= anchors
    assert {"pfr", "greedy"} <= set(rep.bd["test"])


def test_decode_mismatch_and_missing_theory_are_reported(image_folder, tmp_path):
    rep = evaluate_folder(
        image_folder,
        raybb_codecs=[
            ("bad", QuantizingCodec(16, corrupt_decode=True, report_theory=False)),
            ("bad2", QuantizingCodec(8, corrupt_decode=True, report_theory=False)),
        ],  # fmt: skip
        baselines=[],
        out_dir=tmp_path,
    )
    assert not rep.per_image["decode_matches"].any()
    assert rep.average["decode_matches"].eq(False).all()
    assert rep.per_image["theoretical_psnr"].isna().all()
    assert rep.per_image["level2_share"].isna().all()
    assert rep.per_image["level2_share_coded"].isna().all()
    assert "level2_share.png" not in rep.files
    # without exact-sample metrics the theoretical curve uses the coded reconstruction's quality
    assert any("coded sample" in a for a in rep.bd["anchor"])


def test_empty_folder_and_unknown_baseline(tmp_path, image_folder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        evaluate_folder(tmp_path / "empty", baselines=["jpeg"], out_dir=tmp_path / "o")
    with pytest.raises(ValueError):
        evaluate_folder(image_folder, baselines=["bpg"], out_dir=tmp_path / "o")


def test_bd_table_baselines_only_compares_with_jpeg():
    pi = pd.DataFrame(
        [
            {"codec": c, "kind": "classical", "quality": str(q), "image": "x", "bpp": b, "psnr": p,
             "ms_ssim": m, "ms_ssim_scales": 5, "encode_s": 0.0, "decode_s": 0.0,
             "theoretical_bpp": np.nan, "theoretical_psnr": np.nan, "theoretical_ms_ssim": np.nan,
             "level2_share": np.nan, "decode_matches": None}
            for c, f in (("jpeg", 1.0), ("webp", 0.5))
            for q, (b, p, m) in enumerate([(0.3 * f, 28, 0.93), (0.6 * f, 32, 0.97), (1.2 * f, 36, 0.99)])
        ]
    )  # fmt: skip
    bd = bd_table(average_table(pi))
    assert list(zip(bd["test"], bd["anchor"], strict=True)) == [("webp", "jpeg")]
    assert bd["bd_rate_psnr_pct"].iloc[0] == pytest.approx(-50.0, abs=1e-9)
    assert bd["bd_rate_ms_ssim_pct"].iloc[0] == pytest.approx(-50.0, abs=1e-9)


def test_markdown_table_formats():
    df = pd.DataFrame({"a": ["x"], "bpp": [0.123456], "psnr": [math.inf], "n": [np.nan]})
    md = markdown_table(df, {"bpp": 2})
    assert md.splitlines()[0] == "| a | bpp | psnr | n |"
    assert md.splitlines()[2] == "| x | 0.12 | inf |  |"
