"""Ray shell of the online-transfer trainer; the plain class imports without Ray."""

import ray

from actors.transfer.trainer import TransferTrainer

TransferTrainerActor = ray.remote(TransferTrainer)
