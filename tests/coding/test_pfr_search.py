"""The pruned PFR search finds the argmin of T / w over the first N candidates of every block.

``PFRSampler._search`` scores candidates in chunks and computes exact scores only for candidates
whose log-weight can still beat the block's best (see its comments).  This checks it against a
dense float64 evaluation of every (block, rank) score from the format's definitions: arrival
times, pool rows, columns and signs.
"""

import numpy as np
import pytest
import torch

from raybb.coding import StreamKey
from raybb.coding import pfr as pfr_mod
from raybb.coding import randomness as rnd
from raybb.coding.base import kl_bits_std, standardize
from raybb.coding.blocks import tree_split
from raybb.coding.entropy import Writer
from raybb.coding.synthetic import make_pair


def _dense_scores(smp: pfr_mod.PFRSampler, m, s, lay, keys) -> torch.Tensor:
    """log T - log w for every rank (rows) and block (columns), float64, straight from the format."""
    n = 1 << smp.log2_candidates
    k0 = min(pfr_mod._K0, n)
    nb = lay.n_blocks
    u0 = rnd.uniform(keys[pfr_mod._ARRIVAL], torch.arange(nb)[None, :], torch.arange(k0, dtype=torch.int32)[:, None])
    t_own = torch.cumsum(-torch.log(u0.double()), 0)
    us = rnd.uniform(keys[pfr_mod._ARRIVAL], torch.tensor(1 << 40), torch.arange(n, dtype=torch.int32)).double()
    inc = torch.cumsum(-torch.log(us), 0)
    t = torch.empty(n, nb, dtype=torch.float64)
    t[:k0] = t_own
    t[k0:] = t_own[k0 - 1][None, :] + (inc[k0:] - inc[k0 - 1])[:, None]
    bo = torch.as_tensor(lay.block_of)
    rows = (torch.arange(n)[:, None] + lay.row_off[bo][None, :]) & (n - 1)  # (ranks, in-block dims)
    cells = (rows * lay.width + lay.col[None, :]).to(torch.int32)
    x = (rnd.normal(keys[pfr_mod._POOL], torch.tensor(lay.width), cells) * lay.sign).double()
    inl = torch.as_tensor(lay.inl)
    mi, si = m[inl].double(), s[inl].double()
    lw_dim = -0.5 * ((x - mi) / si) ** 2 - torch.log(si) + 0.5 * x * x
    lw = torch.zeros(n, nb, dtype=torch.float64).index_add_(1, bo, lw_dim)
    return torch.log(t) - lw


@pytest.mark.parametrize(
    "params,chunk",
    [((12, 10, 64, 12), 1 << 22), ((12, 10, 64, 12), 1 << 12), ((20, 12, 64, 20), 1 << 13), ((8, 11, 16, 8), 1 << 12)],
)
def test_pruned_search_finds_the_argmin_of_every_block(monkeypatch, params, chunk):
    # a small chunk size forces many chunks per block, rank windows that wrap around the pool
    # and blocks whose best is found late
    monkeypatch.setattr(pfr_mod, "_CHUNK_ELEMS", chunk)
    q, p = make_pair(3000, 3000 * 1.5, seed=7)
    smp = pfr_mod.PFRSampler(*params)
    keys = smp._keys(StreamKey(3, 1, 1))
    m, s = standardize(q, p)
    kl = kl_bits_std(m, s).numpy()
    inl = np.flatnonzero(kl <= smp.outlier_bits)
    sizes, _ = tree_split(kl[inl], smp.max_dims, smp.budget_bits, Writer())
    lay = pfr_mod._Layout(inl, sizes, smp.log2_candidates, smp.pool_width, keys, m.device)
    ranks = torch.as_tensor(smp._search(m, s, lay, keys))
    scores = _dense_scores(smp, m, s, lay, keys)
    best = scores.min(0)
    chosen = scores[ranks, torch.arange(lay.n_blocks)]
    # the search scores in float32: its pick may differ from the float64 argmin only by rounding
    assert torch.all(chosen <= best.values + 1e-4 * (1 + best.values.abs()))
    assert (ranks == best.indices).double().mean() > 0.99
    assert (ranks >= pfr_mod._K0).any() and (ranks < pfr_mod._K0).any()  # both search phases chose winners
