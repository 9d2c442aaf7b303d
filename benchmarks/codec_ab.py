"""Two checkouts of raybb on the same images: identical bytes and pixels, encode/decode time, peak RSS.

    python benchmarks/codec_ab.py --a /path/to/old/checkout --b . [--model pln-q3] [--repeats 3]
        # -> benchmarks/results/codec_ab.{md,json}

Used to check that a refactoring of the codec changes nothing a user sees. Two measurements, each
in fresh subprocesses with one torch thread (``PYTHONPATH`` = the checkout):

* ``speed``: a Kodak image (``--kodak-image``, default kodim01) compressed with
  ``Codec.compress`` (effort 0) and decompressed, ``--repeats`` times after a warm-up, the two
  checkouts interleaved; median seconds and the SHA-256 of the stream;
* ``memory``: ``python -m raybb compress`` / ``decompress`` of a synthetic ``--mp`` megapixel image
  (3:2, smooth + noise; coded in tiles at the default budget) under ``/usr/bin/time -v``: peak RSS
  and wall seconds, and whether the two checkouts wrote the same .rbb and .png bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._paths import KODAK  # noqa: E402

_SPEED = r"""
import hashlib, json, sys, time, torch
torch.set_num_threads(1)
from raybb.codec import load_codec
from raybb.imageio import load_image
img = load_image(sys.argv[1]); c = load_codec(sys.argv[2]); n = int(sys.argv[3])
c.decompress(c.compress(img))
enc, dec = [], []
for _ in range(n):
    t = time.perf_counter(); d = c.compress(img); enc.append(time.perf_counter() - t)
    t = time.perf_counter(); c.decompress(d); dec.append(time.perf_counter() - t)
print(json.dumps({"encode_s": enc, "decode_s": dec, "sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)}))
"""


def _run_speed(tree: Path, image: Path, model: str, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", _SPEED, str(image), model, str(repeats)], env=env,
                       capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(r.stdout.strip().splitlines()[-1])


def _timed(tree: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "raybb", *args], env=env,
                       capture_output=True, text=True, check=True)  # fmt: skip
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", r.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return {"peak_rss_mib": rss / 1024, "wall_s": seconds}


def _synthetic(path: Path, mp: float) -> None:
    import numpy as np
    from PIL import Image

    w = int(round((mp * 1e6 * 1.5) ** 0.5))
    h = int(round(mp * 1e6 / w))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 90 * np.sin(xx / 37.0), 128 + 80 * np.cos(yy / 23.0), (xx + yy) % 256], -1)
    Image.fromarray(np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="checkout A (e.g. the code before a change)")
    ap.add_argument("--b", default=str(ROOT), help="checkout B (default: this one)")
    ap.add_argument("--model", default="pln-q3")
    ap.add_argument("--kodak-image", default=str(KODAK / "kodim01.png"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mp", type=float, default=6.0)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "codec_ab"))
    a = ap.parse_args()
    from raybb.evaluation import machine_info

    trees = {"A": Path(a.a).resolve(), "B": Path(a.b).resolve()}
    speed: dict[str, list[dict]] = {"A": [], "B": []}
    for _ in range(2):  # interleaved: A, B, A, B
        for k, tree in trees.items():
            speed[k].append(_run_speed(tree, Path(a.kodak_image), a.model, a.repeats))
    memory: dict[str, dict] = {}
    outputs: dict[str, tuple[bytes, bytes]] = {}
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "big.png"
        _synthetic(src, a.mp)
        for k, tree in trees.items():
            rbb, png = Path(d) / f"{k}.rbb", Path(d) / f"{k}.png"
            enc = _timed(tree, ["compress", str(src), "-o", str(rbb), "--model", a.model, "--seed", "1"])
            dec = _timed(tree, ["decompress", str(rbb), "-o", str(png), "--model", a.model])
            memory[k] = {"encode": enc, "decode": dec}
            outputs[k] = (rbb.read_bytes(), png.read_bytes())
    mi = machine_info()
    rows = {
        k: {
            "encode_median_s": statistics.median(s for run in speed[k] for s in run["encode_s"]),
            "decode_median_s": statistics.median(s for run in speed[k] for s in run["decode_s"]),
            "sha256": speed[k][0]["sha256"],
            "memory": memory[k],
        }
        for k in trees
    }
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": mi,
        "command": "python benchmarks/codec_ab.py " + " ".join(sys.argv[1:]),
        "trees": {k: str(v) for k, v in trees.items()},
        "model": a.model,
        "kodak_image": Path(a.kodak_image).name,
        "same_kodak_stream": rows["A"]["sha256"] == rows["B"]["sha256"],
        "same_big_rbb": outputs["A"][0] == outputs["B"][0],
        "same_big_png": outputs["A"][1] == outputs["B"][1],
        "big_sha256": hashlib.sha256(outputs["B"][0]).hexdigest(),
        "rows": rows,
        "note": a.note,
    }
    Path(a.out + ".json").write_text(json.dumps(result, indent=1, default=str))
    lines = [
        "# Codec A/B: two checkouts on the same images",
        "",
        f"{result['date']}; {mi['cpu']}, {mi['cpu_count']} cores, torch {mi['torch']}; one torch thread.",
        f"Command: `{result['command']}`.",
        f"A = `{trees['A']}`, B = `{trees['B']}`. {a.note}",
        "",
        f"{Path(a.kodak_image).name} with {a.model} (effort 0, {2 * a.repeats} runs per tree): same stream "
        f"{result['same_kodak_stream']}. {a.mp:g} MP synthetic image through the CLI: same .rbb "
        f"{result['same_big_rbb']}, same .png {result['same_big_png']}.",
        "",
        "| tree | encode median s | decode median s | big encode peak RSS MiB | big encode s "
        "| big decode peak RSS MiB | big decode s |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, r in rows.items():
        m = r["memory"]
        lines.append(
            f"| {k} | {r['encode_median_s']:.3f} | {r['decode_median_s']:.3f} | "
            f"{m['encode']['peak_rss_mib']:.0f} | {m['encode']['wall_s']:.1f} | "
            f"{m['decode']['peak_rss_mib']:.0f} | {m['decode']['wall_s']:.1f} |"
        )
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
