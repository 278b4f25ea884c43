"""Trial footprints (placement-group bundles), the fit check and derived concurrency, without Ray."""

from __future__ import annotations

import pytest

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.tune.sweep_config import SweepResourcesConfig
from fedtwin.orchestrator.tune.trial_resources import SweepResourcesError, check_fit, max_concurrent, trial_footprint


def spec(**resources) -> ExperimentSpec:
    return ExperimentSpec.from_dict({"resources": {"hosts": 2, **resources}})


def test_footprint_has_driver_host_and_server_bundles_with_fractional_gpus():
    # Prepare
    s = spec(cpus_per_host=0.5, gpus_per_host=0.25, server_cpus=1.0, server_gpus=0.25)
    # Execute
    fp = trial_footprint(s, SweepResourcesConfig(driver_cpus=1.0))
    # Assert: driver first, one bundle per host, then the server
    assert fp.bundles == ({"CPU": 1.0}, {"CPU": 0.5, "GPU": 0.25}, {"CPU": 0.5, "GPU": 0.25}, {"CPU": 1.0, "GPU": 0.25})
    assert fp.total == {"CPU": 3.0, "GPU": 0.75}
    assert fp.describe() == "driver {CPU: 1} + 2 hosts x {CPU: 0.5, GPU: 0.25} + server {CPU: 1, GPU: 0.25}"


def test_actors_that_reserve_nothing_get_no_bundle():
    # The evaluator with server_cpus=0 (the default) needs no bundle; Ray rejects empty bundles.
    fp = trial_footprint(spec(cpus_per_host=0.25), SweepResourcesConfig(driver_cpus=0.5))
    assert fp.bundles == ({"CPU": 0.5}, {"CPU": 0.25}, {"CPU": 0.25})


def test_in_process_backend_reserves_only_the_driver():
    if "backend" not in {f for f in ExperimentSpec().resources.__dataclass_fields__}:
        pytest.skip("this checkout has no resources.backend")
    fp = trial_footprint(spec(backend="local", cpus_per_host=1.0), SweepResourcesConfig(driver_cpus=2.0))
    assert fp.bundles == ({"CPU": 2.0},)


def test_max_concurrent_is_the_tightest_resource():
    fp = trial_footprint(spec(cpus_per_host=0.5, gpus_per_host=0.25), SweepResourcesConfig(driver_cpus=1.0))
    # per trial: CPU 2.0, GPU 0.5 -> CPU allows 8 // 2 = 4, GPU allows 1 // 0.5 = 2
    assert max_concurrent(fp, {"CPU": 8.0, "GPU": 1.0}) == 2
    assert max_concurrent(fp, {"CPU": 8.0, "GPU": 4.0}) == 4
    assert max_concurrent(fp, {"CPU": 1.0, "GPU": 0.0}) == 1  # never 0: Tune would start nothing


def test_fit_check_says_what_to_change():
    fp = trial_footprint(spec(cpus_per_host=1.0), SweepResourcesConfig(driver_cpus=1.0))
    with pytest.raises(
        SweepResourcesError,
        match=r"one trial needs \{CPU: 3\} .* but the cluster has only CPU 2; "
        r"lower resources.hosts / resources.cpus_per_host",
    ):
        check_fit(fp, [{"CPU": 2.0, "memory": 1e9}])
    check_fit(fp, [{"CPU": 2.0}, {"CPU": 2.0}])  # fits across two nodes: no error


def test_fit_check_catches_gpus_missing_and_bundles_no_node_holds():
    gpu = trial_footprint(spec(gpus_per_host=0.5), SweepResourcesConfig(driver_cpus=1.0))
    with pytest.raises(SweepResourcesError, match="the cluster has only GPU 0"):
        check_fit(gpu, [{"CPU": 16.0}])
    big_host = trial_footprint(spec(cpus_per_host=4.0), SweepResourcesConfig(driver_cpus=1.0))
    with pytest.raises(SweepResourcesError, match=r"no single node can hold the bundle \{CPU: 4\}"):
        check_fit(big_host, [{"CPU": 3.0}, {"CPU": 3.0}, {"CPU": 3.0}])
