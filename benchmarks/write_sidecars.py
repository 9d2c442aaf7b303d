"""Write the registry sidecars (raybb/weights/<model>.json) from the committed Kodak results.

``raybb models`` shows ``kodak_bpp``/``kodak_psnr``/``kodak_ms_ssim``: we record the *actual* coded
rate and quality of the default sampler pipeline (benchmarks/results/kodak_average.csv, written by
``benchmarks/kodak_eval.py --raybb ...``), beside the theoretical KL rate and exact-sample quality.

    python benchmarks/write_sidecars.py [--results benchmarks/results/kodak_average.csv]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "raybb" / "weights"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "kodak_average.csv"))
    args = ap.parse_args(argv)
    avg = pd.read_csv(args.results)
    rows = avg[avg["kind"] == "raybb"]
    written = 0
    for _, r in rows.iterrows():
        weights = WEIGHTS / f"{r['quality']}.safetensors"
        if not weights.exists():
            print(f"skip {r['quality']}: no {weights}", file=sys.stderr)
            continue
        side = {
            "kodak_bpp": round(float(r["bpp"]), 4),
            "kodak_psnr": round(float(r["psnr"]), 3),
            "kodak_ms_ssim": round(float(r["ms_ssim"]), 5),
            "kodak_theoretical_bpp": round(float(r["theoretical_bpp"]), 4),
            "kodak_theoretical_psnr": round(float(r["theoretical_psnr"]), 3),
            "kodak_level2_share": round(float(r["level2_share"]), 4),
            "kodak_encode_s": round(float(r["encode_s"]), 2),
            "kodak_decode_s": round(float(r["decode_s"]), 2),
            "kodak_images": int(r["n_images"]),
            "source": Path(args.results).name,
        }
        weights.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n")
        written += 1
        print(f"{weights.with_suffix('.json')}: {side['kodak_bpp']} bpp, {side['kodak_psnr']} dB")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
