"""Training images: listing from a folder or any fsspec URL, preloading, random patches.

Storage goes through ``raybb.storage`` like the batch jobs' (``AWS_ENDPOINT_URL``, retries), with
``storage_options`` passed explicitly: nothing changes fsspec's process-wide configuration.

Images are decoded once into uint8 tensors (the 750 training photos take ~450 MB) because a
2-core machine cannot afford to decode JPEG/PNG on every step. Each data-parallel worker loads
only its own part (``shard=(rank, world_size)``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raybb.imageio import IMAGE_SUFFIXES, decode_image
from raybb.storage import iter_objects, read_bytes, resolve

Options = Mapping[str, Any] | None

__all__ = ["list_images", "dataset_fingerprint", "PatchSampler", "load_images"]


def list_images(roots: list[str] | str, exclude: tuple[str, ...] = (), storage_options: Options = None) -> list[str]:
    """Every image file under each root (folder path or fsspec URL), sorted, minus ``exclude`` substrings."""
    if isinstance(roots, str):
        roots = [roots]
    out: list[str] = []
    for root in roots:
        loc = resolve(root, storage_options)
        for obj in iter_objects(loc, IMAGE_SUFFIXES, include_hidden=True):
            p = loc.path(obj.key)
            if not any(e in p for e in exclude):
                out.append(p if loc.is_local else f"{loc.protocol}://{p.lstrip('/')}")
    return sorted(set(out))


def _read(url: str, storage_options: Options = None) -> bytes:
    return read_bytes(resolve(url, storage_options), "")


def dataset_fingerprint(paths: list[str], storage_options: Options = None) -> str:
    """SHA-256 over the sorted (basename, content hash) pairs: names the exact data a model saw."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.rsplit("/", 1)[-1].encode() + b"\0" + hashlib.sha256(_read(p, storage_options)).digest())
    return h.hexdigest()


def load_images(
    paths: list[str], shard: tuple[int, int] = (0, 1), min_size: int = 0, storage_options: Options = None
) -> list[torch.Tensor]:
    """Decode this worker's share of ``paths`` into (3,H,W) uint8 tensors (skips images < min_size)."""
    rank, world = shard
    imgs = []
    for p in paths[rank::world]:
        arr = decode_image(_read(p, storage_options))
        if min(arr.shape[:2]) >= min_size:
            imgs.append(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))))
    if not imgs:
        raise ValueError(f"no usable training images in shard {rank}/{world} of {len(paths)} files")
    return imgs


@dataclass
class PatchSampler:
    """Uniformly random image, random crop, random horizontal flip; float32 in [0, 1]."""

    images: list[torch.Tensor]
    patch: int
    seed: int = 0

    def __post_init__(self):
        self.gen = torch.Generator().manual_seed(self.seed)

    def sample(self, batch: int) -> torch.Tensor:
        out = torch.empty(batch, 3, self.patch, self.patch, dtype=torch.uint8)
        for i in range(batch):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=self.gen))]
            _, h, w = img.shape
            y = int(torch.randint(h - self.patch + 1, (1,), generator=self.gen))
            x = int(torch.randint(w - self.patch + 1, (1,), generator=self.gen))
            crop = img[:, y : y + self.patch, x : x + self.patch]
            if torch.rand((), generator=self.gen) < 0.5:
                crop = crop.flip(-1)
            out[i] = crop
        return out.float().div_(255.0)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
