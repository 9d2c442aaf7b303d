"""Block Poisson-functional-representation coder with shared candidate pools (the modern sampler).

Algorithm (Li & El Gamal 2018; Theis & Yosri 2022 "ordered random coding"), per block of dims:
candidates x_1, x_2, ... ~ p' = N(0, I) arrive at Poisson times T_1 < T_2 < ...; the encoder sends
the rank K = argmin_i T_i / w(x_i), w = q'/p'.  With infinitely many candidates x_K ~ q' exactly and
E[log K] <= KL + O(1); we stop at N = 2**log2_candidates candidates (the only source of bias; the
benchmark measures it), and entropy-code K with a semi-static log-bucket model (``entropy.py``),
which costs about KL + log2(KL + 1) + 1 bits per block.

Blocks: dims with KL > ``outlier_bits`` become 16-bit dithered outliers (``blocks.py``); the
rest are cut in raster order into superblocks of ``max_dims`` dims, split in halves while their
KL exceeds ``budget_bits`` (``blocks.tree_split``: one entropy-coded flag per tree node).  This
was measured cheaper than sending free block sizes (about 1.4 vs 5.3 bits per block on the
benchmark's latents).  The decoder rebuilds blocks from the flags, never from floats.

Speed (why a pool): scoring N candidates for every block needs N x D log-weights.  Drawing N x D
fresh normals costs far more than scoring them, so all blocks share one pool P of N x W normals
(W = 2 * next_pow2(max_dims)), and each block b gets its own transform, drawn from the shared
stream by block index: a random row offset r_b (candidate of rank i is pool row (i + r_b) mod N),
a random injective choice of its d columns out of W, and random signs.  Each block's candidate
sequence is therefore still i.i.d. N(0, I_d) and independent of the shared arrival times, so
every block's marginal is exactly PFR (truncated at N).  Blocks are *not* independent of each
other (they reuse pool entries): blocks with near-identical posteriors tend to pick the same
rows.  Measured (tests/coding/test_exactness.py, benchmark): marginals pass KS tests, neighbouring
blocks' noise correlation is ~0, but averages over many near-identical low-KL blocks fluctuate
more than for independent samples.  Log-weights are a quadratic form, log w = a.x^2 + b.x + c
per dim, so all blocks are scored with one matrix product [P^2, P] (N x 2W) @ [A; B] (2W x
blocks), and only the few candidates whose log-weight could still beat their block's best get an
exact score (the encoder's search; the format does not depend on it).  The decoder only
regenerates the d entries of the selected pool row per block.

Coding order (``channels``): an image latent arrives flattened channel-major (C, H, W): a run of
64 dims is 64 positions of one channel, and some channels are (nearly) inactive.  Coded
position-major instead (all C channels of one position, then the next), superblocks mix active and
inactive channels, which at low rates fills blocks closer to the budget (fewer blocks, so fewer
per-block overheads); at high rates, where most channels are active, channel-major gives fewer
blocks.  With ``channels = C`` the encoder therefore builds the split tree in both orders (cheap:
no candidate search), codes in the one with fewer blocks, and writes that choice as one bit after
the latent size (how often the fewer-blocks rule picks the cheaper order, and what each order
saves: docs/coding.md, "Coding order").  Both orders are integer permutations fixed by C, d and the
flag, never by floats.  ``channels = 1`` is the original order with no flag and keeps the
4-parameter form, so older bitstreams and pipelines are byte-identical; ``channels = 0`` means
"the latent's channel count" in pipeline specs, which the codec resolves before coding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from raybb.coding import randomness as rnd
from raybb.coding.base import (
    DiagGaussian,
    EncodeResult,
    IntParams,
    StreamKey,
    check_pair,
    check_prior,
    kl_bits_std,
    prior_sample,
    register,
    standardize,
)
from raybb.coding.blocks import (
    OutlierCodec,
    check_latent_size,
    inliers,
    read_outlier_section,
    read_tree,
    tree_split,
    write_outlier_section,
)
from raybb.coding.entropy import Reader, Writer
from raybb.errors import CorruptPayload

__all__ = ["PFRSampler", "PFR_DEFAULT_PARAMS"]

#: What a bare "pfr" means everywhere (raybb.pipelines): blocks of up to 22 bits of KL searched among
#: 2^14 candidates (truncated: ~1.0x KL with a measured bias), 128-dim superblocks (at low rates a
#: 64-dim superblock holds far less than the budget, and every block costs a rank and a flag),
#: outliers above 22 bits. ``PFRSampler()`` uses them with ``channels=1`` (the flat order); the
#: codec adds the level's channel count. Near-exact samples: (14, 16, 64, 14).
PFR_DEFAULT_PARAMS: tuple[int, int, int, int] = (22, 14, 128, 22)

_POOL, _ARRIVAL, _PERM, _ROW, _SIGN, _ONOISE, _ODITHER = range(7)
_K0 = 128  # ranks with per-block arrival times
_SLACK = 1e-5  # relative slack on the search bounds, far above float32 rounding of the scores
_CHUNK_ELEMS = 1 << 22  # (blocks x pool rows) log-weights scored per GEMM
#: Blocks per layout/search chunk.  Every block's candidates, signs and arrival times are keyed by
#: its global index, and its rank does not depend on the other blocks searched with it, so cutting
#: the blocks into chunks changes no byte; it bounds the per-dim temporaries of a 100 MP latent
#: (37.5 M dims) and keeps the scoring GEMM's coefficients in cache (measured on a 6 MP image:
#: one 107k-block search took 99 s, chunks of 8192 blocks: benchmarks/results/tiling_cpu.md).
_BLOCK_CHUNK = 8192


_MIN_CLASS = 8  # narrowest column class


class _Layout:
    """Per-dim block membership and per-block transforms, derived from integers only.

    A block of d dims belongs to the column class ``W = min(width, max(8, 2 * next_pow2(d)))``
    and draws its d columns injectively from the first W columns of the one shared pool (at
    least twice as many columns as it needs, so blocks rarely reuse the same entries), plus
    random signs and a random row offset.  Classes only exist to keep the scoring GEMM small.
    """

    def __init__(
        self, inl: np.ndarray, sizes: np.ndarray, log2n: int, width: int, keys: dict, device, block0: int = 0
    ) -> None:
        """``sizes`` are blocks ``block0, block0 + 1, ...`` of the latent, ``inl`` their dims; block
        indices here are local (0 = ``block0``), the shared randomness is keyed by global ones."""
        self.n_blocks = len(sizes)
        self.block0 = block0
        self.block_of = np.repeat(np.arange(self.n_blocks), sizes)
        starts = np.cumsum(sizes) - sizes
        self.j = np.arange(len(inl)) - starts[self.block_of]
        self.inl = inl
        self.width = width
        nmask = (1 << log2n) - 1
        b_all = torch.arange(block0, block0 + self.n_blocks, device=device)
        self.row_off = rnd.raw_bits(keys[_ROW], b_all, torch.zeros((), dtype=torch.int32)) & nmask
        bo = torch.as_tensor(self.block_of, device=device)
        jt = torch.as_tensor(self.j, device=device)
        sbit = rnd.raw_bits(keys[_SIGN], bo + block0, jt) & 1
        self.sign = (1 - 2 * sbit).to(torch.float32)
        wlog = np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64) + 1
        self.cls = np.minimum(width, np.maximum(_MIN_CLASS, np.left_shift(np.int64(1), wlog)))
        self.col = torch.zeros(len(inl), dtype=torch.int64, device=device)
        self.classes: dict[int, np.ndarray] = {}
        cls_of_dim = self.cls[self.block_of]
        for w in np.unique(self.cls).tolist():
            blocks = np.flatnonzero(self.cls == w)
            self.classes[w] = blocks
            dmax = int(sizes[blocks].max())
            cols = torch.arange(w, device=device)
            perm = torch.empty(len(blocks), dmax, dtype=torch.int64, device=device)
            bt_all = torch.as_tensor(blocks, device=device)
            step = max(1, (1 << 20) // w)
            for b0 in range(0, len(blocks), step):  # bounded memory
                bt = bt_all[b0 : b0 + step]
                bits = rnd.raw_bits(keys[_PERM], bt[:, None] + block0, cols[None, :].to(torch.int32))
                perm[b0 : b0 + step] = torch.argsort((bits << 9) | cols[None, :], dim=1)[:, :dmax]
            dims = torch.as_tensor(np.flatnonzero(cls_of_dim == w), device=device)
            local = torch.as_tensor(np.searchsorted(blocks, self.block_of[dims.cpu().numpy()]), device=device)
            self.col[dims] = perm[local, jt[dims]]


@dataclass(frozen=True)
class _Rows:
    """Code only the channels ``rows`` of a channel-major (C, n) latent, as one latent of
    ``len(rows) * n`` dims in that channel order (raybb.coding.dither's PFR part), reading q and p
    in place instead of copying the channels out."""

    n: int
    rows: np.ndarray


def _kl_std_bits(
    q: DiagGaussian, p: DiagGaussian, channels: int = 0, chunk: int = 1 << 20, rows: _Rows | None = None
) -> np.ndarray:
    """Per-dim KL[q || p] in bits (float64, NumPy): ``kl_bits_std(*standardize(q, p))`` computed
    in chunks of dims (elementwise, so the same numbers) without full-size float64 temporaries;
    ``channels`` > 0: in position-major order (the channel-major latent transposed); ``rows``: of
    those channels of q and p only (see :class:`_Rows`)."""
    if rows is not None:
        out = np.empty(len(rows.rows) * rows.n, dtype=np.float64)
        view = out.reshape(rows.n, -1) if channels else out.reshape(-1, rows.n)
        for j, ch in enumerate(rows.rows.tolist()):
            sl = slice(ch * rows.n, (ch + 1) * rows.n)
            k = kl_bits_std(*standardize(DiagGaussian(q.mean[sl], q.std[sl]), DiagGaussian(p.mean[sl], p.std[sl])))
            if channels:
                view[:, j] = k.cpu().numpy()
            else:
                view[j] = k.cpu().numpy()
        return out
    d = q.mean.shape[0]
    out = np.empty(d, dtype=np.float64)
    if channels:
        n_pos = d // channels
        step = max(1, chunk // channels)
        for p0 in range(0, n_pos, step):
            p1 = min(n_pos, p0 + step)
            cut = [t.view(channels, n_pos)[:, p0:p1].T.reshape(-1) for t in (q.mean, q.std, p.mean, p.std)]
            m, s = standardize(DiagGaussian(cut[0], cut[1]), DiagGaussian(cut[2], cut[3]))
            out[p0 * channels : p1 * channels] = kl_bits_std(m, s).cpu().numpy()
        return out
    for i in range(0, d, chunk):
        sl = slice(i, min(d, i + chunk))
        m, s = standardize(DiagGaussian(q.mean[sl], q.std[sl]), DiagGaussian(p.mean[sl], p.std[sl]))
        out[sl] = kl_bits_std(m, s).cpu().numpy()
    return out


class _Standardized:
    """``standardize(q, p)`` at any dims of the coding order, computed on demand (elementwise, so the
    same numbers as the whole latent's), so no full-size m and s exist. ``channels`` > 0: the coding
    order is position-major, dim i = position i // C, channel i % C of the channel-major latent."""

    def __init__(self, q: DiagGaussian, p: DiagGaussian, channels: int, rows: _Rows | None = None) -> None:
        self.q, self.p, self.c, self.rows = q, p, channels, rows
        self.m, self.s = _Lookup(self, 0), _Lookup(self, 1)
        if rows is not None:
            self._rows_t = torch.as_tensor(rows.rows, device=q.mean.device)

    def at(self, pos) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(pos, device=self.q.mean.device)
        if self.rows is not None:  # a dim of the sub-latent -> its index in the whole latent
            n = self.rows.n
            j, at = (idx % self.c, idx // self.c) if self.c else (idx // n, idx % n)
            idx = self._rows_t[j] * n + at
        elif self.c:
            n_pos = self.q.mean.shape[0] // self.c
            idx = (idx % self.c) * n_pos + idx // self.c
        q, p = self.q, self.p
        return standardize(DiagGaussian(q.mean[idx], q.std[idx]), DiagGaussian(p.mean[idx], p.std[idx]))


class _Lookup:
    """``m[pos]`` / ``s[pos]`` for the outlier coder, backed by :class:`_Standardized`."""

    def __init__(self, std: _Standardized, which: int) -> None:
        self.std, self.which = std, which
        self.device = std.q.mean.device

    def __getitem__(self, pos) -> torch.Tensor:
        return self.std.at(pos)[self.which]


def _chunks(sizes: np.ndarray, blocks: int = _BLOCK_CHUNK):
    """(first block, end block, first dim, end dim) of consecutive chunks of ``blocks`` blocks."""
    ends = np.cumsum(sizes)
    for b0 in range(0, len(sizes), blocks):
        b1 = min(len(sizes), b0 + blocks)
        yield b0, b1, int(ends[b0 - 1]) if b0 else 0, int(ends[b1 - 1])


@register
class PFRSampler(IntParams):
    """Block PFR / ordered random coding with pooled candidates (see module docstring)."""

    sampler_id: ClassVar[int] = 4
    name: ClassVar[str] = "pfr"
    PARAMS: ClassVar[tuple[str, ...]] = ("budget_bits", "log2_candidates", "max_dims", "outlier_bits", "channels")

    def __init__(
        self,
        budget_bits: int = PFR_DEFAULT_PARAMS[0],
        log2_candidates: int = PFR_DEFAULT_PARAMS[1],
        max_dims: int = PFR_DEFAULT_PARAMS[2],
        outlier_bits: int = PFR_DEFAULT_PARAMS[3],
        channels: int = 1,
    ) -> None:
        self.budget_bits = int(budget_bits)
        self.log2_candidates = int(log2_candidates)
        self.max_dims = int(max_dims)
        self.outlier_bits = int(outlier_bits)
        self.channels = int(channels)
        self._validate()

    def params(self) -> tuple[int, ...]:
        """Four parameters in the original order (``channels == 1``), so those bitstreams keep their bytes."""
        p = super().params()
        return p[:4] if self.channels == 1 else p

    @classmethod
    def from_params(cls, params: tuple[int, ...]):
        if len(params) == 4:  # written before the coding order existed: the original order
            params = (*params, 1)
        return super().from_params(params)

    def _validate(self) -> None:
        if not 1 <= self.budget_bits <= 32:
            raise CorruptPayload("pfr: budget_bits must be in [1, 32]")
        if not 1 <= self.log2_candidates <= 22:
            raise CorruptPayload("pfr: log2_candidates must be in [1, 22]")
        if not 1 <= self.max_dims <= 256:
            raise CorruptPayload("pfr: max_dims must be in [1, 256]")
        if not 1 <= self.outlier_bits <= 64:
            raise CorruptPayload("pfr: outlier_bits must be in [1, 64]")
        if not 0 <= self.channels <= 65536:
            raise CorruptPayload("pfr: channels must be in [0, 65536] (0 = resolved by the codec)")

    def _position_major(self, d: int) -> bool:
        """Whether this latent may be coded position-major: the (channels, d / channels) latent read
        position by position, i.e. transposed (a flag in the payload says whether it was)."""
        if self.channels == 1:
            return False
        if self.channels == 0:
            raise CorruptPayload("pfr: channels=0 ('the latent's channel count') was not resolved to a number")
        if d % self.channels:
            raise CorruptPayload(f"pfr: a latent of {d} dims does not have {self.channels} channels")
        return True

    def _n_blocks(self, kl: np.ndarray) -> int:
        """How many blocks the split tree makes of these per-dim KLs (flags go to a scratch writer)."""
        skip = np.flatnonzero(kl > self.outlier_bits)
        sizes, _ = tree_split(kl, self.max_dims, self.budget_bits, Writer(), skip=skip)
        return len(sizes)

    @staticmethod
    def _keys(key: StreamKey) -> dict:
        return {t: rnd.fold_key(key.seed, key.image, key.level, PFRSampler.sampler_id * 16 + t) for t in range(7)}

    # ------------------------------------------------------------------ encoder
    def encode(self, q: DiagGaussian, p: DiagGaussian, key: StreamKey) -> EncodeResult:
        return self._encode(q, p, key)

    def _encode(self, q: DiagGaussian, p: DiagGaussian, key: StreamKey, rows: _Rows | None = None) -> EncodeResult:
        """``rows``: code those channels of q and p (read in place); the result then has no sample
        (the caller decodes with :meth:`_decode_std`, raybb.coding.dither)."""
        d = check_pair(q, p)
        if rows is not None:
            d = len(rows.rows) * rows.n
        dev = q.mean.device
        keys = self._keys(key)
        pm = self._position_major(d)
        # Memory: a 100 MP image's level 1 has 37.5 M dims, and every per-dim float64 array is
        # 300 MB. So only the per-dim KLs exist whole (one array at a time, computed in chunks, in
        # the coding order); standardized values are computed per chunk of blocks from q and p,
        # elementwise, so they are the same numbers as a whole-latent standardize would give.
        kl_np = _kl_std_bits(q, p, rows=rows)
        use_pm = False
        if pm:
            n_cm = self._n_blocks(kl_np)
            kl_np = None
            kl_np = _kl_std_bits(q, p, self.channels, rows=rows)
            use_pm = self._n_blocks(kl_np) < n_cm
            if not use_pm:
                kl_np = None
                kl_np = _kl_std_bits(q, p, rows=rows)
        std = _Standardized(q, p, self.channels if use_pm else 0, rows)
        kl_total = float(kl_np.sum())
        out_pos = np.flatnonzero(kl_np > self.outlier_bits)
        kl_out = kl_np[out_pos]
        w = Writer()
        w.uint(d, 32)
        if pm:
            w.uint(int(use_pm), 1)
        write_outlier_section(w, OutlierCodec(keys[_ONOISE], keys[_ODITHER]), std.m, std.s, out_pos)
        bits_outliers = w.num_bits()
        sizes, _levels = tree_split(kl_np, self.max_dims, self.budget_bits, w, skip=out_pos)
        bits_tree = w.num_bits() - bits_outliers
        ranks = np.zeros(len(sizes), dtype=np.int64)
        bsum = np.zeros(len(sizes))
        pruned = 0
        pool = self._pool(keys, dev)
        for b0, b1, d0, d1 in _chunks(sizes):
            inl = inliers(out_pos, d0, d1)
            m, s = std.at(inl)
            lay = _Layout(np.arange(d1 - d0), sizes[b0:b1], self.log2_candidates, self.pool_width, keys, dev, b0)
            ranks[b0:b1] = self._search(m, s, lay, keys, pool)
            bsum[b0:b1] = np.bincount(lay.block_of, weights=kl_np[inl], minlength=b1 - b0)
            pruned += self._pruned
            del lay, m, s
        self._pruned = pruned
        del kl_np, pool
        bits_before_ranks = w.num_bits()
        w.log_bucket(ranks)
        bits_ranks = w.num_bits() - bits_before_ranks
        payload = w.finish()
        # with ``rows`` the caller decodes (in the standardized space): no sample here
        sample = self.decode(p, key, payload) if rows is None else torch.empty(0, device=dev)
        stats = {
            "kl_bits": kl_total,
            "coded_bits": 8 * len(payload),
            "n_outliers": int(len(out_pos)),
            "n_blocks": int(len(sizes)),
            "outlier_kl_bits": float(kl_out.sum()),
            "max_block_kl_bits": float(bsum.max()) if len(sizes) else 0.0,
            "mean_log2_rank": float(np.log2(ranks + 1).mean()) if len(sizes) else 0.0,
            "position_major": int(use_pm),  # the coding order chosen (see the module docstring)
            # where the bits go (range-coder counts, approximate at the section boundaries): size,
            # order flag and outliers; split tree; ranks
            "outlier_section_bits": int(bits_outliers),
            "tree_bits": int(bits_tree),
            "rank_bits": int(bits_ranks),
            "inlier_kl_bits": kl_total - float(kl_out.sum()),
        }
        return EncodeResult(payload=payload, sample=sample, stats=stats)

    @property
    def pool_width(self) -> int:
        return 2 << max(0, (self.max_dims - 1).bit_length())

    def _pool(self, keys: dict, dev) -> torch.Tensor:
        """The shared candidate pool, column-major (W, N): pool_t[c, r] is row r, column c."""
        n, w = 1 << self.log2_candidates, self.pool_width
        cells = (
            torch.arange(n, device=dev, dtype=torch.int32)[None, :] * w
            + torch.arange(w, device=dev, dtype=torch.int32)[:, None]
        )
        return rnd.normal(keys[_POOL], torch.tensor(w, device=dev), cells)

    def _search(
        self, m: torch.Tensor, s: torch.Tensor, lay: _Layout, keys: dict, pool_t: torch.Tensor | None = None
    ) -> np.ndarray:
        """Rank of the PFR winner for every block (truncated at N candidates).

        Arrival times: each block has its *own* first ``_K0`` arrivals (the ranks where almost all
        low-KL winners are), and later arrivals add shared Exp(1) increments to the block's own
        T_K0 -- still a Poisson process per block, and blocks no longer share a "temperature".
        """
        dev = m.device
        n = 1 << self.log2_candidates
        nb = lay.n_blocks
        ranks = np.zeros(nb, dtype=np.int64)
        self._pruned = 0
        if nb == 0:
            return ranks
        k0 = min(_K0, n)
        bo = torch.as_tensor(lay.block_of, device=dev)
        b_all = torch.arange(lay.block0, lay.block0 + nb, device=dev)
        u0 = rnd.uniform(
            keys[_ARRIVAL], b_all[None, :], torch.arange(k0, device=dev, dtype=torch.int32)[:, None]
        ).double()
        t_own = torch.cumsum(-torch.log(u0), 0)  # (k0, nb) float64
        inl = torch.as_tensor(lay.inl, device=dev)
        mi, si = m[inl].double(), s[inl].double()
        inv = 1.0 / (si * si)
        a = (0.5 - 0.5 * inv).to(torch.float32)
        b = (mi * inv).to(torch.float32) * lay.sign
        c = -torch.log(si) - 0.5 * mi * mi * inv
        cb64 = torch.zeros(nb, dtype=torch.float64, device=dev).index_add_(0, bo, c)
        cb = cb64.to(torch.float32)
        # the pool is generated column-major, (W, N): pool_t[c, r] is row r, column c (the same
        # counter-based values); the scoring GEMM wants pool rows as its contiguous dimension
        if pool_t is None:
            pool_t = self._pool(keys, dev)
        roff = lay.row_off
        # ranks < k0: explicit per-block scores with the block's own arrival times.  Block b's
        # first k0 candidates are the k0 pool rows from r_b on (wrapping): with the pool's first
        # k0 rows appended, every dim reads one contiguous run of k0 values.
        runs = torch.cat([pool_t, pool_t[:, :k0]], 1).reshape(-1).unfold(0, k0, 1)
        base = lay.col * (n + k0) + roff[bo]
        lw = torch.zeros(nb, k0, device=dev)
        per = max(1, _CHUNK_ELEMS // k0)
        for j0 in range(0, len(lay.inl), per):  # bounded memory
            x = runs[base[j0 : j0 + per]]  # (dims, k0)
            lw.index_add_(0, bo[j0 : j0 + per], a[j0 : j0 + per, None] * x * x + b[j0 : j0 + per, None] * x)
        del runs
        score = torch.log(t_own).to(torch.float32).T - (lw + cb[:, None])
        val, arg = score.min(1)
        found = val < float("inf")  # a NaN score never wins
        best = torch.where(found, val, float("inf"))
        best_rank = torch.where(found, arg, 0)
        if n > k0:
            # ranks >= k0: T = T_own[k0-1] + shared increments; one GEMM per column class
            us = rnd.uniform(
                keys[_ARRIVAL], torch.tensor(1 << 40, device=dev), torch.arange(n, device=dev, dtype=torch.int32)
            ).double()
            inc = torch.cumsum(-torch.log(us), 0)
            inc = torch.where(
                torch.arange(n, device=dev) < k0, torch.full_like(inc, float("inf")), inc - inc[k0 - 1]
            ).to(torch.float32)
            t_k0 = t_own[k0 - 1].to(torch.float32)
            sq_t = pool_t * pool_t
            inc_lb = torch.where(torch.isinf(inc), torch.zeros_like(inc), inc)  # T lower bounds per rank
            nmask = n - 1
            # Exact pruning: a block whose best score so far beats log(T_k0) - sup log w cannot be
            # improved by later ranks (T only grows; sup over the pool's value range [-X, X]).
            tbl_t, tbl_d = rnd.normal_table("cpu")
            xmax = float(max(-tbl_t[0], tbl_t[-1] + tbl_d[-1]))
            a64, b64 = a.double(), b.double()
            ends = torch.maximum(a64 * xmax * xmax + b64 * xmax, a64 * xmax * xmax - b64 * xmax)
            vx = -b64 / (2 * a64)
            vert = torch.where((a64 < 0) & (vx.abs() <= xmax), -b64 * b64 / (4 * a64), ends)
            sup = torch.zeros(nb, dtype=torch.float64, device=dev).index_add_(0, bo, torch.maximum(ends, vert))
            ub = sup + cb64 + 1e-3 * (1 + (sup + cb64).abs())  # slack for float32 scoring
            hopeless = (torch.log(t_own[k0 - 1]) - ub) > best.double()
            self._pruned = int(hopeless.sum())
            for wc, blocks_all in lay.classes.items():
                blocks = blocks_all[~hopeless[torch.as_tensor(blocks_all, device=dev)].cpu().numpy()]
                if len(blocks) == 0:
                    continue
                bsel = torch.as_tensor(blocks, device=dev)
                nbc = len(blocks)
                dsel = torch.as_tensor(np.flatnonzero(np.isin(lay.block_of, blocks)), device=dev)
                local = torch.as_tensor(np.searchsorted(blocks, lay.block_of[dsel.cpu().numpy()]), device=dev)
                coef_t = torch.zeros(nbc, 2 * wc, dtype=torch.float32, device=dev)
                coef_t[local, lay.col[dsel]] = a[dsel]
                coef_t[local, wc + lay.col[dsel]] = b[dsel]
                feats_t = torch.cat([sq_t[:wc], pool_t[:wc]], 0)  # (2W, N)
                roff = lay.row_off[bsel]
                cbc, tk = cb[bsel][:, None], t_k0[bsel][:, None]
                rows_per = max(64, min(n, _CHUNK_ELEMS // max(nbc, 1)))
                # Block b's arrival at pool row r is t_k0[b] + inc[(r - r_b) mod N]: over a chunk of
                # rows that is a window of consecutive ranks, so T is smallest at the window start.
                # Per chunk: one GEMM for the log-weights, one max-reduction per block, and exact
                # scores only for candidates whose log-weight clears log(T_window_start) - best (no
                # candidate below that bound can win: T only grows within the window).  Candidates
                # that can win get the same float32 arithmetic as a dense scan, so the ranks (and
                # bytes) are those of scoring every candidate; it is the elementwise passes over all
                # (block, row) pairs that this avoids (tests/coding/test_pfr_search.py).
                ubc = ub[bsel].to(torch.float32)
                bst = best[bsel].clone()
                brk = best_rank[bsel].clone()
                for r0 in range(0, n, rows_per):
                    r1 = min(n, r0 + rows_per)
                    start = (r0 - roff) & nmask
                    t_lb = tk[:, 0] + torch.where(start + (r1 - r0) <= n, inc_lb[start], torch.zeros_like(tk[:, 0]))
                    log_tlb = torch.log(t_lb)
                    act = torch.nonzero(log_tlb - ubc < bst).flatten()
                    if act.numel() == 0:
                        continue
                    if act.numel() == nbc:  # usual case: no copies of the coefficients
                        lw = torch.addmm(cbc, coef_t, feats_t[:, r0:r1])  # (blocks, rows)
                    else:
                        lw = torch.addmm(cbc[act], coef_t[act], feats_t[:, r0:r1])
                    thr = log_tlb[act] - bst[act]
                    thr = thr - _SLACK * (1.0 + thr.abs())  # float slack: keep the bound conservative
                    hit = torch.nonzero(torch.amax(lw, 1) > thr).flatten()
                    if hit.numel() == 0:
                        continue
                    sub = lw[hit]
                    bi, ci = torch.nonzero(sub > thr[hit][:, None], as_tuple=True)
                    blk = act[hit[bi]]  # index (within this class) of each surviving candidate's block
                    t = inc[(start[blk] + ci) & nmask] + tk[blk, 0]
                    score = torch.log(t) - sub[bi, ci]
                    vmin = torch.full((nbc,), float("inf"), device=dev).scatter_reduce_(
                        0, blk, score, "amin", include_self=True
                    )
                    # first (lowest row) candidate among equal minima, as a dense scan would pick
                    at_min = score == vmin[blk]
                    big = torch.full((nbc,), r1 - r0, dtype=torch.int64, device=dev)
                    cmin = big.scatter_reduce(0, blk[at_min], ci[at_min], "amin", include_self=True)
                    upd = torch.nonzero((vmin < bst) & (cmin < r1 - r0)).flatten()
                    bst[upd] = vmin[upd]
                    brk[upd] = (cmin[upd] + r0 - roff[upd]) & nmask
                best[bsel], best_rank[bsel] = bst, brk
        ranks[:] = best_rank.cpu().numpy()
        return ranks

    # ------------------------------------------------------------------ decoder
    def decode(self, p: DiagGaussian, key: StreamKey, payload: bytes) -> torch.Tensor:
        return prior_sample(p, self._decode_std(check_prior(p), p.mean.device, key, payload))

    def _decode_std(self, d: int, dev, key: StreamKey, payload: bytes) -> torch.Tensor:
        """The decoded sample of a ``d``-dim latent in its prior's standardized space."""
        keys = self._keys(key)
        pm = self._position_major(d)
        r = Reader(payload)
        check_latent_size(r, d, "pfr")
        transposed = pm and bool(r.uint(1))
        n_out, out_pos, e, words = read_outlier_section(r, d)
        sizes, _levels = read_tree(r, d - n_out, self.max_dims)
        n_blocks = len(sizes)
        ranks = r.log_bucket(n_blocks, limit=(1 << self.log2_candidates) - 1)
        r.finish()
        z = torch.zeros(d, dtype=torch.float32, device=dev)
        if n_out:
            z[torch.as_tensor(out_pos, device=dev)] = OutlierCodec(keys[_ONOISE], keys[_ODITHER]).values(
                e, words, out_pos, dev
            )
        nmask = (1 << self.log2_candidates) - 1
        for b0, b1, d0, d1 in _chunks(sizes):  # bounded memory; see _BLOCK_CHUNK
            inl = inliers(out_pos, d0, d1)
            lay = _Layout(inl, sizes[b0:b1], self.log2_candidates, self.pool_width, keys, dev, b0)
            bo = torch.as_tensor(lay.block_of, device=dev)
            row = (torch.as_tensor(ranks[b0:b1], device=dev)[bo] + lay.row_off[bo]) & nmask
            vals = rnd.normal(
                keys[_POOL], torch.tensor(lay.width, device=dev), (row * lay.width + lay.col).to(torch.int32)
            )
            z[torch.as_tensor(inl, device=dev)] = vals * lay.sign
            del lay, bo, row, vals
        if transposed:  # coded position-major: back to channel-major
            z = z.view(-1, self.channels).T.reshape(-1)
        return z
