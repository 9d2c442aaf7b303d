"""Encoder effort on images above the untiled refinement limit (4 MiP), and what tiling costs.

    nice -n 10 python benchmarks/refine_large.py                 # -> results/refine_large.{md,json}
    python benchmarks/refine_large.py --only compare             # just the tiled-vs-untiled rows

Test images (never Kodak): a mosaic of the held-out CID22 *validation* photos (512 x 512), each
upscaled 2x to a 1024 x 1024 cell (bicubic), 3:2 aspect, at each size in ``--sizes`` (MP), plus a
``--compare-size`` image (default 2048 x 1536, 3.1 MP) below the limit.

``large`` rows: each model x size x effort is one ``Codec.compress_with_stats`` in a fresh process
(``nice -n 10``, ``--threads`` torch threads, glibc heap retention limited as in the CLI): bpp,
PSNR, MS-SSIM (NaN above 6 MP, as the codec reports it), encode and refinement seconds, refinement
tiles, and the process's peak RSS (``resource.getrusage``). Above the limit effort >= 1 is the
tiled refinement (``raybb.refine.TiledRefiner``) at the default budget.

``compare`` rows: the compare image at effort 1 refined untiled (today's path for it) and tiled
(``REFINE_MAX_PIXELS`` forced to 0) at several tile budgets and halos, same seed: the RD cost of
tiling; ``tile_pixels:halo:i`` rows refine independent tiles (the alternative scheme, measured
against block-coordinate descent). Each row is written to the JSON as soon as it is measured, so a
cut run keeps its rows.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._paths import TRAIN  # noqa: E402
from raybb.evaluation import machine_info  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CELL = 1024


def mosaic(w: int, h: int, path: Path) -> Path:
    """A w x h mosaic of CID22 validation photos upscaled 2x to 1024 x 1024 cells, saved as PNG."""
    if path.exists():
        return path
    files = sorted(glob.glob(str(TRAIN / "cid22" / "validation" / "*.png")))
    if not files:
        raise SystemExit(f"no CID22 validation photos under {TRAIN}")
    canvas = Image.new("RGB", (w, h))
    k = 0
    for y in range(0, h, CELL):
        for x in range(0, w, CELL):
            with Image.open(files[k % len(files)]) as im:
                canvas.paste(im.convert("RGB").resize((CELL, CELL), Image.BICUBIC), (x, y))
            k += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def size_for(mp: float) -> tuple[int, int]:
    w = int(round(math.sqrt(mp * 1e6 * 3 / 2)))
    return w, int(round(mp * 1e6 / w))


def run_one(args) -> None:
    """One encode in this (fresh) process; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    import raybb.codec as C
    from raybb.codec import load_codec
    from raybb.imageio import load_image

    if args.force_tiled:
        C.REFINE_MAX_PIXELS = 0
    if args.tile_pixels:
        C.REFINE_TILE_PIXELS = args.tile_pixels
    if args.halo is not None:
        C.REFINE_HALO = args.halo
    if args.independent:
        import functools

        C.TiledRefiner = functools.partial(C.TiledRefiner, independent=True)
    if args.heap_limit:
        from raybb.tiling import limit_heap_retention

        limit_heap_retention()  # what `raybb compress` and the bucket actors do
    rgb = load_image(args.image)
    codec = load_codec(args.model)
    t = time.perf_counter()
    res = codec.compress_with_stats(rgb, seed=1, effort=args.effort)
    wall = time.perf_counter() - t
    tiles = 0
    if args.effort and rgb.shape[0] * rgb.shape[1] > C.REFINE_MAX_PIXELS:
        from raybb.refine import refine_tiles

        s = codec.model.pad_stride
        hp, wp = -(-rgb.shape[0] // s) * s, -(-rgb.shape[1] // s) * s
        tiles = len(refine_tiles(hp, wp, s, C.REFINE_TILE_PIXELS, C.REFINE_HALO))
    row = {
        "model": args.model,
        "image": Path(args.image).name,
        "width": res.width,
        "height": res.height,
        "mp": round(res.width * res.height / 1e6, 2),
        "effort": args.effort,
        "refine": (("tiled-independent" if args.independent else "tiled") if tiles else "untiled")
        if args.effort
        else "none",
        "tile_pixels": C.REFINE_TILE_PIXELS if tiles else None,
        "halo": C.REFINE_HALO if tiles else None,
        "tiles": tiles,
        "bpp": res.bpp,
        "psnr": res.psnr,
        "ms_ssim": None if math.isnan(res.ms_ssim) else res.ms_ssim,
        "kl_bpp": res.kl_bits / (res.width * res.height),
        "encode_s": wall,
        "refine_s": res.refine_seconds,
        "refine_steps": res.refine_steps,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print("ROW " + json.dumps(row), flush=True)


def child(image: Path, model: str, effort: int, threads: int, **kw) -> dict:
    cmd = ["nice", "-n", "10", sys.executable, __file__, "one", "--image", str(image), "--model", model]
    cmd += ["--effort", str(effort), "--threads", str(threads), "--heap-limit"]
    for k, v in kw.items():
        if v is True:
            cmd.append("--" + k.replace("_", "-"))
        elif v is not None and v is not False:
            cmd += ["--" + k.replace("_", "-"), str(v)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    rows = [line[4:] for line in out.stdout.splitlines() if line.startswith("ROW ")]
    if out.returncode or not rows:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(rows[-1])


def _compare_kw(spec: str) -> dict:
    """'tile_pixels:halo[:i]' -> the child's options for a forced-tiled row (i: independent tiles)."""
    parts = spec.split(":")
    return {"force_tiled": True, "tile_pixels": int(parts[0]), "halo": int(parts[1]), "independent": parts[2:] == ["i"]}


def _f(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def write(doc: dict, stem: str) -> None:
    (RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    m = doc["machine"]
    lines = [
        "# Encoder effort above the untiled refinement limit (tiled refinement)",
        "",
        f"{m['date']}, {m['cpu']} ({m['cpu_count']} cores, shared), torch {m['torch']}, "
        f"{doc['threads']} torch thread(s), `nice -n 10`, one fresh process per row. Commands, in order: "
        + ", ".join(f"`{c}`" for c in doc.get("commands", [doc["command"]]))
        + ".",
        "Images: mosaics of CID22 validation photos upscaled 2x (1024 x 1024 cells); seed 1. "
        "MS-SSIM is not computed above 6 MP (the codec reports NaN there). Peak RSS: the whole process "
        "(Python, torch, the model, the image, the coding), with glibc's heap retention limited "
        "(`raybb.tiling.limit_heap_retention`, as `raybb compress` and the bucket actors run).",
        "",
        "| set | model | image | MP | effort | refinement | tiles | tile px | halo | bpp | PSNR | MS-SSIM "
        "| KL bpp | encode s | refine s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['set']} | {r['model']} | {r['image']} | {r['mp']} | {r['effort']} | {r['refine']} | {r['tiles']} "
            f"| {_f(r['tile_pixels'], 'd')} | {_f(r['halo'], 'd')} | {r['bpp']:.4f} | {r['psnr']:.3f} "
            f"| {_f(r['ms_ssim'], '.4f')} | {r['kl_bpp']:.4f} | {r['encode_s']:.1f} | {r['refine_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} |"
        )
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    one = sub.add_parser("one")
    one.add_argument("--image", required=True)
    one.add_argument("--model", required=True)
    one.add_argument("--effort", type=int, required=True)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--force-tiled", action="store_true")
    one.add_argument("--tile-pixels", type=int)
    one.add_argument("--halo", type=int)
    one.add_argument("--independent", action="store_true")
    one.add_argument("--heap-limit", action="store_true")
    ap.add_argument("--models", nargs="+", default=["pln-q3"])
    ap.add_argument("--sizes", nargs="+", type=float, default=[6, 12])
    ap.add_argument("--efforts", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--compare-size", nargs=2, type=int, default=[2048, 1536], metavar=("W", "H"))
    ap.add_argument("--compare", nargs="+", default=["4194304:2", "1048576:2", "1048576:1", "1048576:4", "1048576:2:i"],
                    help="tile_pixels:halo[:i] settings for the forced-tiled rows (i: independent tiles)")  # fmt: skip
    ap.add_argument("--compare-effort", type=int, default=1)
    ap.add_argument("--only", choices=["large", "compare"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=Path, default=Path("/tmp/raybb_refine_large"))
    ap.add_argument("--out", default="refine_large")
    args = ap.parse_args()
    if args.cmd == "one":
        return run_one(args)
    import torch

    torch.set_num_threads(args.threads)
    command = "python benchmarks/refine_large.py " + " ".join(sys.argv[1:])
    path = RESULTS / f"{args.out}.json"
    doc = json.loads(path.read_text()) if path.exists() else {"rows": []}
    doc.update(machine=machine_info(), command=command, threads=args.threads)
    doc.setdefault("commands", [])
    if command not in doc["commands"]:
        doc["commands"].append(command)
    done = {
        (r["set"], r["model"], r["image"], r["effort"], r["refine"], r["tile_pixels"], r["halo"]) for r in doc["rows"]
    }

    def add(set_: str, row: dict) -> None:
        row = {"set": set_, **row}
        doc["rows"].append(row)
        write(doc, args.out)
        print(json.dumps(row), flush=True)

    if args.only in (None, "compare"):
        w, h = args.compare_size
        img = mosaic(w, h, args.images / f"cid22val_{w}x{h}.png")
        for model in args.models:
            for effort, kw in [(0, {}), (args.compare_effort, {})] + [
                (args.compare_effort, _compare_kw(spec)) for spec in args.compare
            ]:
                label = "untiled" if effort else "none"
                if kw:
                    label = "tiled-independent" if kw.get("independent") else "tiled"
                key = ("compare", model, img.name, effort, label, kw.get("tile_pixels"), kw.get("halo"))
                if key not in done:
                    add("compare", child(img, model, effort, args.threads, **kw))
    if args.only in (None, "large"):
        for mp in args.sizes:
            w, h = size_for(mp)
            img = mosaic(w, h, args.images / f"cid22val_{w}x{h}.png")
            for model in args.models:
                for effort in args.efforts:
                    if not any(k[:4] == ("large", model, img.name, effort) for k in done):
                        add("large", child(img, model, effort, args.threads))


if __name__ == "__main__":
    main()
