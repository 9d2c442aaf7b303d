"""Benchmark of the coded samplers on synthetic latents shaped like a Kodak image's latents.

    .venv/bin/python benchmarks/coding.py            # full run (~200k dims, KL 20k..500k bits)
    .venv/bin/python benchmarks/coding.py --quick    # small smoke run (~1 min)
    .venv/bin/python benchmarks/coding.py --fit-rejection-table   # refit raybb/coding/rejection_table.json
    .venv/bin/python benchmarks/coding.py --real-model pln-q3 [--images 3] [--stem coding_real_q3]
        # real latents: bottom_up -> posterior2 -> code level 2 -> prior1(z2) -> posterior1 -> code level 1
    .venv/bin/python benchmarks/coding.py --configs pfr:25,16,64,25 --latent-seeds 5 --stem coding_targets
        # chosen samplers on 200k dims / 200k bits, on 5 synthetic latents

For each (sampler, params, total KL): coded bits / KL bits, encode / decode seconds, and fidelity
against exact samples:
  * ``mse_ratio``: sum((x - mu_q)^2 / sigma_p^2) / sum(sigma_q^2 / sigma_p^2) -- a toy
    reconstruction MSE in prior units, 1.0 in expectation for exact samples (includes outliers).
  * ``excess_nll``: mean over dims with KL <= 8 bits of 0.5 (eps^2 - 1) / ln 2, eps = (x - mu_q)/sigma_q:
    how many bits/dim worse log q(x) is than for exact samples (0 for exact, < 0 = mode-seeking).
    (Higher-KL dims are outliers for some samplers, whose 16-bit quantization noise is tiny in
    prior units but large in units of a very narrow q; mse_ratio covers them.)
  * ``ks``: Kolmogorov-Smirnov D of eps (same dims) against N(0, 1).
The ``exact`` row is an exact sample (torch.randn) for the noise level of these statistics.
Results go to benchmarks/results/coding.{json,md} (or coding_quick.*).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raybb.coding import StreamKey, get_sampler, kl_bits  # noqa: E402
from raybb.coding.synthetic import make_pair, std_pair  # noqa: E402
from raybb.evaluation import machine_info  # noqa: E402
from raybb.pipelines import parse_pipeline, resolve_channels  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LOWKL = 8.0  # excess_nll / ks use dims with KL <= 8 bits: coded in-block by every sampler


def machine(device: str = "cpu", note: str | None = None) -> dict:
    """Where and when the numbers were taken; ``note`` says what else ran on the machine."""
    return {
        "cpu": machine_info()["cpu"],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_name(device),
        "date": datetime.date.today().isoformat(),
        "loadavg_start": os.getloadavg()[0],
        "note": note or "nothing else of ours ran on the machine (see the load average)",
    }


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def to_device(g, device: str):
    from raybb.coding import DiagGaussian

    return DiagGaussian(g.mean.to(device), g.std.to(device))


def sync(device: str) -> None:
    """Device work is asynchronous: wait for it before reading the host clock."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def fidelity(x: torch.Tensor, q, p, inblock: torch.Tensor) -> dict:
    x, mq, sq, sp = x.double(), q.mean.double(), q.std.double(), p.std.double()
    mse_ratio = float((((x - mq) / sp) ** 2).sum() / ((sq / sp) ** 2).sum())
    eps = ((x - mq) / sq)[inblock]
    excess = float((0.5 * (eps**2 - 1)).mean() / np.log(2)) if eps.numel() else 0.0
    sub = eps[torch.randperm(eps.numel(), generator=torch.Generator().manual_seed(0))[:20000]]
    ks = float(stats.kstest(sub.numpy(), "norm").statistic) if sub.numel() else 0.0
    return {"mse_ratio": mse_ratio, "excess_nll": excess, "ks": ks}


def run_one(name, params, q, p, kl_total, seed=1) -> dict:
    smp = get_sampler(name, params)
    key = StreamKey(seed=seed, image=0, level=1)
    t0 = time.perf_counter()
    enc = smp.encode(q, p, key)
    t1 = time.perf_counter()
    x = smp.decode(p, key, enc.payload)
    t2 = time.perf_counter()
    assert torch.equal(x, enc.sample), "decode differs from the encoder's sample"
    kl = kl_bits(q, p)
    inblock = kl <= LOWKL
    row = {
        "sampler": name,
        "params": list(smp.params()),
        "kl_bits": float(kl_total),
        "coded_bits": enc.stats["coded_bits"],
        "ratio": enc.stats["coded_bits"] / float(kl.sum()),
        "encode_s": t1 - t0,
        "decode_s": t2 - t1,
        "n_outliers": enc.stats.get("n_outliers", 0),
        "n_blocks": enc.stats.get("n_blocks", 0),
    }
    row.update(fidelity(x, q, p, inblock))
    return row


def exact_row(q, p, kl_total) -> dict:
    x = q.mean + q.std * torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(5))
    row = {
        "sampler": "exact",
        "params": [],
        "kl_bits": float(kl_total),
        "coded_bits": 0,
        "ratio": 0.0,
        "encode_s": 0.0,
        "decode_s": 0.0,
        "n_outliers": 0,
        "n_blocks": 0,
    }
    row.update(fidelity(x, q, p, torch.ones(q.mean.shape, dtype=torch.bool)))
    return row


#: pfr points that matter (budget, log2 N, max dims, outlier bits): pfr-max's (25, 16, 64, 25), truncated,
#: <= 1.05x KL (docs/coding.md, "targets"); the default (what a bare "pfr" means); near-exact
PFR_POINTS = [("pfr", (25, 16, 64, 25)), ("pfr", (22, 14, 64, 22)), ("pfr", (14, 16, 64, 14))]
SEED_SAMPLERS = [("rejection", None), ("greedy", (6, 16, 64)), ("importance", (8, 64, 8))]


def plan(quick: bool):
    if quick:
        dims, kls = 20000, [2000, 20000]
        main = PFR_POINTS[:1] + SEED_SAMPLERS
        sweep_kl = 20000
        sweep = [("pfr", (8, 11, 64, 8)), ("pfr", (12, 14, 64, 12)), ("pfr", (16, 16, 64, 16))]
        return dims, kls, main, sweep_kl, sweep, kls
    dims = 200_000
    kls = [20_000, 50_000, 100_000, 200_000, 500_000]
    main = PFR_POINTS + SEED_SAMPLERS
    seed_kls = [20_000, 200_000]
    sweep_kl = 200_000
    # near-exact points (N >= 2**(budget + 2)), then the truncated frontier (N < 2**budget: biased,
    # cheaper), then the seed samplers with larger budgets
    sweep = [
        ("pfr", (8, 11, 64, 8)),
        ("pfr", (12, 14, 64, 12)),
        ("pfr", (16, 18, 64, 16)),
        ("pfr", (18, 20, 64, 18)),
        ("pfr", (20, 14, 64, 20)),
        ("pfr", (22, 16, 64, 22)),
        ("pfr", (24, 14, 64, 24)),
        ("pfr", (24, 16, 64, 24)),
        ("pfr", (24, 17, 64, 24)),
        ("pfr", (26, 16, 64, 26)),
        ("pfr", (26, 17, 64, 26)),
        ("pfr", (27, 18, 64, 27)),
        ("importance", (10, 64, 10)),
        ("greedy", (8, 16, 64)),
    ]
    return dims, kls, main, sweep_kl, sweep, seed_kls


def fmt_md(rows, info) -> str:
    out = [
        "# Coded sampling benchmark",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} (CPU, "
        f"{info['torch_threads']} threads), Python {info['python']}. Date: {info['date']}.",
        "",
        f"**{info['note']}** Load average at start {info['loadavg_start']:.1f}, "
        f"at end {info.get('loadavg_end', float('nan')):.1f}.",
        "",
        f"Latent: {info['dims']} dims from `raybb.coding.synthetic.make_pair` (35% active dims with "
        "log-normal KL, the rest near zero, 3% posteriors wider than the prior).",
        "",
        "ratio = coded bits / KL bits; mse_ratio and ks/excess_nll compare with exact samples "
        "(exact row = noise level; see benchmarks/coding.py docstring).",
        "",
        "| sampler | params | KL bits | latent seed | coded bits | ratio | encode s | decode s | outliers | blocks "
        "| mse_ratio | excess_nll b/dim | KS D |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['sampler']} | {tuple(r['params'])} | {r['kl_bits']:.0f} | {r.get('latent_seed', '')} | "
            f"{r['coded_bits']} | "
            f"{r['ratio']:.3f} | {r['encode_s']:.2f} | {r['decode_s']:.2f} | {r['n_outliers']} | "
            f"{r['n_blocks']} | {r['mse_ratio']:.4f} | {r['excess_nll']:+.4f} | {r['ks']:.4f} |"
        )
    return "\n".join(out) + "\n"


def fit_table() -> None:
    """Refit the rejection sampler's shipped index table on synthetic latents (6 x 16384 dims)."""
    from raybb.coding import randomness as rnd
    from raybb.coding.rejection import TABLE_FILE, fit_index_table, grs_indices

    samples = []
    for i, density in enumerate([0.1, 0.3, 0.6, 1.0, 1.5, 2.5]):
        m, s = std_pair(16384, 16384 * density, seed=1000 + i)
        k = grs_indices(m, s, rnd.fold_key(77, i, 0, 16), rnd.fold_key(77, i, 0, 17), torch.arange(16384), 4096)
        samples.append(k.numpy())
    t = fit_index_table(
        samples, 4096, 0.01, note="fitted on raybb.coding.synthetic.std_pair, 6 x 16384 dims, 0.1-2.5 bits/dim"
    )
    (ROOT / "raybb" / "coding" / TABLE_FILE).write_text(t.to_json())
    print(f"wrote table id {t.table_id}")


def timing(
    repeats: int,
    device: str = "cpu",
    configs: list[str] | None = None,
    out_stem: str | None = None,
    note: str | None = None,
) -> int:
    """Repeated timing of the default sampler (or ``configs``) at the issue's target point.

    On a GPU the first run includes warm-up (kernel loading); min and median are over all runs.
    Every GPU-encoded payload is also decoded on the CPU, which must give the same floats: the
    bitstream, not the machine, fixes the sample.
    """
    from raybb.coding import DEFAULT_SAMPLER

    info = machine(device, note)
    if device != "cpu" and not note:
        info["note"] = "GPU timings (sampler work on the GPU; block partition and entropy coding on the host CPU)"
    q_cpu, p_cpu = make_pair(200_000, 200_000, seed=207)
    q, p = to_device(q_cpu, device), to_device(p_cpu, device)
    # a synthetic latent is a flat vector: a pipeline's order 0 becomes the flat order (channels 1)
    specs = [resolve_channels(parse_pipeline(c)[0], 1) for c in configs] if configs else [(DEFAULT_SAMPLER, None)]
    results, md_rows = [], []
    for name, params in specs:
        smp = get_sampler(name, params)
        enc_t, dec_t, ratios, cross = [], [], [], []
        for r in range(repeats):
            key = StreamKey(seed=r)
            sync(device)
            t0 = time.perf_counter()
            enc = smp.encode(q, p, key)
            sync(device)
            t1 = time.perf_counter()
            x = smp.decode(p, key, enc.payload)
            sync(device)
            t2 = time.perf_counter()
            assert torch.equal(x, enc.sample)
            if device != "cpu":  # the same bytes decode to the same floats on the CPU
                cross.append(bool(torch.equal(smp.decode(p_cpu, key, enc.payload), enc.sample.cpu())))
            enc_t.append(t1 - t0)
            dec_t.append(t2 - t1)
            ratios.append(enc.stats["coded_bits"] / enc.stats["kl_bits"])
            print(
                f"{name} {tuple(smp.params())} run {r}: encode {enc_t[-1]:.3f}s decode {dec_t[-1]:.3f}s "
                f"ratio {ratios[-1]:.3f} cpu-decode-identical {cross[-1] if cross else '-'} "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        results.append(
            {
                "sampler": name,
                "params": list(smp.params()),
                "encode_s": enc_t,
                "decode_s": dec_t,
                "ratio": ratios,
                "encode_min_s": min(enc_t),
                "encode_median_s": float(np.median(enc_t)),
                "decode_min_s": min(dec_t),
                "decode_median_s": float(np.median(dec_t)),
                "cpu_decode_identical": all(cross) if cross else None,
            }
        )
        md_rows.append(
            f"| {name} {tuple(smp.params())} | {min(enc_t):.3f} | {np.median(enc_t):.3f} | "
            f"{min(dec_t):.3f} | {np.median(dec_t):.3f} | {np.median(ratios):.3f} | "
            f"{('yes' if all(cross) else 'NO') if cross else '-'} |"
        )
    info["loadavg_end"] = os.getloadavg()[0]
    first = results[0]
    res = {
        "machine": info,
        "dims": 200_000,
        "kl_bits": 200_000,
        "runs": results,
        # the default sampler's numbers at the top level, as earlier versions of this file had them
        **{
            k: first[k]
            for k in (
                "sampler",
                "params",
                "encode_s",
                "decode_s",
                "encode_min_s",
                "encode_median_s",
                "decode_min_s",
                "decode_median_s",
            )
        },
    }
    stem = out_stem or ("coding_timing" if device == "cpu" else "coding_timing_gpu")
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1))
    md = (
        f"# Coded sampler timing (200k dims, 200k bits KL, {repeats} runs each)\n\n"
        f"Device: {info['device']}. Host: {info['cpu']}, {info['cores']} cores, torch {info['torch']} with "
        f"{info['torch_threads']} threads, {info['date']}. {info['note']}; load average "
        f"{info['loadavg_start']:.1f} -> {info['loadavg_end']:.1f}.\n\n"
        "| sampler | encode min s | encode median s | decode min s | decode median s | coded/KL "
        "| CPU decode of the payload identical |\n|---|---:|---:|---:|---:|---:|---|\n" + "\n".join(md_rows) + "\n"
    )
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)
    return 0


#: A fifth pfr parameter 0 = the level's channel count (the codec's adaptive coding order).
REAL_CONFIGS = [
    ("pfr", (22, 14, 64, 22, 0)),
    ("pfr", (25, 16, 64, 25, 0)),
    ("pfr", (14, 16, 64, 14, 0)),
    ("importance", (8, 64, 8)),
    ("greedy", (6, 16, 64)),
]


def real_model(path: str, n_images: int, quick: bool, stem: str | None = None) -> int:
    """Coded bits / KL per level on real Kodak latents, mirroring ``Codec.compress_with_stats``.

    Level 2 is coded first; its *decoded* sample drives prior1, so level 1's (q1, p1) depends on
    the sampler, exactly as in the codec.  Images are cropped to 256x256 in ``--quick`` mode.
    ``path`` is a weights file or a registered model name (``pln-q3``).
    """
    from raybb.coding import DiagGaussian
    from raybb.imageio import decode_image
    from raybb.model.ladder import pad_to_stride
    from raybb.model.weights import load_weights
    from raybb.pipelines import resolve_channels as _resolve_channels  # "order 0 = this level's channels"
    from raybb.registry import resolve_model

    info = machine()
    path = str(resolve_model(path))
    loaded = load_weights(path)
    model = loaded.model.eval().requires_grad_(False)
    info["model"] = {"path": str(path), "fingerprint": loaded.fingerprint[:16], "name": loaded.meta.get("name", "")}
    from benchmarks._paths import KODAK as kodak

    files = sorted(kodak.glob("kodim*.png"))[:n_images]
    rows = []

    def flat(g) -> DiagGaussian:
        return DiagGaussian(g.mean.reshape(-1).contiguous().float(), g.std.reshape(-1).contiguous().float())

    with torch.no_grad():
        for f in files:
            rgb = decode_image(f.read_bytes())
            if quick:
                rgb = rgb[:256, :256]
            x, _ = pad_to_stride(torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div_(255.0)[None])
            bu = model.bottom_up(x)
            q2 = model.posterior2(bu)
            p2 = model.prior2_like(q2)
            for name, params in REAL_CONFIGS:
                smp2 = get_sampler(*_resolve_channels((name, params), q2.mean.shape[1]))
                row = {"image": f.name, "sampler": name, "params": list(params or smp2.params())}
                t0 = time.perf_counter()
                e2 = smp2.encode(flat(q2), flat(p2), StreamKey(11, 0, 2))
                z2 = e2.sample.reshape(q2.mean.shape)
                p1 = model.prior1(z2)
                q1 = model.posterior1(bu, p1)
                smp = get_sampler(*_resolve_channels((name, params), q1.mean.shape[1]))
                e1 = smp.encode(flat(q1), flat(p1), StreamKey(11, 0, 1))
                t1 = time.perf_counter()
                d2 = smp2.decode(flat(p2), StreamKey(11, 0, 2), e2.payload)
                d1 = smp.decode(flat(model.prior1(d2.reshape(q2.mean.shape))), StreamKey(11, 0, 1), e1.payload)
                t2 = time.perf_counter()
                assert torch.equal(d1, e1.sample) and torch.equal(d2, e2.sample)
                for lvl, e, q, p in ((2, e2, q2, p2), (1, e1, q1, p1)):
                    kl = float(kl_bits(flat(q), flat(p)).sum())
                    row[f"dims{lvl}"] = q.mean.numel()
                    row[f"kl{lvl}"] = kl
                    row[f"coded{lvl}"] = e.stats["coded_bits"]
                    row[f"ratio{lvl}"] = e.stats["coded_bits"] / max(kl, 1e-9)
                    row[f"outliers{lvl}"] = e.stats.get("n_outliers", 0)
                    row[f"blocks{lvl}"] = e.stats.get("n_blocks", 0)
                row["ratio"] = (row["coded1"] + row["coded2"]) / (row["kl1"] + row["kl2"])
                row["encode_s"], row["decode_s"] = t1 - t0, t2 - t1
                row["mse_ratio1"] = fidelity(e1.sample, flat(q1), flat(p1), kl_bits(flat(q1), flat(p1)) <= LOWKL)[
                    "mse_ratio"
                ]
                rows.append(row)
                print(
                    f"{f.name} {name} {tuple(row['params'])} L2 {row['coded2']}/{row['kl2']:.0f}="
                    f"{row['ratio2']:.3f} L1 {row['coded1']}/{row['kl1']:.0f}={row['ratio1']:.3f} "
                    f"enc {row['encode_s']:.2f}s dec {row['decode_s']:.2f}s",
                    flush=True,
                )
    info["loadavg_end"] = os.getloadavg()[0]
    stem = stem or ("coding_real_quick" if quick else "coding_real")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    out = [
        "# Coded sampling on real latents (Kodak)",
        "",
        f"Model `{Path(path).name}` (fingerprint {info['model']['fingerprint']}), "
        f"{'256x256 crops' if quick else 'full images'}. {info['cpu']}, {info['cores']} cores, torch "
        f"{info['torch']} ({info['torch_threads']} threads), {info['date']}. **{info['note']}** Load "
        f"{info['loadavg_start']:.1f} -> {info['loadavg_end']:.1f}.",
        "",
        "ratio = coded bits / KL bits per level; encode/decode s are both levels (incl. prior1). A fifth pfr "
        "parameter 0 = the level's channel count (adaptive coding order, as in the codec). L1 mse_ratio: "
        "sum((z - mu_q)^2 / sigma_p^2) / sum(sigma_q^2 / sigma_p^2) on level 1, 1.0 in expectation for exact "
        "samples.",
        "",
        "| image | sampler | params | L2 dims | L2 KL | L2 coded | L2 ratio | L1 dims | L1 KL | L1 coded "
        "| L1 ratio | L1 outliers | total ratio | encode s | decode s | L1 mse_ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['image']} | {r['sampler']} | {tuple(r['params'])} | {r['dims2']} | {r['kl2']:.0f} | "
            f"{r['coded2']} | {r['ratio2']:.3f} | {r['dims1']} | {r['kl1']:.0f} | {r['coded1']} | "
            f"{r['ratio1']:.3f} | {r['outliers1']} | {r['ratio']:.3f} | {r['encode_s']:.2f} | "
            f"{r['decode_s']:.2f} | {r['mse_ratio1']:.4f} |"
        )
    md = "\n".join(out) + "\n"
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fit-rejection-table", action="store_true")
    ap.add_argument(
        "--timing",
        type=int,
        default=0,
        metavar="R",
        help="only time the default sampler R times on 200k dims / 200k bits (min/median)",
    )
    ap.add_argument("--real-model", metavar="PATH", help="measure on real Kodak latents of this model file")
    ap.add_argument("--images", type=int, default=3, help="Kodak images for --real-model")
    ap.add_argument("--device", default="cpu", help="torch device for --timing, e.g. cuda")
    ap.add_argument("--note", help="what else ran on the machine during the run (goes into the results)")
    ap.add_argument(
        "--configs",
        nargs="+",
        metavar="NAME:P1,P2,...",
        help="only these samplers (e.g. pfr:22,16,64,22) on 200k dims / 200k bits -> coding_configs.*",
    )
    ap.add_argument("--stem", help="results file stem under benchmarks/results (default by mode)")
    ap.add_argument(
        "--latent-seeds",
        type=int,
        default=1,
        metavar="S",
        help="with --configs: repeat on S synthetic latents (make_pair seeds 0..S-1; default: seed 7)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.real_model:
        return real_model(args.real_model, args.images, args.quick, args.stem)
    if args.fit_rejection_table:
        fit_table()
        return 0
    if args.timing:
        return timing(args.timing, args.device, args.configs, note=args.note)
    dims, kls, main_cfgs, sweep_kl, sweep, seed_kls = plan(args.quick)
    stem = args.stem or ("coding_quick" if args.quick else "coding")
    if args.configs:
        stem = args.stem or "coding_configs"
        kls, sweep = [200_000], []
        seed_kls = kls
        # "pfr:22,16,64,22" -> ("pfr", (22, ...)); a flat latent: order 0 is the flat order
        main_cfgs = [resolve_channels(parse_pipeline(c)[0], 1) for c in args.configs]
    info = machine(note=args.note)
    info["dims"] = dims
    rows = []

    def emit(row, latent_seed):
        row["latent_seed"] = latent_seed
        rows.append(row)
        print(
            f"{row['sampler']:>10} {str(tuple(row['params'])):>18} KL={row['kl_bits']:>7.0f} "
            f"ratio={row['ratio']:.3f} enc={row['encode_s']:.2f}s dec={row['decode_s']:.2f}s "
            f"mse_ratio={row['mse_ratio']:.4f} excess_nll={row['excess_nll']:+.4f} ks={row['ks']:.4f}",
            flush=True,
        )

    for kl in kls:
        latents = [int(kl) % 1000 + 7] if args.latent_seeds <= 1 else list(range(args.latent_seeds))
        for latent_seed in latents:
            q, p = make_pair(dims, kl, seed=latent_seed)
            emit(exact_row(q, p, kl), latent_seed)
            for name, params in main_cfgs:
                if name != "pfr" and kl not in seed_kls:
                    continue
                emit(run_one(name, params, q, p, kl), latent_seed)
            if kl == sweep_kl:
                for name, params in sweep:
                    emit(run_one(name, params, q, p, kl), latent_seed)
    info["loadavg_end"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    md = fmt_md(rows, info)
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
