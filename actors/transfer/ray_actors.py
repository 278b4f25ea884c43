"""Ray shell of the online-transfer trainer; the plain class imports without Ray."""

import ray

from fedtwin.actors.transfer.trainer import TransferTrainer

TransferTrainerActor = ray.remote(TransferTrainer)
