"""Ray orchestration: the only part of raybb that imports ray.

    from raybb.distributed import compress_bucket, decompress_bucket, CompressJobConfig, JobSummary

``partition`` (the shard plan) and ``config`` (the job settings) are pure and importable without
Ray; the driver and actor modules are loaded lazily on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "compress_bucket",
    "decompress_bucket",
    "CompressJobConfig",
    "DecompressJobConfig",
    "JobSummary",
    "JobProgress",
    "init_ray",
    "JobError",
]

_CONFIG = ("CompressJobConfig", "DecompressJobConfig")


def __getattr__(name: str) -> Any:
    if name in _CONFIG:
        from raybb.distributed import config

        return getattr(config, name)
    if name in __all__:
        from raybb.distributed import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'raybb.distributed' has no attribute {name!r}")
