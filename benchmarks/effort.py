"""Encoder effort on Kodak: what each ``--effort`` level costs (encode time) and buys (BD-rate).

    python benchmarks/effort.py                                   # all 24 images x 5 models x efforts 0-3
    python benchmarks/effort.py --images 05 15 20 23 --threads 1  # a subset (what was run: see the .md)
    python benchmarks/effort.py --summarize-only

Actual bitstreams: every row is ``Codec.compress_with_stats(effort=e)`` and a timed
``decompress`` of its bytes (checked equal to the encoder's reconstruction). Rows are appended to
``benchmarks/results/effort_cpu.jsonl`` (a rerun resumes); the summary (effort_cpu.md/.json) gives
per effort level the mean bpp, PSNR, MS-SSIM, encode and decode seconds, the BD-rate against
effort 0 (curves over the models, PSNR and MS-SSIM dB, pchip) and against JPEG / WebP / AVIF /
JPEG XL measured on the *same images* (benchmarks/results/kodak_baselines_per_image.csv).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raybb.codec import load_codec
from raybb.evaluation import bd_rate, machine_info
from raybb.imageio import load_image
from raybb.metrics import ms_ssim_db
from raybb.refine import EFFORTS

RESULTS = Path(__file__).parent / "results"
KODAK = Path(__file__).parents[1] / ".." / "shared" / "datasets" / "kodak"
MODELS = [f"pln-q{i}" for i in range(1, 6)]
BASELINES = ["jpeg", "webp", "avif", "jpegxl"]


def _level(effort: int, metric: str) -> str:
    """Row label: the effort, plus the refinement metric when it is not the default."""
    return str(effort) if effort == 0 or metric == "mse" else f"{effort} {metric}"


def measure(images: list[str], models: list[str], efforts: list[int], out: Path, threads: int, metric: str) -> None:
    torch.set_num_threads(threads)
    done = set()
    if out.exists():
        done = {(r["image"], r["model"], _level(r["effort"], r.get("metric", "mse")))
                for r in map(json.loads, out.read_text().splitlines())}  # fmt: skip
    codecs = {m: load_codec(m) for m in models}
    with out.open("a") as f:
        for name in images:
            rgb = load_image(KODAK / f"kodim{name}.png")
            for m in models:
                for e in efforts:
                    if (f"kodim{name}", m, _level(e, metric)) in done:
                        continue
                    c = codecs[m]
                    t = time.perf_counter()
                    r = c.compress_with_stats(rgb, effort=e, metric=metric)
                    enc = time.perf_counter() - t
                    t = time.perf_counter()
                    rec = c.decompress(r.data)
                    dec = time.perf_counter() - t
                    row = dict(image=f"kodim{name}", model=m, effort=e, metric=metric, bpp=r.bpp, psnr=r.psnr,
                               ms_ssim=r.ms_ssim, kl_bpp=r.kl_bits / (r.width * r.height), encode_s=enc, decode_s=dec,
                               refine_steps=r.refine_steps, refine_s=r.refine_seconds,
                               decode_matches=bool(np.array_equal(rec, r.reconstruction)), threads=threads,
                               pipeline=c.pipeline)  # fmt: skip
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(json.dumps(row), flush=True)


def _bd(a: pd.DataFrame, b: pd.DataFrame, col: str) -> float:
    return bd_rate(a["bpp"], a[col], b["bpp"], b[col])


def summarize(rows_path: Path, command: str) -> dict:
    df = pd.DataFrame([json.loads(s) for s in rows_path.read_text().splitlines()])
    if "metric" not in df:
        df["metric"] = "mse"
    df["metric"] = df["metric"].fillna("mse")
    df["level"] = [_level(e, mt) for e, mt in zip(df["effort"], df["metric"], strict=True)]
    # the images with every model at every default-metric level; other levels only if complete there
    main = df[df["level"] == df["effort"].astype(str)]
    n_levels = main["level"].nunique()
    full = main.groupby(["image", "model"])["level"].nunique() == n_levels
    pairs = full[full].index
    n_models = len({m for _, m in pairs})
    per_image = pd.Series([i for i, _ in pairs]).value_counts()
    images = sorted(per_image[per_image == n_models].index)
    df = df[df["image"].isin(images) & pd.MultiIndex.from_frame(df[["image", "model"]]).isin(pairs)]
    omitted = []
    for lv in sorted(set(df["level"]) - set(main["level"])):
        if len(df[df["level"] == lv]) != len(images) * n_models:
            omitted.append(lv)
    df = df[~df["level"].isin(omitted)]
    levels = sorted(df["level"].unique(), key=lambda v: (int(v.split()[0]), v))
    df["ms_ssim_db"] = [ms_ssim_db(v) for v in df["ms_ssim"]]
    curves = (
        df.groupby(["level", "model"])[["bpp", "psnr", "ms_ssim", "encode_s", "decode_s", "refine_steps"]]
        .mean()
        .reset_index()
    )
    curves["ms_ssim_db"] = [ms_ssim_db(v) for v in curves["ms_ssim"]]
    base = pd.read_csv(RESULTS / "kodak_baselines_per_image.csv")
    base = base[base["image"].isin([f"{i}.png" for i in images])]
    bcurves = {}
    for codec in BASELINES:
        g = base[base["codec"] == codec].groupby("quality")
        if base[base["codec"] == codec].empty:
            continue
        c = g[["bpp", "psnr", "ms_ssim"]].mean().reset_index()
        if g.size().min() != len(images):
            continue
        c["ms_ssim_db"] = [ms_ssim_db(v) for v in c["ms_ssim"]]
        bcurves[codec] = c
    e0 = curves[curves["level"] == "0"]
    table = []
    for e in levels:
        c = curves[curves["level"] == e]
        d = df[df["level"] == e]
        row = {
            "effort": e,
            "steps": int(d["refine_steps"].iloc[0]),
            "bpp": d["bpp"].mean(),
            "psnr": d["psnr"].mean(),
            "ms_ssim": d["ms_ssim"].mean(),
            "encode_s": d["encode_s"].mean(),
            "decode_s": d["decode_s"].mean(),
            "coded_over_kl": d["bpp"].sum() / d["kl_bpp"].sum(),
            "encode_x": d["encode_s"].mean() / df[df["level"] == "0"]["encode_s"].mean(),
            "bd_psnr_vs_e0": _bd(e0, c, "psnr"),
            "bd_msssim_vs_e0": _bd(e0, c, "ms_ssim_db"),
            "decode_matches": bool(d["decode_matches"].all()),
        }
        for codec, bc in bcurves.items():
            row[f"bd_psnr_vs_{codec}"] = _bd(bc, c, "psnr")
            row[f"bd_msssim_vs_{codec}"] = _bd(bc, c, "ms_ssim_db")
        table.append(row)
    info = machine_info()
    threads = sorted(df["threads"].unique().tolist())
    # rows written before the pipeline was recorded used the default of their day, which `pfr` no
    # longer names exactly (docs/effort.md says which): label them as unrecorded, not as `pfr`
    if "pipeline" not in df:
        df["pipeline"] = None
    pipelines = sorted(df["pipeline"].fillna("unrecorded (the default of the day)").unique())
    md = [
        "# Encoder effort on Kodak (CPU)",
        "",
        f"Machine: {info['cpu']}, {info['cpu_count']} cores shared with other jobs (times are indicative), "
        f"torch {info['torch']}, {threads} torch thread(s). Date: {info['date']}. Command: `{command}`. "
        f"Sampler pipeline: {', '.join(f'`{p}`' for p in pipelines)}.",
        f"Images ({len(images)}): {', '.join(images)}. Models ({n_models}): {', '.join(sorted(df['model'].unique()))}. "
        + (f" Omitted (incomplete on these images): {', '.join(omitted)}." if omitted else "")
        + " Measured levels (rows): "
        + ", ".join(f"{lv} ({(df['level'] == lv).sum()})" for lv in levels)
        + "."
        + " Actual bitstreams; every stream decoded by the unchanged decoder "
        f"(decode equals the encoder's reconstruction: {all(r['decode_matches'] for r in table)}).",
        "",
        "BD-rates (pchip, %; negative = fewer bits for the same quality) over the curve through the models' "
        "mean points; against the classical codecs on the same images (their per-image points from "
        "kodak_baselines_per_image.csv). coded/KL: actual bits over the KL of the coded posteriors (the "
        "coding overhead, summed over rows). Encode seconds include the quality metrics of compress_with_stats.",
        "",
        "| effort | steps | bpp | PSNR | MS-SSIM | encode s | × effort 0 | decode s | coded/KL | "
        "BD-rate PSNR vs e0 | BD-rate MS-SSIM vs e0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        md.append(
            f"| {r['effort']} | {r['steps']} | {r['bpp']:.4f} | {r['psnr']:.3f} | {r['ms_ssim']:.4f} | "
            f"{r['encode_s']:.1f} | {r['encode_x']:.1f} | {r['decode_s']:.2f} | {r['coded_over_kl']:.3f} | "
            f"{r['bd_psnr_vs_e0']:+.1f} | "
            f"{r['bd_msssim_vs_e0']:+.1f} |"
        )
    if bcurves:
        md += ["", "BD-rate against the classical codecs (PSNR / MS-SSIM dB):", "",
               "| effort | " + " | ".join(bcurves) + " |", "|---" * (len(bcurves) + 1) + "|"]  # fmt: skip
        for r in table:
            cells = [f"{r[f'bd_psnr_vs_{c}']:+.1f} / {r[f'bd_msssim_vs_{c}']:+.1f}" for c in bcurves]
            md.append(f"| {r['effort']} | " + " | ".join(cells) + " |")
    md += ["", "Per model (mean over the images):", "", "| model | effort | bpp | PSNR | MS-SSIM | encode s |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for _, r in curves.sort_values(["model", "level"]).iterrows():
        md.append(
            f"| {r['model']} | {r['level']} | {r['bpp']:.4f} | {r['psnr']:.3f} | {r['ms_ssim']:.4f} | "
            f"{r['encode_s']:.1f} |"
        )
    out = {"machine": info, "command": command, "images": images, "threads": threads, "pipelines": pipelines,
           "levels": table,
           "per_model": curves.to_dict(orient="records")}  # fmt: skip
    stem = rows_path.with_suffix("")
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1, default=float) + "\n")
    print("\n".join(md))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=[f"{i:02d}" for i in range(1, 25)])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--efforts", nargs="+", type=int, default=sorted(EFFORTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--metric", default="mse", help="refinement metric (rows labelled e.g. '2 ms-ssim')")
    ap.add_argument("--out", type=Path, default=RESULTS / "effort_cpu.jsonl")
    ap.add_argument("--summarize-only", action="store_true")
    a = ap.parse_args()
    if not a.summarize_only:
        measure(a.images, a.models, a.efforts, a.out, a.threads, a.metric)
    summarize(a.out, "python benchmarks/effort.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
