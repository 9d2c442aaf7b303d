"""dpfr's encoder settings (channel threshold, box noise, noise slope) against block PFR, with bitstreams.

    python benchmarks/dpfr_tuning.py --set cid22 --images 8 --configs 2.5:1.6:0.4 2.5:1.8:0 ...
        -> benchmarks/results/dpfr_tuning_{set}.{md,json}

A config is ``threshold:noise:slope`` (raybb.coding.dither: a level-1 channel is dithered when the
median of log2(prior std / posterior std) over its dims exceeds ``threshold`` bits; its box is
``noise + slope * max(0, median - 3)`` times its posterior std). Every config codes level 1 with
dpfr and level 2 with pfr (the ``pfr-dither`` pipeline); the anchor is ``pfr`` on both levels. Per
model: mean bpp, PSNR and MS-SSIM (dB) over the images, from the actual streams decoded by the
decoder; BD-rates (pchip) of each config's five-model curve against the anchor's. Choices are made
on cid22/validation (held out from training); Kodak is for confirmation only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._paths import KODAK, TRAIN  # noqa: E402
from raybb.codec import load_codec  # noqa: E402
from raybb.evaluation import bd_rate, machine_info  # noqa: E402
from raybb.imageio import load_image  # noqa: E402
from raybb.metrics import ms_ssim, ms_ssim_db, psnr  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODELS = ["pln-q1", "pln-q2", "pln-q3", "pln-q4", "pln-q5"]
SETS = {"cid22": TRAIN / "cid22" / "validation", "kodak": KODAK}


def measure(model: str, config: str | None, images) -> dict:
    """Mean bpp / PSNR / MS-SSIM dB / encode s of one model under one config (None: the pfr anchor)."""
    codec = load_codec(model, sampler="pfr" if config is None else "pfr-dither")
    if config is not None:
        thr, noise, slope = (float(x) for x in config.split(":"))
        s = codec.samplers[1]
        s.threshold, s.noise, s.noise_slope = thr, noise, slope
    acc = {"bpp": 0.0, "psnr": 0.0, "ms_ssim_db": 0.0, "encode_s": 0.0}
    for i, rgb in enumerate(images):
        t = time.perf_counter()
        data = codec.compress(rgb, seed=1000 + i)
        acc["encode_s"] += time.perf_counter() - t
        rec = codec.decompress(data)
        acc["bpp"] += len(data) * 8 / (rgb.shape[0] * rgb.shape[1])
        acc["psnr"] += psnr(rgb, rec)
        acc["ms_ssim_db"] += ms_ssim_db(ms_ssim(rgb, rec))
    return {k: v / len(images) for k, v in acc.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=sorted(SETS), default="cid22")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--configs", nargs="+", default=["2.5:1.6:0.4"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(SETS[args.set].glob("*.png"))[: args.images]
    if not files:
        raise SystemExit(f"no images in {SETS[args.set]}")
    images = [load_image(f) for f in files]
    info = machine_info()
    rows: dict[str, list[dict]] = {}
    for config in [None, *args.configs]:
        name = config or "pfr (anchor)"
        rows[name] = [measure(m, config, images) for m in MODELS]
        print(name, " ".join(f"{r['bpp']:.4f}/{r['psnr']:.2f}" for r in rows[name]), flush=True)
    anchor = rows["pfr (anchor)"]
    col = {k: [r[k] for r in anchor] for k in anchor[0]}
    lines = [
        f"# dpfr encoder settings against pfr ({args.set}, {len(images)} images, 5 models)",
        "",
        f"Command: `python benchmarks/dpfr_tuning.py {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {info['cpu']} ({os.cpu_count()} cores, {args.threads} torch thread, shared with other jobs); "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Config = threshold:noise:slope (raybb.coding.dither). "
        "Encode time relative to the anchor's: CPU contention makes it indicative only.",
        "",
        "| config | BD-rate PSNR | BD-rate MS-SSIM | encode time | bpp / PSNR per model (q1..q5) |",
        "|---|---:|---:|---:|---|",
    ]
    out = []
    for name, rs in rows.items():
        c = {k: [r[k] for r in rs] for k in rs[0]}
        d_p = bd_rate(col["bpp"], col["psnr"], c["bpp"], c["psnr"])
        d_m = bd_rate(col["bpp"], col["ms_ssim_db"], c["bpp"], c["ms_ssim_db"])
        t = sum(c["encode_s"]) / sum(col["encode_s"])
        pts = " ".join(f"{r['bpp']:.4f}/{r['psnr']:.2f}" for r in rs)
        lines.append(f"| `{name}` | {d_p:+.2f}% | {d_m:+.2f}% | {t:.2f}x | {pts} |")
        out.append({"config": name, "bd_rate_psnr_pct": d_p, "bd_rate_ms_ssim_pct": d_m, "per_model": rs})
    stem = RESULTS / f"dpfr_tuning_{args.set}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(
        json.dumps({"command": sys.argv, "cpu": info["cpu"], "images": [f.name for f in files], "rows": out}, indent=1)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
