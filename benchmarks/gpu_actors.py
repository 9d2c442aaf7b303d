"""GPU actors, measured: `raybb bucket compress --gpu yes` over a local folder, with and without --verify.

One command on a GPU machine (H100/H200; one actor per GPU):

    python benchmarks/gpu_actors.py                          # -> benchmarks/results/gpu_actors.{md,json}

It builds the inputs in a temp folder from the Kodak images (evaluation data: nothing is trained):
``--n`` Kodak-size images (768x512; the 24 photos flipped/rotated/shifted into distinct files) and
``--n-large`` 24 MP images (6000x4000, Kodak upsampled), then runs the real job
(``raybb.distributed.compress_bucket``, what the CLI calls) once per input set and ``--verify``
setting. Reported per run: images/s and MP/s (overall and per GPU), the codec's own time
(``encode_seconds`` from the manifest) against the actors' wall time (the rest is reading,
decoding the source, metrics, writing, and Ray), and GPU memory/utilisation sampled with
``nvidia-smi`` every second.

A dry run on CPU (checks the script end to end; its numbers say nothing about GPUs):

    python benchmarks/gpu_actors.py --gpu no --n 4 --n-large 1 --large-size 384x256 --out /tmp/gpu_dry
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))


def make_inputs(kodak: Path, out: Path, n: int, n_large: int, large: tuple[int, int]) -> dict[str, Path]:
    """``out/kodak`` (n files, 768x512 or 512x768) and ``out/large`` (n_large files, W x H)."""
    from PIL import Image

    files = sorted(kodak.glob("kodim*.png"))
    if not files:
        raise SystemExit(f"no Kodak images in {kodak} (--kodak-dir)")
    imgs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    (out / "kodak").mkdir(parents=True)
    (out / "large").mkdir(parents=True)
    for i in range(n):
        im = imgs[i % len(imgs)]
        v = i // len(imgs)
        im = np.flip(im, axis=1) if v % 2 else im
        im = np.flip(im, axis=0) if (v // 2) % 2 else im
        im = np.roll(im, shift=(v // 4) * 8, axis=1)  # distinct content per variant
        Image.fromarray(np.ascontiguousarray(im)).save(out / "kodak" / f"k{i:05d}.png", compress_level=1)
    w, h = large
    for i in range(n_large):
        im = Image.fromarray(imgs[i % len(imgs)]).resize((w, h), Image.BICUBIC)
        im.save(out / "large" / f"l{i:03d}.png", compress_level=1)
    return {"kodak": out / "kodak", "large": out / "large"}


class GpuSampler:
    """nvidia-smi every second: peak memory used (MiB) and mean utilisation (%) per GPU."""

    def __init__(self) -> None:
        self.samples: list[list[tuple[float, float]]] = []
        self._proc = None
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits", "-l", "1"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            self._t = threading.Thread(target=self._read, daemon=True)
            self._t.start()

    def _read(self) -> None:
        batch: list[tuple[float, float]] = []
        ngpu = None
        for line in self._proc.stdout:  # type: ignore[union-attr]
            mem, util = (float(x) for x in line.strip().split(","))
            batch.append((mem, util))
            ngpu = ngpu or int(os.environ.get("RAYBB_NGPU", "0")) or _gpu_count()
            if len(batch) == ngpu:
                self.samples.append(batch)
                batch = []

    def stop(self) -> dict:
        if self._proc is None:
            return {}
        self._proc.terminate()
        self._proc.wait(timeout=10)
        if not self.samples:
            return {}
        arr = np.array(self.samples)  # (t, gpu, 2)
        return {
            "gpu_mem_peak_mib": [float(x) for x in arr[:, :, 0].max(axis=0)],
            "gpu_util_mean_pct": [round(float(x), 1) for x in arr[:, :, 1].mean(axis=0)],
        }


def _gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        return max(1, len([x for x in out.splitlines() if x.startswith("GPU ")]))
    except (OSError, subprocess.SubprocessError):
        return 1


def _gpu_names() -> list[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        return [x.strip() for x in out.splitlines() if x.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def run_one(src: Path, dst: Path, *, gpu: bool, workers: int | None, verify: bool, model: str | None,
            sampler: str | None, shard_size: int) -> dict:  # fmt: skip
    from raybb.distributed import compress_bucket
    from raybb.storage import read_manifest

    sampler_gpu = GpuSampler() if gpu else None
    t0 = time.monotonic()
    s = compress_bucket(
        str(src), str(dst), gpu=gpu, workers=workers, verify=verify, model=model, sampler=sampler,
        shard_size=shard_size, resume=False,
    )  # fmt: skip
    wall = time.monotonic() - t0
    gpu_stats = sampler_gpu.stop() if sampler_gpu else {}
    df = read_manifest(s.manifest, columns=["status", "width", "height", "encode_seconds", "bpp"]).to_pandas()
    ok = df[df["status"] == "ok"]
    n_workers = s.num_workers
    codec_s = float(ok["encode_seconds"].sum())
    return {
        "images": int(s.processed),
        "ok": int(s.ok),
        "errors": int(s.errors),
        "workers": n_workers,
        "gpu": s.use_gpu,
        "verify": verify,
        "job_seconds": round(s.seconds, 2),  # from the first shard sent to the last row received
        "wall_seconds_incl_actor_start": round(wall, 2),
        "images_per_s": round(s.images_per_s, 3),
        "images_per_s_per_worker": round(s.images_per_s / n_workers, 3),
        "mp_per_s": round(s.mp_per_s, 3),
        "mp_per_s_per_worker": round(s.mp_per_s / n_workers, 3),
        "mean_megapixels": round(float((ok["width"] * ok["height"]).mean() / 1e6), 3) if len(ok) else None,
        "mean_bpp": round(float(ok["bpp"].mean()), 4) if len(ok) else None,
        # codec time (encode, as the codec reports it) vs. the time actors were busy in total
        "codec_seconds_total": round(codec_s, 2),
        "codec_share_of_actor_time": round(codec_s / (s.seconds * n_workers), 3) if s.seconds else None,
        **gpu_stats,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kodak-dir", default=str(REPO.parent / "shared" / "datasets" / "kodak"))
    p.add_argument("--n", type=int, default=300, help="Kodak-size images")
    p.add_argument("--n-large", type=int, default=4, help="24 MP images")
    p.add_argument("--large-size", default="6000x4000", help="WxH of the large images")
    p.add_argument("--gpu", choices=["yes", "no"], default="yes")
    p.add_argument("--workers", type=int, default=None, help="actors (default: one per GPU)")
    p.add_argument("--model", default=None)
    p.add_argument("--sampler", default=None)
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--out", default=str(HERE / "results" / "gpu_actors"))
    a = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from raybb.evaluation import machine_info

    gpu = a.gpu == "yes"
    w, h = (int(x) for x in a.large_size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="raybb-gpu-bench-"))
    runs = []
    try:
        inputs = make_inputs(Path(a.kodak_dir), tmp / "in", a.n, a.n_large, (w, h))
        for name, src in inputs.items():
            if not any(src.iterdir()):
                continue
            for verify in (False, True):
                r = run_one(src, tmp / f"out-{name}-{int(verify)}", gpu=gpu, workers=a.workers, verify=verify,
                            model=a.model, sampler=a.sampler, shard_size=a.shard_size)  # fmt: skip
                r["set"] = name
                runs.append(r)
                print(json.dumps(r), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    info = {
        "machine": machine_info(),
        "gpus": _gpu_names() if gpu else [],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/gpu_actors.py " + " ".join(sys.argv[1:]),
        "model": a.model or "default",
        "sampler": a.sampler or "default",
        "runs": runs,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    lines = [
        "# raybb bucket compress on GPU actors" if gpu else "# raybb bucket compress, CPU actors (dry run)",
        "",
        f"Machine: {info['machine']['cpu']}, {info['machine']['cpu_count']} cores; GPUs: "
        f"{', '.join(info['gpus']) or 'none'}. Date: {info['date']}. Command: `{info['command']}`.",
        f"Model: {info['model']}, sampler: {info['sampler']}, shards of {a.shard_size} images.",
        "",
        "| set | verify | images | workers | img/s | img/s per worker | MP/s per worker | codec share of actor time"
        " | GPU mem peak MiB | GPU util % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['set']} ({r['mean_megapixels']} MP) | {'yes' if r['verify'] else 'no'} | {r['images']} "
            f"| {r['workers']} | {r['images_per_s']} | {r['images_per_s_per_worker']} | {r['mp_per_s_per_worker']} "
            f"| {r['codec_share_of_actor_time']} | {r.get('gpu_mem_peak_mib', '-')} "
            f"| {r.get('gpu_util_mean_pct', '-')} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
