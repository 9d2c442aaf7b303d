"""evaluate_folder with the real raybb Codec (a tiny random-weight model, tiny images)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

codec_mod = pytest.importorskip("raybb.codec", reason="raybb.codec not importable yet", exc_type=ImportError)

from raybb.evaluation import evaluate_folder  # noqa: E402
from raybb.model.ladder import LadderConfig, LadderNetwork  # noqa: E402
from raybb.model.weights import save_weights  # noqa: E402


@pytest.fixture(scope="module")
def tiny_codec(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny-eval.safetensors"
    save_weights(path, LadderNetwork(LadderConfig(N=16, M=16, F=16, G=4)), meta={"name": "tiny-eval"})
    try:
        return codec_mod.load_codec(str(path))  # the default sampler pipeline
    except Exception:  # default pipeline's samplers not registered yet: any registered one will do
        from raybb.coding import SAMPLERS

        return codec_mod.load_codec(str(path), sampler=sorted(SAMPLERS)[0])


def test_evaluate_folder_with_real_codec(image_folder, tmp_path, tiny_codec):
    rep = evaluate_folder(
        image_folder,
        raybb_codecs=[("tiny", tiny_codec)],
        baselines=["jpeg"],
        baseline_qualities={"jpeg": [30, 80]},
        out_dir=tmp_path,
    )
    rb = rep.per_image[rep.per_image["kind"] == "raybb"]
    assert len(rb) == 2
    # the decoder reproduces the encoder's own reconstruction exactly (same device)
    assert rb["decode_matches"].all()
    assert (rb["bpp"] == rb["bytes"] * 8 / (rb["width"] * rb["height"])).all()
    assert (rb["theoretical_bpp"] > 0).all()
    assert rb["level2_share"].between(0, 1).all()
    assert rb["level2_share_coded"].between(0, 1).all()
    assert rb["theoretical_psnr"].notna().all()  # the codec reports the exact-sample point
    assert all(math.isfinite(v) for v in rb["psnr"])
    assert np.isfinite(rep.average["bpp"]).all()
    assert (tmp_path / "level2_share.png").is_file()
