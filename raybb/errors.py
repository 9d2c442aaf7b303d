"""Every error raybb raises on purpose, under one root.

Callers (the CLI, the Ray driver) catch ``RaybbError`` to turn a failure into an exit code or a
manifest row instead of crashing a whole job::

    RaybbError
    ├── BitstreamError            a .rbb byte string cannot be decoded
    │   ├── TruncatedBitstream    fewer bytes than the header/sections announce
    │   ├── BadMagic              not a raybb file at all
    │   ├── UnsupportedVersion    written by a newer (or unknown) format version
    │   ├── ChecksumMismatch      CRC32 does not match: bytes were flipped
    │   ├── ModelMismatch         made by a model we do not have / another model
    │   ├── CorruptPayload        a section parses but its symbols are inconsistent
    │   ├── TooManyPixels         the header declares more pixels than the decoder's max_pixels
    │   └── DecodeOutOfMemory     decoding needed more memory than there is (also OutOfMemory)
    ├── CodingError               the encoder was given something it cannot code
    ├── ModelError                a model cannot be built or loaded
    │   └── WeightsError          weights file missing, corrupt or of the wrong architecture
    ├── ImageError                an input image is unreadable, unsupported or too large
    │   └── EncodeOutOfMemory     encoding needed more memory than there is (also OutOfMemory)
    ├── OutOfMemory               an allocation failed (torch, NumPy): the image needs more memory
    └── StorageError              object storage / file system failure after retries
"""

from __future__ import annotations

__all__ = [
    "RaybbError",
    "BitstreamError",
    "TruncatedBitstream",
    "BadMagic",
    "UnsupportedVersion",
    "ChecksumMismatch",
    "ModelMismatch",
    "CorruptPayload",
    "TooManyPixels",
    "OutOfMemory",
    "DecodeOutOfMemory",
    "EncodeOutOfMemory",
    "CodingError",
    "ModelError",
    "WeightsError",
    "ImageError",
    "StorageError",
]


class RaybbError(Exception):
    """Root of every error raybb raises deliberately."""


class BitstreamError(RaybbError):
    """A compressed byte string cannot be decoded."""


class TruncatedBitstream(BitstreamError):
    """The data ends before the header or a section says it should."""


class BadMagic(BitstreamError):
    """The data does not start with raybb's magic bytes."""


class UnsupportedVersion(BitstreamError):
    """The container's format version is not one this build can read."""


class ChecksumMismatch(BitstreamError):
    """The CRC32 over the container does not match its contents."""


class ModelMismatch(BitstreamError):
    """The bitstream was made by a model whose fingerprint we do not have."""


class CorruptPayload(BitstreamError):
    """A coded-sample payload is internally inconsistent (bad counts, indices out of range...)."""


class TooManyPixels(BitstreamError):
    """The header declares an image larger than the decoder accepts (``max_pixels``): refused
    before anything is allocated, whatever the rest of the stream holds."""


class CodingError(RaybbError):
    """The encoder was given input it cannot code (shape mismatch, non-finite values...)."""


class ModelError(RaybbError):
    """A model cannot be constructed or loaded."""


class WeightsError(ModelError):
    """A weights file is missing, corrupt, or does not match the declared architecture."""


class ImageError(RaybbError):
    """An input image cannot be read, has an unsupported mode, or is too large."""


class StorageError(RaybbError):
    """Reading or writing object storage failed (after retries, for transient errors).

    ``transient`` is True when the cause was a transport error that outlasted the retries (an
    outage: trying the work again later may succeed), False for final ones (permission, bad name).
    """

    transient: bool = False


class OutOfMemory(RaybbError):
    """An allocation failed while coding one image (torch's "not enough memory" / OutOfMemoryError,
    NumPy's MemoryError): the image needs more memory than this process may use. Lower the tile
    budget (``tile_pixels``) or ``max_pixels``; nothing was written."""


class DecodeOutOfMemory(OutOfMemory, BitstreamError):
    """Out of memory while decoding (a bitstream error for the CLI: exit 3)."""


class EncodeOutOfMemory(OutOfMemory, ImageError):
    """Out of memory while encoding (an image error for the CLI: exit 4)."""
