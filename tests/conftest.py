"""Shared fixtures: one small real Ray instance per test session, and tiny real Parquet partitions."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Ray prints a lot on start-up; tests read their own output, not Ray's.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Device hosts keep their devices' rows in a per-node cache; tests use a throw-away one (Ray workers
# started by the tests inherit it), never the user's ~/.cache/fedtwin.
if "FEDTWIN_CACHE_DIR" not in os.environ:
    os.environ["FEDTWIN_CACHE_DIR"] = tempfile.mkdtemp(prefix="fedtwin-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FEDTWIN_CACHE_DIR"], True)


@pytest.fixture(scope="session")
def ray_session():
    """A 2-CPU embedded Ray shared by every test that needs it (ray.init costs ~10 s on 2 cores)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=200 * 1024 * 1024,
            logging_level="ERROR",
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """A data root reused by every test in the session (generated data is cached by content hash)."""
    return tmp_path_factory.mktemp("data")
