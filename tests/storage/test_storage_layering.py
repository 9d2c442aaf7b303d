"""storage/ never pulls in torch, the codec or Ray; the shard plan needs no Ray; the driver no torch."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import {module}
bad = sorted(m for m in {forbidden!r} if m in sys.modules)
print(",".join(bad))
"""


def _loaded(module: str, forbidden: list[str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module, forbidden=forbidden)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_storage_imports_no_torch_codec_or_ray():
    assert _loaded("raybb.storage", ["torch", "ray", "raybb.codec", "raybb.model", "raybb.coding"]) == []


def test_partition_imports_no_ray_and_driver_no_torch():
    assert _loaded("raybb.distributed.partition", ["ray", "torch"]) == []
    # the driver process lists, plans and writes the manifest: it never needs torch or a model
    assert _loaded("raybb.distributed.driver", ["torch", "raybb.codec", "raybb.model"]) == []
