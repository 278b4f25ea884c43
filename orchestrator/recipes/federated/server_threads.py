"""How many torch threads the server node's work on its shared data gets (``resources.server_threads``).

FedDU's server pass (and the evaluations on D0 around it) runs between the hosts' rounds: while it
runs, the device hosts wait and the CPUs they hold sit idle. The pass may use them: by default it gets
as many threads as the CPUs this run's hosts and server node hold together (at least
``resources.torch_threads``); the server node caps that at the CPUs its process may run on, so a host
on another machine never adds threads the server's machine does not have. ``resources.server_threads``
pins the number instead (1 = the pass on one core, as before this rule).
"""

from __future__ import annotations

from fedtwin.orchestrator.config.spec import ExperimentSpec


def server_pass_threads(spec: ExperimentSpec, num_hosts: int) -> int:
    """Torch threads of the server node's work on D0: ``resources.server_threads`` or the CPUs the run holds."""
    res = spec.resources
    if res.server_threads is not None:
        return res.server_threads
    held = num_hosts * res.cpus_per_host + res.server_cpus
    return max(res.torch_threads, int(held))
