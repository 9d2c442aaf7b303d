"""Dithered channels + PFR: the high-KL channels of a latent coded dim by dim, the rest by block PFR.

Why: block PFR truncates its search (2^14 candidates for blocks of up to 22 bits of KL), so in
channels whose dims carry several bits of KL each the decoded sample is farther from the
posterior than an exact one (docs/coding.md, "The coding gap": this is almost all of level 1's
loss). A dim-by-dim coder has no per-block overhead and no truncation: subtractive dither
(universal quantization; Ziv 1985, Agustsson & Theis 2020) sends an exact sample of a *box*
posterior U(μ − Δ/2, μ + Δ/2) around the posterior mean, with the dither u drawn from the shared
randomness: k = round((μ − m)/Δ − u), decoded z = m + (k + u)·Δ, so z − μ is uniform on
[−Δ/2, Δ/2) and independent of μ. The box replaces the Gaussian posterior of the same channel;
the decoder needs its width, so each such channel carries one step Δ_c in the stream.

Decisions the decoder makes are integers in the stream: which channels are dithered (one flag per
channel), each dithered channel's step (an 8-bit code, Δ = 2^((code − 128)/8)), the latent's width,
and the indices k. |k| is entropy coded with an adaptive categorical model (integer counts, updated
after every pass, so no tables are sent): |k| < 15 as itself, larger ones as an escape symbol for
the bucket of |k| − 15 followed by its mantissa bits flat; then the sign flat. Each channel is
coded in four passes over its (row, column) parities; the first pass's context is the previous
dithered channel's |k| around the same position, every later pass's the sum of the |k| of the
neighbours decoded so far (as checkerboard context models do). The contexts stand in for what the
prior's scale knows: the prior (m, and its scale, which carries the hyperprior's information)
enters only the reconstruction, continuously, never the bits read, so a prior computed on another
device shifts the decoded values by rounding noise, as for PFR.

The remaining channels are one PFR latent (``raybb.coding.pfr``, with this sampler's parameters
and their own channel count), coded after the dithered section with the same stream key.

Payload: 4-byte little-endian length L of the dither section, the dither section (a
``raybb.coding.entropy`` stream with its CRC), the PFR payload (empty when every channel is
dithered). Encoder-only choices (not in the stream, so free to change): a channel is dithered when
the median over its dims of log2(prior std / posterior std) exceeds ``threshold`` bits, and its
step is ``noise`` × √12 × the geometric mean of its posterior stds (a box of ``noise`` times the
posterior's std).
"""

from __future__ import annotations

import math
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
    prior_sample,
    register,
)
from raybb.coding.blocks import check_latent_size
from raybb.coding.entropy import Reader, Writer, bucket_of
from raybb.coding.pfr import PFR_DEFAULT_PARAMS, PFRSampler, _Rows
from raybb.errors import CorruptPayload

__all__ = ["DitheredPFRSampler", "DPFR_THRESHOLD", "DPFR_NOISE", "DPFR_NOISE_SLOPE"]

#: Encoder defaults (chosen on held-out cid22/validation images, docs/coding.md).
DPFR_THRESHOLD = 2.5
DPFR_NOISE = 1.6
DPFR_NOISE_SLOPE = 0.4

_DIRECT = 15  # |k| < 15 is its own symbol; larger |k| is 15 + bit_length(|k| - 15), then mantissa bits
_N_SYM = _DIRECT + 32  # |k| < 15 + 2**31
_N_CTX = 32  # 8 per pass
_STEP_BITS = 8
_DITHER = 0


def _ctx(a: np.ndarray) -> np.ndarray:
    return np.minimum(bucket_of(a), 7)


def _initial_counts() -> np.ndarray:
    """Starting counts: a context of neighbour magnitude bucket c (a sum of about four to eight |k|)
    expects |k| near 2^(c−1)/4, halving per step away from it (weight 64), at least 1 everywhere.
    Small channels code mostly before an all-ones table would have learnt anything."""
    c = np.arange(_N_CTX)[:, None] % 8
    s = np.arange(_N_SYM)[None, :]
    centre = np.right_shift(np.left_shift(np.int64(1), c), 3)  # |k| ~ 2**(c-1) / 4
    return np.maximum(1, np.right_shift(np.int64(64), np.minimum(np.abs(s - centre), 62))).astype(np.int64)


class _Model:
    """Adaptive model of |k|'s symbol: integer counts per context, identical on both sides."""

    def __init__(self) -> None:
        self.counts = _initial_counts()

    def probs(self, c: int) -> np.ndarray:
        row = self.counts[c].astype(np.float64)
        return row / row.sum()

    def update(self, ctx: np.ndarray, b: np.ndarray) -> None:
        self.counts += np.bincount(ctx * _N_SYM + b, minlength=_N_CTX * _N_SYM).reshape(_N_CTX, _N_SYM)


#: The four passes over one channel's (H, W) grid: (row parity, column parity). Pass 0's context is
#: the previous dithered channel; every later pass sees the neighbours (of the eight around it) that
#: earlier passes of its own channel decoded: four, four, then all eight.
_PASSES = ((0, 0), (1, 1), (0, 1), (1, 0))


def _neighbours(ak: np.ndarray, r0: int, c0: int) -> np.ndarray:
    """Sum of |k| at the 4-neighbours and diagonals that earlier passes decoded, for the positions
    (r0::2, c0::2) of an (H, W) grid (zero outside; positions not yet decoded hold 0)."""
    h, w = ak.shape
    pad = np.pad(ak, 1)
    rows = np.arange(r0, h, 2)[:, None] + 1
    cols = np.arange(c0, w, 2)[None, :] + 1
    tot = np.zeros((len(rows), cols.shape[1]), dtype=np.int64)
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)):
        tot += pad[rows + dr, cols + dc]
    return tot


def _contexts(i: int, ak: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    r0, c0 = _PASSES[i]
    if i == 0:
        if prev is None:
            return np.zeros(ak[r0::2, c0::2].shape, dtype=np.int64)
        pp = np.pad(prev, 1)
        h, w = prev.shape
        tot = np.zeros(ak[r0::2, c0::2].shape, dtype=np.int64)
        rows = np.arange(r0, h, 2)[:, None] + 1
        cols = np.arange(c0, w, 2)[None, :] + 1
        for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
            tot += pp[rows + dr, cols + dc]
        return _ctx(tot)
    return 8 * i + _ctx(_neighbours(ak, r0, c0))


def _symbols(ak: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symbol, escaped excess, its bucket) of each |k|."""
    esc = np.maximum(ak - _DIRECT, 0)
    eb = bucket_of(esc)
    return np.where(ak < _DIRECT, ak, _DIRECT + eb), esc, eb


def _write_group(w: Writer, model: _Model, ctx: np.ndarray, k: np.ndarray) -> None:
    ak = np.abs(k)
    b, esc, eb = _symbols(ak)
    order = np.argsort(ctx, kind="stable")
    for c in np.unique(ctx).tolist():
        sel = order[ctx[order] == c]
        w.categorical(b[sel], model.probs(c))
    model.update(ctx, b)
    nz = ak > 0
    w.uniform((k[nz] < 0).astype(np.int64), np.full(int(nz.sum()), 2))
    big = ak >= _DIRECT
    w.mantissas(esc[big], eb[big])


def _read_group(r: Reader, model: _Model, ctx: np.ndarray) -> np.ndarray:
    b = np.zeros(len(ctx), dtype=np.int64)
    order = np.argsort(ctx, kind="stable")
    for c in np.unique(ctx).tolist():
        sel = order[ctx[order] == c]
        b[sel] = r.categorical(len(sel), model.probs(c))
    if (b >= _N_SYM).any():
        raise CorruptPayload("dpfr: index symbol out of range")
    model.update(ctx, b)
    nz = b > 0
    neg = r.uniform(np.full(int(nz.sum()), 2))
    big = b >= _DIRECT
    k = b.copy()
    k[big] = _DIRECT + r.mantissas(b[big] - _DIRECT)
    k[np.flatnonzero(nz)[neg == 1]] *= -1
    return k


@register
class DitheredPFRSampler(IntParams):
    """Dithered (box-posterior) coding of the high-KL channels, block PFR for the rest."""

    sampler_id: ClassVar[int] = 6
    name: ClassVar[str] = "dpfr"
    PARAMS: ClassVar[tuple[str, ...]] = ("budget_bits", "log2_candidates", "max_dims", "outlier_bits", "channels")

    def __init__(
        self,
        budget_bits: int = PFR_DEFAULT_PARAMS[0],
        log2_candidates: int = PFR_DEFAULT_PARAMS[1],
        max_dims: int = PFR_DEFAULT_PARAMS[2],
        outlier_bits: int = PFR_DEFAULT_PARAMS[3],
        channels: int = 0,
        *,
        threshold: float = DPFR_THRESHOLD,
        noise: float = DPFR_NOISE,
        noise_slope: float = DPFR_NOISE_SLOPE,
    ) -> None:
        self.budget_bits = int(budget_bits)
        self.log2_candidates = int(log2_candidates)
        self.max_dims = int(max_dims)
        self.outlier_bits = int(outlier_bits)
        self.channels = int(channels)
        self.threshold = float(threshold)  # encoder only
        self.noise = float(noise)  # encoder only
        self.noise_slope = float(noise_slope)  # encoder only
        PFRSampler(*self.params()[:4])  # validates the PFR parameters (CorruptPayload)
        if not 0 <= self.channels <= 65536:
            raise CorruptPayload("dpfr: channels must be in [0, 65536] (0 = resolved by the codec)")

    def _split(self, d: int) -> tuple[int, int]:
        c = self.channels
        if c == 0:
            raise CorruptPayload("dpfr: channels=0 ('the latent's channel count') was not resolved to a number")
        if d % c:
            raise CorruptPayload(f"dpfr: a latent of {d} dims does not have {c} channels")
        return c, d // c

    def _pfr(self, n_rest: int) -> PFRSampler:
        return PFRSampler(self.budget_bits, self.log2_candidates, self.max_dims, self.outlier_bits, max(1, n_rest))

    @staticmethod
    def _key(key: StreamKey) -> int:
        return rnd.fold_key(key.seed, key.image, key.level, DitheredPFRSampler.sampler_id * 16 + _DITHER)

    @staticmethod
    def _dither(k: int, channel: int, n: int, dev) -> torch.Tensor:
        """u − 1/2 in (−1/2, 1/2) for every position of one channel (float32, from integer hashes)."""
        pos = torch.arange(n, device=dev, dtype=torch.int32)
        return rnd.uniform(k, torch.tensor(channel, device=dev), pos) - 0.5

    # ------------------------------------------------------------------ encoder
    def encode(self, q: DiagGaussian, p: DiagGaussian, key: StreamKey) -> EncodeResult:
        d = check_pair(q, p)
        c, n = self._split(d)
        dev = q.mean.device
        qm, qs = q.mean.view(c, n), q.std.view(c, n)
        pm, ps = p.mean.view(c, n), p.std.view(c, n)
        # per channel (memory: one channel's float64 temporaries at a time)
        ratio = np.array([float(torch.log2(ps[ch].double() / qs[ch].double()).median()) for ch in range(c)])
        flags = (ratio > self.threshold).astype(np.int64)
        dith = np.flatnonzero(flags)
        w = Writer()
        width = q.width if q.width and n % q.width == 0 else n
        w.uint(d, 32)
        w.uint(width, 32)
        w.uints(flags, 1)
        # the step: a box of `noise` times the channel's (geometric-mean) posterior std, on a 1/8-bit grid
        log_sigma = np.array([float(torch.log2(qs[ch].double()).mean()) for ch in dith.tolist()])
        noise = self.noise + self.noise_slope * np.maximum(ratio[dith] - 3.0, 0.0)
        lstep = log_sigma + np.log2(noise * math.sqrt(12.0))
        codes = np.clip(np.round(lstep * 8) + 128, 0, (1 << _STEP_BITS) - 1).astype(np.int64)
        w.uints(codes, _STEP_BITS)
        kkey = self._key(key)
        model, prev = _Model(), None
        kl_dith = 0.0
        limit = _DIRECT + (1 << 31) - 1
        for ch, code in zip(dith.tolist(), codes.tolist(), strict=True):
            step = 2.0 ** ((code - 128) / 8)
            u = self._dither(kkey, ch, n, dev).double()
            v = (qm[ch].double() - pm[ch].double()) / step
            k = torch.round(v - u).clamp(-limit, limit).to(torch.int64).cpu().numpy()
            k = k.reshape(-1, width)
            ak = np.zeros_like(k)
            for i, (r0, c0) in enumerate(_PASSES):
                part = k[r0::2, c0::2]
                if part.size:
                    _write_group(w, model, _contexts(i, ak, prev).ravel(), part.ravel())
                    ak[r0::2, c0::2] = np.abs(part)
            prev = ak
            kl_dith += float(_kl_bits(qm[ch], qs[ch], pm[ch], ps[ch]))
        section = w.finish()
        bits_dither = 8 * len(section)
        rest = np.flatnonzero(flags == 0)
        pfr_payload = b""
        pfr_stats: dict = {}
        if len(rest):
            # the rest channels, read in place (no copies of a large image's latent); no sample pass
            enc = self._pfr(len(rest))._encode(q, p, key, _Rows(n, rest))
            pfr_payload, pfr_stats = enc.payload, enc.stats
            del enc
        payload = len(section).to_bytes(4, "little") + section + pfr_payload
        sample = self.decode(p, key, payload)
        kl_total = sum(_kl_bits(qm[ch], qs[ch], pm[ch], ps[ch]) for ch in range(c))
        stats = {
            "kl_bits": kl_total,
            "coded_bits": 8 * len(payload),
            "dithered_channels": int(len(dith)),
            "dithered_kl_bits": kl_dith,
            "dither_bits": bits_dither,
            **{f"pfr_{k}": v for k, v in pfr_stats.items() if k != "kl_bits"},
        }
        return EncodeResult(payload=payload, sample=sample, stats=stats)

    # ------------------------------------------------------------------ decoder
    def decode(self, p: DiagGaussian, key: StreamKey, payload: bytes) -> torch.Tensor:
        d = check_prior(p)
        c, n = self._split(d)
        payload = bytes(payload)
        if len(payload) < 4:
            raise CorruptPayload("dpfr: payload shorter than its section length")
        ls = int.from_bytes(payload[:4], "little")
        if ls > len(payload) - 4:
            raise CorruptPayload("dpfr: dither section longer than the payload")
        r = Reader(payload[4 : 4 + ls])
        check_latent_size(r, d, "dpfr")
        width = r.uint(32)
        if width == 0 or n % width:
            raise CorruptPayload("dpfr: latent width does not divide the channel size")
        flags = r.uints(c, 1)
        dith = np.flatnonzero(flags)
        codes = r.uints(len(dith), _STEP_BITS)
        dev = p.mean.device
        pm, ps = p.mean.view(c, n), p.std.view(c, n)
        out = torch.empty(c, n, dtype=p.mean.dtype, device=dev)
        kkey = self._key(key)
        model, prev = _Model(), None
        for ch, code in zip(dith.tolist(), codes.tolist(), strict=True):
            k = np.zeros((n // width, width), dtype=np.int64)
            ak = np.zeros_like(k)
            for i, (r0, c0) in enumerate(_PASSES):
                shape = k[r0::2, c0::2].shape
                if shape[0] * shape[1]:
                    part = _read_group(r, model, _contexts(i, ak, prev).ravel()).reshape(shape)
                    k[r0::2, c0::2] = part
                    ak[r0::2, c0::2] = np.abs(part)
            prev = ak
            k = k.reshape(-1)
            step = 2.0 ** ((code - 128) / 8)
            u = self._dither(kkey, ch, n, dev)
            kt = torch.as_tensor(k, device=dev).to(torch.float32)
            out[ch] = pm[ch] + (kt + u) * step
        r.finish()
        rest = np.flatnonzero(flags == 0)
        tail = payload[4 + ls :]
        if len(rest) == c:
            out = self._pfr(c).decode(p, key, tail).view(c, n)
        elif len(rest):
            z = self._pfr(len(rest))._decode_std(len(rest) * n, dev, key, tail).view(len(rest), n)
            for j, ch in enumerate(rest.tolist()):  # leave the standardized space as PFR does
                out[ch] = prior_sample(DiagGaussian(pm[ch], ps[ch]), z[j])
            del z
        elif tail:
            raise CorruptPayload("dpfr: data after the dither section, but no channel is left for PFR")
        del ps
        return out.reshape(-1)


def _kl_bits(qm, qs, pm, ps) -> float:
    qm, qs, pm, ps = (t.double() for t in (qm, qs, pm, ps))
    kl = torch.log(ps / qs) + (qs**2 + (qm - pm) ** 2) / (2 * ps**2) - 0.5
    return float(kl.sum()) / math.log(2)
