"""The evaluation builder (``eval.spec``): one typed spec -> workload, cluster, latency model -> the
harness, for every caller (issue 14), with the results of the code paths it replaced.

Stored digests: the reports produced, before the builder existed, by the places that assembled an
evaluation by hand must come out byte for byte through ``evaluate_spec``: ``loadwise compare --json``
(tests/flows/cli/test_replay.py) and ``eval.scheduled``'s warehouse evaluation
(tests/flows/test_distributed.py). The learned policies' merge (challenger and champion in one
report, ``flows.nightly``'s and ``flows.models``' before) is checked against that hand-written merge,
replayed on the harness directly: a trained policy is not bit-identical across machines, so it has no
stored digest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from eval.harness import run_evaluation
from eval.report import EVALUATION_FIELDS
from eval.spec import LEARNED, EvalSpec, LearnedPolicy, NamedWorkload, build, evaluate_spec, run_spec
from training.routing.registry import router_names
from training.simulator import ClusterConfig, default_instance_config, load_latency_model
from training.workloads.catalog import WorkloadOptions, get_workload

PAPER = "v100-llama2-7b-paper"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- learned policies ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained 2-instance policy (300 steps)."""
    from tests.training.rl.samples import tiny_requests
    from training.length.baselines import TaskMeanPredictor
    from training.rl.config import RouterTrainConfig
    from training.rl.train import train_router
    from training.workloads.episodes import EpisodeSampler

    sampler = EpisodeSampler(
        sample=tiny_requests,
        cluster=ClusterConfig(num_instances=2, instance=default_instance_config(PAPER)),
        latency_model=load_latency_model(PAPER),
        predictor=TaskMeanPredictor.fit(tiny_requests(12345, n=200)),
    )
    cfg = RouterTrainConfig(
        num_instances=2, total_timesteps=300, episode_requests=30, net_arch=(8,), batch_size=32,
        learning_starts=50, target_update_interval=100, eval_every_episodes=1000, eval_episodes=1,
        checkpoint_every_steps=1000,
    )  # fmt: skip
    return train_router(cfg, sampler, tmp_path_factory.mktemp("policy"), progress=False).policy_dir


def _setting():
    from training.rl.config import RouterTrainConfig

    return RouterTrainConfig(
        workload="table2", num_instances=2, profile=PAPER, rate_rps=2.0, episode_requests=40
    )


def test_challenger_and_champion_merge_as_the_nightly_did(policy: Path):
    """Two learned policies in one report: the first replayed with every router, the second in a run
    of its own with round robin, each under its name; what ``evaluate_challenger`` did by hand."""
    spec = EvalSpec.for_setting(
        _setting(),
        (0, 1),
        requests=60,
        learned={
            "challenger": LearnedPolicy(policy_dir=policy, description="tonight's"),
            "champion": LearnedPolicy(policy_dir=policy, description="v7 (champion)"),
        },
    )
    run = run_spec(spec)

    # before: the harness on a hand-built workload and cluster, then the merge written out
    wl = get_workload("table2", WorkloadOptions(num_requests=60, rate=2.0, num_instances=2))
    cluster = ClusterConfig(num_instances=2, instance=default_instance_config(PAPER))
    model, options = load_latency_model(PAPER), {"policy_dir": str(policy)}
    base = run_evaluation([*router_names(), LEARNED], wl, cluster, model, (0, 1), context_options=options)
    other = run_evaluation(["round_robin", LEARNED], wl, cluster, model, (0, 1), context_options=options)
    routers = {n: r for n, r in base.report.routers.items() if n != LEARNED}
    routers["challenger"] = base.report.routers[LEARNED].model_copy(
        update={"name": "challenger", "description": "tonight's"}
    )
    routers["champion"] = other.report.routers[LEARNED].model_copy(
        update={"name": "champion", "description": "v7 (champion)"}
    )
    want = base.report.model_copy(update={"routers": routers})
    results = set(EVALUATION_FIELDS)  # each run is its own evaluation (id, time): the rest agrees
    assert run.report.model_dump_json(exclude=results) == want.model_dump_json(exclude=results)
    assert list(run.first_seed) == list(routers)  # the plots show every router, in report order


def test_one_policy_keeps_its_name_and_place(policy: Path):
    """``loadwise compare --routers round_robin,POLICY,least_tokens``: ``rl`` stays where it was."""
    learned = {LEARNED: LearnedPolicy(policy_dir=policy)}
    spec = EvalSpec(
        workload=NamedWorkload(name="table2"), requests=40, routers=("round_robin", LEARNED, "least_tokens"),
        seeds=(0,), learned=learned,
    )  # fmt: skip
    ticks: list[int] = []
    report = evaluate_spec(spec, progress=lambda router, seed, done: ticks.append(done))
    assert list(report.routers) == ["round_robin", LEARNED, "least_tokens"]
    assert report.routers[LEARNED].description  # the registry's description
    assert ticks == [1, 2, 3]


def test_progress_counts_every_replay_of_every_policy(policy: Path):
    learned = {name: LearnedPolicy(policy_dir=policy) for name in ("a", "b")}
    table2 = NamedWorkload(name="table2")
    spec = EvalSpec(workload=table2, requests=30, routers=("round_robin",), seeds=(0, 1), learned=learned)
    ticks: list[int] = []
    evaluate_spec(spec, progress=lambda router, seed, done: ticks.append(done))
    assert ticks == list(range(1, 9))  # (round robin, a) x 2 seeds, then (round robin, b) x 2 seeds


# -- the spec itself -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"routers": ("round_robin", LEARNED)}, "needs a policy"),
        ({"routers": ("round_robin",), "learned": {"round_robin": {"policy_dir": "p"}}}, "may not take"),
        ({"seeds": (0, 0)}, "seeds must be distinct"),
        ({"seeds": (-1,)}, "seeds must be >= 0"),
        ({"routers": ("a", "a")}, "routers must be distinct"),
        ({"rate": float("nan")}, "rate"),
        ({"hold_headroom": 1.0}, "hold_headroom"),
        ({"workload": {"kind": "bogus"}}, "workload"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_a_bad_spec_is_refused_when_built(fields: dict, needle: str):
    with pytest.raises(ValidationError, match=needle):
        EvalSpec.model_validate(fields)


def test_the_spec_builds_what_the_callers_built():
    """A named workload: its own profile and instances unless the spec says otherwise; the cluster's
    instance count is the workload's, its instances the profile's with the queue policy and chunking."""
    built = build(EvalSpec(workload=NamedWorkload(name="table2"), requests=50, queue_policy="lwl"))
    assert built.profile == built.workload.profile == PAPER
    assert built.cluster == ClusterConfig(
        num_instances=built.workload.num_instances,
        instance=default_instance_config(PAPER, queue_policy=built.cluster.instance.queue_policy),
    )
    assert built.cluster.instance.queue_policy.value == "lwl"
    again = build(
        EvalSpec(workload=NamedWorkload(name="table2"), requests=50, instances=3, chunked_prefill_tokens=64)
    )
    assert again.cluster.num_instances == again.workload.num_instances == 3
    assert again.cluster.instance == default_instance_config(PAPER, chunked_prefill_tokens=64)
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        build(EvalSpec(workload=NamedWorkload(name="nope")))
