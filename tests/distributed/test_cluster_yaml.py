"""cluster.yaml (AWS) and examples/cluster.local.yaml are valid for Ray's own autoscaler, follow the
project's rules and stay in sync with each other."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ["cluster.yaml", "examples/cluster.local.yaml"]


def _config(name: str = "cluster.yaml") -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_ray_autoscaler_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_config(name), schema)


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_validate_config_after_defaults(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_config(name)))  # what `ray up` runs before launching anything


@pytest.mark.parametrize("name", CONFIGS)
def test_no_credentials_and_usage_stats_off(name):
    cfg, text = _config(name), (REPO / name).read_text()
    assert not re.search(r"AKIA[0-9A-Z]{12,}|aws_secret_access_key|AWS_SECRET", text, re.I)
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "--disable-usage-stats" in cmd, cmd


def test_local_and_aws_configs_stay_in_sync():
    aws, local = _config("cluster.yaml"), _config("examples/cluster.local.yaml")
    # the same checkout is synced the same way, and installed by the same command
    assert aws["rsync_exclude"] == local["rsync_exclude"]
    assert list(aws["file_mounts"].values()) == list(local["file_mounts"].values()) == ["."]
    assert all(k.endswith("/raybb") for k in [*aws["file_mounts"], *local["file_mounts"]])
    (aws_mount,), (local_mount,) = aws["file_mounts"], local["file_mounts"]
    assert any("pip install" in c and aws_mount in c for c in aws["setup_commands"])
    assert any("pip install" in c and local_mount in c for c in local["setup_commands"])
    # the head runs the autoscaler with the bootstrap config on the same GCS port in both
    for cfg in (aws, local):
        head = cfg["head_start_ray_commands"][-1]
        assert "--head" in head and "--port=6379" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
        assert "$RAY_HEAD_IP:6379" in cfg["worker_start_ray_commands"][-1]


def test_local_config_is_loopback_only():
    cfg = _config("examples/cluster.local.yaml")
    assert cfg["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    head = cfg["head_start_ray_commands"][-1]
    assert "--node-ip-address=127.0.0.1" in head and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in head
    assert "RAY_USAGE_STATS_ENABLED=0" in head and "--include-dashboard=false" in head
    assert cfg["auth"]["ssh_user"] and cfg["auth"]["ssh_private_key"]


def test_project_rules():
    cfg = _config()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    ray_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("ray["))
    version = re.search(r"==([\d.]+)", ray_pin).group(1)
    image = cfg["docker"]["image"]
    assert image == f"rayproject/ray:{version}-py311-gpu" and "latest" not in image
    assert version == ray.__version__
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))  # a CPU head
    workers = [t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]]
    assert workers and all(w["min_workers"] == 0 for w in workers)
    assert all(w["node_config"]["InstanceType"].startswith(("g", "p")) for w in workers)  # GPU workers
    assert all(w["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for w in workers)
    for t in cfg["available_node_types"].values():  # S3 by instance profile
        assert "IamInstanceProfile" in t["node_config"]
    assert any("pip install" in c and "raybb" in c for c in cfg["setup_commands"])
