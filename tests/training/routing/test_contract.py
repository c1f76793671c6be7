"""Contract tests, parametrised over every registered router: valid picks, DELAY, determinism.

The learned router ``rl`` takes part twice, with random-weight policies exported for the cluster
size at hand (``rl``: the default ``slots`` policy with its prior; ``rl+hold``: the same trained
under admission control, ``hold_kv_headroom = 0.1``), through the registry like any other router.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.training.routing.views import random_view
from training.rl.policy_serving import ObsSpec, PolicyNet
from training.routing.registry import RouterContext, get_entry, get_router, router_names
from training.simulator.interface import DELAY, ClusterView, Router

LEARNED = {"rl": None, "rl+hold": 0.1}
"""Learned-router cases: name -> the policy's ``hold_kv_headroom``."""

ALL = [*router_names(), *LEARNED]
_POLICY_ROOT = tempfile.TemporaryDirectory(prefix="loadwise-contract-")


def _policy_dir(name: str, n: int) -> Path:
    """A random ``slots`` policy (prior (0.5, 2), bounded residual) for ``n`` instances, saved once."""
    folder = Path(_POLICY_ROOT.name) / f"{name}-{n}"
    if not folder.exists():
        spec = ObsSpec(num_instances=n, hold_kv_headroom=LEARNED[name])
        rng = np.random.default_rng(n)
        d = spec.slot_dim
        layers = [
            (rng.normal(size=(d, 16)), rng.normal(size=16)),
            (rng.normal(size=(16, 1)), rng.normal(size=1)),
        ]
        PolicyNet(layers, "relu", spec, "slots", prior=(0.5, 2.0), residual_bound=0.2).save(folder)
    return folder


def _make(name: str, n: int, seed: int = 0) -> Router:
    if name in LEARNED:
        ctx = RouterContext(num_instances=n, options={"policy_dir": str(_policy_dir(name, n))})
        router = get_router("rl", ctx)
    else:
        router = get_router(name, RouterContext(num_instances=n))
    router.reset(n, seed)
    return router


def _view(rng: np.random.Generator, name: str, **kw):
    return random_view(rng, request_stats=name in LEARNED, **kw)


def _admission(name: str) -> bool:
    return LEARNED[name] is not None if name in LEARNED else get_entry(name).admission


def test_every_baseline_is_registered():
    expected = {
        "round_robin", "random", "power_of_two", "least_request", "least_queue", "least_kv", "least_tokens",
        "gie_default", "max_free_capacity", "min_min", "min_expected_latency", "dedicated_small_large",
        "decode_balancer", "workload_impact_greedy",
    }  # fmt: skip
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_router_satisfies_protocol(name):
    router = _make(name, 3)
    assert isinstance(router, Router)
    assert router.name == ("rl" if name in LEARNED else name)
    entry = get_entry(router.name)
    assert entry.description
    assert entry.mirrors, "document the production system or paper the router mirrors"


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=40, deadline=None)
@given(view_seed=st.integers(0, 2**32 - 1), router_seed=st.integers(0, 2**31 - 1))
def test_picks_only_accepting_or_delay(name, view_seed, router_seed):
    rng = np.random.default_rng(view_seed)
    request, cluster = _view(rng, name)
    router = _make(name, len(cluster.instances), router_seed)
    choice = router.route(request, cluster)
    assert isinstance(choice, int)
    # DELAY is always allowed (e.g. a dedicated pool with no room); any index must be accepting
    assert choice in (*cluster.accepting, DELAY)
    if not cluster.accepting:
        assert choice == DELAY


@pytest.mark.parametrize("name", ALL)
def test_delay_when_none_accepts(name):
    rng = np.random.default_rng(3)
    request, cluster = _view(rng, name, n=4, p_accept=0.0)
    assert not cluster.accepting
    assert _make(name, 4).route(request, cluster) == DELAY


@pytest.mark.parametrize("name", ALL)
def test_never_routes_to_non_accepting_over_a_sequence(name):
    rng = np.random.default_rng(11)
    router = _make(name, 5, seed=4)
    for _ in range(200):
        request, cluster = _view(rng, name, n=5, p_accept=0.5)
        choice = router.route(request, cluster)
        assert choice in (*cluster.accepting, DELAY)
        if cluster.accepting and cluster.accepting == tuple(range(5)):
            if not _admission(name):
                assert choice != DELAY, "with every instance accepting a router must place the request"
            elif any(v.num_requests == 0 for v in cluster.instances):
                assert choice != DELAY, "admission control must start a request on an idle instance"


@pytest.mark.parametrize("name", ALL)
def test_deterministic_for_a_seed(name):
    rng = np.random.default_rng(5)
    calls = [_view(rng, name, n=6, p_accept=0.9) for _ in range(100)]

    def run(seed: int) -> list[int]:
        router = _make(name, 6, seed)
        return [router.route(r, c) for r, c in calls]

    first = run(123)
    assert run(123) == first
    # reset restores the initial state: the same instance replays identically
    router = _make(name, 6, 123)
    [router.route(r, c) for r, c in calls]
    router.reset(6, 123)
    assert [router.route(r, c) for r, c in calls] == first


@pytest.mark.parametrize("name", ALL)
def test_does_not_mutate_views(name):
    rng = np.random.default_rng(9)
    request, cluster = _view(rng, name, n=4, p_accept=1.0)
    before = (request, cluster)
    _make(name, 4).route(request, cluster)
    assert (request, cluster) == before
    assert isinstance(cluster, ClusterView)
