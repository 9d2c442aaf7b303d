"""The .rbb container: a versioned, self-describing, checksummed byte layout (pure stdlib).

Layout (all integers little-endian)::

    offset size  field
    0      4     magic  b"\\x89RBB"        (high bit first byte: catches 7-bit/text mangling)
    4      1     format version (1)
    5      1     flags (bit 0: a rate index follows; the other bits are reserved, 0)
    6      8     model fingerprint (first 8 bytes of the weights' SHA-256)
    14     4     width   (pixels)
    18     4     height  (pixels)
    22     1     mode    (0 = RGB, 8 bits per channel)
    23     8     seed    (the shared-randomness seed, < 2**63)
    31     1     number of sections n
    [32    2     rate index r, uint16 — only when flags bit 0 is set: the β of a variable-rate
                 model, β = model.config.beta_of_rate(r); fixed-rate models (the PLN) never set it]
    then n sections, each:
           1     level (the model's latent id: the PLN writes 2 = z2 and 1 = z1; a K-slice
                 channel-ladder writes 2, 1, 3, ..., K+1; any id 0..255, unique in a file)
           1     sampler id (raybb.coding registry; never renumbered)
           1     number of sampler parameters k (<= 16)
           4*k   sampler parameters (uint32 each)
           4     number of latent dimensions coded in this section
           4     payload length L
           L     payload (the coded sample: indices, outliers, side information)
    end-4  4     CRC32 of every byte before it

Everything that decides which bits the decoder reads is an integer here or inside the payload;
nothing is recomputed from floats. A reader from before the rate flag refuses rate-indexed
files with UnsupportedVersion ("unknown header flags") and reads everything else as before.
``parse`` only raises ``BitstreamError`` subclasses: it checks the magic, the version, the CRC,
and every length against the bytes actually present before touching a section, so garbage can
neither hang it nor make it allocate more than the input size.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from raybb.errors import BadMagic, ChecksumMismatch, CorruptPayload, TruncatedBitstream, UnsupportedVersion

__all__ = [
    "MAGIC", "FORMAT_VERSION", "MODE_RGB8", "Section", "Container", "pack", "parse", "MAX_DIMENSION", "FLAG_RATE",
]  # fmt: skip

MAGIC = b"\x89RBB"
FORMAT_VERSION = 1
MODE_RGB8 = 0
MAX_DIMENSION = 1 << 16  # width/height limit (65536 px), so a corrupt header cannot ask for a huge image
MAX_PARAMS = 16
FLAG_RATE = 0x01  # header flag: a uint16 rate index follows the section count
_HEADER = struct.Struct("<4sBB8sIIBQB")
_SECTION_HEAD = struct.Struct("<BBB")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


@dataclass(frozen=True)
class Section:
    level: int
    sampler_id: int
    params: tuple[int, ...]
    num_dims: int
    payload: bytes


@dataclass(frozen=True)
class Container:
    fingerprint: bytes
    width: int
    height: int
    seed: int
    sections: tuple[Section, ...] = field(default_factory=tuple)
    mode: int = MODE_RGB8
    version: int = FORMAT_VERSION
    flags: int = 0  # FLAG_RATE is set by ``pack`` whenever ``rate`` is given
    rate: int | None = None  # rate index of a variable-rate model (None = fixed-rate)

    def section(self, level: int) -> Section:
        for s in self.sections:
            if s.level == level:
                return s
        raise CorruptPayload(f"bitstream has no section for level {level}")

    @property
    def header_bytes(self) -> int:
        sections = sum(_SECTION_HEAD.size + 4 * len(s.params) + 8 for s in self.sections)
        return _HEADER.size + (2 if self.rate is not None else 0) + sections + 4


def pack(c: Container) -> bytes:
    if len(c.fingerprint) != 8:
        raise ValueError("fingerprint must be 8 bytes")
    if not (0 < c.width <= MAX_DIMENSION and 0 < c.height <= MAX_DIMENSION):
        raise ValueError(f"image size {c.width}x{c.height} outside 1..{MAX_DIMENSION}")
    if not 0 <= c.seed < 2**63:
        raise ValueError("seed must be in [0, 2**63)")
    flags = c.flags | (FLAG_RATE if c.rate is not None else 0)
    if flags & ~FLAG_RATE:
        raise ValueError(f"unknown header flags {flags:#x}")
    if bool(flags & FLAG_RATE) != (c.rate is not None):
        raise ValueError("FLAG_RATE set without a rate index")
    if c.rate is not None and not (type(c.rate) is int and 0 <= c.rate < 1 << 16):
        raise ValueError(f"rate index {c.rate!r} outside 0..65535")
    out = bytearray(
        _HEADER.pack(MAGIC, c.version, flags, c.fingerprint, c.width, c.height, c.mode, c.seed, len(c.sections))
    )
    if c.rate is not None:
        out += _U16.pack(c.rate)
    for s in c.sections:
        if len(s.params) > MAX_PARAMS:
            raise ValueError("too many sampler parameters")
        out += _SECTION_HEAD.pack(s.level, s.sampler_id, len(s.params))
        for p in s.params:
            out += _U32.pack(p)
        out += _U32.pack(s.num_dims) + _U32.pack(len(s.payload)) + s.payload
    out += _U32.pack(zlib.crc32(out) & 0xFFFFFFFF)
    return bytes(out)


def parse(data: bytes) -> Container:
    """Parse and validate a container; raises only BitstreamError subclasses."""
    data = bytes(data)
    if len(data) < 4:
        raise TruncatedBitstream(f"{len(data)} bytes is too short for a raybb file")
    if data[:4] != MAGIC:
        raise BadMagic("not a raybb bitstream (bad magic bytes)")
    if len(data) < 5:
        raise TruncatedBitstream("file ends inside the header")
    if data[4] != FORMAT_VERSION:
        raise UnsupportedVersion(f"format version {data[4]} (this raybb reads version {FORMAT_VERSION})")
    if len(data) < _HEADER.size + 4:
        raise TruncatedBitstream("file ends inside the header")
    stored = _U32.unpack_from(data, len(data) - 4)[0]
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != stored:
        raise ChecksumMismatch("CRC32 mismatch: the file is corrupted or truncated")
    _, version, flags, fp, width, height, mode, seed, nsec = _HEADER.unpack_from(data, 0)
    if flags & ~FLAG_RATE:
        raise UnsupportedVersion(f"unknown header flags {flags:#x}")
    if mode != MODE_RGB8:
        raise UnsupportedVersion(f"unknown image mode {mode}")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise CorruptPayload(f"image size {width}x{height} outside 1..{MAX_DIMENSION}")
    if seed >= 2**63:
        raise CorruptPayload("seed out of range")
    pos = _HEADER.size
    end = len(data) - 4
    rate = None
    if flags & FLAG_RATE:
        if pos + 2 > end:
            raise TruncatedBitstream("file ends inside the rate index")
        rate = _U16.unpack_from(data, pos)[0]
        pos += 2
    sections = []
    for _ in range(nsec):
        if pos + _SECTION_HEAD.size > end:
            raise TruncatedBitstream("file ends inside a section header")
        level, sampler_id, k = _SECTION_HEAD.unpack_from(data, pos)
        pos += _SECTION_HEAD.size
        if k > MAX_PARAMS:
            raise CorruptPayload(f"section declares {k} sampler parameters (max {MAX_PARAMS})")
        if pos + 4 * k + 8 > end:
            raise TruncatedBitstream("file ends inside a section header")
        params = struct.unpack_from(f"<{k}I", data, pos)
        pos += 4 * k
        num_dims, length = struct.unpack_from("<II", data, pos)
        pos += 8
        if length > end - pos:
            raise TruncatedBitstream(f"section payload of {length} bytes but only {end - pos} remain")
        sections.append(Section(level, sampler_id, tuple(params), num_dims, data[pos : pos + length]))
        pos += length
    if pos != end:
        raise CorruptPayload(f"{end - pos} unexpected bytes after the last section")
    levels = [s.level for s in sections]
    if len(set(levels)) != len(levels):
        raise CorruptPayload("duplicate level sections")
    return Container(
        fingerprint=fp,
        width=width,
        height=height,
        seed=seed,
        sections=tuple(sections),
        mode=mode,
        version=version,
        flags=flags,
        rate=rate,
    )
