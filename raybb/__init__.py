"""raybb: a learned image codec without quantization, and a distributed batch compressor.

Public surface (checked by tests/test_public_api.py)::

    from raybb import Codec, load_codec, RaybbError
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
]


def __getattr__(name: str):  # lazy: `import raybb` stays cheap (no torch) for storage-only users
    if name in ("Codec", "load_codec"):
        from raybb import codec

        return getattr(codec, name)
    raise AttributeError(f"module 'raybb' has no attribute {name!r}")
