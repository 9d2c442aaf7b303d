"""Fine-tuning a shipped PLN with its own Laplace/L1 likelihood (the control) or a Gaussian/MSE one.

Issue 17 asks whether a Gaussian/MSE-trained member beats the Laplace/L1-trained one at equal
training compute. Training from scratch on this CPU says nothing (arch_cpu.md), so both runs start
from the same shipped weights and get the same data, crops, seeds, steps and minutes; only the
likelihood differs::

    python benchmarks/finetune_likelihood.py train --model pln-q3 --likelihood laplace --minutes 22
    python benchmarks/finetune_likelihood.py train --model pln-q3 --likelihood gaussian --minutes 22
    python benchmarks/finetune_likelihood.py eval --models pln-q1 pln-q2 pln-q3 pln-q4 pln-q5 \\
        /work/family_out/pln-q3-laplace /work/family_out/pln-q3-gaussian
    python benchmarks/finetune_likelihood.py report

The Gaussian run keeps β and sets its fixed scale γ so that the MSE term has the L1 term's slope
at the model's own error level on training crops (the match raybb/refine.py makes for its MSE
objective): scaling every error by s, Σ|e| grows like s·A and Σe²/(2γ²) like s²·S/(2γ²), so
γ² = S/A at s = 1, divided by ``--mse-scale``. Measured: the plain match (1) lowers the rate by
15-20%; ``--mse-scale 2`` keeps it within 2-5% of the Laplace control's, the comparison to read
(benchmarks/results/finetune_likelihood.md). Rate drift is also judged against the shipped
family's curve.

``eval`` codes held-out photos (cid22/validation, never trained on) and Kodak-24 (evaluation
only) with actual bitstreams (load_codec, compress_with_stats, default pipeline, effort 0), rows to
``<out>/eval.jsonl``. ``report`` scores each fine-tuned model's point by its equivalent rate: its
bpp against the bpp the shipped family (q1..q5, effort 0) needs for the same quality, interpolated
along that curve (pchip on log-bpp) -- a one-point BD-rate, negative = fewer bits for the quality.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._paths import KODAK, TRAIN  # noqa: E402
from raybb.evaluation import list_images, machine_info
from raybb.evaluation.bd import equivalent_rate  # noqa: E402
from raybb.model.ladder import LadderConfig, LadderNetwork  # noqa: E402
from raybb.model.weights import load_weights, save_weights  # noqa: E402
from raybb.train.fast import DeviceImages, load_image_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: where ``report`` writes (override with $FT_RESULTS to try the report without touching the committed files)
RESULTS = Path(os.environ.get("FT_RESULTS") or REPO / "benchmarks" / "results")
OUT = Path("/work/family_out")
HELD_OUT = TRAIN / "cid22" / "validation"
#: every training photo in ../shared (BSDS500 all splits + CID22 training); cid22/validation is held out
TRAIN_DIRS = [TRAIN / "bsds500" / s for s in ("train", "val", "test")] + [TRAIN / "cid22" / "training"]
LN2 = math.log(2.0)


def _weights_path(name: str) -> Path:
    p = Path(name)
    if p.is_dir():
        return p / "model.safetensors"
    if p.suffix == ".safetensors":
        return p
    return REPO / "raybb" / "weights" / f"{name}.safetensors"


# -- training ------------------------------------------------------------------------------------
@torch.no_grad()
def error_moments(net: LadderNetwork, data: DeviceImages, batches: int, batch: int) -> tuple[float, float]:
    """(mean |e|, mean e²) per subpixel of the sampled reconstruction on training crops."""
    a = s = 0.0
    n = 0
    for _ in range(batches):
        x = data.sample(batch)
        e = net.rd_terms(x).x_hat - x
        a += float(e.abs().sum())
        s += float(e.pow(2).sum())
        n += e.numel()
    return a / n, s / n


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    t0 = time.time()
    src = load_weights(_weights_path(args.model))
    beta = float(src.meta["beta"])
    images, data_fp = load_image_folder([str(d) for d in TRAIN_DIRS], threads=2)
    data = DeviceImages(images, args.patch, torch.device("cpu"), seed=args.seed)
    del images
    torch.manual_seed(args.seed)
    ref = src.model.eval()
    mean_abs, mean_sq = error_moments(ref, data, args.calib_batches, args.batch)
    # the calibration draws must not shift the training crops between the two runs: reseed
    data.gen.manual_seed(args.seed)
    cfg = src.config
    if args.likelihood == "gaussian":
        gamma = math.sqrt(mean_sq / (mean_abs * args.mse_scale))
        cfg = LadderConfig(**{**cfg.__dict__, "likelihood": "gaussian", "gamma_floor": gamma, "learn_scale": False})
    elif args.likelihood != "laplace":
        raise SystemExit(f"unknown likelihood {args.likelihood!r}")
    net = LadderNetwork(cfg)
    net.load_state_dict(src.model.state_dict())
    net.train()
    net.likelihood.raw_gamma.requires_grad_(bool(cfg.learn_scale))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    pixels = args.patch * args.patch
    gen = torch.Generator().manual_seed(args.seed + 1)
    t_ready = time.time()
    budget = args.minutes * 60.0
    log: list[dict] = []
    acc = np.zeros(4)
    n_acc = step = 0
    while True:
        el = time.time() - t_ready
        if el >= budget or (args.max_steps and step >= args.max_steps):
            break
        warm = min(1.0, (step + 1) / args.warmup_steps)
        frac = step / args.max_steps if args.max_steps else el / budget
        decay = 1.0
        if frac > 0.75:  # cosine to 0.1x over the last quarter of the steps (or of the time)
            u = (frac - 0.75) / 0.25
            decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * u))
        for g in opt.param_groups:
            g["lr"] = args.lr * warm * decay
        x = data.sample(args.batch)
        noise_seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        torch.manual_seed(noise_seed)  # the same posterior noise in both runs
        t = net.rd_terms(x)
        loss = ((t.nll + beta * t.kl) / pixels).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        step += 1
        with torch.no_grad():
            e = t.x_hat.detach() - x
            acc += [float(loss), float(t.kl.mean()) / LN2 / pixels, float(e.abs().mean()), float(e.pow(2).mean())]
        n_acc += 1
        if step % args.log_every == 0:
            m = dict(zip(("loss", "bpp_kl", "mean_abs_err", "mse"), (acc / n_acc).tolist(), strict=True))
            m.update(step=step, minutes=round((time.time() - t_ready) / 60, 2))
            log.append(m)
            print(json.dumps(m), flush=True)
            acc[:] = 0
            n_acc = 0
    seconds = time.time() - t_ready
    out = Path(args.out or OUT / f"{Path(args.model).stem}-{args.likelihood}")
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        **{k: v for k, v in src.meta.items() if k in ("beta", "variant")},
        "fine_tuned_from": {"name": Path(args.model).stem, "fingerprint": src.fingerprint},
        "fine_tune": {"likelihood": args.likelihood, "steps": step, "batch": args.batch, "patch": args.patch,
                      "lr": args.lr, "seed": args.seed, "data_fingerprint": data_fp},
    }  # fmt: skip
    fp = save_weights(out / "model.safetensors", net, meta, dtype=torch.float16)
    run = {
        "model": args.model,
        "likelihood": args.likelihood,
        "beta": beta,
        "config": cfg.to_dict(),
        "fingerprint": fp,
        "calibration": {"mean_abs_err": mean_abs, "mse": mean_sq, "mse_scale": args.mse_scale,
                        "gamma": cfg.gamma_floor if args.likelihood == "gaussian" else None},
        "steps": step,
        "train_seconds": round(seconds, 1),
        "setup_seconds": round(t_ready - t0, 1),
        "train_px_per_s": step * args.batch * pixels / max(seconds, 1e-9),
        "train_images": data.count,
        "data_fingerprint": data_fp,
        "args": vars(args),
        "machine": machine_info(),
        "command": "nice -n 10 python " + shlex.join(sys.argv),
        "log": log,
    }  # fmt: skip
    (out / "run.json").write_text(json.dumps(run, indent=2))
    print(json.dumps({k: run[k] for k in ("steps", "train_seconds", "train_px_per_s", "fingerprint")}), flush=True)


# -- evaluation ----------------------------------------------------------------------------------
def _label(spec: str) -> str:
    p = Path(spec)
    return p.name if p.is_dir() else p.stem if p.suffix else spec


def evaluate(args: argparse.Namespace) -> None:
    from raybb.codec import load_codec
    from raybb.imageio import load_image
    from raybb.metrics import ms_ssim_db

    torch.set_num_threads(args.threads)
    sets = {"held-out": list_images(HELD_OUT)[: args.held_out], "kodak": list_images(KODAK)[: args.kodak]}
    out = Path(args.out) / "eval.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        done = {(r["set"], r["model"], r["image"]) for r in map(json.loads, out.read_text().splitlines())}
    with out.open("a") as f:
        for spec in args.models:
            label = _label(spec)
            codec = load_codec(_weights_path(spec))
            for name, images in sets.items():
                for p in images:
                    if (name, label, p.name) in done:
                        continue
                    r = codec.compress_with_stats(load_image(p))
                    row = {"set": name, "model": label, "image": p.name, "bpp": r.bpp, "psnr": r.psnr,
                           "ms_ssim_db": ms_ssim_db(r.ms_ssim), "kl_bpp": r.kl_bits / (r.width * r.height),
                           "enc_s": r.encode_seconds}  # fmt: skip
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(json.dumps(row), flush=True)


def report(args: argparse.Namespace) -> None:
    base = Path(args.out)
    rows = [json.loads(s) for s in (base / "eval.jsonl").read_text().splitlines()]
    runs = {}
    for run_json in sorted(base.glob("*/run.json")):
        r = json.loads(run_json.read_text())
        r.pop("log", None)
        runs[run_json.parent.name] = r
    family = [f"pln-q{i}" for i in range(1, 6)]
    table = []
    for s in ("held-out", "kodak"):
        rs = [r for r in rows if r["set"] == s]
        images = sorted({r["image"] for r in rs if r["model"] in family})
        by = {(r["model"], r["image"]): r for r in rs}
        models = [m for m in dict.fromkeys(r["model"] for r in rs)]
        for m in models:
            have = [i for i in images if (m, i) in by and all((f, i) in by for f in family)]
            if not have:
                continue
            mean = {k: float(np.mean([by[(m, i)][k] for i in have])) for k in ("bpp", "psnr", "ms_ssim_db")}
            row = {"set": s, "model": m, "images": len(have), **mean}
            for q in ("psnr", "ms_ssim_db"):
                # on the mean curve (the usual BD convention) and the mean of per-image values
                fam_mean = [(float(np.mean([by[(f, i)]["bpp"] for i in have])),
                             float(np.mean([by[(f, i)][q] for i in have]))) for f in family]  # fmt: skip
                row[f"eq_rate_{q}"] = equivalent_rate(fam_mean, mean["bpp"], mean[q])
                per = [equivalent_rate([(by[(f, i)]["bpp"], by[(f, i)][q]) for f in family], by[(m, i)]["bpp"],
                                   by[(m, i)][q]) for i in have]  # fmt: skip
                per = [v for v in per if math.isfinite(v)]
                row[f"eq_rate_{q}_per_image"] = float(np.mean(per)) if per else math.nan
                row[f"eq_rate_{q}_n"] = len(per)
            table.append(row)
    res = {"machine": machine_info(), "command": args.command, "runs": runs, "table": table, "bd": _bd_rows(table),
           "paired": _paired_rows(rows)}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "finetune_likelihood.json").write_text(json.dumps(res, indent=2) + "\n")
    _write_md(res, RESULTS / "finetune_likelihood.md")
    print(json.dumps(table, indent=1))


def _bd_rows(table: list[dict]) -> list[dict]:
    """Where a likelihood was fine-tuned at two or more rates: BD-rate (pchip, mean curves) of its
    fine-tuned points against the same members as shipped, and against the Laplace control on the
    members both have."""
    from raybb.evaluation.bd import bd_rate

    out = []
    for s in ("held-out", "kodak"):
        pts = {t["model"]: t for t in table if t["set"] == s}
        runs: dict[str, dict[str, dict]] = {}  # kind -> member -> point
        for name in pts:  # run folders are named <member>-<likelihood>[-<variant>]
            m = re.fullmatch(r"(.+?)-((?:laplace|gaussian)(?:-.+)?)", name)
            if m and m.group(1) in pts:
                runs.setdefault(m.group(2), {})[m.group(1)] = pts[name]
        pairs = [("shipped", k) for k in runs] + [("laplace", k) for k in runs if k != "laplace"]
        for a, b in pairs:
            members = sorted(runs[b] if a == "shipped" else set(runs[b]) & set(runs.get(a, {})))
            if len(members) < 2:
                continue
            ca = [pts[mb] if a == "shipped" else runs[a][mb] for mb in members]
            cb = [runs[b][mb] for mb in members]
            row = {"set": s, "anchor": a, "test": b, "members": [t["model"] for t in cb]}
            for q in ("psnr", "ms_ssim_db"):
                row[f"bd_rate_{q}"] = bd_rate([t["bpp"] for t in ca], [t[q] for t in ca],
                                              [t["bpp"] for t in cb], [t[q] for t in cb])  # fmt: skip
            out.append(row)
    return out


def _paired_rows(rows: list[dict]) -> list[dict]:
    """Each non-Laplace run against the Laplace control of the same member, image by image."""
    out = []
    for s in ("held-out", "kodak"):
        by: dict[str, dict[str, dict]] = {}
        for r in rows:
            if r["set"] == s:
                by.setdefault(r["model"], {})[r["image"]] = r
        for name in sorted(by):
            m = re.fullmatch(r"(.+?)-(gaussian(?:-.+)?)", name)
            ctrl = by.get(f"{m.group(1)}-laplace") if m else None
            if not ctrl:
                continue
            ims = sorted(set(by[name]) & set(ctrl))
            if s == "held-out":  # the images every family member was coded on (eval --held-out)
                ims = [i for i in ims if all(i in by.get(f"pln-q{k}", {}) for k in range(1, 6))]
            a, b = [ctrl[i] for i in ims], [by[name][i] for i in ims]
            dp = [y["psnr"] - x["psnr"] for x, y in zip(a, b, strict=True)]
            out.append({
                "set": s, "test": name, "control": f"{m.group(1)}-laplace", "images": len(ims),
                "rate_change_pct": 100 * float(np.mean([y["bpp"] / x["bpp"] - 1 for x, y in zip(a, b, strict=True)])),
                "d_psnr": float(np.mean(dp)), "psnr_wins": int(sum(d > 0 for d in dp)),
                "d_ms_ssim_db": float(np.mean([y["ms_ssim_db"] - x["ms_ssim_db"] for x, y in zip(a, b, strict=True)])),
            })  # fmt: skip
    return out


def _write_md(res: dict, path: Path) -> None:
    """The table as markdown; a "## Reading" section already in the file (written by hand after
    the run) is kept."""
    keep = ""
    if path.exists() and "\n## Reading" in path.read_text():
        keep = "## Reading" + path.read_text().split("\n## Reading", 1)[1]
    m = res["machine"]
    lines = [
        "# Fine-tuning a shipped PLN: Laplace/L1 (control) vs Gaussian/MSE likelihood",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores shared with three other jobs (1 torch thread per process, "
        f"`nice -n 10`), torch {m['torch']}. Date: {m['date']}. Report command: `{res['command']}`.",
        "",
        "Both runs of a rate start from the same shipped weights and see the same crops (BSDS500 all splits + "
        "CID22 training), posterior noise, steps and learning-rate schedule; only the likelihood differs. "
        "Gaussian scale γ: slope match to the L1 term at the model's own error on training crops (γ² = S/A). "
        "Evaluation: actual bitstreams, default pipeline, effort 0; held-out = first CID22 validation images "
        "(never trained on), Kodak-24 = evaluation only. `eq. rate`: the model's bpp against the bpp the shipped "
        "family (q1..q5) needs for the same quality, interpolated along its curve (pchip on log-bpp): a one-point "
        "BD-rate, negative = fewer bits for the same quality; on the mean curve, and (in brackets) the mean of "
        "per-image values.",
        "",
        "## Runs",
        "",
        "| run | likelihood | β | γ (Gaussian) | steps | batch × patch² | lr | train minutes | train px/s | command |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for name, r in res["runs"].items():
        a, g, k = r["args"], r["calibration"]["gamma"], r["calibration"]["mse_scale"]
        gs = "" if g is None else f"{g:.4f}" + ("" if k == 1 else f" (γ² = S/({k:g}·A))")
        lines.append(
            f"| {name} | {r['likelihood']} | {r['beta']} | {gs} | {r['steps']} | "
            f"{a['batch']} × {a['patch']}² | {a['lr']:g} | {r['train_seconds'] / 60:.1f} | {r['train_px_per_s']:.0f} | "
            f"`{r['command']}` |"
        )
    lines += [
        "",
        "## Results",
        "",
        "| set | model | images | bpp | PSNR dB | MS-SSIM dB | eq. rate PSNR % | eq. rate MS-SSIM % |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in res["table"]:
        lines.append(
            f"| {t['set']} | {t['model']} | {t['images']} | {t['bpp']:.4f} | {t['psnr']:.3f} | {t['ms_ssim_db']:.3f} | "
            f"{t['eq_rate_psnr']:+.1f} ({t['eq_rate_psnr_per_image']:+.1f}) | "
            f"{t['eq_rate_ms_ssim_db']:+.1f} ({t['eq_rate_ms_ssim_db_per_image']:+.1f}) |"
        )
    if res["bd"]:
        lines += [
            "",
            "BD-rate (pchip, on the mean curves; negative = the test curve needs fewer bits), over the rates that "
            "were fine-tuned:",
            "",
            "| set | anchor | test | members | BD-rate PSNR % | BD-rate MS-SSIM % |",
            "|---|---|---|---|---:|---:|",
        ]
        for b in res["bd"]:
            lines.append(
                f"| {b['set']} | {b['anchor']} | {b['test']} | {', '.join(b['members'])} | "
                f"{b['bd_rate_psnr']:+.1f} | {b['bd_rate_ms_ssim_db']:+.1f} |"
            )
    if res.get("paired"):
        lines += [
            "",
            "Each Gaussian run against the Laplace control of the same member, image by image (mean of per-image "
            "rate change, PSNR and MS-SSIM differences; wins = images where the Gaussian run has the higher PSNR):",
            "",
            "| set | test | control | images | rate change % | ΔPSNR dB | PSNR wins | ΔMS-SSIM dB |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for p in res["paired"]:
            lines.append(
                f"| {p['set']} | {p['test']} | {p['control']} | {p['images']} | {p['rate_change_pct']:+.1f} | "
                f"{p['d_psnr']:+.3f} | {p['psnr_wins']} / {p['images']} | {p['d_ms_ssim_db']:+.3f} |"
            )
    path.write_text("\n".join(lines) + "\n\n" + keep)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", default="pln-q3")
    t.add_argument("--likelihood", choices=("laplace", "gaussian"), required=True)
    t.add_argument("--minutes", type=float, default=22.0)
    t.add_argument("--max-steps", type=int, default=0)
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--patch", type=int, default=256)
    t.add_argument("--lr", type=float, default=3e-5)
    t.add_argument("--warmup-steps", type=int, default=50)
    t.add_argument("--mse-scale", type=float, default=1.0)
    t.add_argument("--calib-batches", type=int, default=8)
    t.add_argument("--seed", type=int, default=17)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--log-every", type=int, default=25)
    t.add_argument("--out", default=None)
    e = sub.add_parser("eval")
    e.add_argument("--models", nargs="+", required=True)
    e.add_argument("--held-out", type=int, default=41)
    e.add_argument("--kodak", type=int, default=24)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--out", default=str(OUT))
    r = sub.add_parser("report")
    r.add_argument("--out", default=str(OUT))
    r.add_argument("--command", default="")
    args = p.parse_args(argv)
    {"train": train, "eval": evaluate, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
