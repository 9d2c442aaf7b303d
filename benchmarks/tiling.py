"""Peak memory and time of `raybb compress` / `raybb decompress` on large images, and what tiling costs.

    python benchmarks/tiling.py memory --sizes 1 6 24 50 100     # -> results/tiling_cpu.{md,json}
    python benchmarks/tiling.py quality --kodak 8                  # -> results/tiling_quality.{md,json}
    python benchmarks/tiling.py crop --out crop.png                # a crop across a tile boundary

``memory``: for each size, a test image is synthesized (a mosaic of CID22 *training* photos, each
resized to a 1024 x 1024 cell with bicubic interpolation, 3:2 aspect ratio, saved as PNG), then
`python -m raybb compress` and `python -m raybb decompress` run in fresh subprocesses under
``/usr/bin/time -v`` (default model and settings): peak RSS (ru_maxrss) and wall seconds. Each
size's row is appended to the JSON as soon as it is measured, so a long run leaves partial results.

``quality``: Kodak images coded untiled (one tile, the default for 768x512) and tiled with a small
budget (``--tile-pixels``, several tiles), same seed: rate, PSNR, whether the bytes are identical,
and the max |difference| of the bottom-up latent and of the decoded pixels.

``crop``: a low-rate (pln-q1) tiled decode and the untiled decode of the same bitstream, cropped
across an interior tile boundary and magnified, side by side, to look at.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raybb.evaluation import machine_info  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("RAYBB_SHARED", str(ROOT.parent / "shared")))


def synth_image(mp: float, path: Path) -> tuple[int, int]:
    """A 3:2 mosaic of CID22 training photos (1024 x 1024 bicubic cells) with ``mp`` megapixels."""
    w = int(round(math.sqrt(mp * 1e6 * 3 / 2)))
    h = int(round(mp * 1e6 / w))
    files = sorted(glob.glob(str(SHARED / "datasets/train/cid22/training/*.png")))
    if not files:
        raise SystemExit("no CID22 training photos under " + str(SHARED))
    canvas = Image.new("RGB", (w, h))
    k = 0
    for y in range(0, h, 1024):
        for x in range(0, w, 1024):
            with Image.open(files[k % len(files)]) as im:
                canvas.paste(im.convert("RGB").resize((1024, 1024), Image.BICUBIC), (x, y))
            k += 1
    canvas.save(path, compress_level=1)
    return w, h


def _timed(cmd: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of a fresh subprocess under /usr/bin/time -v."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    sec = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({r.returncode}): {r.stderr[-2000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return sec, kb * 1024, r.stdout


def run_memory(args) -> None:
    out_json = RESULTS / f"{args.stem}.json"
    rows = json.loads(out_json.read_text())["rows"] if args.append and out_json.exists() else []
    info = machine_info()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp:
        for mp in args.sizes:
            img, rbb, png = Path(tmp) / "img.png", Path(tmp) / "img.rbb", Path(tmp) / "out.png"
            w, h = synth_image(mp, img)
            py = [sys.executable, "-m", "raybb"]
            enc_s, enc_rss, enc_out = _timed([*py, "compress", str(img), "-o", str(rbb)])
            dec_s, dec_rss, _ = _timed([*py, "decompress", str(rbb), "-o", str(png)])
            with Image.open(png) as im:
                assert im.size == (w, h)
            rows.append(
                {
                    "megapixels": w * h / 1e6,
                    "width": w,
                    "height": h,
                    "encode_s": round(enc_s, 1),
                    "encode_peak_rss_mib": round(enc_rss / 2**20),
                    "decode_s": round(dec_s, 1),
                    "decode_peak_rss_mib": round(dec_rss / 2**20),
                    "bytes": rbb.stat().st_size,
                    "cli": enc_out.strip().split("  ", 1)[-1],
                }
            )
            print(rows[-1], flush=True)
            _write_memory(out_json, rows, info, args)
            for f in (img, rbb, png):
                f.unlink(missing_ok=True)


def run_merge(args) -> None:
    """One table from several ``memory`` runs' JSON files (each row keeps its run's command and threads)."""
    rows, info = [], None
    for f in args.inputs:
        d = json.loads(Path(f).read_text())
        info = info or d["machine"]
        for r in d["rows"]:
            rows.append(
                {
                    **r,
                    "torch_threads": d["machine"]["torch_threads"],
                    "command": d["command"],
                    "date": d["machine"]["date"],
                }
            )
    rows.sort(key=lambda r: r["megapixels"])
    out_json = RESULTS / f"{args.stem}.json"
    args.sizes = [r["megapixels"] for r in rows]
    _write_memory(out_json, rows, info, args, cmd="python benchmarks/tiling.py merge " + " ".join(args.inputs))


def _write_memory(out_json: Path, rows: list, info: dict, args, cmd: str | None = None) -> None:
    cmd = cmd or "python benchmarks/tiling.py memory --sizes " + " ".join(str(s) for s in args.sizes)
    out_json.write_text(json.dumps({"machine": info, "command": cmd, "note": args.note, "rows": rows}, indent=1))
    lines = [
        "# Tiled coding: peak memory and time of the CLI on large images (CPU)",
        "",
        f"Machine: {info['cpu']}, {info['cpu_count']} cores, torch {info['torch']}; date {info['date']}.",
        f"Command: `{cmd}`. {args.note}",
        "",
        "Each encode and decode is a fresh `python -m raybb compress|decompress` subprocess under",
        "`/usr/bin/time -v` (peak RSS = ru_maxrss), default model and settings (tile budget",
        "1 MiP on the CPU from commit f22b9ff on, 2 MiP before; see the note for which code each row ran).",
        "Test images: mosaics of CID22 training photos, each resized to a",
        "1024x1024 cell (bicubic), 3:2, PNG. Seconds are wall time including Python start-up,",
        "model load, PNG reading/writing and (encode) PSNR.",
        "",
        "| MP | size | torch threads | encode s | encode peak RSS MiB | decode s | decode peak RSS MiB | bytes "
        "| CLI says |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cli = " ".join(r["cli"].split())
        lines.append(
            f"| {r['megapixels']:.1f} | {r['width']}x{r['height']} | {r.get('torch_threads', info['torch_threads'])} | "
            f"{r['encode_s']} | {r['encode_peak_rss_mib']} | {r['decode_s']} | {r['decode_peak_rss_mib']} | "
            f"{r['bytes']} | {cli} |"
        )
    out_json.with_suffix(".md").write_text("\n".join(lines) + "\n")


def run_quality(args) -> None:
    import torch

    from raybb.codec import load_codec
    from raybb.imageio import load_image

    files = sorted(glob.glob(str(SHARED / "datasets/kodak/*.png")))[: args.kodak]
    whole = load_codec(args.model, tile_pixels=1 << 30)
    tiled = load_codec(args.model, tile_pixels=args.tile_pixels)
    rows = []
    for f in files:
        rgb = load_image(f)
        a = whole.compress_with_stats(rgb)
        b = tiled.compress_with_stats(rgb)
        with torch.no_grad():
            bu_a = whole.tiler.bottom_up(rgb, whole.device)
            bu_b = tiled.tiler.bottom_up(rgb, tiled.device)
        dec_cross = tiled.decompress(a.data)  # the untiled stream decoded tiled
        rows.append(
            {
                "image": Path(f).stem,
                "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
                "bpp_untiled": a.bpp,
                "bpp_tiled": b.bpp,
                "psnr_untiled": a.psnr,
                "psnr_tiled": b.psnr,
                "same_bytes": a.data == b.data,
                "max_abs_latent_mean": float((bu_a.mean - bu_b.mean).abs().max()),
                "max_abs_latent_std": float((bu_a.std - bu_b.std).abs().max()),
                "pixels_differing_cross_decode": int((dec_cross != a.reconstruction).any(-1).sum()),
                "max_abs_pixel_cross_decode": int(np.abs(dec_cross.astype(int) - a.reconstruction).max()),
            }
        )
        print(rows[-1], flush=True)
    info = machine_info()
    cmd = f"python benchmarks/tiling.py quality --kodak {args.kodak} --tile-pixels {args.tile_pixels}"
    out = RESULTS / f"{args.stem}.json"
    out.write_text(json.dumps({"machine": info, "command": cmd, "model": whole.model_name, "rows": rows}, indent=1))
    n = len(rows)
    mean = lambda k: sum(r[k] for r in rows) / n  # noqa: E731
    g = tiled.tiler
    lines = [
        "# Tiled vs untiled coding on Kodak-size images",
        "",
        f"Machine: {info['cpu']}, {info['cpu_count']} cores, torch {info['torch']} ({info['torch_threads']} "
        f"threads); date {info['date']}.",
        f"Command: `{cmd}`; model {whole.model_name}, default sampler, seed from the pixels.",
        "",
        "At the default CPU budget a 768x512 image is one tile, so its bytes are those of the untiled",
        f"code by construction. Here it is forced into tiles of {args.tile_pixels} pixels (g_a interiors of",
        f"{g._tile_img} px, g_s interiors of {g._tile_z1 * 16} px) to measure what tiling itself changes.",
        "",
        f"Mean over {n} images: bpp {mean('bpp_untiled'):.4f} untiled vs {mean('bpp_tiled'):.4f} tiled "
        f"({100 * (mean('bpp_tiled') / mean('bpp_untiled') - 1):+.3f}%), PSNR {mean('psnr_untiled'):.3f} vs "
        f"{mean('psnr_tiled'):.3f} dB ({mean('psnr_tiled') - mean('psnr_untiled'):+.4f} dB); identical bytes for "
        f"{sum(r['same_bytes'] for r in rows)} of {n}.",
        "",
        "| image | bpp untiled | bpp tiled | PSNR untiled | PSNR tiled | same bytes | max abs latent mean / std | "
        "pixels differing (untiled stream, tiled decode) | max abs pixel diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['bpp_untiled']:.4f} | {r['bpp_tiled']:.4f} | {r['psnr_untiled']:.3f} | "
            f"{r['psnr_tiled']:.3f} | {r['same_bytes']} | {r['max_abs_latent_mean']:.2e} / "
            f"{r['max_abs_latent_std']:.2e} | {r['pixels_differing_cross_decode']} | "
            f"{r['max_abs_pixel_cross_decode']} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def run_crop(args) -> None:
    from raybb.codec import load_codec
    from raybb.imageio import load_image

    rgb = load_image(args.image or sorted(glob.glob(str(SHARED / "datasets/kodak/*.png")))[0])
    whole = load_codec(args.model, tile_pixels=1 << 30)
    tiled = load_codec(args.model, tile_pixels=args.tile_pixels)
    data = tiled.compress(rgb)
    a, b = whole.decompress(data), tiled.decompress(data)
    edge = tiled.tiler._tile_z1 * 16  # first interior g_s tile boundary (image px), both axes
    y0, x0 = max(0, edge - 48), max(0, edge - 48)
    ca, cb = a[y0 : y0 + 96, x0 : x0 + 96], b[y0 : y0 + 96, x0 : x0 + 96]
    diff = np.clip(np.abs(ca.astype(int) - cb.astype(int)) * 64, 0, 255).astype(np.uint8)
    row = np.concatenate([ca, np.full((96, 4, 3), 255, np.uint8), cb, np.full((96, 4, 3), 255, np.uint8), diff], 1)
    Image.fromarray(row).resize((row.shape[1] * 4, row.shape[0] * 4), Image.NEAREST).save(args.out)
    print(
        f"boundary at x=y={edge}; crop [{y0}:{y0 + 96}, {x0}:{x0 + 96}]; untiled | tiled | |diff|x64; "
        f"max diff {int(np.abs(a.astype(int) - b).max())}, differing pixels {int((a != b).any(-1).sum())}, "
        f"bpp {len(data) * 8 / (rgb.shape[0] * rgb.shape[1]):.3f} -> {args.out}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--sizes", type=float, nargs="+", default=[1, 6, 24, 50, 100])
    m.add_argument("--stem", default="tiling_cpu")
    m.add_argument("--append", action="store_true", help="add rows to an existing results file")
    m.add_argument("--note", default="")
    q = sub.add_parser("quality")
    q.add_argument("--kodak", type=int, default=8)
    q.add_argument("--model", default=None)
    q.add_argument("--tile-pixels", type=int, default=256 * 256)
    q.add_argument("--stem", default="tiling_quality")
    g = sub.add_parser("merge")
    g.add_argument("inputs", nargs="+")
    g.add_argument("--stem", default="tiling_cpu")
    g.add_argument("--note", default="")
    c = sub.add_parser("crop")
    c.add_argument("--image", default=None)
    c.add_argument("--model", default="pln-q1")
    c.add_argument("--tile-pixels", type=int, default=256 * 256)
    c.add_argument("--out", default="tiling_crop.png")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    {"memory": run_memory, "quality": run_quality, "crop": run_crop, "merge": run_merge}[args.cmd](args)


if __name__ == "__main__":
    main()
