"""Privacy: what a device host returns holds weights, counts, label histograms and metrics only.

The test trains real devices on a real Ray actor and walks every value in the returned object: each
array must be a model parameter (same name and shape as the model's) or a label histogram, each scalar
a count or a float metric. It also searches the serialised answer for the bytes of every training clip.
"""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import ray

from fedtwin.actors.federated.device_host import HostSettings
from fedtwin.actors.federated.ray_actors import DeviceHostActor
from fedtwin.orchestrator.config.loader import from_dict
from fedtwin.orchestrator.config.spec import DataConfig
from fedtwin.orchestrator.run.data_prep import ensure_partition
from fedtwin.pipelines.data.partition_manifest import load_device_shard, load_partition_manifest
from fedtwin.pipelines.federated.messages import FitTask, HostFitResult
from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import state_from_model


def _walk(obj, path="result"):
    """Yield (path, leaf) for every leaf of dataclasses, mappings and sequences."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def test_device_host_returns_no_raw_clip_data(ray_session, tiny_data_root):
    # Prepare: a real partition and a real host actor serving devices 0, 2, 4 (host 0 of 2)
    data = from_dict(
        DataConfig,
        {
            "root": str(tiny_data_root),
            "generator": {"train_per_class": 40, "test_per_class": 10},
            "partition": {"devices": 10, "scheme": "iid", "seed": 0},
        },
    )
    partition = ensure_partition(data)
    model_cfg = ModelConfig()
    state = state_from_model(build_model(model_cfg, seed=0))
    host = DeviceHostActor.remote(0, 2, str(partition), HostSettings(seed=0, model=model_cfg))
    settings = TrainSettings(epochs=1, batch_size=16, lr=0.01, optimizer="sgd")
    tasks = [FitTask(d, 1, settings) for d in (0, 2, 4)]
    # Execute
    answer = ray.get(host.fit.remote(ray.put(state), tasks), timeout=300)
    # Assert: structure
    assert isinstance(answer, HostFitResult) and not answer.failures
    num_classes = load_partition_manifest(partition).num_classes
    for path, leaf in _walk(answer):
        if isinstance(leaf, np.ndarray):
            if ".partial_sum[" in path:
                key = path.split("[", 1)[1].rstrip("]").strip("'")
                assert leaf.shape == state[key].shape, path  # a model parameter, nothing else
            else:
                assert path.endswith(".label_histogram") and leaf.shape == (num_classes,), path
                assert np.issubdtype(leaf.dtype, np.integer)
        else:
            # counts, ids and float metrics only: no strings, bytes or other containers of data
            assert leaf is None or isinstance(leaf, (int, float, np.integer, np.floating)), (path, type(leaf))
    # Assert: no clip's bytes appear anywhere in what travelled back
    blob = pickle.dumps(answer)
    for d in (0, 2, 4):
        clips = load_device_shard(partition, d).clips
        for clip in clips:
            nonzero = clip.reshape(-1)
            start = int(np.argmax(nonzero > 0))
            probe = nonzero[start : start + 64].tobytes()
            assert len(probe) == 64 and probe not in blob
    ray.kill(host)
