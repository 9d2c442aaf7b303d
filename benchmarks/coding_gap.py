"""The coding gap: actual rate-distortion (bytes, coded samples) against the theoretical one (KL rate,
exact posterior samples) of the same models at effort 0, per level.

    python benchmarks/coding_gap.py --set cid22 --images 8 --pipelines pfr pfr-max \\
        --jsonl benchmarks/results/coding_gap.jsonl            # measure (appends one row per image)
    python benchmarks/coding_gap.py --summarize                # -> benchmarks/results/coding_gap.{md,json}

Per (pipeline, model, image) the script codes the image as ``Codec.compress`` does and also builds,
from the model's pieces, the four combinations of exact (E) and coded (C) samples of level 2 and
level 1:

* EE: exact z2 ~ q2, exact z1 ~ q1(.|z2): the theoretical point (rate: KL2 + KL1 under that z2);
* CE: the coded z2, exact z1 ~ q1(.|coded z2): what level 2's coded sample costs in quality;
* EC: exact z2, then level 1 *coded* under p1(.|exact z2): what level 1's coded sample costs;
* CC: both coded, i.e. the bitstream (rate: its bytes, container included).

Per level it records KL bits, coded payload bits, and PFR's split of the payload into the outlier
section, the split tree and the ranks (range-coder counts). BD-rates are over the models' curves
(one point per model: mean bpp, mean PSNR / MS-SSIM dB over the images): actual (CC) against
theoretical (EE), per pipeline. Exact samples are seeded per image, so rows are reproducible.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._paths import KODAK, TRAIN  # noqa: E402
from raybb.codec import load_codec  # noqa: E402
from raybb.coding import StreamKey  # noqa: E402
from raybb.evaluation import bd_rate, machine_info  # noqa: E402
from raybb.imageio import load_image  # noqa: E402
from raybb.levels import flat_gaussian  # noqa: E402
from raybb.metrics import ms_ssim_bounded, ms_ssim_db, psnr  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODELS = ["pln-q1", "pln-q2", "pln-q3", "pln-q4", "pln-q5"]
SETS = {"cid22": TRAIN / "cid22" / "validation", "kodak": KODAK}


def _kl(q, p) -> float:
    return float(q.kl(p).sum(dtype=torch.float64)) / math.log(2)


def _exact(q, g: torch.Generator) -> torch.Tensor:
    return q.mean + q.std * torch.randn(q.mean.shape, generator=g)


L1_KEYS = (
    "outlier_section_bits",
    "tree_bits",
    "rank_bits",
    "n_blocks",
    "dithered_channels",
    "dither_bits",
    "dithered_kl_bits",
)


def _bits(stats: dict) -> dict:
    """PFR's payload split (dpfr: of its PFR part, whose keys carry a ``pfr_`` prefix) and dpfr's
    dithered section."""
    keys = ("outlier_section_bits", "tree_bits", "rank_bits", "n_blocks", "n_outliers", "outlier_kl_bits")
    out = {k: stats[k] for k in keys if k in stats}
    out.update({k: stats[f"pfr_{k}"] for k in keys if f"pfr_{k}" in stats})
    out.update({k: stats[k] for k in ("dithered_channels", "dither_bits", "dithered_kl_bits") if k in stats})
    return out


@torch.no_grad()
def measure_image(codec, rgb: np.ndarray, seed: int, combos: bool = True) -> dict:
    """One image: the bitstream (CC) and the EE (and with ``combos`` CE / EC) reconstructions."""
    t = codec.tiler
    h, w = rgb.shape[:2]
    pixels = h * w
    t0 = time.perf_counter()
    e = codec._encode(rgb, seed)  # what Codec.compress does (effort 0)
    enc_s = time.perf_counter() - t0
    lv2, lv1 = e.levels  # the PLN: level 2, then level 1
    q2, p2, enc2 = lv2.q, lv2.p, lv2.enc
    q1, p1, enc1 = lv1.q, lv1.p, lv1.enc
    feats = e.features if e.features is not None else t.analyze(rgb, codec.device, e.cond)
    z1c = lv1.z
    g = torch.Generator().manual_seed(seed)
    z2e = _exact(q2, g)
    p1e = t.prior(1, [z2e], e.cond, lv1.shape)
    q1e = t.posterior(1, feats, [z2e], p1e, e.cond)
    z1e = _exact(q1e, g)  # EE

    def rec(z2, z1):
        return t.reconstruct_uint8([z2, z1], e.cond, h, w)

    recs = {"ee": rec(z2e, z1e), "cc": rec(lv2.z, z1c)}
    if combos:
        recs["ce"] = rec(lv2.z, _exact(q1, g))  # CE: exact z1 under the coded z2
        enc1e = codec.samplers[1].encode(flat_gaussian(q1e), flat_gaussian(p1e), StreamKey(seed, 0, 1))  # EC
        recs["ec"] = rec(z2e, enc1e.sample.reshape(q1e.mean.shape))
    row = {
        "pixels": pixels,
        "bpp": len(e.data) * 8 / pixels,
        "container_bits": len(e.data) * 8 - 8 * (len(enc2.payload) + len(enc1.payload)),
        "kl2": _kl(q2, p2),
        "kl1": _kl(q1, p1),  # under the coded z2 (what the bitstream's level 1 codes)
        "kl1_exact": _kl(q1e, p1e),  # under the exact z2 (the theoretical rate)
        "coded2": 8 * len(enc2.payload),
        "coded1": 8 * len(enc1.payload),
        "bits2": _bits(enc2.stats),
        "bits1": _bits(enc1.stats),
        "encode_s": enc_s,
        "dims2": q2.mean.numel(),
        "dims1": q1.mean.numel(),
    }
    row["theoretical_bpp"] = (row["kl2"] + row["kl1_exact"]) / pixels
    for k, rec in recs.items():
        row[f"psnr_{k}"] = psnr(rgb, rec)
    for k in ("ee", "cc"):
        row[f"msssim_db_{k}"] = ms_ssim_db(ms_ssim_bounded(rgb, recs[k]))
    return row


def run(args) -> None:
    torch.set_num_threads(args.threads)
    files = sorted(SETS[args.set].glob("*.png"))[: args.images]
    if not files:
        raise SystemExit(f"no images in {SETS[args.set]}")
    images = [(f.name, load_image(f)) for f in files]
    info = machine_info()
    out = Path(args.jsonl)
    with out.open("a") as fh:
        for pipe in args.pipelines:
            for model in args.models:
                codec = load_codec(model, sampler=pipe)
                for i, (name, rgb) in enumerate(images):
                    row = measure_image(codec, rgb, seed=1000 + i, combos=not args.no_combos)
                    row.update(
                        set=args.set,
                        image=name,
                        pipeline=pipe,
                        model=model,
                        threads=args.threads,
                        cpu=info["cpu"],
                        cores=os.cpu_count(),
                        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    )
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    print(
                        f"{pipe} {model} {name}: bpp {row['bpp']:.4f} (KL {row['theoretical_bpp']:.4f}) "
                        f"psnr EE {row['psnr_ee']:.2f} CE {row.get('psnr_ce', math.nan):.2f} "
                        f"EC {row.get('psnr_ec', math.nan):.2f} CC {row['psnr_cc']:.2f} "
                        f"L2 {row['coded2']}/{row['kl2']:.0f} "
                        f"L1 {row['coded1']}/{row['kl1']:.0f} enc {row['encode_s']:.2f}s",
                        flush=True,
                    )


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:+.2f}"


def _mean(rows, key):
    return float(np.mean([r.get(key, math.nan) for r in rows]))


def summarize(jsonl: Path, stem: str, command: str, anchor_pipe: str = "pfr:22,14,64,22,0", note: str = "") -> None:
    rows = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]
    groups: dict[tuple[str, str], dict[str, list]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["pipeline"]), {}).setdefault(r["model"], []).append(r)
    summary = []
    lines = [
        "# The coding gap: actual against theoretical rate-distortion, per level",
        "",
        "Theoretical (EE): rate = KL[q2‖p2] + KL[q1‖p1(.|z2)] with an exact z2 ~ q2, quality of exact samples"
        " z2 ~ q2, z1 ~ q1. Actual (CC): the bitstream's bytes (container included) and its decoded image."
        " CE: the coded z2 with an exact z1 ~ q1(.|coded z2) (level 2's fidelity); EC: an exact z2 and a coded"
        " z1 under p1(.|exact z2) (level 1's fidelity). Level bits: KL and coded payload bits; PFR's payload"
        " split into outlier section / split tree / ranks. BD-rate over the models' mean points (pchip).",
        "",
        f"Command: `{command}`",
        "",
    ]
    if note:
        lines += [note, ""]
    machines = sorted({(r["cpu"], r["cores"], r["threads"]) for r in rows})
    dates = sorted({r["date"][:10] for r in rows})
    lines += [
        f"Machine: {', '.join(f'{c} ({n} cores, {t} threads)' for c, n, t in machines)}; dates {', '.join(dates)}.",
        "Encode seconds: `Codec.compress`'s encoder path alone, on a machine shared with other jobs.",
        "",
    ]
    for (dset, pipe), by_model in sorted(groups.items()):
        models = [m for m in MODELS if m in by_model]
        n_img = min(len(by_model[m]) for m in models)
        lines += [f"## {dset}, pipeline `{pipe}` ({n_img} images per model)", ""]
        lines += [
            "| model | bpp | KL bpp | bpp/KL | PSNR CC | PSNR EE | CE−EE | EC−EE | L2 KL | L2 coded | L2 ratio "
            "| L1 KL | L1 coded | L1 ratio | L1 outl/tree/rank bits | L1 blocks | L1 dithered ch: bits/KL "
            "| container bits | encode s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        pts = {"bpp": [], "kl": [], "cc": [], "ee": [], "ms_cc": [], "ms_ee": []}
        per_model = {}
        for m in models:
            rs = by_model[m][:n_img]
            a = {
                k: _mean(rs, k)
                for k in (
                    "bpp",
                    "theoretical_bpp",
                    "psnr_cc",
                    "psnr_ee",
                    "psnr_ce",
                    "psnr_ec",
                    "kl2",
                    "coded2",
                    "kl1",
                    "coded1",
                    "container_bits",
                    "encode_s",
                    "msssim_db_cc",
                    "msssim_db_ee",
                )
            }
            b1 = {k: float(np.mean([r["bits1"].get(k, 0) for r in rs])) for k in L1_KEYS}
            dith = (
                f"{b1['dithered_channels']:.1f}: {b1['dither_bits']:.0f}/{b1['dithered_kl_bits']:.0f}"
                if b1["dithered_channels"]
                else "–"
            )
            per_model[m] = {**a, **{f"l1_{k}": v for k, v in b1.items()}}
            lines.append(
                f"| {m} | {a['bpp']:.4f} | {a['theoretical_bpp']:.4f} | {a['bpp'] / a['theoretical_bpp']:.3f} "
                f"| {a['psnr_cc']:.2f} | {a['psnr_ee']:.2f} | {_signed(a['psnr_ce'] - a['psnr_ee'])} "
                f"| {_signed(a['psnr_ec'] - a['psnr_ee'])} | {a['kl2']:.0f} | {a['coded2']:.0f} "
                f"| {a['coded2'] / a['kl2']:.3f} "
                f"| {a['kl1']:.0f} | {a['coded1']:.0f} | {a['coded1'] / a['kl1']:.3f} "
                f"| {b1['outlier_section_bits']:.0f}/{b1['tree_bits']:.0f}/{b1['rank_bits']:.0f} "
                f"| {b1['n_blocks']:.0f} | {dith} "
                f"| {a['container_bits']:.0f} | {a['encode_s']:.2f} |"
            )
            pts["bpp"].append(a["bpp"])
            pts["kl"].append(a["theoretical_bpp"])
            pts["cc"].append(a["psnr_cc"])
            pts["ee"].append(a["psnr_ee"])
            pts["ms_cc"].append(a["msssim_db_cc"])
            pts["ms_ee"].append(a["msssim_db_ee"])
        gap_psnr = bd_rate(pts["kl"], pts["ee"], pts["bpp"], pts["cc"])
        gap_ms = bd_rate(pts["kl"], pts["ms_ee"], pts["bpp"], pts["ms_cc"])
        lines += ["", f"BD-rate actual vs theoretical: **{gap_psnr:+.1f}% (PSNR)**, {gap_ms:+.1f}% (MS-SSIM).", ""]
        summary.append(
            {
                "set": dset,
                "pipeline": pipe,
                "images": n_img,
                "models": models,
                "bd_rate_psnr_pct": gap_psnr,
                "bd_rate_ms_ssim_pct": gap_ms,
                "per_model": per_model,
            }
        )
    # pipelines against each other (actual curves) on the same set
    lines += [f"## Actual curves against `{anchor_pipe}` (where measured; else the first pipeline of the set)", ""]
    lines += [
        "| set | pipeline | anchor | BD-rate PSNR | BD-rate MS-SSIM | encode s (mean over models) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for dset in sorted({s["set"] for s in summary}):
        ss = [s for s in summary if s["set"] == dset]
        anchor = next((s for s in ss if s["pipeline"] == anchor_pipe), ss[0])
        for s in ss:
            ms = [m for m in s["models"] if m in anchor["models"]]

            def cur(x, key, ms=ms):
                return [x["per_model"][m][key] for m in ms]

            d_p = bd_rate(cur(anchor, "bpp"), cur(anchor, "psnr_cc"), cur(s, "bpp"), cur(s, "psnr_cc"))
            d_m = bd_rate(cur(anchor, "bpp"), cur(anchor, "msssim_db_cc"), cur(s, "bpp"), cur(s, "msssim_db_cc"))
            enc = float(np.mean(cur(s, "encode_s")))
            lines.append(
                f"| {dset} | `{s['pipeline']}` | `{anchor['pipeline']}` | {d_p:+.1f}% | {d_m:+.1f}% | {enc:.2f} |"
            )
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"command": command, "summary": summary}, indent=1))
    print("\n".join(lines))


def timing(args) -> None:
    """``Codec.compress`` seconds per image for each pipeline, interleaved image by image (so load
    changes hit every pipeline alike); median and mean over the images and ``--repeats``."""
    torch.set_num_threads(args.threads)
    files = sorted(SETS[args.set].glob("*.png"))[: args.images]
    images = [load_image(f) for f in files]
    info = machine_info()
    load0 = os.getloadavg()[0]
    res: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}  # process CPU seconds (all threads): robust to other jobs
    for model in args.models:
        codecs = {p: load_codec(model, sampler=p) for p in args.pipelines}
        for c in codecs.values():  # warm-up (first-call allocations, the normal table)
            c.compress(images[0][:128, :128], seed=1)
        for _ in range(args.repeats):
            for i, rgb in enumerate(images):
                for p, c in codecs.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    c.compress(rgb, seed=1000 + i)
                    res.setdefault(model, {}).setdefault(p, []).append(time.perf_counter() - t0)
                    cpu.setdefault(model, {}).setdefault(p, []).append(time.process_time() - c0)
    load1 = os.getloadavg()[0]
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python " + " ".join(sys.argv)
    lines = [
        "# Encode time of the coding-gap pipelines",
        "",
        f"`Codec.compress` (effort 0) on {len(images)} {args.set} images, {args.threads} threads, {args.repeats} "
        f"repeat(s), pipelines interleaved image by image. {info['cpu']}, {os.cpu_count()} cores, {date}; load "
        f"average {load0:.1f} -> {load1:.1f} (a machine shared with other jobs: compare the columns, not the "
        "absolute seconds; CPU seconds, summed over threads, are less disturbed by other jobs than wall time).",
        "",
        f"Command: `{command}`",
        "",
        "| model | pipeline | median wall s | mean wall s | median CPU s | ratio of median CPU s to the first |",
        "|---|---|---:|---:|---:|---:|",
    ]
    out = []
    for model, by in res.items():
        first = float(np.median(cpu[model][args.pipelines[0]]))
        for p, ts in by.items():
            med, mean, c = float(np.median(ts)), float(np.mean(ts)), float(np.median(cpu[model][p]))
            lines.append(f"| {model} | `{p}` | {med:.2f} | {mean:.2f} | {c:.2f} | {c / first:.2f} |")
            out.append({"model": model, "pipeline": p, "seconds": ts, "cpu_seconds": cpu[model][p], "median": med})
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{args.stem}_timing.md").write_text(text)
    (RESULTS / f"{args.stem}_timing.json").write_text(
        json.dumps(
            {"command": command, "date": date, "cpu": info["cpu"], "threads": args.threads, "rows": out}, indent=1
        )
    )
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=sorted(SETS), default="cid22")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--pipelines", nargs="+", default=["pfr"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-combos", action="store_true", help="skip the CE / EC reconstructions (faster)")
    ap.add_argument("--jsonl", default=str(RESULTS / "coding_gap.jsonl"))
    ap.add_argument("--summarize", action="store_true", help="only write the summary from --jsonl")
    ap.add_argument("--stem", default="coding_gap")
    ap.add_argument("--anchor", default="pfr:22,14,64,22,0", help="pipeline the others are compared with")
    ap.add_argument("--note", default="", help="a line for the summary (how the rows were measured)")
    ap.add_argument("--timing", action="store_true", help="only time Codec.compress per pipeline")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if args.timing:
        timing(args)
        return
    if not args.summarize:
        run(args)
    summarize(Path(args.jsonl), args.stem, "python " + " ".join(sys.argv), args.anchor, args.note)


if __name__ == "__main__":
    main()
