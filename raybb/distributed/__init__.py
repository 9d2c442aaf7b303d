"""Ray orchestration: the only part of raybb that imports ray.

    from raybb.distributed import compress_bucket, decompress_bucket, JobSummary

``partition`` (the shard plan) is pure and importable without Ray; the driver and actor modules
are loaded lazily on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compress_bucket", "decompress_bucket", "JobSummary", "JobProgress", "init_ray", "JobError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from raybb.distributed import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'raybb.distributed' has no attribute {name!r}")
