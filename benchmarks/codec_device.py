"""The image codec on an accelerator: encode/decode times, and whether CPU and GPU decode alike.

    python benchmarks/codec_device.py IMAGE [IMAGE ...] --device cuda [--models M ...]  # -> codec_device_cuda.*
    python benchmarks/codec_device.py --render results/codec_device_cuda.json   # rewrite the .md only

For each image and model: three timed GPU compressions (the first includes warm-up) and
decompressions, one compression and decompression on the host CPU (all its cores), whether the
GPU and the CPU write the same bytes, and how far apart the CPU's and the GPU's decodes of the
*same* bytes are (max absolute difference in 8-bit levels, fraction of differing pixel values).
The coded samples themselves are bit-identical across devices (see benchmarks/coding.py
``--timing --device cuda``); differences come from the float arithmetic of the networks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raybb import load_codec  # noqa: E402
from raybb.imageio import decode_image  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def diff(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"max_abs": int(d.max()), "frac_px_diff": float((d > 0).mean())}


def measure(images: list[str], models: list[str], device: str) -> dict:
    res = {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
        "torch": torch.__version__,
        "host_cores": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        "rows": [],
    }
    for img in images:
        rgb = decode_image(Path(img).read_bytes())
        for model in models:
            dev_codec, cpu_codec = load_codec(model, device=device), load_codec(model, device="cpu")
            enc_t, dec_t = [], []
            for _ in range(3):
                sync(device)
                t0 = time.perf_counter()
                data_dev = dev_codec.compress(rgb)
                sync(device)
                enc_t.append(time.perf_counter() - t0)
            for _ in range(3):
                t0 = time.perf_counter()
                rec_dev = dev_codec.decompress(data_dev)
                sync(device)
                dec_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            data_cpu = cpu_codec.compress(rgb)
            cpu_enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            rec_dev_on_cpu = cpu_codec.decompress(data_dev)
            cpu_dec = time.perf_counter() - t0
            row = {
                "image": Path(img).name,
                "model": model,
                "bytes_gpu": len(data_dev),
                "bytes_cpu": len(data_cpu),
                "same_bytes": data_dev == data_cpu,
                "gpu_encode_s": enc_t,
                "gpu_decode_s": dec_t,
                "cpu16_encode_s": cpu_enc,
                "cpu16_decode_s": cpu_dec,
                "gpu_bytes_cpu_vs_gpu_decode": diff(rec_dev, rec_dev_on_cpu),
                "cpu_bytes_cpu_vs_gpu_decode": diff(cpu_codec.decompress(data_cpu), dev_codec.decompress(data_cpu)),
            }
            print(json.dumps(row), flush=True)
            res["rows"].append(row)
    return res


def render(res: dict, note: str = "") -> str:
    out = [
        f"# raybb codec on {res['device']}",
        "",
        f"torch {res['torch']}, host CPU with {res.get('host_cores', '?')} cores, {res.get('date', '')}. {note}",
        "",
        "GPU times: median of 3 (the first call includes warm-up). CPU: one run on all host cores. "
        "'CPU vs GPU decode': the same bytes decoded on both devices; max |difference| in 8-bit levels "
        "and the fraction of pixel values that differ.",
        "",
        "| image | model | bytes (GPU / CPU encode) | same bytes | GPU encode s | GPU decode s | CPU encode s "
        "| CPU decode s | CPU vs GPU decode (GPU bytes) | (CPU bytes) |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in res["rows"]:
        a, b = r["gpu_bytes_cpu_vs_gpu_decode"], r["cpu_bytes_cpu_vs_gpu_decode"]
        out.append(
            f"| {r['image']} | {r['model']} | {r['bytes_gpu']} / {r['bytes_cpu']} | "
            f"{'yes' if r['same_bytes'] else 'no'} | {np.median(r['gpu_encode_s']):.3f} | "
            f"{np.median(r['gpu_decode_s']):.3f} | {r['cpu16_encode_s']:.2f} | {r['cpu16_decode_s']:.2f} | "
            f"max {a['max_abs']}, {100 * a['frac_px_diff']:.2f}% | "
            f"max {b['max_abs']}, {100 * b['frac_px_diff']:.2f}% |"
        )
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", nargs="+", default=["pln-q1", "pln-q3", "pln-q5"])
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md of an earlier run")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    if args.render:
        src = Path(args.render)
        res = json.loads(src.read_text())
        src.with_suffix(".md").write_text(render(res, args.note))
        return 0
    if not args.images:
        ap.error("give images, or --render")
    res = measure(args.images, args.models, args.device)
    stem = RESULTS / f"codec_device_{args.device.split(':')[0]}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    stem.with_suffix(".md").write_text(render(res, args.note))
    print(render(res, args.note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
