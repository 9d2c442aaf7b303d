"""The generic, model-agnostic coding path (raybb.levels) against the PLN's golden bitstreams, and
a ≥3-level model (the channel ladder) through it on the CPU."""

import numpy as np
import pytest
import torch
from _codec_helpers import EXPECTED
from PIL import Image

from raybb import bitstream
from raybb.codec import Codec, parse_pipeline
from raybb.errors import CorruptPayload, ModelMismatch
from raybb.levels import compress_rgb, decode_levels, decompress_rgb, encode_levels, samplers_for
from raybb.model.channel_ladder import ChannelLadderConfig, ChannelLadderNetwork
from raybb.model.ladder import pad_to_stride
from raybb.model.weights import load_weights

# the same files, pipelines and seeds as tests/codec/test_codec.py::test_golden_bitstreams
GOLDEN = [("golden_pfr", "pfr:22,14,64,22,0", 11), ("golden_pfr_v1", "pfr:20,14,64,20", 11),
          ("golden_pfr_v0", "pfr:12,14,64,12", 11), ("golden_isgs", "is-gs", 12),
          ("golden_pfr_max", "pfr:25,16,64,25,0", 11)]  # fmt: skip


@pytest.mark.parametrize("name,pipeline,seed", GOLDEN)
def test_generic_path_reproduces_golden_bitstreams(tiny_weights, photo, name, pipeline, seed):
    """encode_levels writes the golden files' sections byte for byte, and decode_levels + the
    model's synthesis give the golden pixels, which are what Codec.decompress returns."""
    loaded = load_weights(tiny_weights)
    model = loaded.model
    data = (EXPECTED / f"{name}.rbb").read_bytes()
    expected = np.asarray(Image.open(EXPECTED / f"{name}.png").convert("RGB"))
    samplers = samplers_for(model, *parse_pipeline(pipeline))
    out, rec, enc = compress_rgb(model, photo, samplers, seed, loaded.short_fingerprint)
    assert out == data
    assert np.array_equal(rec, expected)
    assert [s.level for s in enc.sections] == [2, 1]
    assert np.array_equal(decompress_rgb(model, data, loaded.short_fingerprint), expected)
    assert np.array_equal(Codec(loaded, pipeline).decompress(data), expected)
    # the lower-level pair alone: same sections from the padded tensor, same latents on decode
    c = bitstream.parse(data)
    x, _ = pad_to_stride(torch.from_numpy(photo.transpose(2, 0, 1).copy()).float().div(255.0)[None])
    assert encode_levels(model, x, samplers, seed).sections == c.sections
    z = decode_levels(model, c.sections, x.shape[-2], x.shape[-1], seed)
    assert all(torch.equal(a, b) for a, b in zip(z, enc.latents, strict=True))


def _tiny_channel(**over) -> ChannelLadderNetwork:
    torch.manual_seed(0)
    kw = {"N": 8, "M": 12, "F": 8, "G": 4, "slices": (2, 4, 6), "prior_hidden": 8, "rate_levels": 16, **over}
    cfg = ChannelLadderConfig(**kw)
    m = ChannelLadderNetwork(cfg).eval()
    with torch.no_grad():  # gains away from their identity init, so β actually changes the network
        for name, p in m.named_parameters():
            if "log_gain" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return m


@pytest.mark.parametrize("rate", [0, 7, 15])
def test_channel_ladder_round_trips_through_the_generic_path(photo, rate):
    model = _tiny_channel()
    fp = b"\x01" * 8
    samplers = samplers_for(model, *parse_pipeline("pfr"))
    assert len(model.latents()) == 4 and sorted(samplers) == [1, 2, 3, 4]
    data, rec, enc = compress_rgb(model, photo, samplers, 5, fp, rate=rate)
    c = bitstream.parse(data)
    assert c.rate == rate and [s.level for s in c.sections] == [2, 1, 3, 4]
    assert [s.num_dims for s in c.sections] == [4 * 2 * 2, 2 * 8 * 8, 4 * 8 * 8, 6 * 8 * 8]  # 70x90 pads to 128x128
    out = decompress_rgb(model, data, fp)
    assert out.shape == photo.shape and np.array_equal(out, rec)
    with pytest.raises(ModelMismatch):
        decompress_rgb(model, data, b"\x02" * 8)


def test_channel_ladder_fixed_rate_writes_no_rate_index(photo):
    model = _tiny_channel(beta_anchors=0, rate_levels=0)
    samplers = samplers_for(model, *parse_pipeline("pfr"))
    data, rec, _ = compress_rgb(model, photo[:40, :50], samplers, 3, b"\x03" * 8)
    assert bitstream.parse(data).rate is None and data[5] == 0
    assert np.array_equal(decompress_rgb(model, data, b"\x03" * 8), rec)


def test_sections_that_do_not_fit_the_model_raise_typed(photo):
    from dataclasses import replace

    model = _tiny_channel()
    fp = b"\x01" * 8
    samplers = samplers_for(model, *parse_pipeline("pfr"))
    data, _, _ = compress_rgb(model, photo[:30, :30], samplers, 5, fp, rate=3)
    c = bitstream.parse(data)
    bad = [
        replace(c, sections=c.sections[:3]),  # a slice missing
        replace(c, sections=tuple(replace(s, level=9) if s.level == 4 else s for s in c.sections)),
        replace(c, sections=tuple(replace(s, num_dims=s.num_dims + 1) for s in c.sections)),
        replace(c, rate=16),  # outside the model's rate_levels
        replace(c, rate=None, flags=0),  # a variable-rate model needs its rate index
    ]
    for b in bad:
        with pytest.raises(CorruptPayload):
            decompress_rgb(model, bitstream.pack(b), fp)


@pytest.mark.slow
def test_trained_variable_rate_model_rate_is_monotonic(photo):
    """With trained variable-rate weights (RAYBB_VARIABLE_RATE_WEIGHTS: a weights file or a
    raybb.train.fast run folder), every rate index across the range gives a decodable stream whose
    size grows with the index. Skipped without weights: a briefly CPU-trained tiny model is not
    necessarily monotonic after a few hundred steps (docs/model.md)."""
    import os

    from raybb.train.fast import load_run_weights

    path = os.environ.get("RAYBB_VARIABLE_RATE_WEIGHTS")
    if not path:
        pytest.skip("set RAYBB_VARIABLE_RATE_WEIGHTS to trained variable-rate weights")
    loaded = load_run_weights(path)
    model = loaded.model
    assert model.rate_levels > 1
    samplers = samplers_for(model, *parse_pipeline("pfr"))
    sizes = []
    for r in np.linspace(0, model.rate_levels - 1, 6).round().astype(int).tolist():
        data, rec, _ = compress_rgb(model, photo, samplers, 7, loaded.short_fingerprint, rate=r)
        assert np.array_equal(decompress_rgb(model, data, loaded.short_fingerprint), rec)
        sizes.append(len(data))
    assert all(a < b for a, b in zip(sizes, sizes[1:], strict=False)), sizes
