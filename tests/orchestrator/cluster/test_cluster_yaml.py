"""cluster.yaml (AWS) and configs/cluster_onprem.yaml pass Ray's own cluster-launcher schema checks.

``prepare_config`` merges the provider's defaults and node-type bounds exactly as ``ray up`` does, then
``validate_config`` checks the result against ``ray/autoscaler/ray-schema.json``. Neither needs cloud
credentials or boto3 (no provider code runs), so nothing is mocked.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

pytest.importorskip("jsonschema")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def test_aws_cluster_yaml_passes_ray_schema_with_cpu_free_head_and_bounded_gpu_workers():
    # Execute
    config = prepare_config(copy.deepcopy(load("cluster.yaml")))
    validate_config(config)
    # Assert: what the file promises survives Ray's own defaults merging
    nodes = config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}  # no training on the head
    assert nodes["gpu_worker"]["min_workers"] == 0 and nodes["gpu_worker"]["max_workers"] == 8
    assert nodes["gpu_worker"]["node_config"]["InstanceType"].startswith("g")
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "RAY_AUTH_MODE=token" in head_start
    assert any("pip install" in c and "fedtwin" in c for c in config["worker_setup_commands"])
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # object storage: every Ray process knows the bucket's region (the provider's), for pyarrow's S3 client
    region = config["provider"]["region"]
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert f"AWS_DEFAULT_REGION={region}" in [w for c in commands for w in c.split()], commands


def test_onprem_cluster_yaml_passes_ray_schema():
    config = prepare_config(copy.deepcopy(load("configs/cluster_onprem.yaml")))
    validate_config(config)
    (node_type,) = config["available_node_types"].values()
    assert config["provider"]["type"] == "local"
    assert node_type["min_workers"] == node_type["max_workers"] == 2  # one per listed worker IP
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])


def test_the_schema_check_is_not_a_rubber_stamp():
    import jsonschema

    bad = load("cluster.yaml")
    bad["available_node_types"]["gpu_worker"]["max_wrkers"] = 8  # a typo Ray must reject
    with pytest.raises(jsonschema.ValidationError, match="max_wrkers"):
        validate_config(prepare_config(copy.deepcopy(bad)))
