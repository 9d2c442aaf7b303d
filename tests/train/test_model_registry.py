"""Model registry: ordering, resolution, fingerprint lookup, rejection of bad files.

Uses tiny real weights files in tmp dirs; the package's shipped dir is pointed at a tmp dir too,
so nothing is ever written into ``raybb/weights/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raybb import registry
from raybb.errors import ModelError, WeightsError
from raybb.model.ladder import LadderConfig, LadderNetwork
from raybb.model.weights import load_weights, read_metadata, save_weights

TINY = LadderConfig(N=16, M=16, F=16, G=4)


def _weights(path: Path, seed: int, beta: float = 1.0, learn_scale: bool = True, meta: dict | None = None) -> str:
    torch.manual_seed(seed)
    net = LadderNetwork(LadderConfig(**{**TINY.to_dict(), "learn_scale": learn_scale}))
    m = {"beta": beta, "variant": "gamma-pln" if learn_scale else "pln"}
    m.update(meta or {})
    return save_weights(path, net, m)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """An empty 'shipped' dir and one user registry dir in $RAYBB_MODELS_DIR."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    user = tmp_path / "user"
    monkeypatch.setattr(registry, "SHIPPED_DIR", shipped)
    monkeypatch.setenv(registry.MODELS_DIR_ENV, str(user))
    monkeypatch.delenv(registry.DEFAULT_MODEL_ENV, raising=False)
    return shipped, user


def test_empty_registry_lists_nothing_and_default_is_a_clear_error(dirs):
    assert registry.list_models() == []
    with pytest.raises(ModelError, match="no models are installed"):
        registry.resolve_model(None)
    with pytest.raises(ModelError):
        registry.resolve_model(2)
    assert registry.find_by_fingerprint(b"\x01" * 8) is None


def test_ordering_default_and_quality(dirs):
    shipped, user = dirs
    # written out of order, q10 after q2 numerically (not lexically), plus a second family in user dir
    for q, seed in [(3, 3), (1, 1), (10, 10), (2, 2)]:
        _weights(shipped / f"pln-q{q}.safetensors", seed, beta=1.0 / q)
    _weights(user / "alt-q1.safetensors", 50)
    names = [m.name for m in registry.list_models()]
    assert names == ["alt-q1", "pln-q1", "pln-q2", "pln-q3", "pln-q10"]
    infos = {m.name: m for m in registry.list_models()}
    assert infos["pln-q3"].source == "shipped" and infos["alt-q1"].source == "user"
    assert infos["pln-q3"].beta == pytest.approx(1 / 3) and infos["pln-q3"].variant == "gamma-pln"
    # no DEFAULT marker: middle member of the first family ("alt" has one member)
    assert registry.resolve_model(None) == user / "alt-q1.safetensors"
    (shipped / "DEFAULT").write_text("pln-q2\n")
    assert registry.resolve_model(None) == shipped / "pln-q2.safetensors"
    assert registry.resolve_model(3) == shipped / "pln-q3.safetensors"
    assert registry.resolve_model("10") == shipped / "pln-q10.safetensors"
    assert registry.resolve_model("q1") == shipped / "pln-q1.safetensors"
    with pytest.raises(ModelError, match=r"no quality 4 .*\[1, 2, 3, 10\]"):
        registry.resolve_model(4)
    assert registry.resolve_model("alt-q1") == user / "alt-q1.safetensors"
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        registry.resolve_model("nope")


def test_env_default_and_path_resolution(dirs, tmp_path, monkeypatch):
    shipped, _ = dirs
    _weights(shipped / "pln-q1.safetensors", 1)
    loose = tmp_path / "elsewhere" / "mine.safetensors"
    _weights(loose, 7)
    assert registry.resolve_model(str(loose)) == loose.resolve()
    assert registry.resolve_model(loose) == loose.resolve()
    with pytest.raises(ModelError, match="not found"):
        registry.resolve_model(str(tmp_path / "missing.safetensors"))
    monkeypatch.setenv(registry.DEFAULT_MODEL_ENV, str(loose))
    assert registry.resolve_model(None) == loose.resolve()
    monkeypatch.setenv(registry.DEFAULT_MODEL_ENV, "pln-q1")
    assert registry.resolve_model(None) == shipped / "pln-q1.safetensors"


def test_shipped_shadows_user_and_fingerprint_lookup(dirs):
    shipped, user = dirs
    fp_shipped = _weights(shipped / "pln-q1.safetensors", 1)
    fp_user = _weights(user / "pln-q1.safetensors", 2)  # same name: hidden by the shipped one
    fp_other = _weights(user / "pln-q2.safetensors", 3)
    models = registry.list_models()
    assert [(m.name, m.fingerprint) for m in models] == [("pln-q1", fp_shipped), ("pln-q2", fp_other)]
    assert registry.find_by_fingerprint(bytes.fromhex(fp_other)[:8]) == user / "pln-q2.safetensors"
    assert registry.find_by_fingerprint(fp_shipped[:16]) == shipped / "pln-q1.safetensors"
    assert registry.find_by_fingerprint(bytes.fromhex(fp_user)[:8]) is None  # shadowed
    assert models[1].short_fingerprint == bytes.fromhex(fp_other)[:8]
    with pytest.raises(ValueError):
        registry.find_by_fingerprint(b"")


def test_bad_files_are_skipped_when_listing_and_rejected_when_registered(dirs, tmp_path):
    shipped, user = dirs
    _weights(shipped / "good-q1.safetensors", 1)
    (shipped / "junk.safetensors").write_bytes(b"\x00" * 3)
    (shipped / "text.safetensors").write_bytes(b"not a safetensors file at all, but long enough")
    assert [m.name for m in registry.list_models()] == ["good-q1"]
    # a flipped tensor byte keeps the header readable (listed) but fails the full load on register
    bad = tmp_path / "flipped.safetensors"
    _weights(bad, 5)
    data = bytearray(bad.read_bytes())
    data[-5] ^= 0xFF
    bad.write_bytes(bytes(data))
    read_metadata(bad)  # header still fine
    with pytest.raises(WeightsError, match="fingerprint mismatch"):
        registry.register_model(bad, "x-q1", user)
    with pytest.raises(WeightsError):
        registry.register_model(shipped / "junk.safetensors", "x-q1", user)
    assert not (user / "x-q1.safetensors").exists()


def test_register_model_copies_sidecar_and_guards_names(dirs, tmp_path, monkeypatch):
    _, user = dirs
    src = tmp_path / "trained.safetensors"
    fp = _weights(src, 11, beta=0.3, learn_scale=False)
    info = registry.register_model(
        src, "pln-q1", kodak_metrics={"bpp": 0.5, "psnr": 31.0, "ms_ssim": 0.97}, extra={"validation": {"bpp": 0.6}}
    )
    assert info.path == user / "pln-q1.safetensors" and info.fingerprint == fp and info.source == "user"
    assert (info.kodak_bpp, info.kodak_psnr, info.kodak_ms_ssim) == (0.5, 31.0, 0.97)
    assert info.variant == "pln" and info.beta == pytest.approx(0.3)
    assert json.loads((user / "pln-q1.json").read_text())["validation"] == {"bpp": 0.6}
    assert load_weights(info.path).fingerprint == fp  # loadable, same model
    assert registry.resolve_model("pln-q1") == info.path
    # same weights again: idempotent; different weights under the same name: refused unless overwrite
    assert registry.register_model(src, "pln-q1").fingerprint == fp
    other = tmp_path / "other.safetensors"
    fp2 = _weights(other, 12)
    with pytest.raises(ModelError, match="different model"):
        registry.register_model(other, "pln-q1")
    assert registry.register_model(other, "pln-q1", overwrite=True).fingerprint == fp2
    for bad_name in ["", "../evil", "a/b", ".hidden", "x.safetensors"]:
        with pytest.raises(ModelError):
            registry.register_model(src, bad_name, user)
    with pytest.raises(ModelError, match="shipped"):
        registry.register_model(src, "pln-q9", registry.SHIPPED_DIR)
    monkeypatch.delenv(registry.MODELS_DIR_ENV)
    with pytest.raises(ModelError, match="RAYBB_MODELS_DIR"):
        registry.register_model(src, "pln-q3")


def test_kodak_numbers_from_weights_meta_and_nested_sidecar(dirs):
    shipped, _ = dirs
    p = shipped / "m-q1.safetensors"
    _weights(p, 1, meta={"kodak": {"bpp": 0.2, "psnr": 28.0}})
    info = registry.list_models()[0]
    assert (info.kodak_bpp, info.kodak_psnr, info.kodak_ms_ssim) == (0.2, 28.0, None)
    (shipped / "m-q1.json").write_text(json.dumps({"kodak_psnr": 28.5, "kodak_ms_ssim": 0.95}))
    info = registry.list_models()[0]
    assert (info.kodak_bpp, info.kodak_psnr, info.kodak_ms_ssim) == (0.2, 28.5, 0.95)
