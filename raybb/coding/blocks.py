"""Block splitting and 16-bit outliers, shared by the block-based samplers.

Everything here that changes which bits are read is computed by the *encoder* only and then
transmitted as integers (block sizes, outlier positions, the quantizer exponent).

Outlier quantizer (standardized space, documented because it is part of the format):
the encoder draws ``v ~ q'`` from the shared stream, picks the exponent ``e`` (sent in 6 bits as
``e + 16``) so that ``|v| * 2**e <= 32766`` for every outlier, and sends
``i = round(v * 2**e + u)`` as a 16-bit two's-complement word, where ``u`` in (-1/2, 1/2) is a
dither drawn from the shared stream keyed by the outlier's dimension.  The decoder outputs
``(i - u) * 2**-e``.  This is subtractive dithered quantization: the error is uniform on
[-2**-e/2, 2**-e/2] and independent of ``v``, so an outlier is an exact sample of q convolved
with a tiny uniform (step <= max|v|/16383 prior standard deviations).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from raybb.coding import randomness as rnd
from raybb.coding.entropy import Reader, Writer
from raybb.errors import CorruptPayload

__all__ = [
    "kl_blocks",
    "write_positions",
    "read_positions",
    "OutlierCodec",
]


def kl_blocks(kl: np.ndarray, budget_bits: float, max_dims: int) -> np.ndarray:
    """Split dims (raster order) into consecutive blocks of ~``budget_bits`` KL and <= ``max_dims``.

    A dim goes to block ``floor((cumKL - kl/2) / budget)`` (the block containing the midpoint of
    its KL interval), so a block's KL is at most ``budget`` plus half of each end dim's KL, and
    never a whole budget off; blocks longer than ``max_dims`` are cut.  Returns block sizes.
    Vectorised; sizes are transmitted, the decoder never recomputes them.
    """
    n = kl.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    kl = np.maximum(np.asarray(kl, dtype=np.float64), 0.0)
    mid = np.cumsum(kl) - 0.5 * kl
    bid = np.floor(mid / budget_bits).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, bid[1:] != bid[:-1]])
    sizes = np.diff(np.r_[starts, n])
    # cut long blocks into pieces of at most max_dims
    pieces = -(-sizes // max_dims)
    out = np.repeat(np.full(sizes.shape, max_dims, dtype=np.int64), pieces)
    last = np.cumsum(pieces) - 1
    out[last] = sizes - (pieces - 1) * max_dims
    return out


def write_positions(w: Writer, pos: np.ndarray) -> None:
    """Sorted distinct positions as gaps (semi-static log-bucket code)."""
    gaps = np.diff(np.r_[-1, pos]) - 1
    w.log_bucket(gaps)


def read_positions(r: Reader, n: int, d: int) -> np.ndarray:
    gaps = r.log_bucket(n, limit=d)
    pos = np.cumsum(gaps + 1) - 1
    if n and pos[-1] >= d:
        raise CorruptPayload("outlier position beyond the latent")
    return pos


class OutlierCodec:
    """Dithered 16-bit outliers (see module docstring); ``tag`` separates samplers' streams."""

    def __init__(self, key_noise: int, key_dither: int) -> None:
        self.key_noise = key_noise
        self.key_dither = key_dither

    def _dither(self, pos: torch.Tensor) -> torch.Tensor:
        return rnd.uniform(self.key_dither, pos, torch.zeros((), dtype=torch.int32)) - 0.5

    def encode(
        self, w: Writer, m: torch.Tensor, s: torch.Tensor, pos_np: np.ndarray, values: np.ndarray | None = None
    ) -> None:
        """Write e and the 16-bit words for outlier dims ``pos`` (positions written by the caller).

        ``values`` (standardized, float64) replaces the default draw v ~ q' when a sampler needs
        another distribution (e.g. the rejection sampler's residual)."""
        if pos_np.size == 0:
            return
        pos = torch.as_tensor(pos_np, device=m.device)
        if values is None:
            eps = rnd.normal(self.key_noise, pos, torch.zeros((), dtype=torch.int32))
            v = (m[pos] + s[pos] * eps).double()
        else:
            v = torch.as_tensor(values, dtype=torch.float64, device=m.device)
        vmax = float(v.abs().max())
        e = 47 if vmax == 0 else min(47, max(-16, math.floor(math.log2(32766.0 / vmax))))
        u = self._dither(pos).double()
        i = torch.round(v * (2.0**e) + u).clamp_(-32768, 32767).to(torch.int64)
        w.uint(e + 16, 6)
        w.uints((i.cpu().numpy() + 32768), 16)

    @staticmethod
    def read(r: Reader, n: int) -> tuple[int, np.ndarray]:
        if n == 0:
            return 0, np.zeros(0, dtype=np.int64)
        e = r.uint(6) - 16
        return e, r.uints(n, 16) - 32768

    def values(self, e: int, words: np.ndarray, pos_np: np.ndarray, device: torch.device) -> torch.Tensor:
        """Standardized outlier values (float32), the same ops on encoder and decoder."""
        pos = torch.as_tensor(pos_np, device=device)
        i = torch.as_tensor(words, device=device).to(torch.float32)
        return torch.mul(torch.sub(i, self._dither(pos)), 2.0**-e)


#: Superblocks per chunk of :func:`tree_split` (chunks only bound memory; the flags do not change).
_TREE_CHUNK = 1 << 16


def _tree_levels(n: int, superblock: int, decide) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replay the split tree: ``decide(level, starts, sizes) -> bool mask`` for splittable nodes.

    Level 0 nodes are fixed superblocks of the ``n`` in-block dims; a split node of size d has
    children of sizes d//2 and d - d//2.  Returns raster-ordered leaf (starts, sizes, levels).
    """
    starts = np.arange(0, n, superblock, dtype=np.int64)
    sizes = np.diff(np.r_[starts, n]).astype(np.int64)
    leaf_s, leaf_d, leaf_l = [], [], []
    level = 0
    while starts.size:
        can = sizes > 1
        split = np.zeros(starts.shape, dtype=bool)
        if can.any():
            split[can] = decide(level, starts[can], sizes[can])
        leaf_s.append(starts[~split])
        leaf_d.append(sizes[~split])
        leaf_l.append(np.full(int((~split).sum()), level, dtype=np.int64))
        s, d = starts[split], sizes[split]
        half = d // 2
        starts = np.stack([s, s + half], 1).reshape(-1)
        sizes = np.stack([half, d - half], 1).reshape(-1)
        level += 1
    if not leaf_s:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    st, sz, lv = np.concatenate(leaf_s), np.concatenate(leaf_d), np.concatenate(leaf_l)
    order = np.argsort(st, kind="stable")
    return st[order], sz[order], lv[order]


def inliers(skip: np.ndarray, d0: int, d1: int) -> np.ndarray:
    """Positions of inliers number d0..d1-1, inliers being the dims not in the sorted ``skip``
    (outliers), without a per-dim mask: the k-th inlier sits after the outliers with fewer
    inliers before them."""
    k = np.arange(d0, d1, dtype=np.int64)
    if len(skip) == 0:
        return k
    return k + np.searchsorted(skip - np.arange(len(skip)), k, side="right")


def tree_split(
    kl: np.ndarray, superblock: int, budget_bits: float, w: Writer, skip: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Encoder: split superblocks in halves while their KL exceeds the budget; write the flags.

    Cheaper side information than free block sizes: one (entropy-coded) flag per tree node, and
    blocks of near-zero KL stay whole.  Returns raster-ordered leaf (sizes, tree levels); the
    level is a free context for entropy coding (deeper leaves have KL close to the budget).

    Nodes never cross superblocks, so the tree is built over chunks of superblocks (bounded
    memory for a 37.5 M-dim latent) and the flags are written level by level afterwards: the same
    flags, in the same order, as one pass.  The KL prefix sums are carried from chunk to chunk in
    the same sequential order, so every node's KL is the same float64 number.  ``skip``: sorted
    positions of ``kl`` to leave out (outliers), read chunk by chunk instead of copying the rest.
    """
    kl = np.asarray(kl, dtype=np.float64)
    skip = np.zeros(0, dtype=np.int64) if skip is None else np.asarray(skip, dtype=np.int64)
    n = len(kl) - len(skip)
    flags_by_level: list[list[np.ndarray]] = []
    leaves = []
    carry = 0.0
    span = superblock * _TREE_CHUNK
    for c0 in range(0, max(n, 1), span):
        c1 = min(n, c0 + span)
        part = kl[c0:c1] if len(skip) == 0 else kl[inliers(skip, c0, c1)]
        cum = np.cumsum(np.r_[carry, np.maximum(part, 0.0)])
        carry = float(cum[-1])

        def decide(level, starts, sizes, cum=cum):  # starts are local to the chunk
            flags = (cum[starts + sizes] - cum[starts]) > budget_bits
            while len(flags_by_level) <= level:
                flags_by_level.append([])
            flags_by_level[level].append(flags)
            return flags

        st, sz, lv = _tree_levels(c1 - c0, superblock, decide)
        leaves.append((st + c0, sz, lv))
    for parts in flags_by_level:
        flags = np.concatenate(parts)
        ones = int(flags.sum())
        w.uint(ones, flags.size.bit_length())
        p1 = (ones + 0.5) / (flags.size + 1.0)
        w.categorical(flags.astype(np.int32), np.array([1.0 - p1, p1]))
    return np.concatenate([x[1] for x in leaves]), np.concatenate([x[2] for x in leaves])


def read_tree(r: Reader, n: int, superblock: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoder twin of :func:`tree_split`: leaf sizes from the flags (integers only)."""

    def decide(level, starts, sizes):
        ones = r.uint(sizes.size.bit_length(), limit=sizes.size)
        p1 = (ones + 0.5) / (sizes.size + 1.0)
        flags = r.categorical(sizes.size, np.array([1.0 - p1, p1])).astype(bool)
        if int(flags.sum()) != ones:
            raise CorruptPayload("split flags do not match their count")
        return flags

    return _tree_levels(n, superblock, decide)[1:]


def check_latent_size(r: Reader, d: int, sampler: str) -> None:
    """Every payload starts with the latent size it was made for; refuse a mismatch early."""
    if r.uint(32) != d:
        raise CorruptPayload(f"{sampler}: payload was made for a latent of another size")


def write_outlier_section(w: Writer, codec: OutlierCodec, m, s, out_pos: np.ndarray) -> None:
    """Outlier count, positions and 16-bit values (the layout pfr and importance share)."""
    w.uint(len(out_pos), 32)
    write_positions(w, out_pos)
    codec.encode(w, m, s, out_pos)


def read_outlier_section(r: Reader, d: int):
    """Inverse of :func:`write_outlier_section`: (n_out, positions, exponent, words)."""
    n_out = r.uint(32, limit=d)
    out_pos = read_positions(r, n_out, d)
    e, words = OutlierCodec.read(r, n_out)
    return n_out, out_pos, e, words
