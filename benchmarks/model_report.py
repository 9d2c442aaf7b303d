"""Kodak report of one ladder-network weights file: theoretical rate, quality, JPEG at matched rate.

    python benchmarks/model_report.py --weights PATH|CHECKPOINT_DIR|NAME [--kodak DIR]
        [--out benchmarks/results/model_report] [--seed 0] [--threads 1] [--limit N] [--sidecar X.json]

For each image (whole image, padded to a multiple of 64 and cropped back):

* **theoretical rate**: KL[q(z2|x) || p(z2)] + KL[q(z1|z2,x) || p(z1|z2)] in bits per pixel, per level
  and level 2's share. This is what relative-entropy coding approaches (plus its small per-block
  overhead); no bitstream is produced here. The z2 used for level 1's KL is the same posterior
  sample that gives the "sample" reconstruction, so rate and quality are paired.
* **PSNR / MS-SSIM** (``raybb.metrics``) of the reconstruction from a posterior sample
  (``torch.manual_seed(seed)`` before each image, so results do not depend on image order) and from
  the posterior means (z2 = mean, z1 = mean of q(z1|z2,x)).
* **JPEG at a matched rate** (Pillow/libjpeg-turbo, 4:2:0, ``raybb.baselines``): the highest quality
  whose file does not exceed the theoretical rate, and the next one up; JPEG's PSNR/MS-SSIM at exactly
  the theoretical rate is interpolated linearly in bpp between those two. If even quality 1 needs
  more bits, quality 1 is used (JPEG gets *more* bits than raybb: the comparison is conservative).
  JPEG rates are real file sizes (headers included).

Writes ``OUT.json`` (per-image rows, averages, machine, date, model metadata) and ``OUT.md``.
The issue's target for the first shipped model: average rate in [0.2, 0.6] bpp and sample PSNR at
least 2 dB above JPEG at the same rate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._paths import KODAK  # noqa: E402
from raybb import metrics  # noqa: E402
from raybb.baselines import get_baseline, library_versions  # noqa: E402
from raybb.evaluation import machine_info  # noqa: E402
from raybb.imageio import IMAGE_SUFFIXES, load_image  # noqa: E402
from raybb.model.ladder import LadderNetwork, pad_to_stride  # noqa: E402
from raybb.model.weights import load_weights  # noqa: E402

DEFAULT_KODAK = str(KODAK)
DEFAULT_OUT = str(REPO / "benchmarks" / "results" / "model_report")
LN2 = math.log(2.0)
TARGET_BPP = (0.2, 0.6)
TARGET_GAIN_DB = 2.0
CONTENTION = (
    "Timings are wall clock with one torch thread on a 2-core machine shared with other engineers and a "
    "background training run (contended; indicative only)."
)


def _to_uint8(x: torch.Tensor, h: int, w: int) -> np.ndarray:
    """(1,3,H,W) in [0,1] -> cropped HxWx3 uint8 (clamp + round, as the codec would output)."""
    y = x[0, :, :h, :w].clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return np.ascontiguousarray(y.permute(1, 2, 0).numpy())


def model_pass(model: LadderNetwork, rgb: np.ndarray, seed: int) -> dict[str, Any]:
    """Theoretical rate and reconstructions (sample and mean) of one HxWx3 uint8 image."""
    h, w = rgb.shape[:2]
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    xp, _ = pad_to_stride(x)
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.manual_seed(seed)
        s = model(xp, sample=True)
        m = model(xp, sample=False)
    seconds = time.perf_counter() - t0
    px = h * w
    bits1, bits2 = s.kl1.item() / LN2, s.kl2.item() / LN2
    rec_s, rec_m = _to_uint8(s.x_hat, h, w), _to_uint8(m.x_hat, h, w)
    return {
        "width": w,
        "height": h,
        "bpp": (bits1 + bits2) / px,
        "bpp_level1": bits1 / px,
        "bpp_level2": bits2 / px,
        "level2_share": bits2 / (bits1 + bits2) if bits1 + bits2 > 0 else math.nan,
        "psnr_sample": metrics.psnr(rgb, rec_s),
        "ms_ssim_sample": metrics.ms_ssim(rgb, rec_s),
        "psnr_mean": metrics.psnr(rgb, rec_m),
        "ms_ssim_mean": metrics.ms_ssim(rgb, rec_m),
        # KL with z2 at its posterior mean (what a "mean" pass would cost; for reference only)
        "bpp_at_mean_z2": (m.kl1.item() + m.kl2.item()) / LN2 / px,
        "model_seconds": seconds,
    }


def jpeg_matched(rgb: np.ndarray, target_bpp: float) -> dict[str, Any]:
    """JPEG bracketing ``target_bpp`` and its quality interpolated at exactly that rate."""
    jpeg = get_baseline("jpeg")

    def point(q: int, data: bytes | None = None) -> dict[str, float]:
        data = jpeg.encode(rgb, q) if data is None else data
        rec = jpeg.decode(data)
        h, w = rgb.shape[:2]
        return {
            "q": q,
            "bpp": metrics.bpp(len(data), h, w),
            "psnr": metrics.psnr(rgb, rec),
            "ms_ssim": metrics.ms_ssim(rgb, rec),
        }

    lo_enc = jpeg.encode_at_bpp(rgb, target_bpp, mode="at_most")
    lo = point(lo_enc.quality, lo_enc.data)
    out = {
        "jpeg_quality": lo["q"],
        "jpeg_bpp": lo["bpp"],
        "jpeg_psnr": lo["psnr"],
        "jpeg_ms_ssim": lo["ms_ssim"],
    }
    match = "at_most"
    psnr_at, ssim_at = lo["psnr"], lo["ms_ssim"]
    if lo["bpp"] > target_bpp:
        match = "quality_1_above_target"  # JPEG cannot go this low: it gets more bits than raybb
    elif lo["q"] < jpeg.max_quality:
        hi = point(lo["q"] + 1)
        if hi["bpp"] > target_bpp and hi["bpp"] > lo["bpp"]:
            t = (target_bpp - lo["bpp"]) / (hi["bpp"] - lo["bpp"])
            psnr_at = lo["psnr"] + t * (hi["psnr"] - lo["psnr"])
            ssim_at = lo["ms_ssim"] + t * (hi["ms_ssim"] - lo["ms_ssim"])
            match = "interpolated"
            out.update({"jpeg_hi_quality": hi["q"], "jpeg_hi_bpp": hi["bpp"], "jpeg_hi_psnr": hi["psnr"]})
    else:
        match = "quality_100_below_target"
    out.update({"jpeg_psnr_matched": psnr_at, "jpeg_ms_ssim_matched": ssim_at, "jpeg_match": match})
    return out


def resolve_weights(spec: str) -> Path:
    """A weights file, a training checkpoint directory (its model.safetensors), or a registry name."""
    p = Path(spec).expanduser()
    if p.is_dir() and (p / "model.safetensors").is_file():
        return p / "model.safetensors"
    if p.is_file():
        return p
    from raybb.registry import resolve_model

    return resolve_model(spec)


def sidecar(rep: dict[str, Any]) -> dict[str, Any]:
    """Registry sidecar (``<name>.json`` beside the weights): the measured Kodak numbers.

    ``kodak_psnr``/``kodak_ms_ssim`` are those of the posterior-sample reconstruction at the
    theoretical rate ``kodak_bpp`` (what the codec decodes, before coding overhead)."""
    a = rep["average"]
    return {
        "kodak_bpp": a["bpp"],
        "kodak_psnr": a["psnr_sample"],
        "kodak_ms_ssim": a["ms_ssim_sample"],
        "kodak_bpp_level2": a["bpp_level2"],
        "kodak_psnr_mean": a["psnr_mean"],
        "kodak_jpeg_psnr_at_rate": a["jpeg_psnr_matched"],
        "kodak_psnr_gain_over_jpeg": a["psnr_gain_sample"],
        "kodak_rate": "theoretical (KL)",
        "kodak_images": rep["n_images"],
        "fingerprint": rep["weights"]["fingerprint"],
        "measured": rep["date"],
    }


def list_images(folder: str | Path) -> list[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise SystemExit(f"image folder not found: {d}")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise SystemExit(f"no images in {d}")
    return files


NUMERIC = [
    "bpp",
    "bpp_level1",
    "bpp_level2",
    "level2_share",
    "psnr_sample",
    "ms_ssim_sample",
    "psnr_mean",
    "ms_ssim_mean",
    "jpeg_bpp",
    "jpeg_psnr",
    "jpeg_psnr_matched",
    "jpeg_ms_ssim_matched",
    "psnr_gain_sample",
    "psnr_gain_mean",
    "ms_ssim_gain_sample",
    "bpp_at_mean_z2",
    "model_seconds",
]


def run(
    weights: str | Path,
    kodak: str | Path = DEFAULT_KODAK,
    out: str | Path = DEFAULT_OUT,
    *,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    note: str = "",
) -> dict[str, Any]:
    loaded = load_weights(weights)
    model = loaded.model.eval()
    files = list_images(kodak)[:limit] if limit else list_images(kodak)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for i, f in enumerate(files):
        rgb = load_image(f)
        row: dict[str, Any] = {"image": f.stem}
        row.update(model_pass(model, rgb, seed))
        row.update(jpeg_matched(rgb, row["bpp"]))
        row["psnr_gain_sample"] = row["psnr_sample"] - row["jpeg_psnr_matched"]
        row["psnr_gain_mean"] = row["psnr_mean"] - row["jpeg_psnr_matched"]
        row["ms_ssim_gain_sample"] = row["ms_ssim_sample"] - row["jpeg_ms_ssim_matched"]
        rows.append(row)
        if progress:
            print(
                f"[{i + 1}/{len(files)}] {f.stem}: {row['bpp']:.4f} bpp "
                f"(L2 {100 * row['level2_share']:.1f}%), "
                f"PSNR sample {row['psnr_sample']:.2f} / mean {row['psnr_mean']:.2f} dB, "
                f"JPEG@rate {row['jpeg_psnr_matched']:.2f} dB ({row['jpeg_match']})",
                flush=True,
            )
    average = {k: float(np.mean([r[k] for r in rows])) for k in NUMERIC}
    average["level2_share_of_mean_bpp"] = average["bpp_level2"] / average["bpp"] if average["bpp"] > 0 else math.nan
    lo, hi = TARGET_BPP
    target = {
        "bpp_range": list(TARGET_BPP),
        "min_psnr_gain_db": TARGET_GAIN_DB,
        "bpp_in_range": lo <= average["bpp"] <= hi,
        "gain_met": average["psnr_gain_sample"] >= TARGET_GAIN_DB,
    }
    target["met"] = target["bpp_in_range"] and target["gain_met"]
    info = machine_info()
    report = {
        "title": "raybb ladder network on Kodak: theoretical rate vs JPEG at matched rate",
        "date": info["date"],
        "machine": info,
        "note": CONTENTION,
        "user_note": note,
        "weights": {
            "path": str(weights),
            "fingerprint": loaded.fingerprint,
            "config": loaded.config.to_dict(),
            "meta": {k: v for k, v in loaded.meta.items() if k != "train_config"},
        },
        "images": str(kodak),
        "n_images": len(rows),
        "seed": seed,
        "jpeg": {"codec": get_baseline("jpeg").description, "versions": library_versions(["jpeg"])},
        "total_seconds": time.perf_counter() - t_start,
        "average": average,
        "target": target,
        "per_image": rows,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    out.with_name(out.name + ".md").write_text(markdown(report))
    return report


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o)}")


def _f(v: Any, d: int) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.{d}f}"
    return str(v)


COLUMNS = [
    ("image", "image", 0),
    ("bpp", "bpp (KL)", 4),
    ("bpp_level2", "bpp L2", 4),
    ("level2_share", "L2 share", 3),
    ("psnr_sample", "PSNR sample", 2),
    ("psnr_mean", "PSNR mean", 2),
    ("ms_ssim_sample", "MS-SSIM sample", 4),
    ("ms_ssim_mean", "MS-SSIM mean", 4),
    ("jpeg_quality", "JPEG q", 0),
    ("jpeg_bpp", "JPEG bpp", 4),
    ("jpeg_psnr_matched", "JPEG PSNR @rate", 2),
    ("jpeg_ms_ssim_matched", "JPEG MS-SSIM @rate", 4),
    ("psnr_gain_sample", "gain sample (dB)", 2),
    ("psnr_gain_mean", "gain mean (dB)", 2),
]


def markdown(rep: dict[str, Any]) -> str:
    info, a, t, w = rep["machine"], rep["average"], rep["target"], rep["weights"]
    meta = w["meta"]
    n_interp = sum(r["jpeg_match"] == "interpolated" for r in rep["per_image"])
    n_q1 = sum(r["jpeg_match"] == "quality_1_above_target" for r in rep["per_image"])
    versions = ", ".join(f"{k} {v}" for k, v in rep["jpeg"]["versions"].items())
    lines = [
        f"# {rep['title']}\n",
        *([f"**{rep['user_note']}**\n"] if rep.get("user_note") else []),
        f"Measured {rep['date']} on {info['cpu']} ({info['cpu_count']} cores, shared), {info['platform']}, "
        f"Python {info['python']}, torch {info['torch']} ({info['torch_threads']} thread(s)). "
        f"{rep['n_images']} images, total {rep['total_seconds']:.0f} s. {rep['note']}\n",
        f"Model: `{w['path']}` fingerprint `{w['fingerprint'][:16]}`, config {w['config']}, "
        f"beta {meta.get('beta', '?')}, steps {meta.get('steps', '?')}, "
        f"variant {meta.get('variant', '?')}.\n",
        f"JPEG: {rep['jpeg']['codec']} ({versions}).\n",
        "## Summary (averages over images)\n",
        f"- theoretical rate: **{a['bpp']:.4f} bpp** (level 1 {a['bpp_level1']:.4f}, "
        f"level 2 {a['bpp_level2']:.4f}; "
        f"level 2 share {100 * a['level2_share']:.1f}% per-image mean, "
        f"{100 * a['level2_share_of_mean_bpp']:.1f}% of the mean rate)",
        f"- PSNR from a posterior sample: **{a['psnr_sample']:.2f} dB**, from the posterior mean: "
        f"{a['psnr_mean']:.2f} dB",
        f"- MS-SSIM sample {a['ms_ssim_sample']:.4f}, mean {a['ms_ssim_mean']:.4f}",
        f"- JPEG at the same rate (interpolated on {n_interp}/{rep['n_images']} images): "
        f"{a['jpeg_psnr_matched']:.2f} dB, MS-SSIM {a['jpeg_ms_ssim_matched']:.4f}"
        + (
            f" -- on {n_q1} image(s) even JPEG quality 1 needs more bits than the theoretical rate "
            f"(mean {a['jpeg_bpp']:.3f} bpp vs {a['bpp']:.3f}): there JPEG is compared at its lowest quality, "
            "so the gain is a lower bound"
            if n_q1
            else ""
        ),
        f"- **PSNR gain over JPEG: {a['psnr_gain_sample']:+.2f} dB (sample), "
        f"{a['psnr_gain_mean']:+.2f} dB (mean)**; "
        f"MS-SSIM gain (sample) {a['ms_ssim_gain_sample']:+.4f}",
        f"- issue target (rate in [{t['bpp_range'][0]}, {t['bpp_range'][1]}] bpp and sample gain >= "
        f"{t['min_psnr_gain_db']} dB): **{'met' if t['met'] else 'NOT met'}** "
        f"(rate in range: {t['bpp_in_range']}, gain: {t['gain_met']})\n",
        "## Per image\n",
        "| " + " | ".join(c[1] for c in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for r in rep["per_image"]:
        lines.append("| " + " | ".join(_f(r[k], d) for k, _, d in COLUMNS) + " |")
    avg_cells = ["**average**"] + [_f(a[k], d) if k in a else "" for k, _, d in COLUMNS[1:]]
    lines.append("| " + " | ".join(avg_cells) + " |")
    n_clamped = rep["n_images"] - n_interp
    lines += [
        "",
        "Rate: analytic KL of the posterior against the prior (bits/pixel over the original pixels; padding "
        "to a multiple of 64, if any, is paid for), no bitstream overhead. Reconstructions are clamped and "
        "rounded to 8 bits. PSNR on RGB 8-bit, MSE over all channels; MS-SSIM: pytorch-msssim, "
        "data_range 255. JPEG @rate: linear interpolation in bpp between the highest quality at or below the "
        f"theoretical rate and the next quality up (real file sizes). {n_clamped} image(s) not interpolated "
        "(JPEG quality 1 already above the rate, or quality 100 below it): their JPEG point is the nearest "
        "quality, see `jpeg_match` in the JSON.\n",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--weights", required=True, help="weights file, training checkpoint directory, or registry model name"
    )
    ap.add_argument("--kodak", default=DEFAULT_KODAK, help="image folder (default: $RAYBB_SHARED/datasets/kodak)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output path without suffix (.json and .md are written)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed for the posterior sample of each image")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (smoke runs)")
    ap.add_argument("--sidecar", default=None, help="also write the registry sidecar JSON (<model>.json) here")
    ap.add_argument("--note", default="", help="a line shown under the title (e.g. 'interim checkpoint')")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = resolve_weights(args.weights)
    rep = run(weights, args.kodak, args.out, seed=args.seed, limit=args.limit, progress=not args.quiet, note=args.note)
    if args.sidecar:
        Path(args.sidecar).write_text(json.dumps(sidecar(rep), indent=2) + "\n")
    a = rep["average"]
    print(
        f"{rep['n_images']} images: {a['bpp']:.4f} bpp (level 2 {100 * a['level2_share_of_mean_bpp']:.1f}%), "
        f"PSNR sample {a['psnr_sample']:.2f} dB / mean {a['psnr_mean']:.2f} dB, "
        f"JPEG@rate {a['jpeg_psnr_matched']:.2f} dB, gain {a['psnr_gain_sample']:+.2f} dB; "
        f"target {'met' if rep['target']['met'] else 'NOT met'}. "
        f"Wrote {args.out}.json and .md"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
