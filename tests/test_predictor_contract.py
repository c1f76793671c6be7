"""Every registered router accepts every kind of length predictor and replays a small trace (issue 15).

Kinds (``training.length.stored.PredictorChoice``): task mean, the oracle, a predictor folder (a tiny
TF-IDF predictor trained here) and a registered version answered from ``marts.length_predictions``
(the same tiny predictor's files where the flows layer puts a registered version's). The trace is a
canonical trace file with prompt texts, read through the warehouse like any other, so its requests
carry the warehouse rows stored predictions are keyed by. The learned router takes part with a
random policy that reads the predictor's bucket probabilities (``ObsSpec.predicted_bucket_edges``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from eval.harness import run_evaluation
from tests.training.length.samples import TASKS, castillo_rows, tiny_config
from training.length.config import TIME_EDGES
from training.length.stored import ORACLE_LABEL, PredictorChoice, registered_model_dir
from training.rl.policy_serving import ObsSpec, PolicyNet
from training.routing.registry import router_names
from training.simulator import ClusterConfig, default_instance_config, load_latency_model
from training.simulator.interface import predict_lengths
from training.workloads.catalog import WorkloadOptions, trace_workload
from training.workloads.predictors import predictor_for

PROFILE = "v100-llama2-7b-paper"
VERSION = "contract"
KINDS = ("task-mean", "oracle", "path", "registered")


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A loadwise home, a tiny trained predictor (as a folder and as a fetched registered version),
    a canonical trace with prompt texts, a warehouse for the stored predictions, a learned policy."""
    from training.length.train import train_from_rows

    root = tmp_path_factory.mktemp("contract")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOADWISE_HOME", str(root / "home"))
        trained = train_from_rows(castillo_rows(n_prompts=36, samples=3), tiny_config(text_model="tfidf"))
        folder = root / "predictor"
        trained.save(folder)
        trained.save(registered_model_dir("length-predictor", VERSION))
        rng = np.random.default_rng(1)
        lines = []
        for i in range(90):
            p = int(rng.integers(0, 36))
            task = TASKS[p % len(TASKS)]
            how = "write a long essay" if p % 2 == 0 else "answer briefly"
            text = f"Please {how} about topic {p} for {task}."
            row = {"arrival_s": 0.25 * i, "prompt_tokens": 10 + p, "output_tokens": int(rng.integers(5, 400)),
                   "task": task, "prompt_text": text}  # fmt: skip
            lines.append(json.dumps(row))
        trace = root / "trace.jsonl"
        trace.write_text("\n".join(lines) + "\n")
        spec = ObsSpec(num_instances=2, predicted_bucket_edges=tuple(float(e) for e in TIME_EDGES))
        w = np.random.default_rng(2)
        layers = [
            (w.normal(size=(spec.slot_dim, 8)), w.normal(size=8)),
            (w.normal(size=(8, 1)), w.normal(size=1)),
        ]
        policy = root / "policy"
        PolicyNet(layers, "relu", spec, "slots", prior=(0.5, 2.0)).save(policy)
        yield {"folder": folder, "trace": trace, "warehouse": root / "w.duckdb", "policy": policy}


def _choice(kind: str, setting: dict) -> PredictorChoice:
    if kind == "path":
        return PredictorChoice(kind="path", path=str(setting["folder"]))
    if kind == "registered":
        return PredictorChoice(kind="registered", version=VERSION, warehouse=str(setting["warehouse"]))
    return PredictorChoice(kind=kind)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_every_router_replays_with_every_predictor_kind(
    kind: str, setting: dict, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("LOADWISE_HOME", str(Path(setting["folder"]).parent / "home"))
    wl = trace_workload(
        Path(setting["trace"]), "canonical", WorkloadOptions(num_instances=2), profile=PROFILE
    )
    choice = _choice(kind, setting)
    predictor = predictor_for(choice, wl)
    held = wl.sample(0)
    answer = predict_lengths(predictor, held)
    assert np.all(answer.expected_tokens > 0)
    if kind in ("path", "registered"):  # the learned predictor's full distribution reaches the replay
        assert answer.bucket_probs is not None
        assert answer.bucket_edges == tuple(float(e) for e in TIME_EDGES)
        assert np.allclose(answer.bucket_probs.sum(axis=1), 1.0)
    lm = load_latency_model(PROFILE)
    cluster = ClusterConfig(2, default_instance_config(PROFILE))
    routers = [*router_names(), "rl"]
    run = run_evaluation(
        routers, wl, cluster, lm, (0,), predictor, context_options={"policy_dir": str(setting["policy"])}
    )
    report = run.report
    assert set(report.routers) == set(routers)
    for name, result in report.routers.items():
        assert result.overall.n_requests == len(held), name
        assert np.isfinite(result.overall.e2e_s.mean.mean), name
    if kind == "oracle":
        assert report.predictor == ORACLE_LABEL
        assert all(r.oracle for r in report.routers.values())
    else:
        assert report.predictor == choice.label
        assert not report.routers["round_robin"].oracle
    if kind == "registered":  # answered from the warehouse: the rows were stored, once
        from warehouse.predictions import stored_hashes

        stored = stored_hashes(setting["warehouse"], "length-predictor", VERSION)
        assert {r.row_id for r in held} <= set(stored)
