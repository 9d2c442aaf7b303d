"""Widen a trained ladder network's level-1 transforms without changing what it computes.

Why: the shipped family's N=64 synthesis transform caps quality at high rates (optimising z1
freely reaches only ~33 dB on Kodak, ``benchmarks/decoder_capacity.py``), and a wide model
(N=128, as bmshj2018) trained from scratch needs hours of GPU time. Starting the wide model as
an exact copy of a trained narrow one (Net2WiderNet, Chen et al. 2016) means every step of
fine-tuning goes into using the new capacity instead of relearning what the narrow model knew.

How: each new transform channel duplicates an existing one (its filters, bias and GDN row).
Wherever the duplicated channels are consumed — the next convolution's input weights and the
GDN/IGDN's normalisation weights γ — a channel's weight is split among its copies in random
proportions that sum to one. The copies carry identical activations, so every sum is unchanged and
the network computes the same function (up to float rounding). The unequal split gives the copies
different gradients, which breaks their symmetry once training starts.

Only N (the level-1 transform width) is widened. The latents (M, G) and level 2 are untouched, so
the rate of the widened model equals the original's. Note that adding latent channels could not be
exact: a new channel's posterior would have to equal its prior.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from raybb.model.ladder import LadderNetwork
from raybb.model.layers import GDN, MirrorConv2d, MirrorUpConv2d
from raybb.model.weights import lineage, load_weights, save_weights

__all__ = ["widen_transforms", "widen_weights_file"]


def _copies(old: int, new: int, gen: torch.Generator) -> torch.Tensor:
    """src[k] = the old channel that new channel k copies: 0..old-1 first, then random old channels
    (each at most once more than any other, so the copies are spread evenly)."""
    extra = new - old
    reps = torch.cat([torch.randperm(old, generator=gen) for _ in range(-(-extra // old))])[:extra]
    return torch.cat([torch.arange(old), reps])


def _split(src: torch.Tensor, old: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Per new channel, its share of the old channel's outgoing weight: positive, and the shares of
    one old channel's copies sum to exactly one (before float rounding)."""
    share = 1.0 + noise * (2.0 * torch.rand(len(src), generator=gen, dtype=torch.float64) - 1.0)
    total = torch.zeros(old, dtype=torch.float64).index_add_(0, src, share)
    return share / total[src]


def _widen_conv(conv: torch.nn.Conv2d, src_in, share_in, src_out, dtype=torch.float64) -> torch.nn.Conv2d:
    """A new Conv2d whose input channels follow ``src_in`` (weights scaled by ``share_in``) and whose
    output channels follow ``src_out`` (exact copies)."""
    w = conv.weight.detach().to(dtype)
    b = conv.bias.detach().to(dtype)
    if src_in is not None:
        w = w[:, src_in] * share_in.view(1, -1, 1, 1)
    if src_out is not None:
        w, b = w[src_out], b[src_out]
    new = torch.nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, stride=conv.stride, padding=conv.padding)
    with torch.no_grad():
        new.weight.copy_(w.float())
        new.bias.copy_(b.float())
    return new


def _upconv_rows(src: torch.Tensor) -> torch.Tensor:
    """Conv rows behind pixel-shuffled output channels: channel c is rows 4c..4c+3."""
    return (src.view(-1, 1) * 4 + torch.arange(4).view(1, 4)).reshape(-1)


def _widen_gdn(gdn: GDN, src: torch.Tensor, share: torch.Tensor) -> GDN:
    """GDN over the widened channels: β_k = β_src(k); γ_kl = γ_src(k),src(l) · share_l."""
    beta = gdn.beta_reparam(gdn.beta).detach().double()[src]
    gamma = gdn.gamma_reparam(gdn.gamma).detach().double()[src][:, src] * share.view(1, -1)
    new = GDN(len(src), inverse=gdn.inverse)
    new.beta_reparam, new.gamma_reparam = gdn.beta_reparam, gdn.gamma_reparam
    with torch.no_grad():
        new.beta.copy_(new.beta_reparam.init(beta).float())
        new.gamma.copy_(new.gamma_reparam.init(gamma).float())
    return new


def _widen_stack(layers: torch.nn.Sequential, old: int, new: int, noise: float, gen: torch.Generator) -> None:
    """Widen, in place, a conv/GDN stack whose inner width is ``old``: conv → GDN → … → conv."""
    src_in = share_in = None
    for i, layer in enumerate(layers):
        if isinstance(layer, GDN):
            layers[i] = _widen_gdn(layer, src_in, _split(src_in, old, noise, gen))
            share_in = _split(src_in, old, noise, gen)  # fresh shares for the next conv's inputs
            continue
        last = i == len(layers) - 1
        src_out = None if last else _copies(old, new, gen)
        if isinstance(layer, MirrorUpConv2d):
            rows = None if src_out is None else _upconv_rows(src_out)
            layer.conv.conv = _widen_conv(layer.conv.conv, src_in, share_in, rows)
        elif isinstance(layer, MirrorConv2d):
            layer.conv = _widen_conv(layer.conv, src_in, share_in, src_out)
        else:  # pragma: no cover - the stacks are built in ladder.py
            raise TypeError(f"cannot widen a {type(layer).__name__}")
        src_in, share_in = src_out, None


def widen_transforms(model: LadderNetwork, channels: int, *, noise: float = 0.2, seed: int = 0) -> LadderNetwork:
    """A copy of ``model`` with N=``channels`` level-1 transform channels that computes the same
    posteriors, priors and reconstructions (to float32 rounding).

    ``noise`` sets how unequal the weight shares of a channel's copies are (0 = equal shares:
    the copies then get equal gradients and never diverge). ``seed`` makes the choice
    of copies and shares reproducible.
    """
    old = model.config.N
    if channels < old:
        raise ValueError(f"cannot narrow the transforms from N={old} to N={channels}")
    if not 0.0 <= noise < 1.0:
        raise ValueError("noise must be in [0, 1): shares must stay positive")
    if channels == old:
        return copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    g_a = copy.deepcopy(model.g_a)
    g_s = copy.deepcopy(model.g_s)
    _widen_stack(g_a, old, channels, noise, gen)
    _widen_stack(g_s, old, channels, noise, gen)
    state = {**model.state_dict(), **{f"g_a.{k}": v for k, v in g_a.state_dict().items()}}
    state.update({f"g_s.{k}": v for k, v in g_s.state_dict().items()})
    wide = LadderNetwork(dataclasses.replace(model.config, N=channels))
    wide.load_state_dict(state)
    return wide.train(model.training)


def widen_weights_file(
    source: str | Path, output: str | Path, channels: int, *, noise: float = 0.2, seed: int = 0
) -> str:
    """Write a widened copy of the weights at ``source`` to ``output`` (float32, a starting point
    for ``raybb train --init-weights``); returns its fingerprint.

    The meta keeps the source's β and variant and records the source as ``fine_tuned_from`` (so
    the lineage chain of whatever is trained from it stays whole) and as ``widened_from``.
    """
    src = load_weights(source)
    wide = widen_transforms(src.model, channels, noise=noise, seed=seed)
    parent = lineage(src, Path(source).stem)
    meta = {k: src.meta[k] for k in ("beta", "variant") if k in src.meta}
    meta.update(steps=0, fine_tuned_from=parent,
                widened_from={**parent, "N": src.config.N, "noise": noise, "seed": seed})  # fmt: skip
    return save_weights(output, wide, meta)
