import numpy as np
import pytest

from raybb.coding.entropy import Reader, Writer, bucket_of
from raybb.errors import BitstreamError, CorruptPayload


def test_bucket_of_exact_at_powers_of_two():
    v = np.array([0, 1, 2, 3, 4, 2**20 - 1, 2**20, 2**39 - 1, 2**39])
    assert bucket_of(v).tolist() == [int(x).bit_length() for x in v]


def test_round_trip_all_field_kinds():
    rng = np.random.default_rng(1)
    big = rng.integers(0, 2**38, 50)
    geo = rng.geometric(0.01, 3000) - 1
    sizes = rng.integers(1, 2**16, 100)
    vals = rng.integers(0, sizes)
    probs = np.array([0.7, 0.2, 0.1])
    cats = rng.choice(3, 500, p=probs)
    w = Writer()
    w.uint(123456789, 32)
    w.log_bucket(big)
    w.log_bucket(geo)
    w.uniform(vals, sizes)
    w.categorical(cats, probs)
    w.uints(np.array([5, 0, 65535, 1 << 20]), 21)
    payload = w.finish()
    r = Reader(payload)
    assert r.uint(32) == 123456789
    assert (r.log_bucket(50) == big).all()
    assert (r.log_bucket(3000) == geo).all()
    assert (r.uniform(sizes) == vals).all()
    assert (r.categorical(500, probs) == cats).all()
    assert r.uints(4, 21).tolist() == [5, 0, 65535, 1 << 20]
    r.finish()
    # semi-static code is close to the empirical entropy of the geometric values
    assert 8 * len(payload) < 3000 * (np.log2(np.e / 0.01) + 0.5) + 50 * 40 + 500 * 1.3 + 100 * 16 + 400


def test_limits_are_enforced():
    w = Writer()
    w.uint(70000, 32)
    w.log_bucket(np.array([3, 1000]))
    r = Reader(w.finish())
    with pytest.raises(CorruptPayload):
        r.uint(32, limit=69999)
    with pytest.raises(CorruptPayload):
        r.log_bucket(2, limit=999)


def test_truncation_and_flips_raise():
    w = Writer()
    w.log_bucket(np.arange(1000))
    payload = w.finish()
    for cut in range(len(payload)):
        with pytest.raises(BitstreamError):
            Reader(payload[:cut]).log_bucket(1000)
    rng = np.random.default_rng(0)
    for _ in range(100):
        bad = bytearray(payload)
        bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        with pytest.raises(BitstreamError):
            Reader(bytes(bad)).log_bucket(1000)
