"""Ray shell of the class-incremental trainer; the plain class imports without Ray."""

import ray

from fedtwin.actors.incremental.trainer import IncrementalTrainer

IncrementalTrainerActor = ray.remote(IncrementalTrainer)
