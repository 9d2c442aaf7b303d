"""raybb: a learned image codec without quantization, and a distributed batch compressor.

Public surface (checked by tests/test_public_api.py)::

    from raybb import Codec, load_codec, RaybbError
    from raybb import compress_bucket, CompressJobConfig      # batch jobs on Ray (raybb.distributed)
    from raybb import TrainConfig                            # training (raybb.train.loop)
"""

from __future__ import annotations

from raybb._version import __version__
from raybb.errors import (
    BadMagic,
    BitstreamError,
    ChecksumMismatch,
    CodingError,
    CorruptPayload,
    ImageError,
    ModelError,
    ModelMismatch,
    RaybbError,
    StorageError,
    TruncatedBitstream,
    UnsupportedVersion,
    WeightsError,
)

__all__ = [
    "__version__",
    "Codec",
    "load_codec",
    "RaybbError",
    "BitstreamError",
    "TruncatedBitstream",
    "BadMagic",
    "UnsupportedVersion",
    "ChecksumMismatch",
    "ModelMismatch",
    "CorruptPayload",
    "CodingError",
    "ModelError",
    "WeightsError",
    "ImageError",
    "StorageError",
    "compress_bucket",
    "decompress_bucket",
    "CompressJobConfig",
    "DecompressJobConfig",
    "TrainConfig",
]

#: name -> module that defines it, imported on first use
_LAZY = {
    "Codec": "raybb.codec",
    "load_codec": "raybb.codec",
    "compress_bucket": "raybb.distributed.driver",
    "decompress_bucket": "raybb.distributed.driver",
    "CompressJobConfig": "raybb.distributed.config",
    "DecompressJobConfig": "raybb.distributed.config",
    "TrainConfig": "raybb.train.loop",
}


def __getattr__(name: str):  # lazy: `import raybb` stays cheap (no torch, no Ray) for storage-only users
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raybb' has no attribute {name!r}")
