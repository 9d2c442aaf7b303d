"""Kodak rate-distortion benchmark: classical baselines now, raybb models with ``--raybb``.

    python benchmarks/kodak_eval.py                         # baselines only -> kodak_baselines*
    python benchmarks/kodak_eval.py --raybb MODEL [MODEL...] [--sampler is-gs ...]
                                                            # raybb + baselines -> kodak_*

Baselines only writes ``benchmarks/results/kodak_baselines.csv`` and ``.md`` (averaged table with
machine and date) plus ``kodak_baselines_{per_image.csv,per_image.parquet,average.parquet,
bd_rate.csv,rd_psnr.png,rd_ms_ssim.png,coding_time.png}``. With ``--raybb`` the files are
``kodak_{...}`` and add the raybb curve(s), BD-rate vs every baseline and the published anchors,
and the level-2 share plot. Encoder settings: see ``raybb.baselines`` (library default efforts,
one thread each). Timings are wall clock on a shared machine: read them as indicative.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._paths import KODAK  # noqa: E402
from raybb.baselines import get_baseline, library_versions  # noqa: E402
from raybb.evaluation import evaluate_folder, machine_info, markdown_table  # noqa: E402

DEFAULT_KODAK = str(KODAK)
CONTENTION = (
    "Timings: wall clock, one thread per encoder, on a 2-core machine shared with other "
    "engineers and a background training run (contended; indicative only)."
)


_T0 = time.perf_counter()


def _progress(done: int, total: int, msg: str) -> None:
    if done == total or done % 25 == 0:
        el = time.perf_counter() - _T0
        print(f"  [{done}/{total}] {el:6.0f}s  {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", default=DEFAULT_KODAK, help="folder of images (default: $RAYBB_SHARED/datasets/kodak)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="results folder")
    ap.add_argument("--baselines", nargs="*", default=["jpeg", "webp", "avif", "jpegxl"])
    ap.add_argument("--raybb", nargs="*", default=[], metavar="MODEL", help="raybb models (names or paths)")
    ap.add_argument("--sampler", nargs="*", default=[None], help="raybb sampler pipelines (one curve each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (raybb and MS-SSIM)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (smoke runs)")
    ap.add_argument("--prefix", default=None, help="output name prefix (default kodak_ / kodak_baselines_)")
    ap.add_argument(
        "--reuse-baselines",
        default=None,
        metavar="PARQUET[,PARQUET...]",
        help="take baseline (and earlier raybb) rows from per-image tables written before (e.g. "
        "benchmarks/results/kodak_baselines_per_image.parquet) instead of re-encoding them",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    raybb_codecs = []
    if args.raybb:
        from raybb.codec import load_codec

        samplers = args.sampler or [None]
        for s in samplers:
            for m in args.raybb:
                codec = load_codec(m, sampler=s, device=args.device)
                curve = "raybb" if len(samplers) == 1 else f"raybb {codec.sampler_name}"
                raybb_codecs.append((curve, codec.model_name, codec))
    prefix = args.prefix
    if prefix is None:
        prefix = "kodak_" if (raybb_codecs or args.reuse_baselines) else "kodak_baselines_"
    info = machine_info()
    versions = library_versions(args.baselines)
    settings = "; ".join(get_baseline(b).description for b in args.baselines)
    note = f"{CONTENTION} Baseline settings: {settings}."
    print(f"Evaluating {args.kodak} -> {args.out} (prefix {prefix!r}); {info['cpu']}, {info['date']}")
    t0 = time.perf_counter()
    previous = None
    if args.reuse_baselines:
        import pandas as pd

        previous = pd.concat([pd.read_parquet(p) for p in args.reuse_baselines.split(",")], ignore_index=True)
        # classical rows of the chosen baselines, and any raybb rows measured by an earlier run
        previous = previous[(previous["kind"] == "raybb") | previous["codec"].isin(args.baselines)]
        names = ", ".join(Path(p).name for p in args.reuse_baselines.split(","))
        note += f" Rows reused from {names} (measured earlier the same day)."
    rep = evaluate_folder(
        args.kodak,
        raybb_codecs=raybb_codecs,
        baselines=[] if args.reuse_baselines else args.baselines,
        previous_rows=previous,
        out_dir=args.out,
        progress=_progress,
        limit=args.limit,
        prefix=prefix,
        note=note,
    )
    wall = time.perf_counter() - t0
    avg = rep.average.copy()
    cols = ["codec", "quality", "bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s"]
    print(avg[cols].to_string())
    if not rep.bd.empty:
        print(rep.bd.to_string())

    if not raybb_codecs and not args.reuse_baselines:
        # the headline files other issues cite: averaged table (+ machine/date columns) and markdown
        out = Path(args.out)
        keep = ["codec", "quality", "n_images", *cols[2:]]
        table = avg[keep].copy()
        table["date"] = info["date"]
        table["machine"] = f"{info['cpu']} ({info['cpu_count']} cores, shared)"
        table.to_csv(out / "kodak_baselines.csv", index=False)
        digits = {"bpp": 4, "psnr": 2, "ms_ssim": 4, "ms_ssim_db": 2, "encode_s": 3, "decode_s": 3}
        md = [
            f"# Classical codecs on Kodak ({len(rep.images)} images)\n",
            f"Measured {info['date']} on {info['cpu']} ({info['cpu_count']} cores), {info['platform']}, "
            f"Python {info['python']}. Total run {wall:.0f} s.\n",
            "Libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".\n",
            "Settings: " + settings + ".\n",
            "bpp = file bytes x 8 / pixels (container headers included); PSNR on RGB 8-bit (MSE over all "
            "channels), averaged over images; MS-SSIM: pytorch-msssim, data_range 255, averaged over "
            "images; MS-SSIM dB = -10 log10(1 - mean MS-SSIM). " + CONTENTION + "\n",
            "## Averages per quality setting\n",
            markdown_table(avg[keep], digits),
            "\n## BD-rate vs JPEG (negative = fewer bits at equal quality; pchip fit, overlapping range)\n",
            markdown_table(
                rep.bd, {"bd_rate_psnr_pct": 1, "bd_rate_ms_ssim_pct": 1, "bd_psnr_db": 2, "bd_ms_ssim_db": 2}
            ),  # fmt: skip
            "\nPlots: `kodak_baselines_rd_psnr.png`, `kodak_baselines_rd_ms_ssim.png`, "
            "`kodak_baselines_coding_time.png`. Per-image rows: `kodak_baselines_per_image.csv`.\n",
        ]
        (out / "kodak_baselines.md").write_text("\n".join(md))
        print(f"wrote {out / 'kodak_baselines.csv'} and {out / 'kodak_baselines.md'}")
    print(f"done in {wall:.0f} s; files: {', '.join(str(p) for p in rep.files.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
