"""Tiled transforms: a model's convolution stacks over overlapping tiles, bounded memory.

The Codec runs a model's stages (analyze, prior, posterior, reconstruct) through
``stage_runner``: a :class:`Tiler` for the PLN, a :class:`ChannelLadderTiler` for the
channel-ladder (the same geometry, plus its slice priors), and :class:`Untiled` (the model's own
methods over the whole image) for an architecture without tiling rules here.

Why: at 24-100 MP the memory of an encode or decode is dominated by the full-resolution
activations of g_a and g_s (N channels x H x W float32, several alive at once), not by the
latents. Here every stack runs over overlapping tiles and keeps only each tile's interior, so the
working memory depends on the tile size, not on the image.

Exact by construction (up to float32 summation order): a tile's input is its interior plus a halo
of real neighbouring data at least as wide as the stack's receptive field reaches, so every
interior output sees the same inputs as in the untiled computation. Mirror padding happens only at
the true border of the (padded) map, which the tiles touching it share with the untiled path; at
an interior tile edge mirror padding only corrupts halo outputs, which are thrown away. The halo
is derived from the stack's layers (:func:`garbage_width`), tiles are aligned to the stride, so
the geometry is integers derived from the image size and the tile budget: the bitstream does not
change at all, and an image that fits in one tile runs the untiled code itself (Kodak-size images
gives the same bytes as untiled coding). Measured differences tiled vs untiled: docs/tiling.md.

Mirror padding switches to replicate for maps of size <= pad (``layers.mirror_pad``). A tile is
either the whole extent of a dimension or larger than any pad at every layer, so it makes the same
choice as the untiled map.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from raybb.model.channel_ladder import BetaGain, ChannelLadderNetwork
from raybb.model.distributions import Gaussian, precision_weighted
from raybb.model.ladder import TOTAL_STRIDE, LadderNetwork
from raybb.model.layers import GDN, MirrorConv2d, MirrorUpConv2d

__all__ = [
    "DEFAULT_TILE_PIXELS",
    "BYTES_PER_TILE_PIXEL",
    "MIN_TILE_PIXELS",
    "Tiler",
    "Untiled",
    "garbage_width",
    "stage_runner",
    "tile_pixels_for",
    "tile_pixels_for_memory",
    "limit_heap_retention",
    "spans",
]

#: Default tile budget on the CPU: pixels per g_a/g_s tile, halo included (1024 x 1024: g_a
#: interiors of 960 px, g_s interiors of 896 px). 1 MiP tiles keep the transforms' workspace
#: near 0.25 GiB (BYTES_PER_TILE_PIXEL), so a 100 MP encode stays under 2 GiB; why not larger
#: tiles, and the halo overhead: docs/tiling.md.
DEFAULT_TILE_PIXELS = 1024 * 1024
#: Smallest budget accepted (a 256 x 256 tile: 128-px interior for g_s's 64-px halo).
MIN_TILE_PIXELS = 256 * 256
#: Peak transform workspace per tile pixel (bytes, float32, N=64 model), measured on the CPU
#: (benchmarks/tiling.py --workspace); used to size tiles from a device's free memory.
BYTES_PER_TILE_PIXEL = 260


def tile_pixels_for(device: torch.device, tile_pixels: int | None = None, *, fraction: float = 0.5) -> int:
    """The tile budget for ``device``: ``tile_pixels`` if given, else the CPU default, or on CUDA
    what ``fraction`` of the card's free memory holds (``torch.cuda.mem_get_info``)."""
    if tile_pixels is not None:
        if int(tile_pixels) < MIN_TILE_PIXELS:
            raise ValueError(f"tile_pixels must be >= {MIN_TILE_PIXELS}")
        return int(tile_pixels)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return max(MIN_TILE_PIXELS, int(free * fraction) // BYTES_PER_TILE_PIXEL)
    return DEFAULT_TILE_PIXELS


#: Memory of a CPU encode besides the tile workspace: the process with torch and a model, and per
#: image pixel the image, the level-1 latents and the sampler's per-dim arrays (benchmarks/results/
#: tiling_cpu.md: peak RSS against pixels at the default tile budget).
BASE_BYTES = 400 * 2**20
BYTES_PER_IMAGE_PIXEL = 16


def tile_pixels_for_memory(memory_bytes: int, max_pixels: int) -> int:
    """The largest tile budget (up to 4x the default) that codes a ``max_pixels`` image in
    ``memory_bytes``; ValueError if even the smallest tiles do not fit."""
    room = memory_bytes - BASE_BYTES - BYTES_PER_IMAGE_PIXEL * max_pixels
    tp = room // BYTES_PER_TILE_PIXEL
    if tp < MIN_TILE_PIXELS:
        need = BASE_BYTES + BYTES_PER_IMAGE_PIXEL * max_pixels + BYTES_PER_TILE_PIXEL * MIN_TILE_PIXELS
        raise ValueError(
            f"{memory_bytes / 2**20:.0f} MiB cannot code {max_pixels}-pixel images: need >= {need / 2**20:.0f} MiB"
        )
    return int(min(tp, 4 * DEFAULT_TILE_PIXELS))


def limit_heap_retention(threshold: int = 4 << 20) -> bool:
    """glibc only: serve allocations of ``threshold`` bytes or more with mmap, so that freed tiles
    and chunks go back to the OS instead of staying in the heap. glibc's default threshold grows
    to 32 MB after large frees, and the heap then keeps freed tile temporaries resident (the
    effect on peak RSS: docs/tiling.md). Process-wide, so only the CLI and the Ray actors call it.
    Returns whether it was applied."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def stack_layers(stack: nn.Module) -> list[nn.Module]:
    """A stack's layers in order: an ``nn.Sequential``'s, or a channel-ladder stack's
    conv, activation, β gain, conv, ..., conv."""
    if isinstance(stack, nn.Sequential):
        return list(stack)
    convs, acts = list(stack.convs), list(stack.acts)
    gains = list(stack.gains) if stack.gains is not None else []
    out: list[nn.Module] = []
    for i, conv in enumerate(convs):
        out.append(conv)
        if i < len(convs) - 1:
            out.append(acts[i])
            if gains:
                out.append(gains[i])
    return out


def garbage_width(stack: nn.Module) -> float:
    """How many output positions next to a tile edge are wrong when the stack's input is cut there
    (and mirror padded), in output units, for an input edge aligned to the stack's stride.

    A stride-s convolution with padding p turns g bad input positions into ceil((g + p) / s) bad
    outputs (the right edge is never worse for inputs of a multiple of s); a sub-pixel
    up-convolution into 2 (g + p); pointwise layers (GDN, leaky ReLU, β gains) keep g.
    """
    g = 0
    for layer in stack_layers(stack):
        if isinstance(layer, MirrorUpConv2d):
            g = 2 * (g + layer.conv.pad)
        elif isinstance(layer, MirrorConv2d):
            g = -(-(g + layer.pad) // layer.conv.stride[0])
        elif not isinstance(layer, GDN | nn.LeakyReLU | BetaGain):
            raise TypeError(f"no receptive-field rule for {type(layer).__name__}")
    return g


def spans(n: int, tile: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """Tiles of one dimension of size ``n``: (interior start, interior end, input start, input end),
    interiors of ``tile`` (the last one shorter), inputs widened by ``halo`` and clipped to [0, n)."""
    for s in range(0, n, tile):
        e = min(n, s + tile)
        yield s, e, max(0, s - halo), min(n, e + halo)


def _round_up(v: int, a: int) -> int:
    return -(-v // a) * a


@dataclass(frozen=True)
class _Stack:
    """One stack's tiling rule: ``up`` output units per input unit (or 1/``down``), the halo and
    alignment in input units, and the interior tile size (input units) for a budget."""

    fn: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    up: int
    down: int
    halo: int
    align: int

    def out(self, v: int) -> int:
        return v * self.up // self.down


class Tiler:
    """Runs a :class:`LadderNetwork`'s stacks over tiles of at most ``tile_pixels`` image pixels
    (halo included). Each method returns what the model's method of the same name returns (up to
    float32 summation order), or calls it directly when one tile covers the map."""

    def __init__(self, model: LadderNetwork, tile_pixels: int = DEFAULT_TILE_PIXELS):
        if tile_pixels < MIN_TILE_PIXELS:
            raise ValueError(f"tile_pixels must be >= {MIN_TILE_PIXELS}")
        self.model = model
        self.tile_pixels = int(tile_pixels)
        m = model
        s1 = TOTAL_STRIDE // 4  # 16: the level-1 stride
        # halos in input units, rounded up to the stride so tile inputs stay on the stride grid
        self._ga = _Stack(m.bottom_up, 1, s1, _round_up(garbage_width(m.g_a) * s1, s1), TOTAL_STRIDE)
        self._gs = _Stack(m.synthesize, s1, 1, _round_up(-(-garbage_width(m.g_s) // s1), 4), 4)
        self._ha = _Stack(self._h_a, 1, 4, _round_up(garbage_width(m.h_a) * 4, 4), 4)
        self._hs = _Stack(m.prior1, 4, 1, _round_up(-(-garbage_width(m.h_s) // 4), 1), 1)
        side = math.isqrt(self.tile_pixels)  # image pixels per side, halo included
        self._tile_img = max(TOTAL_STRIDE, (side - 2 * self._ga.halo) // TOTAL_STRIDE * TOTAL_STRIDE)
        self._tile_z1 = max(4, (side // s1 - 2 * self._gs.halo) // 4 * 4)
        # h_a / h_s work at stride 16 -> 64 with ~1/50 of g_a's workspace per image pixel: tiles
        # covering 16x the image area still need far less memory than one g_a tile
        self._tile_h16 = max(4, (4 * side // s1 - 2 * self._ha.halo) // 4 * 4)
        self._tile_z2 = max(1, self._tile_h16 // 4 - 2 * self._hs.halo)

    def _h_a(self, mean: torch.Tensor) -> Gaussian:
        return self.model.posterior2(Gaussian(mean, mean))  # posterior2 reads the mean only

    # -- the generic loop ------------------------------------------------------------------------
    @staticmethod
    def _run(stack: _Stack, size: tuple[int, int], tile: int, read, write) -> None:
        """For every tile: ``write(out_rows, out_cols, result, crop_rows, crop_cols)`` with the
        interior of ``stack.fn(read(in_rows, in_cols))``; rows/cols are slices in their units."""
        h, w = size
        for ys, ye, yi0, yi1 in spans(h, tile, stack.halo):
            for xs, xe, xi0, xi1 in spans(w, tile, stack.halo):
                res = stack.fn(read(slice(yi0, yi1), slice(xi0, xi1)))
                o = stack.out
                crop_r = slice(o(ys - yi0), o(ye - yi0))
                crop_c = slice(o(xs - xi0), o(xe - xi0))
                write(slice(o(ys), o(ye)), slice(o(xs), o(xe)), res, crop_r, crop_c)
                del res

    @staticmethod
    def _gauss_writer(mean: torch.Tensor, std: torch.Tensor):
        def write(r, c, g: Gaussian, cr, cc):
            mean[:, :, r, c] = g.mean[:, :, cr, cc]
            std[:, :, r, c] = g.std[:, :, cr, cc]

        return write

    # -- the stacks ------------------------------------------------------------------------------
    def single_tile(self, h: int, w: int) -> bool:
        """Whether an h x w image is coded in one tile (then every stack runs untiled)."""
        hp, wp = _round_up(h, TOTAL_STRIDE), _round_up(w, TOTAL_STRIDE)
        return hp <= self._tile_img and wp <= self._tile_img

    def bottom_up(self, rgb: np.ndarray, device: torch.device) -> Gaussian:
        """N(mu_x, sigma_x^2) of an HxWx3 uint8 image, replicate-padded to x64 like ``pad_to_stride``."""
        return self._image_stack(rgb, device, self._ga, self.model.config.M)

    def _image_stack(self, rgb: np.ndarray, device: torch.device, stack: _Stack, channels: int) -> Gaussian:
        """``stack`` (image -> Gaussian at stride 16) over tiles read straight from the uint8 image."""
        h, w = rgb.shape[:2]
        hp, wp = _round_up(h, TOTAL_STRIDE), _round_up(w, TOTAL_STRIDE)
        if self.single_tile(h, w):
            from raybb.model.ladder import pad_to_stride

            x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).to(device, torch.float32).div_(255.0)[None]
            return stack.fn(pad_to_stride(x)[0])
        mean = torch.empty(1, channels, hp // 16, wp // 16, device=device)
        std = torch.empty_like(mean)

        def read(r: slice, c: slice) -> torch.Tensor:
            rows = np.minimum(np.arange(r.start, r.stop), h - 1)  # replicate padding past the image
            cols = np.minimum(np.arange(c.start, c.stop), w - 1)
            t = rgb[rows[:, None], cols[None, :]].transpose(2, 0, 1).copy()
            return torch.from_numpy(t).to(device, torch.float32).div_(255.0)[None]

        self._run(stack, (hp, wp), self._tile_img, read, self._gauss_writer(mean, std))
        return Gaussian(mean, std)

    def posterior2(self, bottom_up: Gaussian) -> Gaussian:
        """q(z2|x) from the bottom-up mean (``LadderNetwork.posterior2``)."""
        mu = bottom_up.mean
        h, w = mu.shape[-2:]
        if h <= self._tile_h16 and w <= self._tile_h16:
            return self.model.posterior2(bottom_up)
        g = self.model.config.G
        mean = torch.empty(1, g, h // 4, w // 4, device=mu.device)
        std = torch.empty_like(mean)
        self._run(self._ha, (h, w), self._tile_h16, lambda r, c: mu[:, :, r, c], self._gauss_writer(mean, std))
        return Gaussian(mean, std)

    def prior1(self, z2: torch.Tensor) -> Gaussian:
        """p(z1|z2) (``LadderNetwork.prior1``)."""
        h, w = z2.shape[-2:]
        if h <= self._tile_z2 and w <= self._tile_z2:
            return self.model.prior1(z2)
        m = self.model.config.M
        mean = torch.empty(1, m, 4 * h, 4 * w, device=z2.device)
        std = torch.empty_like(mean)
        self._run(self._hs, (h, w), self._tile_z2, lambda r, c: z2[:, :, r, c], self._gauss_writer(mean, std))
        return Gaussian(mean, std)

    def posterior1_consuming(self, bottom_up: Gaussian, prior1: Gaussian) -> Gaussian:
        """q(z1|z2,x) (``LadderNetwork.posterior1``, elementwise) computed channel by channel into
        ``bottom_up``'s own tensors, which it overwrites: no full-size temporaries (a 100 MP image's
        would be ~1 GB). The same numbers as the whole-tensor computation."""
        mean, std = bottom_up.mean, bottom_up.std
        for c in range(mean.shape[1]):
            sl = (slice(None), slice(c, c + 1))
            q = self.model.posterior1(Gaussian(mean[sl], std[sl]), Gaussian(prior1.mean[sl], prior1.std[sl]))
            mean[sl], std[sl] = q.mean, q.std
        return Gaussian(mean, std)

    def synthesize_uint8(self, z1: torch.Tensor, h: int, w: int) -> np.ndarray:
        """The decoded HxWx3 uint8 image: ``synthesize`` clamped, scaled, rounded and cropped, tile
        by tile straight into the output (the float image is never whole)."""
        return self._synth_stack(self._gs, tuple(z1.shape[-2:]), lambda r, c: z1[:, :, r, c], h, w)

    def _synth_stack(self, stack: _Stack, size: tuple[int, int], read, h: int, w: int) -> np.ndarray:
        """``stack`` (stride-16 latents -> image) over tiles, written into the uint8 output."""
        if self.single_tile(h, w):
            return to_uint8(stack.fn(read(slice(None), slice(None))), h, w)
        out = np.empty((h, w, 3), dtype=np.uint8)

        def write(r: slice, c: slice, x: torch.Tensor, cr: slice, cc: slice) -> None:
            r1, c1 = min(r.stop, h), min(c.stop, w)
            if r.start >= r1 or c.start >= c1:
                return
            crop = x[:, :, cr.start : cr.start + r1 - r.start, cc.start : cc.start + c1 - c.start]
            out[r.start : r1, c.start : c1] = to_uint8(crop, r1 - r.start, c1 - c.start)

        self._run(stack, size, self._tile_z1, read, write)
        return out

    # -- the protocol stages the Codec runs (raybb.model.protocol; the PLN: z2 = latent 0, z1 = 1) --
    def analyze(self, rgb: np.ndarray, device: torch.device, cond=None) -> Gaussian:
        return self.bottom_up(rgb, device)

    def prior(self, index: int, decoded: list[torch.Tensor], cond, shape: tuple[int, ...]) -> Gaussian:
        return self.prior1(decoded[0]) if index == 1 else self.model.prior(index, decoded, cond, shape)

    def posterior(self, index: int, features: Gaussian, decoded, prior: Gaussian, cond=None, *, consume=False):
        """``consume``: the features are not needed again, so level 1 may overwrite them in place."""
        if index == 0:
            return self.posterior2(features)
        return self.posterior1_consuming(features, prior) if consume else self.model.posterior1(features, prior)

    def reconstruct_uint8(self, decoded: list[torch.Tensor], cond, h: int, w: int) -> np.ndarray:
        return self.synthesize_uint8(decoded[-1], h, w)

    def release(self) -> None:
        """Drop what is kept between the stages of one image (the Codec calls it after encoding)."""


class ChannelLadderTiler(Tiler):
    """The channel-ladder's stages over tiles, with the PLN's geometry: g_a (image -> stride 16),
    h_a (-> stride 64), the context h_s (stride 64 -> 16), each slice prior (3x3 stacks at stride
    16, over the context and the slices decoded before it, read tile by tile without concatenating
    the whole maps) and g_s (stride 16 -> image). The β gains are per-channel and the same for every
    tile. Posteriors are elementwise. Exact up to float32 summation order, like the PLN's."""

    def __init__(self, model: ChannelLadderNetwork, tile_pixels: int = DEFAULT_TILE_PIXELS):
        if tile_pixels < MIN_TILE_PIXELS:
            raise ValueError(f"tile_pixels must be >= {MIN_TILE_PIXELS}")
        self.model = m = model
        self.tile_pixels = int(tile_pixels)
        s1 = TOTAL_STRIDE // 4
        self._halo_a = _round_up(garbage_width(m.g_a) * s1, s1)
        self._halo_s = _round_up(-(-garbage_width(m.g_s) // s1), 4)
        self._halo_ha = _round_up(garbage_width(m.h_a) * 4, 4)
        self._halo_hs = -(-garbage_width(m.h_s) // 4)
        self._halo_p = [garbage_width(p) for p in m.slice_priors]
        side = math.isqrt(self.tile_pixels)
        self._tile_img = max(TOTAL_STRIDE, (side - 2 * self._halo_a) // TOTAL_STRIDE * TOTAL_STRIDE)
        self._tile_z1 = max(4, (side // s1 - 2 * self._halo_s) // 4 * 4)
        self._tile_h16 = max(4, (4 * side // s1 - 2 * self._halo_ha) // 4 * 4)
        self._tile_z2 = max(1, self._tile_h16 // 4 - 2 * self._halo_hs)
        self._ctx: tuple | None = None  # (z2, cond, context) of the image being coded

    def _gs_stack(self, cond) -> _Stack:
        m = self.model
        return _Stack(lambda z: (m._run(m.g_s, z, cond) + 1.0) * 0.5, 16, 1, self._halo_s, 4)

    def analyze(self, rgb: np.ndarray, device: torch.device, cond=None) -> Gaussian:
        m = self.model
        stack = _Stack(lambda x: m._bottom_up(x, cond), 1, 16, self._halo_a, TOTAL_STRIDE)
        return self._image_stack(rgb, device, stack, m.config.M)

    def _context(self, z2: torch.Tensor, cond) -> torch.Tensor:
        c = self._ctx
        if c is not None and c[0] is z2 and c[1] is cond:
            return c[2]
        m = self.model
        h, w = z2.shape[-2:]
        if h <= self._tile_z2 and w <= self._tile_z2:
            ctx = m._context(z2, cond)
        else:
            ctx = torch.empty(1, m.config.F, 4 * h, 4 * w, device=z2.device)

            def write(r, c, y, cr, cc):
                ctx[:, :, r, c] = y[:, :, cr, cc]

            stack = _Stack(lambda z: m._context(z, cond), 4, 1, self._halo_hs, 1)
            self._run(stack, (h, w), self._tile_z2, lambda r, c: z2[:, :, r, c], write)
        self._ctx = (z2, cond, ctx)
        return ctx

    def prior(self, index: int, decoded: list[torch.Tensor], cond, shape: tuple[int, ...]) -> Gaussian:
        m = self.model
        if index == 0:
            return m.prior(0, decoded, cond, shape)
        k = index - 1
        maps = [self._context(decoded[0], cond), *decoded[1:index]]
        h, w = maps[0].shape[-2:]
        if h <= self._tile_h16 and w <= self._tile_h16:
            return m._slice_prior(k, maps[0], maps[1:], cond)
        mean = torch.empty(shape, device=maps[0].device)
        std = torch.empty_like(mean)
        stack = _Stack(lambda t: m._split(m._run(m.slice_priors[k], t, cond)), 1, 1, self._halo_p[k], 1)

        def read(r: slice, c: slice) -> torch.Tensor:
            return torch.cat([t[:, :, r, c] for t in maps], dim=1)

        self._run(stack, (h, w), self._tile_h16, read, self._gauss_writer(mean, std))
        return Gaussian(mean, std)

    def posterior(self, index: int, features: Gaussian, decoded, prior: Gaussian, cond=None, *, consume=False):
        m = self.model
        if index > 0:
            return precision_weighted(m._slice_bottom_up(features, index - 1), prior)
        mu = features.mean
        h, w = mu.shape[-2:]
        if h <= self._tile_h16 and w <= self._tile_h16:
            return m.posterior(0, features, decoded, prior, cond)
        mean = torch.empty(1, m.config.G, h // 4, w // 4, device=mu.device)
        std = torch.empty_like(mean)
        stack = _Stack(lambda t: m._split(m._run(m.h_a, t, cond)), 1, 4, self._halo_ha, 4)
        self._run(stack, (h, w), self._tile_h16, lambda r, c: mu[:, :, r, c], self._gauss_writer(mean, std))
        return Gaussian(mean, std)

    def reconstruct_uint8(self, decoded: list[torch.Tensor], cond, h: int, w: int) -> np.ndarray:
        self.release()  # this image's coding is over
        slices = decoded[1:]

        def read(r: slice, c: slice) -> torch.Tensor:
            return torch.cat([s[:, :, r, c] for s in slices], dim=1)

        return self._synth_stack(self._gs_stack(cond), tuple(slices[0].shape[-2:]), read, h, w)

    def release(self) -> None:
        self._ctx = None


class Untiled:
    """The same stages for any ``raybb.model.protocol.LatentModel``, run over the whole image.

    Used for architectures without tiling rules: the transforms' working memory then grows with the
    image (docs/tiling.md gives the bound), while the decoder's pixel limit is still checked before
    anything is allocated and allocation failures stay typed (Encode/DecodeOutOfMemory)."""

    def __init__(self, model):
        self.model = model

    def single_tile(self, h: int, w: int) -> bool:
        return True

    def analyze(self, rgb: np.ndarray, device: torch.device, cond=None):
        from raybb.model.ladder import pad_to_stride

        x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).to(device, torch.float32).div_(255.0)[None]
        return self.model.analyze(pad_to_stride(x, self.model.pad_stride)[0], cond)

    def prior(self, index: int, decoded: list[torch.Tensor], cond, shape: tuple[int, ...]):
        return self.model.prior(index, decoded, cond, shape)

    def posterior(self, index: int, features, decoded, prior, cond=None, *, consume=False):
        return self.model.posterior(index, features, decoded, prior, cond)

    def reconstruct_uint8(self, decoded: list[torch.Tensor], cond, h: int, w: int) -> np.ndarray:
        return to_uint8(self.model.reconstruct(decoded, cond), h, w)

    def release(self) -> None:
        pass


def stage_runner(model, tile_pixels: int = DEFAULT_TILE_PIXELS) -> Tiler | Untiled:
    """How the Codec runs ``model``'s stages: tiled for the architectures with tiling rules here
    (the PLN, the channel-ladder), over the whole image for any other."""
    if isinstance(model, LadderNetwork):
        return Tiler(model, tile_pixels)
    if isinstance(model, ChannelLadderNetwork):
        return ChannelLadderTiler(model, tile_pixels)
    if tile_pixels < MIN_TILE_PIXELS:
        raise ValueError(f"tile_pixels must be >= {MIN_TILE_PIXELS}")
    return Untiled(model)


def to_uint8(x_hat: torch.Tensor, h: int, w: int) -> np.ndarray:
    """(1,3,H',W') Laplace mean in [0,1] units -> the top-left HxWx3 uint8 image."""
    x = x_hat[0, :, :h, :w].clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()
