"""Tiled transforms (raybb/tiling.py), block-chunked PFR, and the decoder's size and memory limits."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from raybb import bitstream
from raybb.cli import app
from raybb.codec import Codec
from raybb.coding import blocks, pfr
from raybb.coding.base import DiagGaussian, StreamKey
from raybb.coding.entropy import Writer
from raybb.errors import RaybbError, TooManyPixels
from raybb.imageio import DEFAULT_MAX_PIXELS
from raybb.model.weights import load_weights
from raybb.tiling import MIN_TILE_PIXELS, Tiler, garbage_width

runner = CliRunner()


@pytest.fixture(scope="module")
def odd_image() -> np.ndarray:
    """450 x 397: not a multiple of the 64-px stride, several tiles at the smallest budget."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:450, 0:397]
    base = np.stack([128 + 90 * np.sin(xx / 17.0), 128 + 80 * np.cos(yy / 11.0), (xx + 2 * yy) * 0.2], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def test_halos_follow_the_receptive_field(tiny_codec):
    m = tiny_codec.model
    # g_a: 4 stride-2 5x5 convs -> 2 bad latent positions = 32 px; g_s: 4 up-convs -> 60 px
    assert garbage_width(m.g_a) == 2 and garbage_width(m.g_s) == 60
    assert garbage_width(m.h_a) == 2 and garbage_width(m.h_s) == 13
    t = Tiler(m, MIN_TILE_PIXELS)
    assert (t._ga.halo, t._gs.halo, t._ha.halo, t._hs.halo) == (32, 4, 8, 4)


def test_tiled_stacks_equal_untiled(tiny_codec, odd_image):
    m = tiny_codec.model
    h, w = odd_image.shape[:2]
    small, whole = Tiler(m, MIN_TILE_PIXELS), Tiler(m, 1 << 30)
    assert not small.single_tile(h, w) and whole.single_tile(h, w)
    assert math.ceil(512 / small._tile_img) >= 3 and math.ceil(448 / 16 / small._tile_z1) >= 3  # several tiles
    dev = torch.device("cpu")
    with torch.no_grad():
        a, b = whole.bottom_up(odd_image, dev), small.bottom_up(odd_image, dev)
        assert torch.allclose(a.mean, b.mean, atol=1e-5, rtol=0) and torch.allclose(a.std, b.std, atol=1e-5, rtol=0)
        small._tile_h16 = 8  # force h_a / h_s tiles on this small latent
        small._tile_z2 = 2
        qa, qb = whole.posterior2(a), small.posterior2(a)
        assert torch.allclose(qa.mean, qb.mean, atol=1e-5, rtol=0) and torch.allclose(qa.std, qb.std, atol=1e-5)
        pa, pb = whole.prior1(qa.mean), small.prior1(qa.mean)
        assert torch.allclose(pa.mean, pb.mean, atol=1e-5, rtol=0) and torch.allclose(pa.std, pb.std, atol=1e-5)
        z1 = a.mean + 0.5 * torch.randn(a.mean.shape, generator=torch.Generator().manual_seed(0))
        xa, xb = whole.synthesize_uint8(z1, h, w), small.synthesize_uint8(z1, h, w)
    assert xa.shape == xb.shape == (h, w, 3)
    diff = np.abs(xa.astype(int) - xb.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float32 summation order only


def test_halo_one_stride_short_is_not_exact(tiny_codec, odd_image):
    """The derived halo is needed: 16 px less and g_a's tile edges show."""
    t = Tiler(tiny_codec.model, MIN_TILE_PIXELS)
    whole = Tiler(tiny_codec.model, 1 << 30)
    with torch.no_grad():
        a = whole.bottom_up(odd_image, torch.device("cpu"))
        t._ga = t._ga.__class__(t._ga.fn, t._ga.up, t._ga.down, t._ga.halo - 16, t._ga.align)
        b = t.bottom_up(odd_image, torch.device("cpu"))
    assert (a.mean - b.mean).abs().max() > 1e-3


def test_tiled_round_trip_and_cross_decoding(tiny_weights, odd_image):
    loaded = load_weights(tiny_weights)
    tiled = Codec(loaded, "pfr", tile_pixels=MIN_TILE_PIXELS)
    whole = Codec(loaded, "pfr", tile_pixels=1 << 30)
    res = tiled.compress_with_stats(odd_image, seed=7)
    assert np.array_equal(tiled.decompress(res.data), res.reconstruction)
    ref = whole.compress_with_stats(odd_image, seed=7)
    # same format: each decodes the other's stream; tiling moves a decoded value by at most 1
    for data in (res.data, ref.data):
        d = np.abs(tiled.decompress(data).astype(int) - whole.decompress(data).astype(int))
        assert d.max() <= 1
    assert abs(res.bpp - ref.bpp) <= 0.01 * ref.bpp and abs(res.psnr - ref.psnr) <= 0.05


def test_pfr_block_chunks_do_not_change_the_bytes(monkeypatch):
    rng = np.random.default_rng(5)
    d = 8 * 3000
    p = DiagGaussian(torch.zeros(d), torch.ones(d))
    act = torch.from_numpy(rng.random(d) < 0.2)
    q = DiagGaussian(
        (torch.randn(d, generator=torch.Generator().manual_seed(1)) * 2.0 * act).float(),
        torch.where(act, torch.full((d,), 0.3), torch.ones(d)).float(),
    )
    smp = pfr.PFRSampler(14, 10, 64, 14, 8)
    key = StreamKey(11, 0, 1)
    ref = smp.encode(q, p, key)
    monkeypatch.setattr(pfr, "_BLOCK_CHUNK", 7)
    monkeypatch.setattr(blocks, "_TREE_CHUNK", 3)
    got = smp.encode(q, p, key)
    assert got.payload == ref.payload and ref.stats["n_blocks"] > 3 * 7
    assert torch.equal(smp.decode(p, key, got.payload), ref.sample)


# -- the decoder's limits ----------------------------------------------------------------------------
def _zero_pfr_payload(d: int, params: tuple[int, ...]) -> bytes:
    """A valid PFR payload for a d-dim latent that codes rank 0 everywhere (no outliers, no splits):
    what a hostile 138-byte stream holds, a few bytes for any size."""
    w = Writer()
    w.uint(d, 32)
    if len(params) == 5 and params[4] != 1:
        w.uint(0, 1)  # channel-major
    w.uint(0, 32)  # no outliers
    w.log_bucket(np.zeros(0, dtype=np.int64))
    n0 = -(-d // params[2])
    w.uint(0, n0.bit_length())  # level 0: no superblock splits
    p1 = 0.5 / (n0 + 1.0)
    w.categorical(np.zeros(n0, dtype=np.int32), np.array([1.0 - p1, p1]))
    w.log_bucket(np.zeros(n0, dtype=np.int64))
    return w.finish()


def crafted_stream(codec: Codec, width: int, height: int) -> bytes:
    """A stream with valid CRCs and valid payloads declaring width x height pixels."""
    shape2, shape1 = codec._latent_shapes(height, width)
    sections = []
    for level, shape in ((2, shape2), (1, shape1)):
        s = codec.samplers[level]
        d = math.prod(shape)
        sections.append(bitstream.Section(level, s.sampler_id, tuple(s.params()), d, _zero_pfr_payload(d, s.params())))
    c = bitstream.Container(codec.loaded.short_fingerprint, width, height, 1, tuple(sections))
    return bitstream.pack(c)


def test_crafted_stream_decodes_when_small(tiny_codec):
    img = tiny_codec.decompress(crafted_stream(tiny_codec, 130, 70))
    assert img.shape == (70, 130, 3)


def test_crafted_10000x10000_refused_above_max_pixels(tiny_weights, tmp_path):
    codec = Codec(load_weights(tiny_weights), "pfr", max_pixels=10_000_000)
    data = crafted_stream(codec, 10000, 10000)
    assert len(data) < 300
    with pytest.raises(TooManyPixels):
        codec.decompress(data)
    f = tmp_path / "big.rbb"
    f.write_bytes(data)
    r = runner.invoke(
        app,
        [
            "decompress",
            str(f),
            "-o",
            str(tmp_path / "big.png"),
            "--model",
            str(tiny_weights),
            "--max-pixels",
            "99999999",
        ],
    )
    assert r.exit_code == 3 and "above the limit" in r.output and not (tmp_path / "big.png").exists()


def test_max_pixels_on_the_encoder_cli(tiny_weights, tmp_path, odd_image):
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray(odd_image).save(src)
    r = runner.invoke(
        app, ["compress", str(src), "-o", str(tmp_path / "a.rbb"), "--model", str(tiny_weights), "--max-pixels", "1000"]
    )
    assert r.exit_code == 4 and "above the limit" in r.output
    r = runner.invoke(
        app,
        [
            "compress",
            str(src),
            "-o",
            str(tmp_path / "a.rbb"),
            "--model",
            str(tiny_weights),
            "--max-pixels",
            str(DEFAULT_MAX_PIXELS),
            "--tile-pixels",
            str(MIN_TILE_PIXELS),
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "decompress",
            str(tmp_path / "a.rbb"),
            "-o",
            str(tmp_path / "a.png"),
            "--model",
            str(tiny_weights),
            "--max-pixels",
            "1000",
        ],
    )
    assert r.exit_code == 3
    r = runner.invoke(
        app,
        [
            "decompress",
            str(tmp_path / "a.rbb"),
            "-o",
            str(tmp_path / "b.png"),
            "--model",
            str(tiny_weights),
            "--tile-pixels",
            str(MIN_TILE_PIXELS),
        ],
    )
    assert r.exit_code == 0 and (tmp_path / "b.png").exists()


def test_allocation_failure_is_a_typed_error(tiny_weights):
    codec = Codec(load_weights(tiny_weights), "pfr")
    data = crafted_stream(codec, 300, 200)

    def boom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory")

    codec.tiler.synthesize_uint8 = boom
    with pytest.raises(RaybbError) as ei:
        codec.decompress(data)
    assert ei.type.__name__ == "DecodeOutOfMemory"
    codec.tiler.bottom_up = boom
    with pytest.raises(RaybbError) as ei:
        codec.compress(np.zeros((64, 64, 3), np.uint8))
    assert ei.type.__name__ == "EncodeOutOfMemory"


_CAPPED = textwrap.dedent(
    """
    import resource, sys, torch
    from raybb.cli import app
    import raybb.codec
    torch.nn.functional.conv2d(torch.ones(1, 8, 64, 64), torch.ones(8, 8, 3, 3))  # start the thread pool
    raybb.codec.load_codec(sys.argv[3])  # import and load everything before the cap
    vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 200 * 2**20, resource.RLIM_INFINITY))
    sys.argv = ["raybb", "decompress", sys.argv[1], "-o", sys.argv[2], "--model", sys.argv[3]]
    app()
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")
def test_crafted_10000x10000_under_a_memory_cap_exits_3(tmp_path):
    """The default model's 100 MP latents (2 x 300 MB for p(z1|z2)) do not fit under the cap: a typed
    error and exit 3, no traceback."""
    from raybb.codec import load_codec

    codec = load_codec()
    f = tmp_path / "big.rbb"
    f.write_bytes(crafted_stream(codec, 10000, 10000))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    from raybb.registry import resolve_model

    r = subprocess.run(
        [sys.executable, "-c", _CAPPED, str(f), str(tmp_path / "big.png"), str(resolve_model(None))],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 3, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "out of memory" in (r.stdout + r.stderr)
