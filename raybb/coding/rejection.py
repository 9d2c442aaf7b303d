"""Bit-budgeted greedy rejection sampling per dimension (Harsha et al. 2007), parallel over dims.

For one dimension (standardized: p' = N(0,1), q' = N(m, s^2), ratio r = q'/p') Harsha's greedy
rejection sampler accepts candidate i (x_i ~ p' from the shared stream) with probability
``(min(r(x_i), L_i) - min(r(x_i), L_{i-1})) / (1 - S_{i-1})`` where ``L_0 = S_0 = 0``,
``L_i = L_{i-1} + 1 - S_{i-1}`` and ``S_i = integral of min(q', L_i p')``.  The accepted sample is
*exactly* q' distributed and E[log K] <= KL + O(1) (Harsha et al.: KL + 2 log(KL + 1) + O(1)
bits).  For Gaussians ``{r > L}`` is an interval (or its complement), so ``S`` has a closed form
with the normal CDF; those floats live only in the encoder (the decoder just replays K).

All dims step in lockstep (one vectorised step per candidate index, active dims compacted).
A dim still unaccepted after ``2**budget_bits`` candidates is sampled from the GRS *residual*
``max(q' - L_N p', 0)`` (so the output stays exactly q'; a plain q' draw would not be) and sent
as a 16-bit dithered outlier (``blocks.OutlierCodec``).  K (or "outlier") is arithmetic-coded with an
empirical table fitted on data (:func:`fit_index_table`, Laplace smoothing alpha = 0.01); the
shipped table ``rejection_table.json`` was fitted on ``synthetic.make_pair`` latents.

Table file format (JSON): ``{"format": "raybb.rejection_index_table", "version": 1,
"max_index": M, "alpha": a, "counts": [c_1 .. c_M, c_tail], "note": str}`` where ``c_k`` counts
dims accepted at candidate k and ``c_tail`` dims not accepted within M candidates.  For a budget
B (2**B <= M) the model is ``counts[:2**B]`` plus one outlier symbol holding the rest, each
+alpha, normalised.  Its ``table_id`` (a parameter in the bitstream) is CRC32 of the counts
modulo 2**16, so a payload coded with another table is refused instead of mis-decoded.
"""

from __future__ import annotations

import json
import zlib
from importlib import resources
from typing import ClassVar

import numpy as np
import torch
from scipy.special import ndtr

from raybb.coding import randomness as rnd
from raybb.coding.base import (
    DiagGaussian,
    EncodeResult,
    StreamKey,
    check_pair,
    check_prior,
    kl_bits_std,
    prior_sample,
    register,
    standardize,
)
from raybb.coding.blocks import OutlierCodec, check_latent_size
from raybb.coding.entropy import Reader, Writer
from raybb.errors import CorruptPayload

__all__ = ["RejectionSampler", "IndexTable", "fit_index_table", "grs_indices", "load_default_table"]

_CAND, _ACCEPT, _ONOISE, _ODITHER, _RESID = range(5)
TABLE_FILE = "rejection_table.json"


class IndexTable:
    """Counts of GRS acceptance indices (see module docstring for the file format)."""

    def __init__(self, counts: np.ndarray, alpha: float = 0.01, note: str = "") -> None:
        self.counts = np.asarray(counts, dtype=np.int64)
        self.max_index = len(self.counts) - 1
        self.alpha = float(alpha)
        self.note = note
        if self.max_index < 1 or self.max_index & (self.max_index - 1):
            raise ValueError("table needs 2**k index counts plus one tail count")

    @property
    def table_id(self) -> int:
        return zlib.crc32(json.dumps([int(c) for c in self.counts]).encode()) & 0xFFFF

    def probs(self, budget_bits: int) -> np.ndarray:
        n = 1 << budget_bits
        if n > self.max_index:
            raise ValueError(f"table covers indices up to {self.max_index}, budget asks {n}")
        c = np.r_[self.counts[:n], self.counts[n:].sum()].astype(np.float64) + self.alpha
        return c / c.sum()

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": "raybb.rejection_index_table",
                "version": 1,
                "max_index": self.max_index,
                "alpha": self.alpha,
                "counts": [int(c) for c in self.counts],
                "note": self.note,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> IndexTable:
        obj = json.loads(text)
        if obj.get("format") != "raybb.rejection_index_table" or obj.get("version") != 1:
            raise ValueError("not a raybb rejection index table (format/version)")
        counts = obj["counts"]
        if len(counts) != obj["max_index"] + 1:
            raise ValueError("counts length does not match max_index")
        return cls(np.asarray(counts, dtype=np.int64), obj.get("alpha", 0.01), obj.get("note", ""))


_DEFAULT: list[IndexTable] = []


def load_default_table() -> IndexTable:
    """The table shipped as package data (cached)."""
    if not _DEFAULT:
        text = resources.files("raybb.coding").joinpath(TABLE_FILE).read_text()
        _DEFAULT.append(IndexTable.from_json(text))
    return _DEFAULT[0]


def fit_index_table(samples, max_index: int = 4096, alpha: float = 0.01, note: str = "") -> IndexTable:
    """Fit a table from observed indices: each array holds 1-based K, or 0 for "not accepted
    within ``max_index``" (as returned by :func:`grs_indices`)."""
    counts = np.zeros(max_index + 1, dtype=np.int64)
    for arr in samples:
        a = np.asarray(arr, dtype=np.int64)
        if a.size and (a.min() < 0 or a.max() > max_index):
            raise ValueError("indices must be in [0, max_index]")
        counts[:max_index] += np.bincount(a[a > 0] - 1, minlength=max_index)[:max_index]
        counts[max_index] += int((a == 0).sum())
    return IndexTable(counts, alpha, note)


def _accepted_mass(L, a, b, c, m, s):
    """S(L) = int min(q', L p') for per-dim log-ratio a x^2 + b x + c (numpy float64)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cl = c - np.log(L)
        disc = b * b - 4 * a * cl
        has = disc > 0
        sq = np.sqrt(np.where(has, disc, 1.0))
        qq = -0.5 * (b + np.where(b >= 0, sq, -sq))
        safe_q = np.where(qq == 0, 1e-300, qq)
        r1, r2 = qq / a, cl / safe_q
        x1, x2 = np.minimum(r1, r2), np.maximum(r1, r2)
        pq = ndtr((x2 - m) / s) - ndtr((x1 - m) / s)
        pp = ndtr(x2) - ndtr(x1)
        s_narrow = np.where(has, 1 - pq + L * pp, 1.0)
        s_wide = np.where(has, pq + L * (1 - pp), L)
        return np.clip(np.where(a < 0, s_narrow, s_wide), 0.0, 1.0)


def grs_indices(
    m: torch.Tensor,
    s: torch.Tensor,
    k_cand: int,
    k_acc: int,
    dims: torch.Tensor,
    max_index: int,
    chunk: int = 16,
    return_level: bool = False,
):
    """1-based acceptance index per dim (0 = not accepted within ``max_index``), int64.

    With ``return_level`` also returns ``L_N`` per dim (the GRS level reached, float64 NumPy),
    which defines the residual ``max(q' - L_N p', 0)`` an exhausted dim must be sampled from.

    The (L_i, S_i) recursion does not depend on the candidates, so it runs ``chunk`` steps ahead
    in NumPy for the still-active dims; candidates and acceptance coins for those steps are then
    drawn and tested in one vectorised torch call.
    """
    dev = m.device
    m64 = m.double().cpu().numpy()
    s64 = s.double().cpu().numpy()
    s64 = np.where(np.abs(s64 - 1) < 1e-7, s64 * (1 - 1e-7), s64)  # avoid the linear s == 1 case
    a = 0.5 - 0.5 / (s64 * s64)
    b = m64 / (s64 * s64)
    c = -np.log(s64) - 0.5 * m64 * m64 / (s64 * s64)
    n = m64.shape[0]
    out = np.zeros(n, dtype=np.int64)
    level = np.zeros(n)
    act = np.arange(n)
    L = np.zeros(n)
    S = np.zeros(n)
    i0 = 1
    dims_np = dims.cpu().numpy()
    while act.size and i0 <= max_index:
        steps = min(chunk, max_index - i0 + 1)
        aa, bb, cc, mm, ss = a[act], b[act], c[act], m64[act], s64[act]
        lo = np.empty((steps, act.size))
        hi = np.empty((steps, act.size))
        rest = np.empty((steps, act.size))
        for t in range(steps):
            rest[t] = 1 - S
            lo[t] = L
            L = L + rest[t]
            hi[t] = L
            S = _accepted_mass(L, aa, bb, cc, mm, ss)
        cnt = torch.arange(i0, i0 + steps, dtype=torch.int32, device=dev)[:, None]
        st = torch.as_tensor(dims_np[act], device=dev)[None, :]
        x = rnd.normal(k_cand, st, cnt).double().cpu().numpy()
        u = rnd.uniform(k_acc, st, cnt).double().cpu().numpy()
        with np.errstate(over="ignore"):
            r = np.exp(aa * x * x + bb * x + cc)
        num = np.minimum(r, hi) - np.minimum(r, lo)
        prob = np.where(rest > 1e-12, num / np.maximum(rest, 1e-300), 1.0)
        acc = u < prob
        anyacc = acc.any(0)
        first = acc.argmax(0)
        out[act[anyacc]] = i0 + first[anyacc]
        keep = ~anyacc
        act, L, S = act[keep], L[keep], S[keep]
        i0 += steps
    level[act] = L
    res = torch.as_tensor(out, device=dev)
    return (res, level) if return_level else res


def residual_samples(
    m: np.ndarray, s: np.ndarray, level: np.ndarray, k: int, dims: np.ndarray, rounds: int = 256
) -> np.ndarray:
    """Standardized samples from the GRS residual ``max(q' - L p', 0)`` (normalised), by rejection
    from q': accept x ~ q' with probability ``max(0, 1 - L / r(x))``.  Makes the "budget exhausted"
    path exact instead of a fresh q' draw (which would over-weight the centre).  Encoder only;
    after ``rounds`` failed rounds (residual mass tiny in practice) the last q' draw is kept."""
    n = m.shape[0]
    out = np.zeros(n)
    todo = np.arange(n)
    for t in range(rounds):
        if todo.size == 0:
            break
        st = torch.as_tensor(dims[todo])
        eps = rnd.normal(k, st, torch.tensor(2 * t, dtype=torch.int32)).double().numpy()
        u = rnd.uniform(k, st, torch.tensor(2 * t + 1, dtype=torch.int32)).double().numpy()
        x = m[todo] + s[todo] * eps
        with np.errstate(over="ignore", divide="ignore"):
            logr = -np.log(s[todo]) - 0.5 * eps * eps + 0.5 * x * x
            acc = (u < 1 - level[todo] * np.exp(-logr)) | (t == rounds - 1)
        out[todo[acc]] = x[acc]
        todo = todo[~acc]
    return out


@register
class RejectionSampler:
    """Per-dim greedy rejection sampling with a fitted index table (exact; see module docstring)."""

    sampler_id: ClassVar[int] = 1
    name: ClassVar[str] = "rejection"

    def __init__(self, budget_bits: int = 8, table: IndexTable | None = None) -> None:
        self.table = table if table is not None else load_default_table()
        self.budget_bits = int(budget_bits)
        if not 1 <= self.budget_bits or (1 << self.budget_bits) > self.table.max_index:
            raise CorruptPayload("rejection: budget_bits outside the index table")
        self._probs = self.table.probs(self.budget_bits)

    def params(self) -> tuple[int, ...]:
        return (self.budget_bits, self.table.table_id)

    @classmethod
    def from_params(cls, params: tuple[int, ...]) -> RejectionSampler:
        if len(params) != 2 or not all(isinstance(x, int) for x in params):
            raise CorruptPayload("rejection: expected 2 integer parameters")
        if not 1 <= params[0] <= 12:
            raise CorruptPayload("rejection: budget_bits must be in [1, 12]")
        obj = cls(params[0])
        if obj.table.table_id != params[1]:
            raise CorruptPayload("rejection: payload was coded with another index table")
        return obj

    def __repr__(self) -> str:
        return f"RejectionSampler{self.params()}"

    @staticmethod
    def _keys(key: StreamKey) -> dict:
        return {t: rnd.fold_key(key.seed, key.image, key.level, RejectionSampler.sampler_id * 16 + t) for t in range(5)}

    def encode(self, q: DiagGaussian, p: DiagGaussian, key: StreamKey) -> EncodeResult:
        d = check_pair(q, p)
        keys = self._keys(key)
        m, s = standardize(q, p)
        dims = torch.arange(d, device=m.device)
        k, level = grs_indices(m, s, keys[_CAND], keys[_ACCEPT], dims, 1 << self.budget_bits, return_level=True)
        k = k.cpu().numpy()
        out_pos = np.flatnonzero(k == 0)
        v = residual_samples(
            m.double().cpu().numpy()[out_pos], s.double().cpu().numpy()[out_pos], level[out_pos], keys[_RESID], out_pos
        )
        sym = np.where(k == 0, 1 << self.budget_bits, k - 1)
        w = Writer()
        w.uint(d, 32)
        w.categorical(sym, self._probs)
        OutlierCodec(keys[_ONOISE], keys[_ODITHER]).encode(w, m, s, out_pos, values=v)
        payload = w.finish()
        kl = kl_bits_std(m, s)
        stats = {
            "kl_bits": float(kl.sum()),
            "coded_bits": 8 * len(payload),
            "n_outliers": int(len(out_pos)),
            "n_blocks": d,
            "mean_log2_index": float(np.log2(np.maximum(k, 1)).mean()) if d else 0.0,
        }
        return EncodeResult(payload, self.decode(p, key, payload), stats)

    def decode(self, p: DiagGaussian, key: StreamKey, payload: bytes) -> torch.Tensor:
        d = check_prior(p)
        dev = p.mean.device
        keys = self._keys(key)
        r = Reader(payload)
        check_latent_size(r, d, "rejection")
        sym = r.categorical(d, self._probs)
        if (sym > 1 << self.budget_bits).any():
            raise CorruptPayload("rejection: index symbol out of range")
        out_pos = np.flatnonzero(sym == 1 << self.budget_bits)
        e, words = OutlierCodec.read(r, len(out_pos))
        r.finish()
        dims = torch.arange(d, device=dev)
        z = rnd.normal(keys[_CAND], dims, torch.as_tensor(sym + 1, device=dev).to(torch.int32))
        if len(out_pos):
            z[torch.as_tensor(out_pos, device=dev)] = OutlierCodec(keys[_ONOISE], keys[_ODITHER]).values(
                e, words, out_pos, dev
            )
        return prior_sample(p, z)
