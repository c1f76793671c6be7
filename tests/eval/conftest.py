"""Small evaluation fixtures: a tiny synthetic workload and the paper's V100 cluster."""

from __future__ import annotations

import pytest

from training.simulator import ClusterConfig, default_instance_config, load_latency_model
from training.workloads.catalog import WorkloadOptions, get_workload


@pytest.fixture(scope="session")
def tiny_workload():
    return get_workload("table2", WorkloadOptions(num_requests=80, rate=1.0))


@pytest.fixture(scope="session")
def paper_latency():
    return load_latency_model("v100-llama2-7b-paper")


@pytest.fixture(scope="session")
def tiny_cluster():
    return ClusterConfig(num_instances=2, instance=default_instance_config("v100-llama2-7b-paper"))
