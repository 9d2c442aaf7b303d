"""One TorchTrainer run on a real local Ray: 2 DDP workers on CPU (gloo), rank-0 checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config

from raybb.distributed.train import evaluate_images, fit_trainer
from raybb.model.weights import load_weights

pytestmark = pytest.mark.timeout(300)


def test_fit_trainer_two_workers(ray_local, tiny_data, tmp_path):
    store = tmp_path / "store"
    common = dict(name="ddp-run", storage_path=str(store), num_workers=2, resources_per_worker={"CPU": 0.5})
    r1 = fit_trainer(tiny_config(tiny_data, steps=8), **common)
    m1 = r1.metrics
    assert m1["step"] == 8 and m1["final"] == 1 and m1["world_size"] == 2 and m1["resumed_from_step"] == 0
    for k in ("val_bpp", "val_psnr_sample", "val_psnr_mean", "val_ms_ssim_sample", "val_ms_ssim_mean"):
        assert k in m1, k
    assert m1["val_images"] == 2 and m1["val_bpp"] > 0 and 5 < m1["val_psnr_mean"] < 60
    with r1.checkpoint.as_directory() as d:
        w1 = load_weights(Path(d) / "model.safetensors")
        state = json.loads((Path(d) / "state.json").read_text())
        assert json.loads((Path(d) / "metrics.json").read_text())["step"] == 8
    assert state["step"] == 8 and w1.meta["steps"] == 8 and w1.meta["variant"] == "gamma-pln"
    # the final metrics are those of the checkpointed model (same seeded evaluation)
    ev = evaluate_images(w1.model, _val_images(tiny_data), seed=0)
    assert ev["val_bpp"] == pytest.approx(m1["val_bpp"], rel=1e-4)
    assert ev["val_psnr_mean"] == pytest.approx(m1["val_psnr_mean"], abs=1e-3)
    # only the 2 latest checkpoints are kept in storage
    assert len([p for p in (store / "ddp-run").glob("checkpoint_*") if p.is_dir()]) <= 2

    # (resuming a run from its committed checkpoint is exercised by test_sweep.py)


def _val_images(tiny_data):
    from raybb.train.data import list_images, load_images

    return load_images(list_images([tiny_data["val"]]))
