"""Choosing the refinement schedules of ``--effort`` on held-out images (cid22/validation, not Kodak).

    python benchmarks/effort_tuning.py [--images 5] [--models pln-q2 pln-q4] [--configs seq:4,4,0.05 ...]
    python benchmarks/effort_tuning.py --summarize-only

Each config is ``MODE:STEPS2,STEPS1,LR[,LAMSCALE[,METRIC]]`` (LAMSCALE: λ over the slope match, default 1; the codec's
default is raybb.refine.LAMBDA_SCALE, chosen from these rows) (``seq`` refines level 2, codes it, then
refines level 1 against the coded z2's prior; ``joint`` spends every step refining both levels
before coding, i.e. STEPS1 = 0). Every row is an actual bitstream. The summary scores a config by
its *equivalent rate change*: its bpp against the bpp that effort 0 needs for the same PSNR
(resp. MS-SSIM dB) on the same image, interpolated (pchip on log-bpp) along the effort-0 curve of
all five shipped models -- a per-point BD-rate, negative = fewer bits for the quality.
Rows go to benchmarks/results/effort_tuning.jsonl; the summary to effort_tuning.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from raybb.codec import load_codec
from raybb.evaluation import list_images, machine_info
from raybb.evaluation.bd import equivalent_rate
from raybb.imageio import load_image
from raybb.metrics import ms_ssim_db
from raybb.refine import LAMBDA_SCALE, EffortLevel

RESULTS = Path(__file__).parent / "results"
HELD_OUT = Path(__file__).parents[1] / ".." / "shared" / "datasets" / "train" / "cid22" / "validation"
ALL_MODELS = [f"pln-q{i}" for i in range(1, 6)]
DEFAULT_CONFIGS = [
    "seq:4,4,0.05", "joint:8,0,0.05", "seq:4,4,0.1", "joint:8,0,0.1",
    "seq:10,10,0.05", "joint:20,0,0.05", "seq:10,10,0.1", "seq:10,10,0.05,0.5", "seq:10,10,0.05,2",
    "seq:30,30,0.03",
]  # fmt: skip


def parse_config(cfg: str) -> tuple[EffortLevel, float, str]:
    mode, _, rest = cfg.partition(":")
    v = rest.split(",")
    s2, s1, lr = int(v[0]), int(v[1]), float(v[2])
    if mode == "joint" and s1:
        raise ValueError(f"joint config {cfg!r} must have STEPS1 = 0")
    return EffortLevel(s2, s1, lr), float(v[3]) if len(v) > 3 else 1.0, v[4] if len(v) > 4 else "mse"


def measure(configs: list[str], models: list[str], n_images: int, out: Path) -> None:
    torch.set_num_threads(1)
    images = list_images(HELD_OUT)[:n_images]
    done = set()
    if out.exists():
        done = {(r["cfg"], r["model"], r["image"]) for r in map(json.loads, out.read_text().splitlines())}
    jobs = [("effort0", m) for m in ALL_MODELS] + [(c, m) for c in configs for m in models]
    with out.open("a") as f:
        for cfg, m in jobs:
            codec = load_codec(m)
            for p in images:
                if (cfg, m, p.name) in done:
                    continue
                x = load_image(p)
                level, lam, metric = (0, 1.0, "mse") if cfg == "effort0" else parse_config(cfg)
                t = time.perf_counter()
                if lam == LAMBDA_SCALE[metric]:
                    r = codec.compress_with_stats(x, effort=level, metric=metric)
                else:  # a λ multiplier: the private entry point the rate targeting uses
                    with torch.no_grad():
                        e = codec._encode(x, None, level, metric, lam_scale=lam / LAMBDA_SCALE[metric])
                    r = _stats(codec, e)
                dt = time.perf_counter() - t
                row = dict(cfg=cfg, model=m, image=p.name, bpp=r.bpp, psnr=r.psnr, ms_ssim_db=ms_ssim_db(r.ms_ssim),
                           enc_s=dt, refine_steps=r.refine_steps)  # fmt: skip
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(json.dumps(row), flush=True)


def _stats(codec, e):
    """bpp / PSNR / MS-SSIM of an already encoded stream (decoded by the real decoder)."""
    from types import SimpleNamespace

    from raybb.metrics import ms_ssim, psnr

    rec = codec.decompress(e.data)
    return SimpleNamespace(bpp=len(e.data) * 8 / (e.rgb.shape[0] * e.rgb.shape[1]), psnr=psnr(e.rgb, rec),
                           ms_ssim=ms_ssim(e.rgb, rec), refine_steps=e.refine.steps)  # fmt: skip


def summarize(rows_path: Path, md_path: Path, command: str) -> None:
    rows = [json.loads(s) for s in rows_path.read_text().splitlines()]
    base = {(r["model"], r["image"]): r for r in rows if r["cfg"] == "effort0"}
    curves = {}
    for r in rows:
        if r["cfg"] == "effort0":
            curves.setdefault(r["image"], []).append(r)
    cfgs = list(dict.fromkeys(r["cfg"] for r in rows if r["cfg"] != "effort0"))
    lines = [
        "# Effort schedules on held-out images (cid22/validation)",
        "",
        f"Machine: {machine_info()['cpu']}, 1 torch thread (shared with other jobs: times are indicative). "
        f"Date: {machine_info()['date']}. Command: `{command}`.",
        "",
        "Actual bitstreams. `eq. rate PSNR` / `eq. rate MS-SSIM`: mean over (model, image) of the config's bpp "
        "against the bpp effort 0 needs for the same quality on that image (interpolated along the "
        "five-model effort-0 curve): negative = fewer bits for the same quality. Δ columns: against effort 0 "
        "of the same model. Config names: `MODE:STEPS2,STEPS1,LR[,LAMSCALE[,METRIC]]`, LAMSCALE relative to the "
        "slope match λ = A/(2βS) (the codec's default multiplier is raybb.refine.LAMBDA_SCALE).",
        "",
        "| config | models | rows | Δbpp % | ΔPSNR dB | ΔMS-SSIM dB | eq. rate PSNR % | eq. rate MS-SSIM % | enc s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for cfg in cfgs:
        rs = [r for r in rows if r["cfg"] == cfg and (r["model"], r["image"]) in base]
        db = [100 * (r["bpp"] / base[(r["model"], r["image"])]["bpp"] - 1) for r in rs]
        dp = [r["psnr"] - base[(r["model"], r["image"])]["psnr"] for r in rs]
        dm = [r["ms_ssim_db"] - base[(r["model"], r["image"])]["ms_ssim_db"] for r in rs]
        ep = [equivalent_rate([(c["bpp"], c["psnr"]) for c in curves[r["image"]]], r["bpp"], r["psnr"]) for r in rs]
        em = [equivalent_rate([(c["bpp"], c["ms_ssim_db"]) for c in curves[r["image"]]], r["bpp"], r["ms_ssim_db"])
              for r in rs]  # fmt: skip
        s = dict(models=sorted({r["model"] for r in rs}), rows=len(rs), dbpp=np.mean(db), dpsnr=np.mean(dp),
                 dmsssim=np.mean(dm), eq_psnr=np.nanmean(ep), eq_msssim=np.nanmean(em),
                 enc_s=np.mean([r["enc_s"] for r in rs]))  # fmt: skip
        summary[cfg] = s
        lines.append(
            f"| {cfg} | {' '.join(s['models'])} | {s['rows']} | {s['dbpp']:+.1f} | {s['dpsnr']:+.3f} | "
            f"{s['dmsssim']:+.3f} | {s['eq_psnr']:+.1f} | {s['eq_msssim']:+.1f} | {s['enc_s']:.1f} |"
        )
    e0 = [r for r in rows if r["cfg"] == "effort0"]
    lines += ["", f"Effort 0 reference: {len(e0)} rows, mean encode {np.mean([r['enc_s'] for r in e0]):.1f} s "
              f"(images: {', '.join(sorted(curves))})."]  # fmt: skip
    md_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["pln-q2", "pln-q4"])
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    ap.add_argument("--out", type=Path, default=RESULTS / "effort_tuning.jsonl")
    ap.add_argument("--summarize-only", action="store_true")
    a = ap.parse_args()
    if not a.summarize_only:
        measure(a.configs, a.models, a.images, a.out)
    import sys

    summarize(a.out, a.out.with_suffix(".md"), "python benchmarks/effort_tuning.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
