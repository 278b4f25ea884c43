"""Ray shells of the federated actors; the plain classes import without Ray (the in-process backend)."""

import ray

from actors.federated.device_host import DeviceHost
from actors.federated.evaluator import Evaluator
from actors.federated.server_node import ServerNode

DeviceHostActor = ray.remote(DeviceHost)
EvaluatorActor = ray.remote(Evaluator)
ServerNodeActor = ray.remote(ServerNode)
