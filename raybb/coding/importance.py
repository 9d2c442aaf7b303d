"""Adaptive block importance sampler (MIRACLE-style; Havasi et al. 2019).

Dims with KL > ``outlier_bits`` are sent as 16-bit dithered outliers.  The rest are grouped in
raster order into groups of at most ``budget_bits`` of KL and at most ``max_dims`` dims
(``blocks.kl_blocks``).  Group g gets ``2**n_g`` candidates from the standardized prior with
``n_g = ceil(KL_g)`` bits (i.e. ~exp(KL) candidates), and the encoder picks index i with
probability proportional to w_i = q'/p'(x_i) (Gumbel-max with encoder-side Gumbels from the
shared stream).  The index costs exactly n_g bits; group sizes and n_g are entropy-coded.
Importance sampling with ~exp(KL) candidates is *biased* (the selected sample is drawn from a
self-normalised approximation of q); the benchmark measures how much.

Candidates are fresh normals per group (no pooling), so encoding costs sum_g 2**n_g * d_g
normals: keep ``budget_bits`` around 8-10 on a CPU.
"""

from __future__ import annotations

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
    kl_blocks,
    read_outlier_section,
    write_outlier_section,
)
from raybb.coding.entropy import Reader, Writer
from raybb.errors import CorruptPayload

__all__ = ["ImportanceSampler"]

_CAND, _GUMBEL, _ONOISE, _ODITHER = range(4)


@register
class ImportanceSampler(IntParams):
    """Block importance sampling with KL-budgeted raster groups (see module docstring)."""

    sampler_id: ClassVar[int] = 3
    name: ClassVar[str] = "importance"
    PARAMS: ClassVar[tuple[str, ...]] = ("budget_bits", "max_dims", "outlier_bits")

    def __init__(self, budget_bits: int = 8, max_dims: int = 64, outlier_bits: int = 8) -> None:
        self.budget_bits, self.max_dims, self.outlier_bits = int(budget_bits), int(max_dims), int(outlier_bits)
        if not 1 <= self.budget_bits <= 16:
            raise CorruptPayload("importance: budget_bits must be in [1, 16]")
        if not 1 <= self.max_dims <= 1024:
            raise CorruptPayload("importance: max_dims must be in [1, 1024]")
        if not 1 <= self.outlier_bits <= self.budget_bits:
            raise CorruptPayload("importance: outlier_bits must be in [1, budget_bits]")

    @staticmethod
    def _keys(key: StreamKey) -> dict:
        return {
            t: rnd.fold_key(key.seed, key.image, key.level, ImportanceSampler.sampler_id * 16 + t) for t in range(4)
        }

    def encode(self, q: DiagGaussian, p: DiagGaussian, key: StreamKey) -> EncodeResult:
        d = check_pair(q, p)
        keys = self._keys(key)
        m, s = standardize(q, p)
        kl_np = kl_bits_std(m, s).cpu().numpy()
        out_pos = np.flatnonzero(kl_np > self.outlier_bits)
        inl = np.flatnonzero(kl_np <= self.outlier_bits)
        sizes = kl_blocks(kl_np[inl], self.budget_bits, self.max_dims)
        group_of = np.repeat(np.arange(len(sizes)), sizes)
        gkl = np.bincount(group_of, weights=kl_np[inl], minlength=len(sizes))
        nbits = np.clip(np.ceil(gkl - 1e-9), 0, self.budget_bits).astype(np.int64)
        idx = self._choose(m, s, inl, sizes, group_of, nbits, keys)

        w = Writer()
        w.uint(d, 32)
        write_outlier_section(w, OutlierCodec(keys[_ONOISE], keys[_ODITHER]), m, s, out_pos)
        w.uint(len(sizes), 32)
        w.log_bucket(sizes - 1)
        w.log_bucket(nbits)
        w.uniform(idx, np.left_shift(np.int64(1), nbits))
        payload = w.finish()
        stats = {
            "kl_bits": float(kl_np.sum()),
            "coded_bits": 8 * len(payload),
            "n_outliers": int(len(out_pos)),
            "n_blocks": int(len(sizes)),
            "index_bits": int(nbits.sum()),
        }
        return EncodeResult(payload, self.decode(p, key, payload), stats)

    def _choose(self, m, s, inl, sizes, group_of, nbits, keys) -> np.ndarray:
        dev = m.device
        G = self.max_dims
        starts = np.cumsum(sizes) - sizes
        jpos = np.arange(len(inl)) - starts[group_of]
        inv = 1.0 / (s.double() ** 2)
        a_all = (0.5 - 0.5 * inv).float()
        b_all = (m.double() * inv).float()
        idx = np.zeros(len(sizes), dtype=np.int64)
        for n in np.unique(nbits):
            groups = np.flatnonzero(nbits == n)
            ncand = 1 << int(n)
            if ncand == 1:
                continue
            # chunk groups so that candidates x dims stays ~4M floats
            dims_per = sizes[groups]
            limit = max(1, (1 << 22) // ncand)
            cut = np.searchsorted(np.cumsum(dims_per), np.arange(limit, dims_per.sum() + limit, limit))
            bounds = np.unique(np.r_[0, np.minimum(cut + 1, len(groups))])
            for g0, g1 in zip(bounds[:-1], bounds[1:], strict=False):
                gs = groups[g0:g1]
                sel = (
                    np.concatenate([np.arange(starts[g], starts[g] + sizes[g]) for g in gs])
                    if len(gs) < 64
                    else np.flatnonzero(np.isin(group_of, gs))
                )
                local = np.searchsorted(gs, group_of[sel])
                dims_t = torch.as_tensor(inl[sel], device=dev)
                cnt = (
                    torch.arange(ncand, device=dev)[:, None] * G + torch.as_tensor(jpos[sel], device=dev)[None, :]
                ).to(torch.int32)
                x = rnd.normal(keys[_CAND], torch.as_tensor(group_of[sel], device=dev)[None, :], cnt)
                lw = a_all[dims_t] * x * x + b_all[dims_t] * x
                score = torch.zeros(ncand, len(gs), device=dev).index_add_(1, torch.as_tensor(local, device=dev), lw)
                u = rnd.uniform(
                    keys[_GUMBEL],
                    torch.as_tensor(gs, device=dev)[None, :],
                    torch.arange(ncand, device=dev, dtype=torch.int32)[:, None],
                )
                score += -torch.log(-torch.log(u))
                idx[gs] = score.argmax(0).cpu().numpy()
        return idx

    def decode(self, p: DiagGaussian, key: StreamKey, payload: bytes) -> torch.Tensor:
        d = check_prior(p)
        dev = p.mean.device
        keys = self._keys(key)
        r = Reader(payload)
        check_latent_size(r, d, "importance")
        n_out, out_pos, e, words = read_outlier_section(r, d)
        n_groups = r.uint(32, limit=d - n_out)
        sizes = r.log_bucket(n_groups, limit=self.max_dims - 1) + 1
        if int(sizes.sum()) != d - n_out:
            raise CorruptPayload("importance: group sizes do not cover the latent")
        nbits = r.log_bucket(n_groups, limit=self.budget_bits)
        idx = r.uniform(np.left_shift(np.int64(1), nbits))
        r.finish()
        mask = np.ones(d, dtype=bool)
        mask[out_pos] = False
        inl = np.flatnonzero(mask)
        z = torch.zeros(d, dtype=torch.float32, device=dev)
        if n_out:
            z[torch.as_tensor(out_pos, device=dev)] = OutlierCodec(keys[_ONOISE], keys[_ODITHER]).values(
                e, words, out_pos, dev
            )
        if n_groups:
            group_of = np.repeat(np.arange(n_groups), sizes)
            jpos = np.arange(len(inl)) - (np.cumsum(sizes) - sizes)[group_of]
            cnt = torch.as_tensor(idx[group_of] * self.max_dims + jpos, device=dev).to(torch.int32)
            z[torch.as_tensor(inl, device=dev)] = rnd.normal(keys[_CAND], torch.as_tensor(group_of, device=dev), cnt)
        return prior_sample(p, z)
