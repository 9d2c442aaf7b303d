"""Widening the level-1 transforms (Net2WiderNet) keeps the network's function and breaks symmetry."""

from __future__ import annotations

import pytest
import torch

from raybb.model.ladder import LadderConfig, LadderNetwork
from raybb.model.weights import load_weights, save_weights
from raybb.model.widen import widen_transforms, widen_weights_file

SMALL = LadderConfig(N=16, M=8, F=8, G=2)


def _trained_looking(config: LadderConfig = SMALL, seed: int = 0) -> LadderNetwork:
    """A model whose GDN weights are not the identity-like init (so the γ split is really tested)."""
    torch.manual_seed(seed)
    net = LadderNetwork(config).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith((".gamma", ".beta")):  # GDN parameters: keep them positive
                p.mul_(1.0 + 0.5 * torch.rand_like(p)).add_(0.05 * torch.rand_like(p))
            else:
                p.add_(0.02 * torch.randn_like(p))
    return net


def _outputs(net: LadderNetwork, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = net(x, sample=False)
        bu = net.bottom_up(x)
    return {"x_hat": out.x_hat, "mu_x": bu.mean, "sigma_x": bu.std, "z1": out.z1, "z2": out.z2,
            "kl1": out.kl1, "kl2": out.kl2, "nll": out.nll}  # fmt: skip


@pytest.mark.parametrize(("channels", "noise"), [(32, 0.2), (24, 0.2), (40, 0.0), (16, 0.2)])
def test_widened_model_computes_the_same(channels: int, noise: float) -> None:
    net = _trained_looking()
    x = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(1))
    wide = widen_transforms(net, channels, noise=noise, seed=3)
    assert wide.config.N == channels and wide.config.M == SMALL.M and wide.config.G == SMALL.G
    assert wide.g_a[0].conv.weight.shape[0] == channels and wide.g_s[0].conv.conv.weight.shape[0] == 4 * channels
    a, b = _outputs(net, x), _outputs(wide, x)
    for k in a:
        scale = a[k].abs().max().item()
        assert (a[k] - b[k]).abs().max().item() <= 1e-5 * max(scale, 1.0), k
    assert not any(p is q for p, q in zip(net.parameters(), wide.parameters(), strict=False))


def test_widening_is_reproducible_and_seeded() -> None:
    net = _trained_looking()
    a = widen_transforms(net, 24, seed=5).state_dict()
    b = widen_transforms(net, 24, seed=5).state_dict()
    c = widen_transforms(net, 24, seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _copy_gradients(noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of g_a's first-layer filters for old channel 0 and its copy (channel 16)."""
    wide = widen_transforms(_trained_looking(), 32, noise=noise, seed=0).train()
    torch.manual_seed(2)
    x = torch.rand(2, 3, 64, 64)
    out = wide(x, sample=False)
    (out.nll + out.kl1 + out.kl2).sum().backward()
    g = wide.g_a[0].conv.weight.grad
    src_of_16 = [i for i in range(16) if torch.equal(wide.g_a[0].conv.weight[i], wide.g_a[0].conv.weight[16])]
    assert len(src_of_16) == 1
    return g[src_of_16[0]], g[16]


def test_unequal_shares_give_the_copies_different_gradients() -> None:
    g_old, g_copy = _copy_gradients(noise=0.2)
    assert not torch.allclose(g_old, g_copy, rtol=1e-3, atol=1e-9)
    # equal shares: the copies' gradients are identical, so they would never diverge
    g_old, g_copy = _copy_gradients(noise=0.0)
    torch.testing.assert_close(g_old, g_copy, rtol=1e-4, atol=1e-7)


def test_widen_rejects_narrowing_and_bad_noise() -> None:
    net = _trained_looking()
    with pytest.raises(ValueError, match="narrow"):
        widen_transforms(net, 8)
    for noise in (-0.1, 1.0):
        with pytest.raises(ValueError, match="noise"):
            widen_transforms(net, 32, noise=noise)


def test_widen_weights_file_records_lineage(tmp_path) -> None:
    src = tmp_path / "small.safetensors"
    fp = save_weights(src, _trained_looking(), {"beta": 0.01, "variant": "gamma-pln", "steps": 7})
    out = tmp_path / "wide.safetensors"
    wfp = widen_weights_file(src, out, 24, seed=1)
    wide = load_weights(out)
    assert wide.fingerprint == wfp and wide.config.N == 24
    assert wide.meta["beta"] == 0.01 and wide.meta["steps"] == 0
    assert wide.meta["fine_tuned_from"]["fingerprint"] == fp
    assert wide.meta["widened_from"]["N"] == 16 and wide.meta["widened_from"]["name"] == "small"
