"""Driver memory of a bucket job against the number of images: is it flat?

The real driver (``raybb.distributed.compress_bucket``: streamed listing, shard plan, Ray actors,
manifest dataset) runs over a *synthetic* bucket of N keys, with a stand-in codec, so that only
the driver's own costs are measured:

* source: ``raybbsynth://src/n<N>``, an fsspec filesystem of ``d<5 digits>/i<7 digits>.png``
  folders of 1000 keys each (listed one folder at a time, like a prefix-delimited S3 listing);
  every object is the same 8x8 PNG;
* destination: ``raybbsynth://sink/n<N>``: writes are dropped; its listing reports every
  ``<key>.rbb`` (so the resume pass finds every output);
* codec: :func:`standin_codec` (no model): fixed bytes, the image as its own reconstruction;
* manifest: a real Parquet dataset on local disk.

Each N runs in a fresh process: (1) a fresh job over all N keys, (2) the same job again, which
streams the manifest and the destination listing to build the resume set and sends nothing to
the actors. Peak RSS of the driver process is sampled every 50 ms (``/proc/self/status``), and
reported above the baseline after Ray is up and the modules are imported.

    python benchmarks/manifest_scale.py                 # 10k, 100k, 1M keys -> results/manifest_scale.*
    python benchmarks/manifest_scale.py --keys 2000 --out /tmp/x   # a quick check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import fsspec
import numpy as np
from fsspec.spec import AbstractFileSystem

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PER_DIR = 1000


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


_PNG = _png()


class SynthFS(AbstractFileSystem):
    """``src/n<N>`` and ``sink/n<N>``: N keys in folders of 1000, generated on demand (no storage)."""

    protocol = "raybbsynth"
    cachable = True

    @staticmethod
    def _parse(path: str) -> tuple[str, int, list[str]]:
        parts = path.strip("/").split("/")
        kind, n = parts[0], int(parts[1][1:])
        return kind, n, parts[2:]

    def ls(self, path, detail=True, **kwargs):
        kind, n, rest = self._parse(self._strip_protocol(path))
        base = path.strip("/")
        if not rest:
            out = [{"name": f"{base}/d{d:05d}", "type": "directory", "size": 0} for d in range(-(-n // PER_DIR))]
        elif len(rest) == 1:
            d = int(rest[0][1:])
            suffix = ".png.rbb" if kind == "sink" else ".png"
            size = len(_PNG) if kind == "src" else 16
            out = [
                {"name": f"{base}/i{i:07d}{suffix}", "type": "file", "size": size}
                for i in range(d * PER_DIR, min(n, (d + 1) * PER_DIR))
            ]
        else:
            raise FileNotFoundError(path)
        return out if detail else [e["name"] for e in out]

    def cat_file(self, path, start=None, end=None, **kwargs):
        if self._parse(self._strip_protocol(path))[0] != "src":
            raise FileNotFoundError(path)
        return _PNG[start:end]

    def pipe_file(self, path, value, **kwargs):
        return None  # the sink drops what the actors write

    def exists(self, path, **kwargs):
        return False  # actors then never take the "already there" path

    def invalidate_cache(self, path=None):
        return None


fsspec.register_implementation("raybbsynth", SynthFS, clobber=True)


class StandinCodec:
    """What the actor needs from a codec, without a model: fixed output, no compute."""

    fingerprint = "0" * 16
    model_name = "standin"
    sampler_name = "none"

    def compress_with_stats(self, rgb):
        return SimpleNamespace(
            data=b"\x89RBB-standin", bpp=0.1, psnr=40.0, ms_ssim=0.99, kl_bits=1.0, reconstruction=rgb,
            encode_seconds=0.0,
        )  # fmt: skip

    def decompress(self, data):
        raise ValueError("stand-in codec does not decode")


def standin_codec(model=None, sampler=None, device="cpu"):  # noqa: ARG001 - the factory signature
    return StandinCodec()


# ------------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024 if m else float("nan")


class PeakRss:
    """Samples this process's RSS every ``period`` s in a thread; ``peak`` since the last reset."""

    def __init__(self, period: float = 0.05) -> None:
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._t.start()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self.peak = max(self.peak, _rss_mb())

    def reset(self) -> float:
        self.peak = _rss_mb()
        return self.peak

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def child(n: int, workers: int, shard_size: int, raybb_dir: str) -> dict:
    """One N in this process: fresh job, then the resume pass. Prints a JSON line."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), raybb_dir, os.environ.get("PYTHONPATH", "")])
    sys.path[:0] = [raybb_dir]
    from raybb.distributed.driver import compress_bucket, init_ray

    init_ray(num_cpus=2)
    tmp = Path(tempfile.mkdtemp(prefix="raybb-mscale-"))
    manifest = str(tmp / "_manifest.parquet")
    kw = dict(
        manifest=manifest, workers=workers, gpu=False, shard_size=shard_size, flush_rows=10000,
        codec_factory="manifest_scale:standin_codec", max_in_flight=2 * workers,
    )  # fmt: skip
    import gc

    gc.collect()
    rss = PeakRss()
    base = rss.reset()
    t0 = time.monotonic()
    s1 = compress_bucket(f"raybbsynth://src/n{n}", f"raybbsynth://sink/n{n}", **kw)
    t1 = time.monotonic()
    peak1 = rss.peak
    gc.collect()
    base2 = rss.reset()
    s2 = compress_bucket(f"raybbsynth://src/n{n}", f"raybbsynth://sink/n{n}", **kw)
    t2 = time.monotonic()
    peak2 = rss.peak
    rss.stop()
    files = sorted(Path(manifest).glob("*.parquet")) if Path(manifest).is_dir() else [Path(manifest)]
    out = dict(
        keys=n,
        fresh=dict(ok=s1.ok, seconds=round(t1 - t0, 1), baseline_mb=round(base, 1), peak_mb=round(peak1, 1)),
        resume=dict(
            already_done=s2.already_done, processed=s2.processed, seconds=round(t2 - t1, 1),
            baseline_mb=round(base2, 1), peak_mb=round(peak2, 1),
        ),
        manifest_layout="dataset (folder)" if Path(manifest).is_dir() else "single file",
        manifest_files=len(files),
        manifest_mb=round(sum(f.stat().st_size for f in files) / 2**20, 2),
    )  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    assert s1.ok == n and s2.already_done == n and s2.processed == 0, out
    print("RESULT " + json.dumps(out), flush=True)
    return out


def _commit(path: str) -> str:
    try:
        out = subprocess.run(["git", "-C", path, "log", "-1", "--format=%h %s"], capture_output=True, text=True)
        return f"{path} ({out.stdout.strip()[:80]})" if out.returncode == 0 else path
    except OSError:
        return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--out", default=str(HERE / "results" / "manifest_scale"))
    p.add_argument(
        "--raybb", default=str(REPO), help="folder holding the raybb package to measure (e.g. an older export)"
    )
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child is not None:
        child(a.child, a.workers, a.shard_size, a.raybb)
        return 0

    sys.path.insert(0, str(REPO))
    from raybb.evaluation import machine_info

    rows = []
    for n in a.keys:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(n),
            "--workers",
            str(a.workers),
            "--shard-size",
            str(a.shard_size),
            "--raybb",
            a.raybb,
        ]
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        # cwd: Ray puts the driver's working directory first on its workers' sys.path
        r = subprocess.run(cmd, env=env, cwd=a.raybb, capture_output=True, text=True, timeout=7200)
        line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            print(r.stdout[-3000:], r.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(line[len("RESULT ") :]))
        print(rows[-1], flush=True)

    info = dict(
        machine=machine_info(), date=datetime.now(UTC).isoformat(timespec="seconds"),
        command="python benchmarks/manifest_scale.py " + " ".join(sys.argv[1:]),
        workers=a.workers, shard_size=a.shard_size, flush_rows=10000, rows=rows, raybb=_commit(a.raybb),
    )  # fmt: skip
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    lines = [
        "# Driver memory vs. number of images (streamed listing, stand-in codec)",
        "",
        f"Machine: {info['machine']['cpu']}, {os.cpu_count()} cores (shared with other jobs). "
        f"Date: {info['date']}. Command: `{info['command']}`.",
        f"raybb at {info['raybb']}. {a.workers} CPU actors, shards of {a.shard_size} keys, "
        "manifest files of up to 10000 rows.",
        "RSS of the driver process above its baseline after `ray.init` and imports, peak sampled every 50 ms.",
        "",
        "| keys | fresh run s | fresh peak RSS MB (+ over base) | resume s | resume peak RSS MB (+ over base) |"
        " manifest layout | files | MB |",
        "|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        f, s = r["fresh"], r["resume"]
        lines.append(
            f"| {r['keys']:,} | {f['seconds']} | {f['peak_mb']} (+{f['peak_mb'] - f['baseline_mb']:.1f}) "
            f"| {s['seconds']} | {s['peak_mb']} (+{s['peak_mb'] - s['baseline_mb']:.1f}) "
            f"| {r['manifest_layout']} | {r['manifest_files']} | {r['manifest_mb']} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
