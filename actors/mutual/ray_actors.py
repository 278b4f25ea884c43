"""Ray shells of the mutual recipe's actor and tasks; the plain classes and functions import without Ray."""

import ray

from fedtwin.actors.mutual.clustering_task import cluster_epoch, load_hidden_labels, select_quality_clips
from fedtwin.actors.mutual.twin_network import TwinNetwork

TwinNetworkActor = ray.remote(TwinNetwork)
select_quality_task = ray.remote(num_returns=2)(select_quality_clips)
load_hidden_labels_task = ray.remote(load_hidden_labels)
cluster_epoch_task = ray.remote(num_returns=3)(cluster_epoch)
