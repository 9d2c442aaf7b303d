"""GDN/IGDN and the mirror-padded convolutions.

IGDN(GDN(x)) == x does not hold in general (each divides/multiplies by a norm of its *own* input),
so it is not asserted. What must hold: shapes, non-negative effective parameters whatever the raw
values, the bounds implied by the formula, and gradients reaching inputs and parameters.
"""

from __future__ import annotations

import pytest
import torch

from raybb.model.layers import GDN, MirrorConv2d, MirrorUpConv2d


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_shape_and_effective_params_nonnegative(inverse: bool) -> None:
    torch.manual_seed(0)
    g = GDN(8, inverse=inverse, beta_min=1e-6)
    with torch.no_grad():  # drive the raw parameters anywhere, including negative
        g.beta.copy_(torch.randn(8) * 3)
        g.gamma.copy_(torch.randn(8, 8) * 3)
    beta = g.beta_reparam(g.beta)
    gamma = g.gamma_reparam(g.gamma)
    assert (beta >= 1e-6 * (1 - 1e-4)).all()
    assert (gamma >= 0).all()
    x = torch.randn(2, 8, 5, 7)
    y = g(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_gdn_initialisation_values() -> None:
    g = GDN(4, gamma_init=0.1)
    assert torch.allclose(g.beta_reparam(g.beta), torch.ones(4), atol=1e-6)
    assert torch.allclose(g.gamma_reparam(g.gamma), 0.1 * torch.eye(4), atol=1e-6)


def test_gdn_formula_and_bounds() -> None:
    """y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2), so |GDN(x)| <= |x|/sqrt(beta) and
    |IGDN(x)| >= |x| sqrt(beta)."""
    torch.manual_seed(1)
    g, ig = GDN(6), GDN(6, inverse=True)
    with torch.no_grad():
        for m in (g, ig):
            m.beta.copy_(m.beta_reparam.init(0.5 + torch.rand(6)))
            m.gamma.copy_(m.gamma_reparam.init(torch.rand(6, 6) * 0.3))
    x = torch.randn(3, 6, 4, 4) * 2
    beta = g.beta_reparam(g.beta).view(1, -1, 1, 1)
    gamma = g.gamma_reparam(g.gamma)
    norm = torch.sqrt(beta + torch.einsum("ij,bjhw->bihw", gamma, x * x))
    assert torch.allclose(g(x), x / norm, atol=1e-5)
    assert (g(x).abs() <= x.abs() / beta.sqrt() + 1e-6).all()
    ibeta = ig.beta_reparam(ig.beta).view(1, -1, 1, 1)
    assert (ig(x).abs() >= x.abs() * ibeta.sqrt() - 1e-6).all()
    assert torch.equal(g(torch.zeros_like(x)), torch.zeros_like(x))


def test_gdn_with_zero_gamma_and_unit_beta_is_identity() -> None:
    for inverse in (False, True):
        m = GDN(5, inverse=inverse, gamma_init=0.0)
        x = torch.randn(2, 5, 3, 3)
        assert torch.allclose(m(x), x, atol=1e-5)


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_gradients_flow(inverse: bool) -> None:
    torch.manual_seed(2)
    g = GDN(4, inverse=inverse)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    (g(x) ** 2).sum().backward()
    for t in (x.grad, g.beta.grad, g.gamma.grad):
        assert t is not None
        assert torch.isfinite(t).all()
        assert t.abs().sum() > 0
    # off-diagonal couplings are learnable too (they start at 0 but get a gradient)
    off = g.gamma.grad[~torch.eye(4, dtype=torch.bool)]
    assert off.abs().sum() > 0


@pytest.mark.parametrize("h,w,stride", [(9, 13, 1), (9, 13, 2), (16, 16, 2), (3, 3, 2)])
def test_mirror_conv_same_size(h: int, w: int, stride: int) -> None:
    conv = MirrorConv2d(3, 5, kernel=5, stride=stride)
    y = conv(torch.randn(1, 3, h, w))
    assert y.shape == (1, 5, -(-h // stride), -(-w // stride))


def test_mirror_conv_rejects_even_kernel() -> None:
    with pytest.raises(ValueError):
        MirrorConv2d(3, 3, kernel=4)


def test_mirror_upconv_doubles() -> None:
    up = MirrorUpConv2d(4, 2, kernel=5)
    y = up(torch.randn(2, 4, 3, 5))
    assert y.shape == (2, 2, 6, 10)


def test_mirror_padding_has_no_border_constant() -> None:
    """A constant image stays constant through a mirror-padded conv (zero padding would darken edges)."""
    conv = MirrorConv2d(1, 1, kernel=5)
    with torch.no_grad():
        conv.conv.weight.fill_(1 / 25)
        conv.conv.bias.zero_()
    y = conv(torch.full((1, 1, 8, 8), 0.7))
    assert torch.allclose(y, torch.full_like(y, 0.7), atol=1e-6)
