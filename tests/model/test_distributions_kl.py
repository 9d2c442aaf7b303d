"""The analytic KL terms (the theoretical rate of the codec) against Monte-Carlo estimates, and the
ladder's precision-weighted posterior against the normalized product of the two densities.

Tolerances are statistical: |MC - analytic| < 4 standard errors of the MC mean, and each test also
checks that the standard error is small (so the tolerance has teeth) and that a slightly wrong
value (e.g. 3% off) would be rejected.
"""

from __future__ import annotations

import math

import pytest
import torch

from raybb.model.distributions import (
    STD_FLOOR,
    Gaussian,
    LaplaceLikelihood,
    positive_scale,
    precision_weighted,
)
from raybb.model.ladder import LadderNetwork, pad_to_stride

N_MC = 200_000


def _mc_kl(q: Gaussian, p: Gaussian, n: int, gen: torch.Generator) -> tuple[float, float]:
    """MC estimate of sum_elements KL[q||p] = E_q[log q(z) - log p(z)] and its standard error."""
    eps = torch.randn((n, *q.mean.shape), generator=gen, dtype=torch.float64)
    z = q.mean + q.std * eps
    ratio = (q.log_prob(z) - p.log_prob(z)).reshape(n, -1).sum(1)
    return ratio.mean().item(), ratio.std().item() / math.sqrt(n)


def _assert_matches(analytic: float, mc: float, se: float) -> None:
    assert se < 0.01 * max(abs(analytic), 1.0), "MC too noisy for a meaningful check"
    assert abs(mc - analytic) < 4 * se + 1e-9, (analytic, mc, se)
    # a 3% error in the analytic formula would be caught
    assert abs(mc - 1.03 * analytic) > 4 * se


def _g(mean, std) -> Gaussian:
    return Gaussian(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))


@pytest.mark.parametrize(
    "q,p",
    [
        (([0.3, -1.0, 2.0], [0.5, 1.5, 0.2]), ([0.0, 0.5, 1.0], [1.0, 0.7, 0.9])),
        (([1.5], [0.05]), ([-0.5], [2.0])),  # narrow posterior, wide prior: several nats
        (([0.0, 0.0], [1.0, 1.0]), ([0.0, 0.0], [1.0, 1.0])),  # identical: KL = 0 exactly
    ],
)
def test_gaussian_kl_matches_monte_carlo(q, p) -> None:
    gq, gp = _g(*q), _g(*p)
    analytic = gq.kl(gp).sum().item()
    gen = torch.Generator().manual_seed(1)
    mc, se = _mc_kl(gq, gp, N_MC, gen)
    if analytic == 0.0:
        assert mc == pytest.approx(0.0, abs=1e-12)
        return
    _assert_matches(analytic, mc, se)


def test_gaussian_kl_is_nonnegative_and_asymmetric() -> None:
    gen = torch.Generator().manual_seed(2)
    a = Gaussian(torch.randn(1000, generator=gen), 0.1 + torch.rand(1000, generator=gen) * 2)
    b = Gaussian(torch.randn(1000, generator=gen), 0.1 + torch.rand(1000, generator=gen) * 2)
    assert (a.kl(b) >= -1e-6).all()
    assert torch.allclose(a.kl(a), torch.zeros(1000), atol=1e-6)
    assert not torch.allclose(a.kl(b), b.kl(a))


def test_kl_standard_equals_kl_to_unit_gaussian_and_monte_carlo() -> None:
    q = _g([0.3, -1.2, 0.0, 2.5], [0.4, 1.0, 3.0, 0.01])
    unit = _g([0.0] * 4, [1.0] * 4)
    assert torch.allclose(q.kl_standard(), q.kl(unit), rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(3)
    mc, se = _mc_kl(q, unit, N_MC, gen)
    _assert_matches(q.kl_standard().sum().item(), mc, se)


def test_log_prob_is_the_normal_density() -> None:
    g = _g([0.5], [2.0])
    z = torch.linspace(-5, 5, 11, dtype=torch.float64)
    ref = torch.distributions.Normal(torch.tensor(0.5, dtype=torch.float64), 2.0).log_prob(z)
    assert torch.allclose(g.log_prob(z), ref, atol=1e-12)


def test_ladder_kl_terms_match_monte_carlo(tiny_model: LadderNetwork) -> None:
    """kl2 = KL[q(z2|x) || N(0,I)] and kl1 = KL[q(z1|z2,x) || p(z1|z2)] (for the z2 drawn) summed
    over every latent element of the image: the rate the coded samplers pay, in nats."""
    torch.manual_seed(5)
    xp, _ = pad_to_stride(torch.rand(1, 3, 50, 70))
    with torch.no_grad():
        out = tiny_model(xp)
    d = lambda g: Gaussian(g.mean.double(), g.std.double())  # noqa: E731
    q2, q1, p1 = d(out.q2), d(out.q1), d(out.p1)
    p2 = Gaussian(torch.zeros_like(q2.mean), torch.ones_like(q2.std))
    gen = torch.Generator().manual_seed(6)
    mc2, se2 = _mc_kl(q2, p2, N_MC, gen)
    _assert_matches(out.kl2.item(), mc2, se2)
    mc1, se1 = _mc_kl(q1, p1, 20_000, gen)
    _assert_matches(out.kl1.item(), mc1, se1)
    # kl1 is against the prior computed from the z2 that was drawn (what the decoder will see)
    with torch.no_grad():
        p1_again = tiny_model.prior1(out.z2)
    assert torch.equal(p1_again.mean, out.p1.mean) and torch.equal(p1_again.std, out.p1.std)


def test_positive_scale_floor_and_monotone() -> None:
    raw = torch.linspace(-50, 50, 101)
    s = positive_scale(raw)
    assert (s >= STD_FLOOR).all()
    assert (s[1:] >= s[:-1]).all()
    mid = positive_scale(torch.linspace(-5, 5, 101))
    assert (mid[1:] > mid[:-1]).all()
    assert s[0].item() == pytest.approx(STD_FLOOR, rel=1e-6)


# -- precision-weighted ladder posterior ---------------------------------------------------------


def _normal_pdf(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


CASES = [
    (1.0, 0.3, -2.0, 1.5),  # confident bottom-up, vague prior
    (-0.5, 2.0, 0.8, 0.4),  # vague bottom-up, confident prior
    (3.0, 1.0, -1.0, 1.0),  # equal precisions: the midpoint
]


@pytest.mark.parametrize("mx,sx,mp,sp", CASES)
def test_precision_weighted_is_normalized_product(mx, sx, mp, sp) -> None:
    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    prod = _normal_pdf(grid, mx, sx) * _normal_pdf(grid, mp, sp)
    prod = prod / torch.trapezoid(prod, grid)
    q = precision_weighted(_g([mx], [sx]), _g([mp], [sp]))
    dens = _normal_pdf(grid, q.mean.item(), q.std.item())
    assert (dens - prod).abs().max().item() < 1e-6 * prod.max().item()
    # and the moments of the numerical product agree with the closed form
    m_num = torch.trapezoid(grid * prod, grid).item()
    v_num = torch.trapezoid((grid - m_num) ** 2 * prod, grid).item()
    assert q.mean.item() == pytest.approx(m_num, abs=1e-7)
    assert q.std.item() ** 2 == pytest.approx(v_num, rel=1e-6)


@pytest.mark.parametrize("mx,sx,mp,sp", CASES[:2])
def test_swapped_weights_of_the_seed_formula_are_not_the_product(mx, sx, mp, sp) -> None:
    """The seed's printed mean (mu_x/sp^2 + mu_p/sx^2)/precision is not the product density."""
    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    prod = _normal_pdf(grid, mx, sx) * _normal_pdf(grid, mp, sp)
    prod = prod / torch.trapezoid(prod, grid)
    prec = sx**-2 + sp**-2
    swapped_mean = (mx * sp**-2 + mp * sx**-2) / prec
    dens = _normal_pdf(grid, swapped_mean, prec**-0.5)
    assert (dens - prod).abs().max().item() > 0.1 * prod.max().item()
    q = precision_weighted(_g([mx], [sx]), _g([mp], [sp]))
    assert abs(q.mean.item() - swapped_mean) > 0.5


def test_precision_weighted_elementwise_properties() -> None:
    gen = torch.Generator().manual_seed(7)
    shape = (2, 5, 3, 4)
    bu = Gaussian(torch.randn(shape, generator=gen), 0.05 + torch.rand(shape, generator=gen))
    td = Gaussian(torch.randn(shape, generator=gen), 0.05 + torch.rand(shape, generator=gen))
    q = precision_weighted(bu, td)
    assert q.mean.shape == q.std.shape == shape
    # the product is sharper than either factor, and its mean lies between the two means
    assert (q.std <= torch.minimum(bu.std, td.std) + 1e-7).all()
    lo, hi = torch.minimum(bu.mean, td.mean), torch.maximum(bu.mean, td.mean)
    assert ((q.mean >= lo - 1e-6) & (q.mean <= hi + 1e-6)).all()
    # symmetric in its arguments
    r = precision_weighted(td, bu)
    assert torch.allclose(q.mean, r.mean, atol=1e-6) and torch.allclose(q.std, r.std, atol=1e-7)
    # log-density of the product = sum of log-densities up to a z-independent constant
    z = torch.randn((3, *shape), generator=gen)
    diff = q.log_prob(z) - bu.log_prob(z) - td.log_prob(z)
    assert torch.allclose(diff, diff[0:1].expand_as(diff), atol=1e-3)


# -- Laplace likelihood ----------------------------------------------------------------------------


def test_laplace_nll_is_normalized_and_gamma_floored() -> None:
    lik = LaplaceLikelihood(3, learn_scale=True, gamma_floor=0.01)
    with torch.no_grad():
        lik.raw_gamma.fill_(-80.0)  # softplus -> 0: gamma sits on the floor, not below
    assert torch.allclose(lik.gamma(), torch.full((3,), 0.01))
    # exp(-nll) integrates to 1 over x (a density), for each channel
    grid = torch.linspace(-1, 2, 300_001, dtype=torch.float64)
    lik2 = LaplaceLikelihood(3, learn_scale=True).double()
    x = grid.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    nll = lik2.nll(x, torch.full_like(x, 0.5))
    mass = torch.trapezoid(torch.exp(-nll[0, :, 0]), grid, dim=-1)
    assert torch.allclose(mass, torch.ones(3, dtype=torch.float64), atol=1e-6)
    fixed = LaplaceLikelihood(3, learn_scale=False, gamma_floor=1 / 255)
    assert torch.allclose(fixed.gamma(), torch.full((3,), 1 / 255))
    assert not fixed.raw_gamma.requires_grad
