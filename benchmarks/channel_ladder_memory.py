"""Peak memory of coding an image with the channel-ladder, tiled (the default) and untiled.

    python benchmarks/channel_ladder_memory.py --sizes 1 2 6 --untiled 0.25 1 2
        # -> results/channel_ladder_memory.{md,json}

The Codec runs the channel-ladder's stages over tiles (raybb.tiling.ChannelLadderTiler); an
architecture without tiling rules runs them over the whole image (raybb.tiling.Untiled, forced here
with a tile budget larger than any image), so its memory grows with the image. This measures both:
the default
``ChannelLadderConfig`` (N=128, M=192, 5 slices, variable rate; random weights, whose activations
have the trained model's shapes) is written to a temporary weights file, and for each size a fresh
subprocess loads it, compresses a synthetic image of that many megapixels (3:2, smooth + noise) and
decompresses the stream, reporting the peak RSS (``ru_maxrss``) of each step over the process's RSS
after loading, and wall seconds. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from raybb.codec import load_codec
from raybb.tiling import limit_heap_retention
limit_heap_retention()
path, mp, tiles = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "tiled"
w = int(round((mp * 1e6 * 1.5) ** 0.5)); h = int(round(mp * 1e6 / w))
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:h, 0:w]
img = np.stack([128 + 90 * np.sin(xx / 37.0), 128 + 80 * np.cos(yy / 23.0), (xx + yy) % 256], -1)
img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
codec = load_codec(path, tile_pixels=None if tiles else 1 << 40)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
base = rss()
t = time.perf_counter(); data = codec.compress(img, seed=1); te = time.perf_counter() - t
enc_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
del img
t = time.perf_counter(); out = codec.decompress(data); td = time.perf_counter() - t
dec_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"mode": sys.argv[3], "mp": mp, "width": w, "height": h, "bytes": len(data), "base_mib": base / 2**20,
                  "encode_s": te, "encode_peak_mib": enc_peak / 2**20, "decode_s": td,
                  "peak_after_decode_mib": dec_peak / 2**20}))
"""


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="*", default=[1.0, 2.0, 6.0], help="megapixels, tiled")
    ap.add_argument("--untiled", type=float, nargs="*", default=[0.25, 1.0, 2.0], help="megapixels, untiled")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "channel_ladder_memory"))
    a = ap.parse_args()
    import torch

    from raybb.model.channel_ladder import ChannelLadderNetwork
    from raybb.model.weights import save_weights

    rows = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cl.safetensors"
        torch.manual_seed(0)
        save_weights(path, ChannelLadderNetwork(), {"name": "cl-default-random"})
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        for mode, mp in [("tiled", s) for s in a.sizes] + [("untiled", s) for s in a.untiled]:
            r = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(mp), mode], capture_output=True, text=True,
                               env=env, timeout=3600)  # fmt: skip
            if r.returncode != 0:
                print(r.stderr[-2000:], file=sys.stderr)
                raise SystemExit(r.returncode)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{_cpu()}, {os.cpu_count()} cores",
        "command": "python benchmarks/channel_ladder_memory.py --sizes "
        + " ".join(f"{s:g}" for s in a.sizes)
        + " --untiled "
        + " ".join(f"{s:g}" for s in a.untiled),
        "torch_threads": 1,
        "model": "ChannelLadderConfig() defaults, random init, float32",
    }
    Path(a.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# Channel-ladder (default config): coding memory, tiled (default budget) and untiled",
        "",
        f"{meta['date']}, {meta['machine']}, one torch thread (machine shared with other jobs: seconds are",
        "indicative). Command: `" + meta["command"] + "`. Peak RSS is the whole process (torch + model",
        "included); 'base' is the RSS after loading the model.",
        "",
        "| tiles | MP | size | encode s | encode peak RSS MiB | decode s | peak RSS after decode MiB | base MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['mp']:g} | {r['width']}x{r['height']} | {r['encode_s']:.1f} | "
            f"{r['encode_peak_mib']:.0f} | "
            f"{r['decode_s']:.1f} | {r['peak_after_decode_mib']:.0f} | {r['base_mib']:.0f} |"
        )
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
