"""Rate-distortion evaluation: raybb against classical codecs on a folder of images (``raybb eval``).

What it measures, per image and codec/quality::

    actual    bpp = file bytes x 8 / pixels, PSNR (RGB 8-bit), MS-SSIM, MS-SSIM dB,
              encode s, decode s                                   (every codec)
    theory    KL bits / pixels, PSNR/MS-SSIM of the exact-sample reconstruction when the codec
              reports them, level-2 share of the KL rate           (raybb only)

and writes ``per_image`` and ``average`` tables (CSV + Parquet), a BD-rate table, RD plots
(PSNR and MS-SSIM dB vs bpp, like the seed's Fig. 4.1, with published Kodak anchor points), the
level-2 rate share vs rate (Fig. 4.2) and coding time vs rate (Fig. 4.9).

Averages follow CompressAI's convention: per-image PSNR and MS-SSIM are averaged over images;
the averaged MS-SSIM dB is computed from the averaged MS-SSIM.

BD-rate convention: ``bd_rate(rate_a, dist_a, rate_b, dist_b)`` is the average rate change of
curve *b* (test) relative to curve *a* (anchor) at equal quality, in percent; negative means *b*
needs fewer bits.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raybb import metrics
from raybb.baselines import get_baseline
from raybb.imageio import IMAGE_SUFFIXES, load_image

__all__ = [
    "KODAK_ANCHORS",
    "EvalReport",
    "bd_rate",
    "bd_psnr",
    "evaluate_folder",
    "average_table",
    "bd_table",
    "list_images",
    "machine_info",
    "markdown_table",
    "plot_rd",
    "plot_level2_share",
    "plot_coding_time",
]

ProgressFn = Callable[[int, int, str], None]

# --------------------------------------------------------------------------------------------------
# Published reference points (Kodak, 24 images). Source: InterDigitalInc/CompressAI,
# results/image/kodak/<file>; copied from /work/shared/docs/kodak-anchors.md. They are the
# comparison for codecs we cannot run here (BPG is not installable; no pretrained hyperprior).
# --------------------------------------------------------------------------------------------------
KODAK_ANCHORS: dict[str, dict[str, Any]] = {
    "bmshj2018-hyperprior (published)": {
        "citation": (
            "Ballé et al. 2018, MSE; CompressAI results/image/kodak/compressai-bmshj2018-hyperprior_mse_cpu.json"
        ),
        "bpp": [0.1313, 0.2089, 0.3199, 0.4784, 0.6687, 0.9388, 1.2592, 1.6602],
        "psnr": [27.58, 29.20, 30.97, 32.84, 34.53, 36.74, 38.58, 40.56],
        "ms_ssim": [0.9174, 0.9421, 0.9611, 0.9749, 0.9836, 0.9893, 0.9929, 0.9955],
    },
    "BPG 4:4:4 (published)": {
        "citation": "BPG 0.9.8, x265, 4:4:4; CompressAI results/image/kodak/bpg_444_x265_ycbcr.json",
        "bpp": [0.0678, 0.1610, 0.3516, 0.6847, 1.1997, 1.9297],
        "psnr": [26.20, 28.68, 31.59, 34.86, 38.26, 41.48],
        "ms_ssim": [0.8686, 0.9242, 0.9611, 0.9808, 0.9905, 0.9949],
    },
}

# ----------------------------------------------------------------------------------------- BD-rate


def _curve(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Finite points sorted by x, duplicate x merged (mean y): what a monotone fit needs."""
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"rate and distortion lengths differ: {xa.shape} vs {ya.shape}")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if xa.size == 0:
        return xa, ya
    ux, inv = np.unique(xa, return_inverse=True)
    uy = np.bincount(inv, weights=ya) / np.bincount(inv)
    return ux, uy


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        return float(PchipInterpolator(x, y).integrate(lo, hi))
    if method == "cubic":
        p = np.polyint(np.polyfit(x, y, min(3, x.size - 1)))
        return float(np.polyval(p, hi) - np.polyval(p, lo))
    raise ValueError(f"method must be 'pchip' or 'cubic', not {method!r}")


def _log_rates(rate: Sequence[float]) -> np.ndarray:
    r = np.asarray(rate, dtype=np.float64).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, np.log(np.where(r > 0, r, 1.0)), np.nan)


def bd_rate(
    rate_a: Sequence[float],
    dist_a: Sequence[float],
    rate_b: Sequence[float],
    dist_b: Sequence[float],
    *,
    method: str = "pchip",
) -> float:
    """Bjøntegaard delta rate of curve b vs anchor a, in percent (negative = b saves bits).

    Fits log(rate) as a function of distortion (a quality in dB: PSNR or MS-SSIM dB) for each
    curve -- piecewise cubic Hermite (``"pchip"``, the modern VCEG/JVET practice, default) or a
    cubic polynomial (``"cubic"``, VCEG-M33) -- and integrates both over the overlapping quality
    interval. Returns NaN when a curve has fewer than two usable points or the curves do not
    overlap in quality.
    """
    xa, ya = _curve(dist_a, _log_rates(rate_a))
    xb, yb = _curve(dist_b, _log_rates(rate_b))
    if xa.size < 2 or xb.size < 2:
        return math.nan
    lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if not hi > lo:
        return math.nan
    avg = (_integral(xb, yb, lo, hi, method) - _integral(xa, ya, lo, hi, method)) / (hi - lo)
    return (math.exp(avg) - 1.0) * 100.0


def bd_psnr(
    rate_a: Sequence[float],
    dist_a: Sequence[float],
    rate_b: Sequence[float],
    dist_b: Sequence[float],
    *,
    method: str = "pchip",
) -> float:
    """Bjøntegaard delta quality of b vs a (dB; positive = b better at equal rate), or NaN.

    Fits distortion as a function of log(rate) and averages the gap over the overlapping
    log-rate interval. Works for any dB-scaled quality (PSNR, MS-SSIM dB).
    """
    xa, ya = _curve(_log_rates(rate_a), dist_a)
    xb, yb = _curve(_log_rates(rate_b), dist_b)
    if xa.size < 2 or xb.size < 2:
        return math.nan
    lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if not hi > lo:
        return math.nan
    return (_integral(xb, yb, lo, hi, method) - _integral(xa, ya, lo, hi, method)) / (hi - lo)


# ------------------------------------------------------------------------------------------ report


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


def _curves(average: pd.DataFrame, anchors: bool) -> list[dict[str, Any]]:
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
    curves = _curves(average, anchors)
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


# ------------------------------------------------------------------------------------------- plots

_PUBLISHED_CAPTION = (
    "Published Kodak averages (grey): InterDigitalInc/CompressAI results/image/kodak/ "
    "compressai-bmshj2018-hyperprior_mse_cpu.json (Ballé et al. 2018) and bpg_444_x265_ycbcr.json."
)


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
    for c in _curves(average, anchors):
        ax.plot(c["bpp"], c[metric], label=c["name"], **_style(c))
    ax.set_xlabel("bits per pixel (file bytes x 8 / pixels)")
    ax.set_ylabel("PSNR (dB, RGB)" if metric == "psnr" else "MS-SSIM (dB) = -10 log10(1 - MS-SSIM)")
    ax.set_title(title or ("Rate-distortion: " + ("PSNR" if metric == "psnr" else "MS-SSIM (dB)")))
    ax.grid(True, alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8, loc="lower right")
    if anchors:
        fig.text(0.01, 0.005, _PUBLISHED_CAPTION, fontsize=6, wrap=True)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
    else:
        fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p


def plot_level2_share(average: pd.DataFrame, path: str | os.PathLike[str]) -> Path | None:
    """Share of the KL rate spent on level 2 vs bpp (seed Fig. 4.2); None if no codec reports it."""
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
    """Mean encode and decode seconds per image vs bpp, log scale (seed Fig. 4.9)."""
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


# ------------------------------------------------------------------------------------------ runner


def machine_info() -> dict[str, str]:
    """A short description of where numbers were measured, for results files."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        torch_v = torch.__version__
        threads = str(torch.get_num_threads())
    except Exception:  # pragma: no cover
        torch_v, threads = "n/a", "n/a"
    return {
        "date": _dt.date.today().isoformat(),
        "cpu": cpu,
        "cpu_count": str(os.cpu_count()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch_v,
        "torch_threads": threads,
    }


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


_MD_DIGITS = {"bpp": 4, "psnr": 2, "ms_ssim": 4, "ms_ssim_db": 2, "encode_s": 4, "decode_s": 4,
              "theoretical_bpp": 4, "theoretical_psnr": 2, "theoretical_ms_ssim": 4,
              "theoretical_ms_ssim_db": 2, "level2_share": 3, "level2_share_coded": 3, "bd_rate_psnr_pct": 1,
              "bd_rate_ms_ssim_pct": 1, "bd_psnr_db": 2, "bd_ms_ssim_db": 2}  # fmt: skip


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
    md.append(markdown_table(average[show], _MD_DIGITS))
    if not bd.empty:
        md.append("\n## BD-rate (test vs anchor; negative = test needs fewer bits)\n")
        md.append(markdown_table(bd, _MD_DIGITS))
    if anchors:
        md.append("\n" + _PUBLISHED_CAPTION + "\n")
    _p("summary.md").write_text("\n".join(md))
    return EvalReport(per_image=per_image, average=average, bd=bd, files=files, images=[p.name for p in images])
