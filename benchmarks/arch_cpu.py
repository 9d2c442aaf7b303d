"""Channel-ladder vs PLN at equal CPU training compute (indicative only).

    python benchmarks/arch_cpu.py [--minutes 10] [--betas 0.05 0.015] [--val-images 6]

For each β, trains from scratch, *concurrently* (so both see the same machine load), one PLN as
shipped (N=64, M=96, F=96, G=24, unit-scale Laplace) and one channel-ladder (N=128, M=192,
slices 16/16/32/64/64, the *same* unit-scale Laplace likelihood and fixed β, i.e. the identical
objective), each with one torch thread, for the same wall-clock minutes, with the same trainer
(raybb.train.fast on the CPU: bf16 autocast, channels-last, batch 8 × 128², lr 5e-4, the same
data: BSDS500 + CID22 training). Then codes the first ``--val-images`` held-out CID22 validation
images with each model through the generic coder (raybb.levels, default pfr pipeline): actual
bits per pixel, PSNR, and the RD objective (nll + β·KL per pixel, lower is better).

Minutes of CPU training are ~1/1000 of a useful run: this says which architecture learns faster
per CPU minute at the start, not which ends better. Results: benchmarks/results/arch_cpu.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raybb.codec import parse_pipeline  # noqa: E402
from raybb.evaluation import machine_info  # noqa: E402
from raybb.imageio import decode_image  # noqa: E402
from raybb.levels import compress_rgb, decompress_rgb, samplers_for  # noqa: E402
from raybb.metrics import psnr  # noqa: E402
from raybb.model.ladder import pad_to_stride  # noqa: E402
from raybb.train.fast import load_run_weights  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TRAIN = ROOT.parent / "shared" / "datasets" / "train"
MODELS = {
    "pln": ("pln", {"N": 64, "M": 96, "F": 96, "G": 24, "learn_scale": False, "gamma_floor": 1.0}),
    "channel-ladder": (
        "channel-ladder",
        {"likelihood": "laplace", "gamma_floor": 1.0, "beta_anchors": 0, "rate_levels": 0},
    ),
}


def _train_cmd(arch: str, model: dict, beta: float, out: Path, a) -> list[str]:
    return [
        sys.executable, "-m", "raybb.train.fast", "--device", "cpu", "--threads", "1", "--arch", arch,
        "--model", json.dumps(model), "--beta", str(beta), "--minutes", str(a.minutes), "--out", str(out),
        "--data", str(TRAIN / "bsds500"), str(TRAIN / "cid22" / "training"),
        "--val-data", str(TRAIN / "cid22" / "validation"), "--val-images", "2",
        "--batch", "8", "--patch", "128", "--lr", "5e-4", "--lr-warmup-steps", "100", "--warmup-steps", "300",
        "--checkpoint-minutes", "1000", "--log-every", "100", "--seed", "0",
    ]  # fmt: skip


def _evaluate(run: Path, beta: float, images: list[np.ndarray]) -> dict:
    loaded = load_run_weights(run)
    model = loaded.model.eval()
    samplers = samplers_for(model, *parse_pipeline("pfr"))
    bpp, ps, obj = [], [], []
    for i, rgb in enumerate(images):
        data, rec, enc = compress_rgb(model, rgb, samplers, 1000 + i, loaded.short_fingerprint)
        assert np.array_equal(decompress_rgb(model, data, loaded.short_fingerprint), rec)
        h, w = rgb.shape[:2]
        bpp.append(len(data) * 8 / (h * w))
        ps.append(psnr(rgb, rec))
        with torch.no_grad():  # the training objective on the whole image (one posterior sample)
            torch.manual_seed(i)
            x, _ = pad_to_stride(torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div(255)[None])
            t = model.rd_terms(x)
            obj.append(float((t.nll + beta * t.kl) / (x.shape[-1] * x.shape[-2])))
    return {"bpp": float(np.mean(bpp)), "psnr": float(np.mean(ps)), "objective": float(np.mean(obj))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--betas", type=float, nargs="+", default=[0.05, 0.015])
    p.add_argument("--val-images", type=int, default=6)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "arch_cpu")
    p.add_argument("--skip-training", action="store_true", help="evaluate the runs already in --runs")
    a = p.parse_args()
    if not TRAIN.is_dir():
        print(f"no training data at {TRAIN}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    val_paths = sorted((TRAIN / "cid22" / "validation").glob("*.png"))[: a.val_images]
    images = [decode_image(v.read_bytes()) for v in val_paths]
    rows = []
    for beta in a.betas:
        outs = {name: a.runs / f"{name}-b{beta}" for name in MODELS}
        if not a.skip_training:
            a.runs.mkdir(parents=True, exist_ok=True)
            procs = []
            for name, (arch, model) in MODELS.items():
                with open(a.runs / f"{name}-b{beta}.log", "w") as logf:
                    procs.append(subprocess.Popen(_train_cmd(arch, model, beta, outs[name], a), cwd=ROOT,
                                                  stdout=subprocess.DEVNULL, stderr=logf))  # fmt: skip
            for pr in procs:
                if pr.wait() != 0:
                    raise SystemExit(f"training failed: {pr.args}")
        for name in MODELS:
            m = json.loads((outs[name] / "manifest.json").read_text())
            t0 = time.time()
            ev = _evaluate(outs[name], beta, images)
            n_params = sum(v.numel() for v in load_run_weights(outs[name]).model.state_dict().values())
            rows.append({"beta": beta, "arch": name, "steps": m["steps"], "train_seconds": m["train_seconds"],
                         "train_pixels_per_s": m["train_pixels_per_s"], "params_M": round(n_params / 1e6, 2), **ev,
                         "eval_seconds": round(time.time() - t0, 1)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    info = machine_info()
    cmd = "python benchmarks/arch_cpu.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "arch_cpu.json").write_text(json.dumps({"machine": info, "command": cmd, "rows": rows}, indent=1))
    lines = [
        "# Channel-ladder vs PLN at equal CPU training compute (indicative only)",
        "",
        f"{info['date']}, {info['cpu']}, {info['cpu_count']} cores (shared with other jobs; each pair of runs "
        f"trained concurrently, one torch thread each), torch {info['torch']}. Command: `{cmd}`.",
        "",
        f"Each model trained from scratch for {a.minutes:g} minutes of wall clock with raybb.train.fast on the CPU "
        "(bf16 autocast, channels-last, batch 8 x 128², lr 5e-4, KL warm-up 300 steps; BSDS500 + CID22 training), "
        "with the *same* objective: unit-scale Laplace likelihood + β·KL at a fixed β. Evaluated on the first "
        f"{len(images)} CID22 validation images (held out of training) through the generic coder raybb.levels "
        "(actual bitstreams, default pfr pipeline; every file decoded back to the encoder's reconstruction). "
        "Objective = (−log p(x|z) + β·KL) per pixel in nats on those images, one posterior sample; lower is better.",
        "",
        "| β | architecture | params (M) | steps | train px/s | bpp (actual) | PSNR dB | objective |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['beta']:g} | {r['arch']} | {r['params_M']} | {r['steps']} | {r['train_pixels_per_s']:.0f} | "
            f"{r['bpp']:.3f} | {r['psnr']:.2f} | {r['objective']:.4f} |"
        )
    lines += ["", "Minutes of CPU training are a tiny fraction of a real run; this ranks early learning speed "
              "per CPU minute only (the wide model does fewer steps in the same time)."]  # fmt: skip
    (RESULTS / "arch_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
