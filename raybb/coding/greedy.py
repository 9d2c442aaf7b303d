"""Greedy shard sampler (Flamich, Havasi & Hernandez-Lobato 2020, "Compressing images by encoding
their latent representations with relative entropy coding").

The standardized prior N(0, I) is the sum of S independent shards N(0, I/S).  Starting from
z = 0, each step draws ``2**shard_bits`` candidate shards from the shared stream and keeps the
one maximising log q'(z + shard); after S steps z is the sample.  Each step costs exactly
``shard_bits`` bits.  The sampler is *approximate* (greedy search, biased towards the posterior
mode); its quality depends on how much KL each shard has to carry.

Scaled to be runnable on a CPU (the paper runs it on the whole latent with 2**16+ candidates
per shard): dims are cut into fixed raster chunks of ``chunk_dims`` (known to the decoder from D),
and chunk c gets ``S_c = clamp(ceil(KL_c / shard_bits), 1, max_shards)`` shards; S_c is
entropy-coded.  Encoding draws sum_c S_c * 2**shard_bits * chunk_dims normals.
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
from raybb.coding.blocks import check_latent_size
from raybb.coding.entropy import Reader, Writer
from raybb.errors import CorruptPayload

__all__ = ["GreedySampler"]

_CAND = 0


@register
class GreedySampler(IntParams):
    """Greedy shard sampler over fixed raster chunks (see module docstring)."""

    sampler_id: ClassVar[int] = 2
    name: ClassVar[str] = "greedy"
    PARAMS: ClassVar[tuple[str, ...]] = ("shard_bits", "chunk_dims", "max_shards")

    def __init__(self, shard_bits: int = 6, chunk_dims: int = 16, max_shards: int = 64) -> None:
        self.shard_bits, self.chunk_dims, self.max_shards = int(shard_bits), int(chunk_dims), int(max_shards)
        if not 1 <= self.shard_bits <= 16:
            raise CorruptPayload("greedy: shard_bits must be in [1, 16]")
        if not 1 <= self.chunk_dims <= 4096:
            raise CorruptPayload("greedy: chunk_dims must be in [1, 4096]")
        if not 1 <= self.max_shards <= 4096:
            raise CorruptPayload("greedy: max_shards must be in [1, 4096]")

    @staticmethod
    def _key(key: StreamKey) -> int:
        return rnd.fold_key(key.seed, key.image, key.level, GreedySampler.sampler_id * 16 + _CAND)

    def _layout(self, d: int, shards: np.ndarray, dev):
        """Per-dim chunk index, position in chunk and float32 shard scale (from integers only)."""
        chunk_of = np.arange(d) // self.chunk_dims
        j = np.arange(d) - chunk_of * self.chunk_dims
        scale = (1.0 / np.sqrt(shards.astype(np.float64))).astype(np.float32)
        return chunk_of, j, torch.as_tensor(scale[chunk_of], device=dev)

    def _cand(self, k: int, chunk_of_t, step: int, counter_t):
        stream = chunk_of_t * self.max_shards + step
        return rnd.normal(k, stream, counter_t)

    def encode(self, q: DiagGaussian, p: DiagGaussian, key: StreamKey) -> EncodeResult:
        d = check_pair(q, p)
        dev = q.mean.device
        k = self._key(key)
        m, s = standardize(q, p)
        kl_np = kl_bits_std(m, s).cpu().numpy()
        n_chunks = -(-d // self.chunk_dims)
        ckl = np.bincount(np.arange(d) // self.chunk_dims, weights=kl_np, minlength=n_chunks)
        shards = np.clip(np.ceil(ckl / self.shard_bits), 1, self.max_shards).astype(np.int64)
        chunk_of, j, scale = self._layout(d, shards, dev)
        ncand = 1 << self.shard_bits
        inv2s2 = (0.5 / (s.double() ** 2)).float()
        z = torch.zeros(d, dtype=torch.float32, device=dev)
        choice = np.zeros((n_chunks, int(shards.max()) if n_chunks else 0), dtype=np.int64)
        cand_i = torch.arange(ncand, device=dev)[:, None]
        for step in range(choice.shape[1]):
            chunks = np.flatnonzero(shards > step)
            dims = np.flatnonzero(shards[chunk_of] > step)
            per = max(1, (1 << 22) // (ncand * self.chunk_dims))
            for c0 in range(0, len(chunks), per):
                cs = chunks[c0 : c0 + per]
                lo, hi = cs[0] * self.chunk_dims, min(d, (cs[-1] + 1) * self.chunk_dims)
                dd = dims[(dims >= lo) & (dims < hi)]
                dt = torch.as_tensor(dd, device=dev)
                cnt = (cand_i * self.chunk_dims + torch.as_tensor(j[dd], device=dev)[None, :]).to(torch.int32)
                x = self._cand(k, torch.as_tensor(chunk_of[dd], device=dev)[None, :], step, cnt)
                zc = torch.add(z[dt], torch.mul(x, scale[dt]))
                err = (zc - m[dt]) ** 2 * inv2s2[dt]
                local = torch.as_tensor(np.searchsorted(cs, chunk_of[dd]), device=dev)
                score = torch.zeros(ncand, len(cs), device=dev).index_add_(1, local, err)
                best = score.argmin(0)
                choice[cs, step] = best.cpu().numpy()
                z[dt] = zc[best[local], torch.arange(len(dd), device=dev)]
        w = Writer()
        w.uint(d, 32)
        w.log_bucket(shards - 1)
        sel = choice[np.arange(choice.shape[1])[None, :] < shards[:, None]]
        w.uints(sel, self.shard_bits)
        payload = w.finish()
        stats = {
            "kl_bits": float(kl_np.sum()),
            "coded_bits": 8 * len(payload),
            "n_outliers": 0,
            "n_blocks": int(n_chunks),
            "n_shards": int(shards.sum()),
        }
        return EncodeResult(payload, self.decode(p, key, payload), stats)

    def decode(self, p: DiagGaussian, key: StreamKey, payload: bytes) -> torch.Tensor:
        d = check_prior(p)
        dev = p.mean.device
        k = self._key(key)
        r = Reader(payload)
        check_latent_size(r, d, "greedy")
        n_chunks = -(-d // self.chunk_dims)
        shards = r.log_bucket(n_chunks, limit=self.max_shards - 1) + 1
        sel = r.uints(int(shards.sum()), self.shard_bits)
        r.finish()
        chunk_of, j, scale = self._layout(d, shards, dev)
        width = int(shards.max()) if n_chunks else 0
        choice = np.zeros((n_chunks, width), dtype=np.int64)
        choice[np.arange(width)[None, :] < shards[:, None]] = sel
        z = torch.zeros(d, dtype=torch.float32, device=dev)
        jt = torch.as_tensor(j, device=dev)
        for step in range(width):
            dims = np.flatnonzero(shards[chunk_of] > step)
            dt = torch.as_tensor(dims, device=dev)
            cnt = torch.as_tensor(choice[chunk_of[dims], step], device=dev) * self.chunk_dims + jt[dt]
            x = self._cand(k, torch.as_tensor(chunk_of[dims], device=dev), step, cnt.to(torch.int32))
            z[dt] = torch.add(z[dt], torch.mul(x, scale[dt]))
        return prior_sample(p, z)
