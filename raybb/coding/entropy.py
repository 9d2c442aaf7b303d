"""Entropy coding for coded-sample payloads: the only module that imports ``constriction``.

One payload = one range-coded stream (``constriction.stream.queue``, FIFO, so fields are read in
the order they were written) of uint32 words, serialised little-endian, preceded by a CRC32 of
those bytes.  The CRC is what turns "the range decoder happily decodes garbage" (it cannot detect
end-of-stream or corruption, see constriction's queue.rs) into a typed error; every count read
back is also validated by the caller against sizes the decoder already knows before anything is
allocated, so even a payload that passes the CRC by chance cannot hang or exhaust memory.

Building blocks (each ``Writer`` method has a ``Reader`` twin that validates):

* ``uint(v, bits)``: a fixed-width integer (split into 16-bit ``Uniform`` symbols).
* ``uniform(values, sizes)``: vectors of integers with per-symbol alphabet sizes (<= 2**16).
* ``categorical(values, probs)``: a fixed table (e.g. the fitted rejection-index table).
* ``log_bucket(values)``: *semi-static* code for non-negative integers: the bucket
  ``bit_length(v)`` is coded with a categorical model whose histogram is sent first, the
  remaining ``bucket - 1`` mantissa bits uniformly.  It adapts to whatever distribution the
  payload has (PFR indices, block sizes, outlier gaps) at the cost of a ~100-300 bit histogram.
"""

from __future__ import annotations

import zlib

import constriction
import numpy as np

from raybb.errors import CorruptPayload, TruncatedBitstream

__all__ = ["Writer", "Reader", "MAX_BUCKETS", "bucket_of"]

_model = constriction.stream.model
_queue = constriction.stream.queue

MAX_BUCKETS = 41  # values < 2**40
_CHUNK = 16


def bucket_of(values: np.ndarray) -> np.ndarray:
    """bit_length of each non-negative int64 (0 -> 0, 1 -> 1, 2..3 -> 2, ...)."""
    v = np.asarray(values, dtype=np.int64)
    out = np.zeros(v.shape, dtype=np.int64)
    nz = v > 0
    out[nz] = np.floor(np.log2(v[nz].astype(np.float64))).astype(np.int64) + 1
    # float log2 can be off by one right at powers of two for huge values: fix exactly.
    lo = np.left_shift(np.int64(1), np.maximum(out - 1, 0))
    out = np.where(nz & (v < lo), out - 1, out)
    hi = np.left_shift(np.int64(1), out)
    out = np.where(nz & (v >= hi), out + 1, out)
    return out


def _hist_probs(counts: np.ndarray) -> np.ndarray:
    """Model probabilities from integer counts; identical float64 math on both sides."""
    c = counts.astype(np.float64) + 1e-3  # keep every symbol codable (garbage-safe decoding)
    return c / c.sum()


class Writer:
    """Accumulates symbols in one range coder; ``finish()`` returns the payload bytes."""

    def __init__(self) -> None:
        self._enc = _queue.RangeEncoder()

    def uint(self, value: int, bits: int) -> None:
        if not 0 <= value < (1 << bits):
            raise ValueError(f"{value} does not fit in {bits} bits")
        self.uints(np.array([value], dtype=np.int64), bits)

    def uints(self, values: np.ndarray, bits: int) -> None:
        """Fixed-width integers, vectorised (16-bit chunks, most significant first)."""
        v = np.asarray(values, dtype=np.int64)
        if v.size == 0 or bits == 0:
            return
        shift = bits
        while shift > 0:
            width = min(_CHUNK, shift)
            shift -= width
            chunk = ((v >> shift) & ((1 << width) - 1)).astype(np.int32)
            self._enc.encode(chunk, _model.Uniform(1 << width))

    def uniform(self, values: np.ndarray, sizes: np.ndarray) -> None:
        """values[i] in [0, sizes[i]), sizes <= 2**16; size-1 symbols cost nothing and are skipped."""
        v = np.asarray(values, dtype=np.int64)
        s = np.asarray(sizes, dtype=np.int64)
        keep = s > 1
        if keep.any():
            self._enc.encode(v[keep].astype(np.int32), _model.Uniform(), s[keep].astype(np.int32))

    def categorical(self, values: np.ndarray, probs: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.int32)
        if v.size and len(probs) > 1:  # a one-symbol alphabet carries no information
            self._enc.encode(v, _model.Categorical(np.asarray(probs, dtype=np.float64), perfect=False))

    def log_bucket(self, values: np.ndarray) -> None:
        """Semi-static code for non-negative ints < 2**40 (count known to the reader)."""
        v = np.asarray(values, dtype=np.int64)
        if v.size == 0:
            return
        if v.min() < 0 or v.max() >= 1 << (MAX_BUCKETS - 1):
            raise ValueError("log_bucket values must be in [0, 2**40)")
        b = bucket_of(v)
        top = int(b.max())
        counts = np.bincount(b, minlength=top + 1)
        self.uint(top, 6)
        # Histogram: each count as (bucket of count, mantissa), with a flat model: ~log2(c)+6 bits.
        cb = bucket_of(counts)
        self.uniform(cb, np.full(cb.shape, MAX_BUCKETS))
        self._mantissas(counts, cb)
        self.categorical(b, _hist_probs(counts))
        self._mantissas(v, b)

    def mantissas(self, v: np.ndarray, b: np.ndarray) -> None:
        """The ``b - 1`` low bits of each ``v`` of bucket ``b``, flat (the log-bucket code's second half)."""
        self._mantissas(v, b)

    def _mantissas(self, v: np.ndarray, b: np.ndarray) -> None:
        nbits = np.maximum(b - 1, 0)
        mant = v - np.where(b > 0, np.left_shift(np.int64(1), nbits), 0)
        lo_bits = np.minimum(nbits, _CHUNK)
        hi_bits = nbits - lo_bits
        if (hi_bits > 0).any():
            sel = hi_bits > 0
            self.uniform(mant[sel] >> _CHUNK, np.left_shift(np.int64(1), hi_bits[sel]))
        self.uniform(
            mant & ((1 << _CHUNK) - 1) & (np.left_shift(np.int64(1), lo_bits) - 1), np.left_shift(np.int64(1), lo_bits)
        )

    def num_bits(self) -> int:
        """Bits written so far (the range coder's count; for statistics, not part of the format)."""
        return int(self._enc.num_bits())

    def finish(self) -> bytes:
        words = np.asarray(self._enc.get_compressed(), dtype="<u4").tobytes()
        return zlib.crc32(words).to_bytes(4, "little") + words


class Reader:
    """Reads what a :class:`Writer` wrote; raises ``CorruptPayload``/``TruncatedBitstream``."""

    def __init__(self, payload: bytes, *, check_crc: bool = True) -> None:
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise CorruptPayload("payload must be bytes")
        payload = bytes(payload)
        if len(payload) < 4:
            raise TruncatedBitstream("payload shorter than its checksum")
        if (len(payload) - 4) % 4:
            raise TruncatedBitstream("payload is not a whole number of 32-bit words")
        body = payload[4:]
        if check_crc and zlib.crc32(body) != int.from_bytes(payload[:4], "little"):
            raise CorruptPayload("payload checksum mismatch")
        self._words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
        try:
            self._dec = _queue.RangeDecoder(self._words)
        except Exception as e:  # pragma: no cover - constriction rejects the words
            raise CorruptPayload(f"range decoder rejected the payload: {e}") from e

    def _decode(self, *args):
        try:
            return np.asarray(self._dec.decode(*args), dtype=np.int64)
        except Exception as e:
            raise CorruptPayload(f"range decoding failed: {e}") from e

    def uint(self, bits: int, *, limit: int | None = None) -> int:
        v = int(self.uints(1, bits)[0])
        if limit is not None and v > limit:
            raise CorruptPayload(f"value {v} exceeds its limit {limit}")
        return v

    def uints(self, n: int, bits: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.int64)
        if n == 0 or bits == 0:
            return out
        shift = bits
        while shift > 0:
            width = min(_CHUNK, shift)
            shift -= width
            out |= self._decode(_model.Uniform(1 << width), n) << shift
        return out

    def uniform(self, sizes: np.ndarray) -> np.ndarray:
        s = np.asarray(sizes, dtype=np.int64)
        out = np.zeros(s.shape, dtype=np.int64)
        keep = s > 1
        if keep.any():
            out[keep] = self._decode(_model.Uniform(), s[keep].astype(np.int32))
        return out

    def categorical(self, n: int, probs: np.ndarray) -> np.ndarray:
        if n == 0 or len(probs) == 1:
            return np.zeros(n, dtype=np.int64)
        return self._decode(_model.Categorical(np.asarray(probs, dtype=np.float64), perfect=False), n)

    def log_bucket(self, n: int, *, limit: int | None = None) -> np.ndarray:
        """Decode ``n`` values; every value must be <= ``limit`` (else CorruptPayload)."""
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        top = self.uint(6, limit=MAX_BUCKETS - 1)
        cb = self.uniform(np.full(top + 1, MAX_BUCKETS))
        if (cb > 32).any():
            raise CorruptPayload("bucket histogram count too large")
        counts = self._mantissas(cb)
        if int(counts.sum()) != n:
            raise CorruptPayload("bucket histogram does not add up to the symbol count")
        b = self.categorical(n, _hist_probs(counts))
        if (b > top).any():
            raise CorruptPayload("bucket outside the histogram")
        v = self._mantissas(b)
        if limit is not None and (v > limit).any():
            raise CorruptPayload("decoded value exceeds its limit")
        return v

    def mantissas(self, b: np.ndarray) -> np.ndarray:
        """Values of buckets ``b`` from their flat mantissa bits (:meth:`Writer.mantissas`)."""
        return self._mantissas(b)

    def _mantissas(self, b: np.ndarray) -> np.ndarray:
        nbits = np.maximum(b - 1, 0)
        lo_bits = np.minimum(nbits, _CHUNK)
        hi_bits = nbits - lo_bits
        mant = np.zeros(b.shape, dtype=np.int64)
        if (hi_bits > 0).any():
            sel = hi_bits > 0
            mant[sel] = self.uniform(np.left_shift(np.int64(1), hi_bits[sel])) << _CHUNK
        mant |= self.uniform(np.left_shift(np.int64(1), lo_bits))
        return mant + np.where(b > 0, np.left_shift(np.int64(1), nbits), 0)

    def finish(self) -> None:
        """Every word must have been consumed (catches payloads with trailing garbage)."""
        try:
            done = self._dec.maybe_exhausted()
        except Exception as e:  # pragma: no cover
            raise CorruptPayload(str(e)) from e
        if not done:
            raise CorruptPayload("payload has unread data")
