"""Rate-distortion, level-2 share and coding-time plots (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from raybb.evaluation.anchors import PUBLISHED_CAPTION
from raybb.evaluation.tables import rd_curves

__all__ = ["plot_rd", "plot_level2_share", "plot_coding_time"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _style(c: dict[str, Any]) -> dict[str, Any]:
    if c["kind"] == "published":
        marker = "s" if "BPG" in c["name"] else "D"
        return {"color": "0.55", "marker": marker, "linestyle": ":", "markersize": 4}
    if c["kind"] == "theoretical":
        return {"linestyle": "--", "marker": "x", "markersize": 5}
    if c["kind"] == "raybb":
        return {"linestyle": "-", "marker": "o", "markersize": 5, "linewidth": 2.2}
    return {"linestyle": "-", "marker": ".", "markersize": 6, "linewidth": 1.2}


def plot_rd(
    average: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    metric: str = "psnr",
    anchors: bool = False,
    title: str = "",
) -> Path:
    """RD curves (PSNR or MS-SSIM dB vs bpp) for every codec in ``average``, as a PNG."""
    if metric not in ("psnr", "ms_ssim_db"):
        raise ValueError("metric must be 'psnr' or 'ms_ssim_db'")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=110)
    for c in rd_curves(average, anchors):
        ax.plot(c["bpp"], c[metric], label=c["name"], **_style(c))
    ax.set_xlabel("bits per pixel (file bytes x 8 / pixels)")
    ax.set_ylabel("PSNR (dB, RGB)" if metric == "psnr" else "MS-SSIM (dB) = -10 log10(1 - MS-SSIM)")
    ax.set_title(title or ("Rate-distortion: " + ("PSNR" if metric == "psnr" else "MS-SSIM (dB)")))
    ax.grid(True, alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8, loc="lower right")
    if anchors:
        fig.text(0.01, 0.005, PUBLISHED_CAPTION, fontsize=6, wrap=True)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
    else:
        fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p


def plot_level2_share(average: pd.DataFrame, path: str | os.PathLike[str]) -> Path | None:
    """Share of the KL rate spent on level 2 vs bpp; None if no codec reports it."""
    sub = average[(average["kind"] == "raybb") & average["level2_share"].notna()]
    if sub.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=110)
    for codec, s in sub.groupby("codec", sort=False):
        s = s.sort_values("bpp")
        line = ax.plot(s["bpp"], 100.0 * s["level2_share"], marker="o", label=f"{codec} (KL rate)")
        if s["level2_share_coded"].notna().any():
            ax.plot(s["bpp"], 100.0 * s["level2_share_coded"], marker="x", linestyle="--",
                    color=line[0].get_color(), label=f"{codec} (coded bits)")  # fmt: skip
    ax.set_xlabel("bits per pixel (actual)")
    ax.set_ylabel("level-2 share of the rate (%)")
    ax.set_title("Rate spent on the top latent level")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p


def plot_coding_time(average: pd.DataFrame, path: str | os.PathLike[str], *, note: str = "") -> Path:
    """Mean encode and decode seconds per image vs bpp, log scale."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110, sharey=True)
    for codec, s in average.groupby("codec", sort=False):
        s = s.sort_values("bpp")
        style = _style({"kind": s["kind"].iloc[0], "name": str(codec)})
        axes[0].plot(s["bpp"], s["encode_s"], label=str(codec), **style)
        axes[1].plot(s["bpp"], s["decode_s"], label=str(codec), **style)
    for ax, what in zip(axes, ("encode", "decode"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("bits per pixel")
        ax.set_title(f"{what} time per image")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds (wall clock)")
    axes[1].legend(fontsize=8)
    if note:
        fig.text(0.01, 0.005, note, fontsize=7)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
    else:
        fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p
