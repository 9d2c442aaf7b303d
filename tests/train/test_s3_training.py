"""Training data read from, and checkpoints written to, a real loopback S3 server (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import s3fs
from _servers import seaweedfs_server
from conftest import tiny_config

from raybb.distributed.train import fit_trainer
from raybb.model.weights import load_weights

pytestmark = [pytest.mark.s3, pytest.mark.timeout(300)]


def test_fit_trainer_with_s3_data_and_checkpoints(ray_local, tiny_data, tmp_path):
    with seaweedfs_server(tmp_path / "s3") as s3:
        fs = s3fs.S3FileSystem(**s3.storage_options)
        for split in ("train", "val"):
            for f in sorted(Path(tiny_data[split]).iterdir()):
                fs.pipe(f"raybb-test/data/{split}/{f.name}", f.read_bytes())
        cfg = tiny_config(
            {"train": "s3://raybb-test/data/train", "val": "s3://raybb-test/data/val"},
            steps=4, checkpoint_every=2, log_every=2,
        )  # fmt: skip
        res = fit_trainer(
            cfg, name="s3-run", storage_path="s3://raybb-test/runs", num_workers=1,
            resources_per_worker={"CPU": 0.5}, storage_options=s3.storage_options,
        )  # fmt: skip
        assert res.metrics["step"] == 4 and res.metrics["final"] == 1 and res.metrics["val_images"] == 2
        assert res.checkpoint.path.startswith("raybb-test/runs/s3-run/")  # bare path + our filesystem
        assert fs.exists(res.checkpoint.path + "/model.safetensors")
        with res.checkpoint.as_directory() as d:
            w = load_weights(Path(d) / "model.safetensors")
        assert w.meta["steps"] == 4 and w.meta["dataset_files"] == 4
