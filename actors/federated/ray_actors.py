"""Ray shells of the federated actors; the plain classes import without Ray (the in-process backend)."""

import ray

from fedtwin.actors.federated.device_host import DeviceHost
from fedtwin.actors.federated.evaluator import Evaluator
from fedtwin.actors.federated.server_node import ServerNode

DeviceHostActor = ray.remote(DeviceHost)
EvaluatorActor = ray.remote(Evaluator)
ServerNodeActor = ray.remote(ServerNode)
