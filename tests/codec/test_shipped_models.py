"""The models shipped inside the package load with no network and code an image end to end."""

import numpy as np
import pytest
from _data import load_photo
from safetensors import safe_open

from raybb.codec import load_codec
from raybb.model.weights import read_metadata
from raybb.registry import SHIPPED_DIR, list_models, resolve_model

SHIPPED = sorted(SHIPPED_DIR.glob("*.safetensors"))


def test_family_is_shipped_within_budget():
    assert len(SHIPPED) >= 5
    assert sum(p.stat().st_size for p in SHIPPED) <= 60_000_000
    names = [m.name for m in list_models() if m.source == "shipped"]
    assert names == [f"pln-q{i}" for i in range(1, len(SHIPPED) + 1)]
    assert resolve_model(None).name == "pln-q3.safetensors"
    for p in SHIPPED:
        meta = read_metadata(p)["meta"]
        assert meta["steps"] > 0 and meta["variant"] in ("pln", "gamma-pln") and meta["dataset_fingerprint"]
        assert "fine_tuned_from" in meta  # lineage recorded (None for a model trained from scratch)
        with safe_open(p, "pt") as f:  # shipped as float16 (raybb.model.weights)
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}


@pytest.mark.parametrize("quality", [1, 5])
def test_shipped_model_round_trip(quality):
    rgb = load_photo(0)[:128, :192]
    codec = load_codec(quality)
    res = codec.compress_with_stats(rgb)
    assert np.array_equal(codec.decompress(res.data), res.reconstruction)
    assert res.psnr > 20.0  # a trained model, not noise


def test_rates_increase_with_quality():
    rgb = load_photo(0)[:128, :192]
    kl = [load_codec(q).compress_with_stats(rgb, seed=1).kl_bits for q in range(1, len(SHIPPED) + 1)]
    assert kl == sorted(kl)
