"""How good can a model's synthesis transform get at all?  (decoder-capacity probe)

    python benchmarks/decoder_capacity.py [--models pln-q3 pln-q5] [--images 8] [--steps 400]

For each Kodak image, start from the posterior mean of z1 (z2 at its posterior mean) and optimise
z1 freely -- no rate term -- to minimise the MSE of ``synthesize(z1)`` against the image (Adam,
lr 0.02). The PSNR reached is a lower bound on what the decoder can produce at *any* rate: if it
is close to the operating point, more bits cannot buy much quality, and wider or longer-trained
transforms are what the high-rate end needs, not a smaller beta or a better coder.
Results: benchmarks/results/decoder_capacity.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raybb.imageio import decode_image  # noqa: E402
from raybb.metrics import psnr  # noqa: E402
from raybb.model.ladder import pad_to_stride  # noqa: E402
from raybb.model.weights import load_weights  # noqa: E402
from raybb.registry import resolve_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
from benchmarks._paths import KODAK  # noqa: E402  ($RAYBB_SHARED/datasets/kodak)


def to_uint8(x_hat: torch.Tensor) -> np.ndarray:
    """The 8-bit image the codec would write (same rounding as ``Codec``)."""
    return x_hat[0].clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def probe(model, rgb: np.ndarray, steps: int) -> tuple[float, float]:
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div(255)[None]
    xp, (h, w) = pad_to_stride(x)
    with torch.no_grad():
        bu = model.bottom_up(xp)
        q2 = model.posterior2(bu)
        q1 = model.posterior1(bu, model.prior1(q2.mean))
        start = psnr(rgb, to_uint8(model.synthesize(q1.mean)[..., :h, :w]))
    z = q1.mean.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.02)
    for _ in range(steps):
        loss = (model.synthesize(z)[..., :h, :w] - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return start, psnr(rgb, to_uint8(model.synthesize(z)[..., :h, :w]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["pln-q3", "pln-q5"])
    ap.add_argument("--images", type=int, default=8, help="every third Kodak image, this many")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kodak", type=Path, default=KODAK)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    files = sorted(args.kodak.glob("kodim*.png"))[::3][: args.images]
    rows = []
    t0 = time.perf_counter()
    for name in args.models:
        model = load_weights(resolve_model(name)).model.eval().requires_grad_(False)
        for f in files:
            start, best = probe(model, decode_image(f.read_bytes()), args.steps)
            rows.append({"model": name, "image": f.name, "posterior_mean_psnr": start, "free_latent_psnr": best})
            print(f"{name} {f.name}: posterior mean {start:.2f} dB, free latents {best:.2f} dB", flush=True)
    info = {
        "date": datetime.date.today().isoformat(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "steps": args.steps,
        "seconds": time.perf_counter() - t0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "decoder_capacity.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    md = [
        "# Decoder capacity: PSNR of each synthesis transform with free latents (no rate)",
        "",
        f"{info['date']}, {info['platform']}, torch {info['torch']}, {args.steps} Adam steps on z1 per image, "
        f"{len(files)} Kodak images (every third). See the script's docstring.",
        "",
        "| model | posterior-mean PSNR dB | free-latent PSNR dB | headroom dB |",
        "|---|---:|---:|---:|",
    ]
    for name in args.models:
        r = [x for x in rows if x["model"] == name]
        a = sum(x["posterior_mean_psnr"] for x in r) / len(r)
        b = sum(x["free_latent_psnr"] for x in r) / len(r)
        md.append(f"| {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    md += ["", "| model | image | posterior mean | free latents |", "|---|---|---:|---:|"]
    md += [
        f"| {x['model']} | {x['image']} | {x['posterior_mean_psnr']:.2f} | {x['free_latent_psnr']:.2f} |" for x in rows
    ]
    (RESULTS / "decoder_capacity.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
