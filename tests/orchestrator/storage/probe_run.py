"""``python probe_run.py HOSTS_JSON -- <fedtwin args>``: the ``fedtwin`` command line, plus a record of the
device hosts.

Before a federated run's Ray backend shuts its actors down, every host's ``info()`` (where its device
store lives, which partition files it opened, whether it reused a cache entry) is written to HOSTS_JSON.
Everything else is the real CLI.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    out, rest = argv[0], argv[argv.index("--") + 1 :]
    import ray

    from fedtwin.orchestrator.cli.main import main as fedtwin
    from fedtwin.orchestrator.recipes.federated.ray_backend import RayBackend

    shutdown = RayBackend.shutdown

    def recording_shutdown(self):  # type: ignore[no-untyped-def]
        infos = ray.get([h.info.remote() for h in self.hosts], timeout=60)
        with open(out, "w") as fh:
            json.dump(infos, fh, default=str)
        shutdown(self)

    RayBackend.shutdown = recording_shutdown  # type: ignore[method-assign]
    return fedtwin(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
