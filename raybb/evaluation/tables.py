"""Tables from per-image measurements: averages per (codec, quality), BD-rates, markdown.

Averages follow CompressAI's convention: per-image PSNR and MS-SSIM are averaged over images;
the averaged MS-SSIM dB is computed from the averaged MS-SSIM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from raybb import metrics
from raybb.evaluation.anchors import KODAK_ANCHORS
from raybb.evaluation.bd import bd_psnr, bd_rate

__all__ = ["average_table", "rd_curves", "bd_table", "markdown_table", "MD_DIGITS"]


def average_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean over images per (codec, quality); MS-SSIM dB from the mean MS-SSIM; sorted by bpp."""
    if per_image.empty:
        return pd.DataFrame(columns=["codec", "kind", "quality", "n_images"])
    mean_cols = [
        "bpp", "psnr", "ms_ssim", "encode_s", "decode_s", "theoretical_bpp", "theoretical_psnr",
        "theoretical_ms_ssim", "level2_share", "level2_share_coded",
    ]  # fmt: skip
    df = per_image.copy()
    for c in (*mean_cols, "ms_ssim_scales", "decode_matches"):
        if c not in df:  # tables from older runs or other tools may lack the newer columns
            df[c] = None
    for c in mean_cols:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    # PSNR of a lossless image is inf; cap at 100 dB in the mean so one identical image does not
    # make a whole rate point infinite.
    df["psnr"] = df["psnr"].clip(upper=100.0)
    g = df.groupby(["codec", "kind", "quality"], sort=False)
    avg = g[mean_cols].mean()
    avg["n_images"] = g.size()
    avg["min_ms_ssim_scales"] = g["ms_ssim_scales"].min()
    dm = g["decode_matches"].agg(lambda s: None if s.isna().all() else bool(s.dropna().astype(bool).all()))
    avg["decode_matches"] = dm
    avg = avg.reset_index()
    avg["ms_ssim_db"] = [metrics.ms_ssim_db(v) for v in avg["ms_ssim"]]
    avg["theoretical_ms_ssim_db"] = [metrics.ms_ssim_db(v) for v in avg["theoretical_ms_ssim"]]
    order = [
        "codec", "kind", "quality", "n_images", "bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s",
        "decode_s", "theoretical_bpp", "theoretical_psnr", "theoretical_ms_ssim",
        "theoretical_ms_ssim_db", "level2_share", "level2_share_coded", "decode_matches",
        "min_ms_ssim_scales",
    ]  # fmt: skip
    avg = avg[order]
    first = {c: i for i, c in enumerate(dict.fromkeys(avg["codec"]))}
    avg = avg.assign(_o=avg["codec"].map(first)).sort_values(["_o", "bpp"], kind="stable")
    return avg.drop(columns="_o").reset_index(drop=True)


def rd_curves(average: pd.DataFrame, anchors: bool) -> list[dict[str, Any]]:
    """RD curves from the averaged table: one per codec, plus raybb's theoretical curve(s)."""
    out: list[dict[str, Any]] = []
    for codec, sub in average.groupby("codec", sort=False):
        sub = sub.sort_values("bpp")
        kind = sub["kind"].iloc[0]
        out.append({
            "name": str(codec), "kind": kind, "bpp": sub["bpp"].to_numpy(float),
            "psnr": sub["psnr"].to_numpy(float), "ms_ssim_db": sub["ms_ssim_db"].to_numpy(float),
        })  # fmt: skip
        if kind == "raybb" and sub["theoretical_bpp"].notna().any():
            exact = sub["theoretical_psnr"].notna().all()
            t_psnr = sub["theoretical_psnr"] if exact else sub["psnr"]
            t_ms = sub["theoretical_ms_ssim_db"] if sub["theoretical_ms_ssim"].notna().all() else sub["ms_ssim_db"]
            suffix = "theoretical: KL rate, exact sample" if exact else "theoretical: KL rate, coded sample"
            out.append({
                "name": f"{codec} ({suffix})", "kind": "theoretical", "of": str(codec),
                "bpp": sub["theoretical_bpp"].to_numpy(float), "psnr": t_psnr.to_numpy(float),
                "ms_ssim_db": t_ms.to_numpy(float),
            })  # fmt: skip
    if anchors:
        for name, a in KODAK_ANCHORS.items():
            out.append({
                "name": name, "kind": "published", "citation": a["citation"],
                "bpp": np.asarray(a["bpp"], float), "psnr": np.asarray(a["psnr"], float),
                "ms_ssim_db": np.asarray([metrics.ms_ssim_db(v) for v in a["ms_ssim"]], float),
            })  # fmt: skip
    return out


def bd_table(average: pd.DataFrame, *, anchors: bool = False, method: str = "pchip") -> pd.DataFrame:
    """BD-rate/BD-quality table from the averaged table.

    Rows: every raybb curve vs every classical and published curve; raybb actual vs its own
    theoretical curve (the "within 5%" target: positive = overhead of actual coding); and, with
    no raybb curve or in addition, every classical codec vs JPEG.
    """
    curves = rd_curves(average, anchors)
    by_name = {c["name"]: c for c in curves}
    pairs: list[tuple[str, str]] = []  # (test, anchor)
    raybb = [c["name"] for c in curves if c["kind"] == "raybb"]
    others = [c["name"] for c in curves if c["kind"] in ("classical", "published")]
    for t in raybb:
        pairs += [(t, a) for a in others]
        pairs += [(t, c["name"]) for c in curves if c["kind"] == "theoretical" and c["of"] == t]
    if "jpeg" in by_name:
        pairs += [(c["name"], "jpeg") for c in curves if c["kind"] == "classical" and c["name"] != "jpeg"]
        pairs += [(c["name"], "jpeg") for c in curves if c["kind"] == "published"]
    rows = []
    for t, a in pairs:
        ct, ca = by_name[t], by_name[a]
        ra, rt = ca["bpp"], ct["bpp"]
        rows.append({
            "test": t, "anchor": a,
            "bd_rate_psnr_pct": bd_rate(ra, ca["psnr"], rt, ct["psnr"], method=method),
            "bd_rate_ms_ssim_pct": bd_rate(ra, ca["ms_ssim_db"], rt, ct["ms_ssim_db"], method=method),
            "bd_psnr_db": bd_psnr(ra, ca["psnr"], rt, ct["psnr"], method=method),
            "bd_ms_ssim_db": bd_psnr(ra, ca["ms_ssim_db"], rt, ct["ms_ssim_db"], method=method),
        })  # fmt: skip
    cols = ["test", "anchor", "bd_rate_psnr_pct", "bd_rate_ms_ssim_pct", "bd_psnr_db", "bd_ms_ssim_db"]
    return pd.DataFrame(rows, columns=cols)


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(df: pd.DataFrame, digits: Mapping[str, int] | None = None, default_digits: int = 3) -> str:
    """A GitHub-markdown table (no tabulate dependency); per-column decimal places."""
    digits = digits or {}
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    lines = [head, sep]
    for row in df.itertuples(index=False):
        cells = [_fmt(v, digits.get(c, default_digits)) for c, v in zip(df.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


MD_DIGITS = {"bpp": 4, "psnr": 2, "ms_ssim": 4, "ms_ssim_db": 2, "encode_s": 4, "decode_s": 4,
              "theoretical_bpp": 4, "theoretical_psnr": 2, "theoretical_ms_ssim": 4,
              "theoretical_ms_ssim_db": 2, "level2_share": 3, "level2_share_coded": 3, "bd_rate_psnr_pct": 1,
              "bd_rate_ms_ssim_pct": 1, "bd_psnr_db": 2, "bd_ms_ssim_db": 2}  # fmt: skip
