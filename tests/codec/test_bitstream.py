import random
import struct
import zlib

import pytest

from raybb import bitstream
from raybb.bitstream import Container, Section, pack, parse
from raybb.errors import (
    BadMagic,
    BitstreamError,
    ChecksumMismatch,
    CorruptPayload,
    TruncatedBitstream,
    UnsupportedVersion,
)


def sample_container() -> Container:
    return Container(
        fingerprint=bytes(range(8)),
        width=768,
        height=512,
        seed=123456789,
        sections=(
            Section(level=2, sampler_id=3, params=(16, 2, 7), num_dims=2304, payload=b"\x01\x02\x03" * 10),
            Section(level=1, sampler_id=1, params=(), num_dims=147456, payload=bytes(range(256))),
        ),
    )


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def test_round_trip():
    c = sample_container()
    data = pack(c)
    assert parse(data) == c
    assert data[:4] == bitstream.MAGIC
    assert len(data) == c.header_bytes + 30 + 256


def test_layout_is_pinned():
    """The header layout is the format: changing it must be a deliberate version bump."""
    data = pack(sample_container())
    expected = (
        "89524242" + "01" + "00" + "0001020304050607" + "00030000" + "00020000" + "00" + "15cd5b0700000000" + "02"
    )
    assert data[:32].hex() == expected
    magic, version, flags, fp, w, h, mode, seed, n = struct.unpack_from("<4sBB8sIIBQB", data)
    assert (magic, version, flags, fp, w, h, mode, seed, n) == (
        b"\x89RBB",
        1,
        0,
        bytes(range(8)),
        768,
        512,
        0,
        123456789,
        2,
    )


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 10, 31, 40, -5, -1])
def test_truncated_raises_typed(cut):
    data = pack(sample_container())
    with pytest.raises(BitstreamError):
        parse(data[:cut])


def test_specific_errors():
    data = pack(sample_container())
    with pytest.raises(BadMagic):
        parse(b"PNG!" + data[4:])
    with pytest.raises(UnsupportedVersion):
        parse(data[:4] + b"\x02" + data[5:])
    flipped = bytearray(data)
    flipped[100] ^= 0x40
    with pytest.raises(ChecksumMismatch):
        parse(bytes(flipped))
    with pytest.raises(TruncatedBitstream):
        parse(data[:3])


def test_lengths_checked_even_with_valid_crc():
    """A forged file with a correct CRC but impossible lengths is refused, not over-read."""
    data = bytearray(pack(sample_container())[:-4])
    # payload length of the first section: header(32) + section head(3) + 3 params*4 + num_dims(4)
    off = 32 + 3 + 12 + 4
    struct.pack_into("<I", data, off, 2**31)
    with pytest.raises(TruncatedBitstream):
        parse(with_crc(bytes(data)))
    # trailing garbage
    with pytest.raises(CorruptPayload):
        parse(with_crc(pack(sample_container())[:-4] + b"xx"))
    # zero-size image
    body = bytearray(pack(sample_container())[:-4])
    struct.pack_into("<I", body, 14, 0)
    with pytest.raises(CorruptPayload):
        parse(with_crc(bytes(body)))


def test_random_corruption_never_escapes_typed_errors():
    rng = random.Random(0)
    data = pack(sample_container())
    for _ in range(2000):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        b = bytes(b[: rng.randint(0, len(b))]) if rng.random() < 0.3 else bytes(b)
        try:
            parse(b)
        except BitstreamError:
            pass


def test_pack_validates():
    c = sample_container()
    with pytest.raises(ValueError):
        pack(Container(b"short", 1, 1, 0))
    with pytest.raises(ValueError):
        pack(Container(c.fingerprint, 0, 1, 0))
    with pytest.raises(ValueError):
        pack(Container(c.fingerprint, 1, 1, 2**63))


def test_rate_index_flag_round_trips_and_leaves_v1_files_alone():
    """A variable-rate model's rate index: header flag bit 0 plus a uint16 after the section count.
    Files without it are byte-identical to before; a reader that knows no flags refuses it cleanly."""
    from dataclasses import replace

    from raybb.bitstream import FLAG_RATE

    c = sample_container()
    plain = pack(c)
    assert plain[5] == 0 and parse(plain).rate is None
    rated = pack(replace(c, rate=300))
    assert rated[5] == FLAG_RATE and len(rated) == len(plain) + 2
    got = parse(rated)
    assert got.rate == 300 and got.sections == c.sections and pack(got) == rated
    assert got.header_bytes == c.header_bytes + 2
    import zlib

    forged = rated[:5] + bytes([0x03]) + rated[6:-4]  # an unknown flag bit, with a valid CRC
    with pytest.raises(UnsupportedVersion):
        parse(forged + (zlib.crc32(forged) & 0xFFFFFFFF).to_bytes(4, "little"))
    for bad in (-1, 1 << 16, 1.5):
        with pytest.raises(ValueError):
            pack(replace(c, rate=bad))
    with pytest.raises(ValueError):
        pack(replace(c, flags=FLAG_RATE))  # the flag without a rate
