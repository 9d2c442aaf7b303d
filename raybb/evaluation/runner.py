"""``evaluate_folder``: raybb and classical codecs on every image of a folder (``raybb eval``).

What it measures, per image and codec/quality::

    actual    bpp = file bytes x 8 / pixels, PSNR (RGB 8-bit), MS-SSIM, MS-SSIM dB,
              encode s, decode s                                   (every codec)
    theory    KL bits / pixels, PSNR/MS-SSIM of the exact-sample reconstruction when the codec
              reports them, level-2 share of the KL rate           (raybb only)

and writes ``per_image`` and ``average`` tables (CSV + Parquet), a BD-rate table, RD plots
(PSNR and MS-SSIM dB vs bpp, with published Kodak anchor points), the level-2 rate share vs rate
and coding time vs rate.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raybb import metrics
from raybb.baselines import get_baseline
from raybb.evaluation.anchors import PUBLISHED_CAPTION
from raybb.evaluation.machine import machine_info
from raybb.evaluation.plots import plot_coding_time, plot_level2_share, plot_rd
from raybb.evaluation.tables import MD_DIGITS, average_table, bd_table, markdown_table
from raybb.imageio import IMAGE_SUFFIXES, load_image

__all__ = ["EvalReport", "PER_IMAGE_COLUMNS", "evaluate_folder", "list_images"]

ProgressFn = Callable[[int, int, str], None]


@dataclass
class EvalReport:
    """Everything ``evaluate_folder`` produced: the tables (also on disk) and the written files."""

    per_image: pd.DataFrame
    average: pd.DataFrame
    bd: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)


PER_IMAGE_COLUMNS = [
    "codec", "kind", "quality", "image", "width", "height", "bytes", "bpp", "psnr", "ms_ssim",
    "ms_ssim_db", "ms_ssim_scales", "encode_s", "decode_s",
    # raybb only (NaN/None for classical codecs)
    "theoretical_bpp", "theoretical_psnr", "theoretical_ms_ssim", "level2_share",
    "level2_share_coded", "decode_matches",
]  # fmt: skip


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted by name."""
    p = Path(folder)
    if not p.is_dir():
        raise FileNotFoundError(f"not a folder: {p}")
    return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _quality_row(rgb: np.ndarray, rec: np.ndarray) -> dict[str, float]:
    h, w = rgb.shape[:2]
    v = metrics.ms_ssim(rgb, rec)
    return {
        "psnr": metrics.psnr(rgb, rec),
        "ms_ssim": v,
        "ms_ssim_db": metrics.ms_ssim_db(v),
        "ms_ssim_scales": metrics.ms_ssim_scales(h, w),
    }


def _level2_share(kl_per_level: Mapping[Any, float] | None) -> float:
    """Share of the (KL or coded) rate spent on level 2, the top of the ladder; NaN if unreported."""
    if not kl_per_level:
        return math.nan
    bits = {int(k): float(v) for k, v in kl_per_level.items()}
    total = sum(bits.values())
    if total <= 0 or 2 not in bits:
        return math.nan
    return bits[2] / total


def _unpack_raybb(entry: Sequence[Any]) -> tuple[str, str, Any]:
    """(label, codec) -> curve "raybb"; (curve, label, codec) names the curve explicitly."""
    if len(entry) == 2:
        return "raybb", str(entry[0]), entry[1]
    if len(entry) == 3:
        return str(entry[0]), str(entry[1]), entry[2]
    raise ValueError("raybb_codecs entries must be (label, codec) or (curve, label, codec)")


def _opt_float(v: Any) -> float:
    return math.nan if v is None else float(v)


def _accepts_theoretical(codec: Any) -> bool:
    """Whether ``compress_with_stats`` takes ``theoretical=`` (the exact-sample reconstruction)."""
    try:
        params = inspect.signature(codec.compress_with_stats).parameters
    except (TypeError, ValueError):
        return False
    return "theoretical" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _eval_raybb(curve: str, label: str, codec: Any, name: str, rgb: np.ndarray, theoretical: bool) -> dict[str, Any]:
    h, w = rgb.shape[:2]
    kw = {"theoretical": True} if theoretical and _accepts_theoretical(codec) else {}
    t0 = time.perf_counter()
    res = codec.compress_with_stats(rgb, **kw)
    enc_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = np.asarray(codec.decompress(res.data))
    dec_s = time.perf_counter() - t0
    if rec.shape != rgb.shape:
        raise ValueError(f"{curve}/{label}: decoded shape {rec.shape} != input {rgb.shape} for {name}")
    enc_s = getattr(res, "encode_seconds", None)
    kl = getattr(res, "kl_bits", None)
    own_rec = getattr(res, "reconstruction", None)
    row: dict[str, Any] = {
        "codec": curve,
        "kind": "raybb",
        "quality": label,
        "image": name,
        "width": w,
        "height": h,
        "bytes": len(res.data),
        "bpp": metrics.bpp(len(res.data), h, w),
        **_quality_row(rgb, rec),
        "encode_s": float(enc_s) if enc_s is not None else enc_wall,
        "decode_s": dec_s,
        "theoretical_bpp": _opt_float(kl) / (h * w),
        "theoretical_psnr": _opt_float(getattr(res, "theoretical_psnr", None)),
        "theoretical_ms_ssim": _opt_float(getattr(res, "theoretical_ms_ssim", None)),
        "level2_share": _level2_share(getattr(res, "kl_bits_per_level", None)),
        "level2_share_coded": _level2_share(getattr(res, "coded_bits_per_level", None)),
        "decode_matches": None if own_rec is None else bool(np.array_equal(np.asarray(own_rec), rec)),
    }
    return row


def _eval_classical(codec_name: str, quality: int, name: str, rgb: np.ndarray) -> dict[str, Any]:
    c = get_baseline(codec_name)
    h, w = rgb.shape[:2]
    t0 = time.perf_counter()
    data = c.encode(rgb, quality)
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = c.decode(data)
    dec_s = time.perf_counter() - t0
    return {
        "codec": c.name,
        "kind": "classical",
        "quality": str(quality),
        "image": name,
        "width": w,
        "height": h,
        "bytes": len(data),
        "bpp": metrics.bpp(len(data), h, w),
        **_quality_row(rgb, rec),
        "encode_s": enc_s,
        "decode_s": dec_s,
        "theoretical_bpp": math.nan,
        "theoretical_psnr": math.nan,
        "theoretical_ms_ssim": math.nan,
        "level2_share": math.nan,
        "level2_share_coded": math.nan,
        "decode_matches": None,
    }


def _is_kodak(images: Sequence[Path]) -> bool:
    names = {p.stem for p in images}
    return all(f"kodim{i:02d}" in names for i in range(1, 25))


def evaluate_folder(
    folder: str | os.PathLike[str],
    *,
    raybb_codecs: Sequence[tuple[Any, ...]] = (),
    baselines: Sequence[str] = ("jpeg", "webp", "avif", "jpegxl"),
    out_dir: str | os.PathLike[str],
    progress: ProgressFn | None = None,
    baseline_qualities: Mapping[str, Sequence[int]] | None = None,
    limit: int | None = None,
    anchors: bool | None = None,
    prefix: str = "",
    note: str = "",
    theoretical: bool = True,
    previous_rows: pd.DataFrame | None = None,
) -> EvalReport:
    """Evaluate raybb codecs and classical baselines on every image in ``folder``.

    raybb_codecs: ``(label, codec)`` pairs -- each a Codec-like object with
        ``compress_with_stats(rgb)`` and ``decompress(bytes)``, usually one per model/rate; all
        pairs form one curve named ``raybb``. Use ``(curve, label, codec)`` to draw several curves
        (e.g. per sampler).
    baselines: classical codec names (see ``raybb.baselines``), each run at its default quality
        ladder or at ``baseline_qualities[name]``.
    anchors: draw and BD-compare the published Kodak points; ``None`` = only if the folder holds
        kodim01..kodim24 and ``limit`` is not set.
    progress: called as ``progress(done, total, message)`` after each (image, codec, quality).
    theoretical: ask raybb codecs for the exact-sample reconstruction (``compress_with_stats(...,
        theoretical=True)``) when they accept the argument; it costs one extra synthesis per image
        and is not counted in ``encode_s`` (the codec reports its own encode time).

    Writes into ``out_dir`` (names start with ``prefix``): per_image.{csv,parquet},
    average.{csv,parquet}, bd_rate.csv, summary.md, rd_psnr.png, rd_ms_ssim.png,
    coding_time.png, and level2_share.png when a raybb codec reports per-level KL bits.
    """
    images = list_images(folder)
    if limit is not None:
        images = images[:limit]
    if not images:
        raise FileNotFoundError(f"no images in {folder} (suffixes: {', '.join(IMAGE_SUFFIXES)})")
    if anchors is None:
        anchors = limit is None and _is_kodak(images)
    rb = [_unpack_raybb(e) for e in raybb_codecs]
    bl = [get_baseline(n).name for n in baselines]
    quals = {n: list((baseline_qualities or {}).get(n, get_baseline(n).default_qualities)) for n in bl}
    total = len(images) * (len(rb) + sum(len(q) for q in quals.values()))
    done = 0
    rows: list[dict[str, Any]] = []
    for path in images:
        rgb = load_image(path)
        for curve, label, codec in rb:
            rows.append(_eval_raybb(curve, label, codec, path.name, rgb, theoretical))
            done += 1
            if progress:
                progress(done, total, f"{path.name} {curve}/{label}")
        for name in bl:
            for q in quals[name]:
                rows.append(_eval_classical(name, q, path.name, rgb))
                done += 1
                if progress:
                    progress(done, total, f"{path.name} {name} q={q}")

    per_image = pd.DataFrame(rows, columns=PER_IMAGE_COLUMNS)
    if previous_rows is not None and len(previous_rows):
        # Rows measured earlier on the same images (e.g. the slow classical baselines), so a new
        # raybb model can be compared without re-encoding every baseline.
        names = {p.name for p in images}
        prev = previous_rows[previous_rows["image"].isin(names)].reindex(columns=PER_IMAGE_COLUMNS)
        per_image = pd.concat([per_image, prev], ignore_index=True)
    per_image["decode_matches"] = per_image["decode_matches"].astype("boolean")
    average = average_table(per_image)
    bd = bd_table(average, anchors=anchors)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def _p(name: str) -> Path:
        files[name] = out / f"{prefix}{name}"
        return files[name]

    per_image.to_csv(_p("per_image.csv"), index=False)
    per_image.to_parquet(_p("per_image.parquet"), index=False)
    average.to_csv(_p("average.csv"), index=False)
    average.to_parquet(_p("average.parquet"), index=False)
    bd.to_csv(_p("bd_rate.csv"), index=False)
    plot_rd(average, _p("rd_psnr.png"), metric="psnr", anchors=anchors)
    plot_rd(average, _p("rd_ms_ssim.png"), metric="ms_ssim_db", anchors=anchors)
    plot_coding_time(average, _p("coding_time.png"), note=note)
    l2 = plot_level2_share(average, out / f"{prefix}level2_share.png")
    if l2 is not None:
        files["level2_share.png"] = l2

    info = machine_info()
    md = [f"# Rate-distortion evaluation: {Path(folder).name} ({len(images)} images)\n"]
    md.append("Measured " + info["date"] + f" on {info['cpu']} ({info['cpu_count']} cores), "
              f"Python {info['python']}, torch {info['torch']}.\n")  # fmt: skip
    if note:
        md.append(note + "\n")
    show = [c for c in average.columns if not (average[c].isna().all())]
    md.append("## Averages\n")
    md.append(markdown_table(average[show], MD_DIGITS))
    if not bd.empty:
        md.append("\n## BD-rate (test vs anchor; negative = test needs fewer bits)\n")
        md.append(markdown_table(bd, MD_DIGITS))
    if anchors:
        md.append("\n" + PUBLISHED_CAPTION + "\n")
    _p("summary.md").write_text("\n".join(md))
    return EvalReport(per_image=per_image, average=average, bd=bd, files=files, images=[p.name for p in images])
