import numpy as np
import pytest
import torch

from raybb.coding import fit_index_table
from raybb.coding import randomness as rnd
from raybb.coding.blocks import OutlierCodec, kl_blocks, read_positions, read_tree, tree_split, write_positions
from raybb.coding.entropy import Reader, Writer
from raybb.coding.rejection import IndexTable, grs_indices, load_default_table


def test_kl_blocks_budget_and_cover():
    rng = np.random.default_rng(0)
    kl = np.where(rng.random(5000) < 0.3, rng.lognormal(0, 1, 5000), 0.01)
    kl = np.minimum(kl, 8)
    sizes = kl_blocks(kl, 10.0, 40)
    assert sizes.sum() == kl.size and sizes.min() >= 1 and sizes.max() <= 40
    bkl = np.add.reduceat(kl, np.r_[0, np.cumsum(sizes)[:-1]])
    assert bkl.max() <= 10.0 + kl.max()  # at most the budget plus one end dim's KL


def test_tree_split_round_trip_and_budget():
    rng = np.random.default_rng(1)
    kl = np.where(rng.random(3001) < 0.35, rng.lognormal(0, 1, 3001), 0.02)
    kl = np.minimum(kl, 12)
    w = Writer()
    sizes, levels = tree_split(kl, 64, 12.0, w)
    payload = w.finish()
    r = Reader(payload)
    sizes2, levels2 = read_tree(r, kl.size, 64)
    r.finish()
    assert (sizes == sizes2).all() and (levels == levels2).all()
    assert sizes.sum() == kl.size and sizes.max() <= 64
    bkl = np.add.reduceat(kl, np.r_[0, np.cumsum(sizes)[:-1]])
    assert ((bkl <= 12.0) | (sizes == 1)).all()
    assert 8 * len(payload) < 2 * len(sizes)  # split flags are cheap side information


def test_positions_round_trip():
    pos = np.array([0, 5, 6, 1000, 99999])
    w = Writer()
    write_positions(w, pos)
    r = Reader(w.finish())
    assert (read_positions(r, len(pos), 100000) == pos).all()


def test_outliers_dithered_error_is_bounded():
    m = torch.tensor([3.0, -7.5, 0.2, 12.0])
    s = torch.tensor([1e-4, 1e-3, 0.5, 1e-6])
    pos = np.arange(4)
    oc = OutlierCodec(rnd.fold_key(1, 0, 0, 1), rnd.fold_key(1, 0, 0, 2))
    w = Writer()
    v = np.array([3.0001, -7.5, 0.1, 12.0])
    oc.encode(w, m, s, pos, values=v)
    e, words = OutlierCodec.read(Reader(w.finish()), 4)
    got = oc.values(e, words, pos, torch.device("cpu")).double().numpy()
    step = 2.0**-e
    assert step <= 12.0 / 16383 * 2
    assert np.abs(got - v).max() <= step / 2 + 1e-6


def test_shipped_table_and_refit():
    t = load_default_table()
    assert t.max_index == 4096 and t.counts.sum() > 10_000
    probs = t.probs(8)
    assert probs.shape == (257,) and abs(probs.sum() - 1) < 1e-12 and (probs > 0).all()
    again = IndexTable.from_json(t.to_json())
    assert again.table_id == t.table_id and (again.counts == t.counts).all()
    with pytest.raises(ValueError):
        IndexTable.from_json('{"format": "something else", "version": 1}')
    # refit from GRS indices of a small synthetic latent
    m, s = torch.tensor([0.5, 1.0, 0.0] * 200), torch.tensor([0.5, 0.3, 1.0] * 200)
    k = grs_indices(m, s, rnd.fold_key(3, 0, 0, 1), rnd.fold_key(3, 0, 0, 2), torch.arange(600), 64)
    fitted = fit_index_table([k.numpy()], max_index=64)
    assert fitted.counts.sum() == 600 and fitted.table_id != t.table_id
    with pytest.raises(ValueError):
        fitted.probs(7)  # the table only covers 64 indices
