"""The architecture registry and the ``raybb.arch`` key of weights files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from raybb.errors import WeightsError
from raybb.model.arch import ARCHITECTURES, get_architecture
from raybb.model.channel_ladder import ChannelLadderConfig, ChannelLadderNetwork
from raybb.model.ladder import LadderNetwork
from raybb.model.protocol import LatentModel
from raybb.model.weights import fingerprint, load_weights, read_metadata, save_weights

REPO = Path(__file__).resolve().parents[2]
TINY_CH = ChannelLadderConfig(N=8, M=12, F=8, G=4, slices=(4, 8), prior_hidden=8, rate_levels=32)


def _md(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_registry_names_both_architectures_and_they_implement_the_protocol(tiny_model):
    assert {"pln", "channel-ladder"} <= set(ARCHITECTURES)
    assert isinstance(tiny_model, LatentModel)
    assert isinstance(ChannelLadderNetwork(TINY_CH), LatentModel)
    with pytest.raises(KeyError, match="unknown architecture"):
        get_architecture("nope")


def test_pln_files_have_no_arch_key_and_keep_their_fingerprints(tiny_model, tmp_path):
    path = tmp_path / "pln.safetensors"
    fp = save_weights(path, tiny_model)
    assert "raybb.arch" not in _md(path)
    assert fp == fingerprint(tiny_model.state_dict(), tiny_model.config)  # the pre-registry hash
    assert load_weights(path).arch == "pln"
    # every committed file (shipped family and the golden tiny model) loads as the PLN, and the
    # fingerprint recomputed by the registry-aware loader is the one stored in the file
    files = sorted((REPO / "raybb" / "weights").glob("*.safetensors"))
    files.append(REPO / "tests/codec/expected/tiny.safetensors")
    for f in files:
        md = _md(f)
        assert "raybb.arch" not in md
        loaded = load_weights(f)
        assert loaded.arch == "pln" and isinstance(loaded.model, LadderNetwork)
        assert loaded.fingerprint == md["raybb.fingerprint"]


def test_channel_ladder_round_trip(tmp_path):
    torch.manual_seed(1)
    m = ChannelLadderNetwork(TINY_CH)
    path = tmp_path / "ch.safetensors"
    fp = save_weights(path, m, {"beta_range": [4, 2048]}, dtype=torch.float16)
    md = _md(path)
    assert md["raybb.arch"] == "channel-ladder"
    loaded = load_weights(path)
    assert loaded.arch == "channel-ladder" and loaded.fingerprint == fp
    assert isinstance(loaded.model, ChannelLadderNetwork) and loaded.config == TINY_CH
    assert read_metadata(path)["arch"] == "channel-ladder"
    # the arch name is part of the fingerprint: the same tensors and config under "pln" hash differently
    assert fp != fingerprint(loaded.model.state_dict(), TINY_CH)
    x = torch.rand(1, 3, 64, 64)
    a = loaded.model.rd_terms(x, torch.tensor([50.0]), sample=False)
    ref = m.half().float().eval().rd_terms(x, torch.tensor([50.0]), sample=False)
    assert torch.equal(a.x_hat, ref.x_hat)


def test_codec_loads_every_registered_architecture(tmp_path):
    """The Codec codes any registered architecture through the model protocol (float16 file here);
    the round trip itself is tested in tests/codec/test_codec_protocol.py."""
    import numpy as np

    from raybb.codec import load_codec

    path = tmp_path / "ch.safetensors"
    save_weights(path, ChannelLadderNetwork(TINY_CH), {}, dtype=torch.float16)
    codec = load_codec(path)
    assert codec.loaded.arch == "channel-ladder" and sorted(codec.samplers) == sorted(
        s.level for s in codec.model.latents()
    )
    img = np.full((20, 30, 3), 90, np.uint8)
    res = codec.compress_with_stats(img, seed=1)
    assert np.array_equal(codec.decompress(res.data), res.reconstruction)


def _forge(state: dict, cfg: dict, arch: str | None, fp_arch: str = "pln") -> bytes:
    class C:
        def to_dict(self):
            return cfg

    md = {
        "raybb.format": "1",
        "raybb.config": json.dumps(cfg, sort_keys=True),
        "raybb.meta": "{}",
        "raybb.fingerprint": fingerprint(state, C(), fp_arch),
    }
    if arch is not None:
        md["raybb.arch"] = arch
    return st_save({k: v.contiguous() for k, v in state.items()}, metadata=md)


def test_unknown_arch_and_arch_config_mismatch_raise_weights_error(tiny_model):
    pln_state, pln_cfg = tiny_model.state_dict(), tiny_model.config.to_dict()
    ch = ChannelLadderNetwork(TINY_CH)
    ch_state, ch_cfg = ch.state_dict(), TINY_CH.to_dict()
    with pytest.raises(WeightsError, match="unknown architecture"):
        load_weights(_forge(pln_state, pln_cfg, "resnet-9000", "resnet-9000"))
    # a PLN config under the channel-ladder name, and the other way round
    with pytest.raises(WeightsError, match="channel-ladder"):
        load_weights(_forge(pln_state, pln_cfg, "channel-ladder", "channel-ladder"))
    with pytest.raises(WeightsError, match="pln"):
        load_weights(_forge(ch_state, ch_cfg, None))
    # right config, wrong tensors
    with pytest.raises(WeightsError, match="do not match the architecture"):
        load_weights(_forge(pln_state, ch_cfg, "channel-ladder", "channel-ladder"))
    # an explicit "pln" is the PLN; a channel-ladder file whose fingerprint omits the arch is refused
    assert load_weights(_forge(pln_state, pln_cfg, "pln")).arch == "pln"
    with pytest.raises(WeightsError, match="fingerprint mismatch"):
        load_weights(_forge(ch_state, ch_cfg, "channel-ladder", "pln"))
    assert load_weights(_forge(ch_state, ch_cfg, "channel-ladder", "channel-ladder")).arch == "channel-ladder"


@pytest.mark.parametrize(
    "over",
    [
        {"slices": [4, 4]},  # does not sum to M
        {"slices": []},
        {"slices": "4,8"},
        {"likelihood": "cauchy"},
        {"beta_min": 0},
        {"beta_min": 5000.0},  # above beta_max
        {"beta_anchors": 1},
        {"rate_levels": 1},
        {"beta_anchors": 0},  # fixed rate but rate_levels left at 32
        {"learn_scale": True},  # a learned scale with variable rate
        {"N": 10**9},
        {"bogus": 1},
    ],
)
def test_bad_channel_ladder_metadata_raises_weights_error(over):
    cfg = {**TINY_CH.to_dict(), **over}
    state = ChannelLadderNetwork(TINY_CH).state_dict()
    with pytest.raises(WeightsError):
        load_weights(_forge(state, cfg, "channel-ladder", "channel-ladder"))


def test_rate_index_maps_to_beta_monotonically():
    c = TINY_CH
    betas = [c.beta_of_rate(r) for r in range(c.rate_levels)]
    assert betas[0] == pytest.approx(c.beta_max) and betas[-1] == pytest.approx(c.beta_min)
    assert all(a > b for a, b in zip(betas, betas[1:], strict=False))
    assert all(c.rate_of_beta(b) == r for r, b in enumerate(betas))
    with pytest.raises(ValueError):
        c.beta_of_rate(c.rate_levels)
