"""Pack training photos into a folder small enough to travel to the GPU machine with the repo.

The device tool copies the working tree (tracked files + carried paths) and nothing else, at most
64 MiB in all; ``../shared`` does not travel. The repository itself is ~39 MB (36 MB of it the
shipped PLN weights), and a float16 channel-ladder checkpoint to resume from is ~16 MB, so the
training photos must fit in what is left (``--max-mb``, 8 by default). The pack holds a seeded
random subset of the training photos (cid22/validation excluded: it is the held-out split),
re-encoded as JPEG (4:4:4, ``--quality``, optionally downscaled by ``--scale``), plus the first
``--val-count`` held-out images for validation, and ``pack.json`` naming every source file and its
SHA-256. Kodak is never packed.

    python tools/pack_train_data.py --out .gpu/data            # then: carry .gpu (see docs/training-gpu.md)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import subprocess
import sys
from pathlib import Path

from PIL import Image

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".ppm", ".bmp")


def _images(root: Path, exclude: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and not any(e in str(p) for e in exclude))


def _encode(path: Path, scale: float, quality: int) -> tuple[bytes, tuple[int, int]]:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if scale != 1.0:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality, subsampling=0)
        return buf.getvalue(), im.size


def pack(
    src: Path, out: Path, *, val: Path | None, val_count: int, exclude: tuple[str, ...], max_mb: float,
    quality: int, scale: float, min_side: int, seed: int,
) -> dict:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("train", "val"):
        (out / sub).mkdir(exist_ok=True)
        for old in (out / sub).glob("*.jpg"):
            old.unlink()
    budget = int(max_mb * 1e6)
    entries = {"train": [], "val": []}
    total = 0
    if val is not None and val_count:
        for p in _images(val, ())[:val_count]:
            data, (w, h) = _encode(p, 1.0, 95)  # validation: native size, q95
            name = f"{len(entries['val']):04d}.jpg"
            (out / "val" / name).write_bytes(data)
            total += len(data)
            entries["val"].append({"file": name, "source": str(p.relative_to(val.parent)),
                                   "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": [w, h]})  # fmt: skip
    paths = _images(src, exclude)
    random.Random(seed).shuffle(paths)
    skipped = 0
    for p in paths:
        data, (w, h) = _encode(p, scale, quality)
        if min(w, h) < min_side:
            skipped += 1
            continue
        if total + len(data) > budget:
            continue
        name = f"{len(entries['train']):04d}.jpg"
        (out / "train" / name).write_bytes(data)
        total += len(data)
        entries["train"].append({"file": name, "source": str(p.relative_to(src)),
                                 "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": [w, h]})  # fmt: skip
    info = {
        "format": "raybb.train-pack/1",
        "source_root": str(src),
        "excluded": list(exclude),
        "candidates": len(paths),
        "too_small": skipped,
        "train_images": len(entries["train"]),
        "train_pixels": sum(e["size"][0] * e["size"][1] for e in entries["train"]),
        "val_images": len(entries["val"]),
        "bytes": total,
        "jpeg_quality": quality,
        "scale": scale,
        "seed": seed,
        "files": entries,
    }
    (out / "pack.json").write_text(json.dumps(info, indent=1))
    return info


LIMIT = 64 * 2**20  # what the device tool carries: tracked + untracked-not-ignored files + carried paths


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def travel_size(repo: Path, carried: list[Path]) -> int:
    """Bytes the device tool would copy: files git does not ignore, plus the carried paths."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout  # fmt: skip
    files = [repo / f for f in out.decode().split("\0") if f]
    return sum(f.stat().st_size for f in files if f.is_file()) + sum(_size(c) for c in carried)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=Path("../shared/datasets/train"))
    p.add_argument("--exclude", nargs="*", default=["cid22/validation"])
    p.add_argument("--val", type=Path, default=Path("../shared/datasets/train/cid22/validation"))
    p.add_argument("--val-count", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path(".gpu/data"))
    p.add_argument("--max-mb", type=float, default=8.0)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--min-side", type=int, default=256, help="drop images smaller than the training patch")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not a.src.is_dir():
        print(f"no training photos at {a.src}", file=sys.stderr)
        return 2
    info = pack(a.src, a.out, val=a.val if a.val.is_dir() else None, val_count=a.val_count,
                exclude=tuple(a.exclude), max_mb=a.max_mb, quality=a.quality, scale=a.scale,
                min_side=a.min_side, seed=a.seed)  # fmt: skip
    print(f"{info['train_images']} of {info['candidates']} training images ({info['train_pixels'] / 1e6:.1f} M px), "
          f"{info['val_images']} validation images, {info['bytes'] / 1e6:.1f} MB in {a.out}")  # fmt: skip
    try:
        total = travel_size(Path.cwd(), [a.out.parent])
    except (OSError, subprocess.SubprocessError, ValueError) as e:  # not a git checkout
        print(f"(could not size the working tree: {e})")
        return 0
    print(f"working tree that travels with carry={a.out.parent}: {total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB"
          + ("  -- TOO LARGE: lower --max-mb or carry less" if total > LIMIT else ""))  # fmt: skip
    return 0 if total <= LIMIT else 3


if __name__ == "__main__":
    sys.exit(main())
