"""The PLN's likelihood option (``LadderConfig.likelihood``): "laplace" (L1, every shipped model)
or "gaussian" (MSE). The default must serialise exactly as before the field existed, so shipped
weights and golden files keep their fingerprints; unknown names are refused as ``WeightsError``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from raybb.errors import WeightsError
from raybb.model.distributions import GaussianLikelihood, LaplaceLikelihood
from raybb.model.ladder import LadderConfig, LadderNetwork
from raybb.model.weights import fingerprint, load_weights, save_weights

REPO = Path(__file__).resolve().parents[2]
TINY_GAUSS = LadderConfig(N=16, M=16, F=16, G=4, learn_scale=False, gamma_floor=0.05, likelihood="gaussian")


def _metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_default_config_serialises_as_before_the_field():
    d = LadderConfig().to_dict()
    assert "likelihood" not in d
    assert set(d) == {"N", "M", "F", "G", "learn_scale", "gamma_floor"}
    assert LadderConfig.from_dict(d) == LadderConfig()
    assert LadderConfig.from_dict({**d, "likelihood": "laplace"}) == LadderConfig()
    g = LadderConfig(likelihood="gaussian").to_dict()
    assert g["likelihood"] == "gaussian"
    assert LadderConfig.from_dict(g).likelihood == "gaussian"


def test_golden_tiny_file_still_reads_as_laplace_with_its_stored_config():
    path = REPO / "tests/codec/expected/tiny.safetensors"
    md = _metadata(path)
    loaded = load_weights(path)
    assert loaded.config.likelihood == "laplace"
    assert isinstance(loaded.model.likelihood, LaplaceLikelihood)
    assert not isinstance(loaded.model.likelihood, GaussianLikelihood)
    assert json.dumps(loaded.config.to_dict(), sort_keys=True) == md["raybb.config"]
    assert loaded.fingerprint == md["raybb.fingerprint"]


def test_gaussian_pln_builds_and_its_rd_terms_are_the_mse_objective():
    torch.manual_seed(0)
    net = LadderNetwork(TINY_GAUSS)
    assert isinstance(net.likelihood, GaussianLikelihood)
    x = torch.rand(2, 3, 64, 64)
    t = net.rd_terms(x)
    assert torch.isfinite(t.nll).all() and torch.isfinite(t.kl).all()
    g = 0.05
    expected = (0.5 * ((x - t.x_hat) / g) ** 2 + math.log(g) + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(t.nll, expected, rtol=1e-5, atol=1e-3)
    (t.nll + 0.05 * t.kl).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.g_s.parameters())
    # the same tensors as the Laplace PLN: a shipped model's weights load into a Gaussian one
    laplace = LadderNetwork(LadderConfig(N=16, M=16, F=16, G=4, learn_scale=False, gamma_floor=0.05))
    assert set(net.state_dict()) == set(laplace.state_dict())
    laplace.load_state_dict(net.state_dict())


def test_gaussian_weights_round_trip_and_fingerprint_names_the_likelihood(tmp_path):
    torch.manual_seed(1)
    net = LadderNetwork(TINY_GAUSS)
    path = tmp_path / "g.safetensors"
    fp = save_weights(path, net, {"beta": 0.05}, dtype=torch.float16)
    assert json.loads(_metadata(path)["raybb.config"])["likelihood"] == "gaussian"
    loaded = load_weights(path)
    assert loaded.fingerprint == fp and loaded.config == TINY_GAUSS
    assert isinstance(loaded.model.likelihood, GaussianLikelihood)
    # same tensors, other likelihood: another model, another fingerprint
    lap_cfg = LadderConfig(**{**TINY_GAUSS.__dict__, "likelihood": "laplace"})
    state = loaded.model.state_dict()
    assert fingerprint(state, lap_cfg) != fingerprint(state, TINY_GAUSS)


@pytest.mark.parametrize("bad", ["cauchy", "", 3, None, ["gaussian"]])
def test_unknown_likelihood_in_a_file_is_a_weights_error(tmp_path, bad):
    torch.manual_seed(2)
    src = tmp_path / "g.safetensors"
    save_weights(src, LadderNetwork(TINY_GAUSS))
    data = src.read_bytes()
    md = _metadata(src)
    cfg = {**json.loads(md["raybb.config"]), "likelihood": bad}
    md["raybb.config"] = json.dumps(cfg, sort_keys=True)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(st_save(st_load(data), metadata=md))
    with pytest.raises(WeightsError, match="likelihood"):
        load_weights(path)


def test_gaussian_model_codes_and_decodes(tmp_path):
    from raybb.codec import load_codec

    torch.manual_seed(3)
    path = tmp_path / "g.safetensors"
    save_weights(path, LadderNetwork(TINY_GAUSS))
    codec = load_codec(path)
    img = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    r = codec.compress_with_stats(img)
    assert r.bpp > 0 and np.array_equal(codec.decompress(r.data), r.reconstruction)


def test_refinement_weighs_a_gaussian_pln_by_its_own_objective():
    """Encoder refinement (raybb.refine) calibrates λ from the training likelihood's slope: Σe²/γ²
    for a Gaussian PLN (λ = 1/(2βγ²), its training weight, no Laplace-tuned scale), Σ|e|/γ for the
    Laplace one."""
    from raybb.refine import LAMBDA_SCALE, lambda_scale, nll_slope

    torch.manual_seed(0)
    e = torch.randn(1, 3, 8, 8) * 0.1
    gauss = LadderNetwork(TINY_GAUSS).likelihood
    lap = LadderNetwork(LadderConfig(N=16, M=16, F=16, G=4, learn_scale=False, gamma_floor=0.05)).likelihood
    assert nll_slope(gauss, e) == pytest.approx(float((e / 0.05).pow(2).sum()), rel=1e-5)
    assert nll_slope(lap, e) == pytest.approx(float((e.abs() / 0.05).sum()), rel=1e-5)
    assert lambda_scale(gauss, "mse") == 1.0
    assert lambda_scale(lap, "mse") == LAMBDA_SCALE["mse"] != 1.0
