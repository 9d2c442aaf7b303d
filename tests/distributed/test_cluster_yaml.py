"""cluster.yaml is valid for Ray's own autoscaler and follows the project's rules."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]


def _config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_matches_ray_autoscaler_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_config(), schema)


def test_ray_validate_config_after_defaults():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_config()))  # what `ray up` runs before launching anything


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
    text = (REPO / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{12,}|aws_secret_access_key|AWS_SECRET", text, re.I)
    assert any("pip install" in c and "raybb" in c for c in cfg["setup_commands"])
