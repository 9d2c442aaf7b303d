"""Shared randomness: counter-based streams that encoder and decoder regenerate bit-identically.

Why not ``torch.Generator``: its output depends on the device (CPU vs CUDA Philox offsets) and
on how many numbers were drawn before, so the decoder would have to replay the encoder's batching.
Here every number is a pure function of ``(StreamKey, tag, stream, counter)``:

* ``StreamKey(seed, image, level)`` and a small integer ``tag`` (which sampler / which purpose)
  are folded, in plain Python integers, into one 32-bit key.
* ``stream`` (an int64 tensor, e.g. a block index) is mixed with that key into two 32-bit
  sub-keys ``ka``, ``kb``; each element is ``triple32(lowbias32(ka ^ counter) ^ kb)``.
  Two streams can never be shifted copies of each other (the outer XOR with ``kb`` differs).
* The mixers (Chris Wellons' ``lowbias32`` / ``triple32``, both bijections on 32-bit words)
  only use XOR, logical shifts and multiplication modulo 2**32, done on ``int32`` tensors.
  Torch's int32 multiply wraps modulo 2**32 on CPU (SIMD ``vpmulld``) and CUDA (``mul.lo``);
  ``tests/coding/test_randomness.py`` checks the tensor code against a pure-Python reference,
  so a platform where that is not true fails loudly instead of decoding garbage.

Standard normals avoid transcendental functions at run time (CPU and CUDA libm can differ in the
last ulp).  A float64 inverse-normal-CDF table with 2**16 cells is built once on the CPU, rounded
to float32, and a normal is ``T[k] + D[k] * f`` with ``k`` the top 16 bits of a 32-bit word and
``f`` the low 16 bits (cell midpoint), computed as a separate multiply and add (each an exactly
rounded IEEE op, no FMA contraction because they are separate kernels), so every device returns
the same float32.  Interpolation error is < 5e-6 for |z| < 3 and < 3e-3 in the outermost cells.
The two tail cells (probability 2**-16 each) put their outer end point where the cell's
conditional mean is exact: ``T[0] = 2 E[z | z < T[1]] - T[1]`` (about -4.60 vs -4.17), so the
stream's normals are bounded by |z| <= 4.60; the sha256 of the table is pinned in the tests.
"""

from __future__ import annotations

import hashlib
import math

import torch

__all__ = [
    "MASK32",
    "mix32",
    "triple32",
    "py_mix32",
    "py_triple32",
    "fold_key",
    "raw_bits",
    "raw_bits32",
    "uniform",
    "normal",
    "normal_from_bits",
    "normal_table",
    "table_sha256",
]

MASK32 = 0xFFFFFFFF
_TABLE_BITS = 16
_TABLE_N = 1 << _TABLE_BITS


def _s32(c: int) -> int:
    """A 32-bit constant as the signed int32 torch needs."""
    c &= MASK32
    return c - (1 << 32) if c >= 1 << 31 else c


def _srl(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of an int32 tensor (torch's >> is arithmetic)."""
    return (x >> n) & ((1 << (32 - n)) - 1)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int32 tensors (a bijection of 32-bit words)."""
    x = x ^ _srl(x, 16)
    x = x * _s32(0x7FEB352D)
    x = x ^ _srl(x, 15)
    x = x * _s32(0x846CA68B)
    return x ^ _srl(x, 16)


def triple32(x: torch.Tensor) -> torch.Tensor:
    """triple32 on int32 tensors (better avalanche than lowbias32; used as the output stage).

    Works on a copy of ``x``; see :func:`_triple32_`."""
    return _triple32_(x.clone(memory_format=torch.contiguous_format))


def _triple32_(x: torch.Tensor) -> torch.Tensor:
    """triple32 in place on a contiguous int32 tensor the caller owns, with one scratch buffer:
    the same integer ops as :func:`py_triple32` without a new tensor per step (that allocation
    traffic was most of the cost of generating a candidate pool)."""
    tmp = torch.empty_like(x)
    for shift, mul in ((17, 0xED5AD4BB), (11, 0xAC4C1B51), (15, 0x31848BAB)):
        _xor_srl_(x, shift, tmp)
        x.mul_(_s32(mul))
    return _xor_srl_(x, 14, tmp)


def _xor_srl_(x: torch.Tensor, n: int, tmp: torch.Tensor) -> torch.Tensor:
    """x ^= x >>> n (logical shift), in place, using ``tmp`` as scratch."""
    torch.bitwise_right_shift(x, n, out=tmp)
    tmp.bitwise_and_((1 << (32 - n)) - 1)
    return x.bitwise_xor_(tmp)


def py_mix32(x: int) -> int:
    """Reference lowbias32 on Python ints (used for key folding and to test the tensor code)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def py_triple32(x: int) -> int:
    """Reference triple32 on Python ints."""
    x &= MASK32
    x ^= x >> 17
    x = (x * 0xED5AD4BB) & MASK32
    x ^= x >> 11
    x = (x * 0xAC4C1B51) & MASK32
    x ^= x >> 15
    x = (x * 0x31848BAB) & MASK32
    return x ^ (x >> 14)


def fold_key(seed: int, image: int, level: int, tag: int) -> int:
    """Fold (seed < 2**63, image, level, tag) into one 32-bit key, in Python integers."""
    if not (0 <= seed < 1 << 63) or image < 0 or level < 0 or tag < 0:
        raise ValueError("seed, image, level and tag must be non-negative (seed < 2**63)")
    h = py_mix32(0x243F6A88 ^ (seed & MASK32))
    h = py_mix32(h ^ (seed >> 32))
    h = py_mix32(h ^ (image & MASK32) ^ 0x13198A2E)
    h = py_mix32(h ^ (image >> 32) ^ 0x03707344)
    h = py_mix32(h ^ level ^ 0xA4093822)
    return py_triple32(h ^ tag ^ 0x299F31D0)


def _to_i32(x: torch.Tensor) -> torch.Tensor:
    """int64 tensor -> int32 with the same low 32 bits (well-defined: no narrowing overflow)."""
    x = x.to(torch.int64) & MASK32
    return torch.where(x >= 1 << 31, x - (1 << 32), x).to(torch.int32)


def raw_bits32(k: int, stream: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """32 random bits per element as an int32 word; ``stream`` and ``counter`` broadcast.

    ``k`` comes from :func:`fold_key`.  ``stream`` is a non-negative int64 tensor (both words
    are mixed in; it is usually small, e.g. one value per block).  ``counter`` is an int32
    tensor (fast path) or int64 whose low 32 bits are used.
    """
    stream = stream.to(torch.int64)
    ka = mix32(_to_i32(stream) ^ _s32(k))
    ka = mix32(ka ^ _to_i32(stream >> 32))
    kb = mix32(ka ^ _s32(0x5BD1E995))
    if counter.dtype != torch.int32:
        counter = _to_i32(counter)
    return _triple32_(((ka ^ counter) + kb).contiguous())


def raw_bits(k: int, stream: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Like :func:`raw_bits32` but as int64 in [0, 2**32) (for callers doing integer math)."""
    return raw_bits32(k, stream, counter).to(torch.int64) & MASK32


def uniform(k: int, stream: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """float32 uniforms in (0, 1) from the top 24 bits (cell midpoints: never 0 or 1)."""
    b = _srl(raw_bits32(k, stream, counter), 8)
    return (b.to(torch.float32) + 0.5) * (2.0**-24)


_TABLES: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _build_table() -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.arange(_TABLE_N + 1, dtype=torch.float64) / _TABLE_N
    t = torch.special.ndtri(u)
    c = float(t[1])
    # E[z | z < c] = -phi(c) / Phi(c), with Phi(c) = 2**-16 exactly by construction.
    tail_mean = -math.exp(-0.5 * c * c) / math.sqrt(2 * math.pi) / (1.0 / _TABLE_N)
    t[0] = 2 * tail_mean - c
    t[-1] = -t[0]
    t32 = t.to(torch.float32)
    d32 = (t[1:] - t[:-1]).to(torch.float32)
    return t32[:-1].contiguous(), d32.contiguous()


def normal_table(device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(T, D) float32 tables on ``device``: cell start value and cell width, 2**16 entries each."""
    device = torch.device(device)
    if device not in _TABLES:
        cpu = _TABLES.get(torch.device("cpu"))
        if cpu is None:
            cpu = _build_table()
            _TABLES[torch.device("cpu")] = cpu
        _TABLES[device] = (cpu[0].to(device), cpu[1].to(device))
    return _TABLES[device]


def table_sha256() -> str:
    """Hash of the float32 normal tables, pinned by a test (detects a platform building them differently)."""
    t, d = normal_table("cpu")
    return hashlib.sha256(t.numpy().tobytes() + d.numpy().tobytes()).hexdigest()


def normal_from_bits(bits: torch.Tensor) -> torch.Tensor:
    """Standard normals (float32) from 32-bit words (int32 words, or int64 in [0, 2**32))."""
    t, d = normal_table(bits.device)
    if bits.dtype != torch.int32:
        bits = _to_i32(bits)
    idx = _srl(bits, _TABLE_BITS)
    f = (bits & (_TABLE_N - 1)).to(torch.float32).add_(0.5).mul_(2.0**-_TABLE_BITS)
    flat = idx.reshape(-1)
    prod = torch.index_select(d, 0, flat).view(idx.shape).mul_(f)  # separate multiply and add: no FMA
    return torch.index_select(t, 0, flat).view(idx.shape).add_(prod)


def normal(k: int, stream: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Standard normals (float32), identical on every device and for any batching of counters."""
    return normal_from_bits(raw_bits32(k, stream, counter))
