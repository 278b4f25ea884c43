"""Ray shells of the mutual recipe's actor and tasks; the plain classes and functions import without Ray."""

from typing import Any

import ray

from fedtwin.actors.mutual.clustering_task import cluster_epoch, load_hidden_labels, select_quality_clips
from fedtwin.actors.mutual.twin_network import TwinNetwork

TwinNetworkActor = ray.remote(TwinNetwork)
# Ray's stubs type a task's ``.remote()`` as one ObjectRef whatever ``num_returns`` says; the two tasks
# that return several references are typed Any so their callers can unpack them.
select_quality_task: Any = ray.remote(num_returns=2)(select_quality_clips)
load_hidden_labels_task = ray.remote(load_hidden_labels)
cluster_epoch_task: Any = ray.remote(num_returns=3)(cluster_epoch)
