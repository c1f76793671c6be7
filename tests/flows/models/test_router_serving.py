"""Every router candidate is the same ``llm-router`` pyfunc (one tensor input schema, the ``policy`` kind
on the version), versions registered with the named-column signature still load, and
``mlflow models serve -m models:/llm-router@champion`` answers REST requests built from the
documented snapshot schema exactly like the in-process ``predict``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from flows.registry import ModelRegistry
from tests.flows.servers import free_port, wait_until_up
from tests.training.rl.samples import tiny_requests

SETTING = {"num_instances": 2, "profile": "v100-llama2-7b-paper", "episode_requests": 30}


def _example(cfg, folder: Path) -> Path:
    """``input_example.json``: real snapshot rows of ``cfg``'s spec, from a tiny replay in the env."""
    from training.length.baselines import TaskMeanPredictor
    from training.rl.env import RouterEnv
    from training.rl.policy_serving import snapshot_columns, snapshot_to_row
    from training.simulator import ClusterConfig, InstanceConfig, LinearLatencyModel
    from training.workloads.episodes import EpisodeSampler

    sampler = EpisodeSampler(
        sample=tiny_requests,
        cluster=ClusterConfig(num_instances=2, instance=InstanceConfig(kv_blocks=400, block_size=16)),
        latency_model=LinearLatencyModel(grad2_s_per_decode_context_token=0.0, per_decode_seq_s=3.3e-5),
        predictor=TaskMeanPredictor.fit(tiny_requests(1, n=100)),
        name="tiny",
    )
    env = RouterEnv(sampler, cfg.reward, cfg.obs_spec())
    env.reset(seed=0, options={"requests": tiny_requests(3)})
    rows, mirrored = [], []
    for _ in range(12):
        env.step(int(np.flatnonzero(env.action_masks())[0]))
        snap = env._state.snapshot
        rows.append(snapshot_to_row(snap))
        swap = {"instances": snap.instances[::-1], "prefill_hist": snap.prefill_hist[::-1]}
        mirrored.append(snapshot_to_row(replace(snap, **swap, decode_hist=snap.decode_hist[::-1])))
    rows += mirrored  # the same decisions with the instances swapped: not one constant answer
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "input_example.json"
    path.write_text(
        json.dumps({"columns": snapshot_columns(cfg.obs_spec()), "values": rows[-1], "rows": rows})
    )
    return path


def _candidates(tmp: Path):
    """A tiny RL policy (random ``slots`` weights) and the rule candidates of the same setting."""
    from flows.models.router import RouterCandidate, rule_candidates, rule_latency
    from training.rl.config import RouterTrainConfig
    from training.rl.policy_serving import PolicyNet

    cfg = RouterTrainConfig(**SETTING)
    example = _example(cfg, tmp / "example")
    spec = cfg.obs_spec()
    rng = np.random.default_rng(0)
    layers = [
        (rng.normal(size=(spec.slot_dim, 8)), rng.normal(size=8)),
        (rng.normal(size=(8, 1)), rng.normal(size=1)),
    ]
    PolicyNet(layers, "relu", spec, "slots", prior=(0.5, 2.0)).save(tmp / "rl")
    (tmp / "rl" / "input_example.json").write_text(example.read_text())
    rl = RouterCandidate("challenger", "rl", tmp / "rl", cfg.model_dump(mode="json"), "test:rl", "tiny RL")
    rules = rule_candidates(cfg, rule_latency(cfg.profile, None), tmp / "rules", example)
    return cfg, example, rl, rules


def tiny_report(policy_dir: Path, names: list[str]):
    """A real evaluation of the policy in ``policy_dir`` (2 seeds of 40 tiny requests, with round robin
    and least_request), its result listed under each of ``names`` (registration needs a report)."""
    from eval.harness import evaluate
    from training.simulator import ClusterConfig, InstanceConfig, load_latency_model
    from training.workloads.catalog import Workload

    workload = Workload(
        name="tiny", description="tiny synthetic requests", synthetic=True,
        sample=lambda seed: tiny_requests(seed, n=40), train=tiny_requests(99, n=100), num_instances=2,
        profile=SETTING["profile"],
    )  # fmt: skip
    cluster = ClusterConfig(num_instances=2, instance=InstanceConfig(kv_blocks=400, block_size=16))
    report = evaluate(
        ["round_robin", "least_request", "rl"], workload, cluster, load_latency_model(SETTING["profile"]),
        seeds=(0, 1), context_options={"policy_dir": str(policy_dir)},
    )  # fmt: skip
    routers = {n: r for n, r in report.routers.items() if n != "rl"}
    for name in names:
        routers[name] = report.routers["rl"].model_copy(update={"name": name})
    return report.model_copy(update={"routers": routers})


def test_every_candidate_is_the_same_pyfunc_and_old_signatures_still_load(home: Path, tmp_path: Path):
    import mlflow
    from mlflow.models import Model

    from flows.models.router import POLICY_TAG, RULE_CANDIDATES, register_candidate
    from training.workloads.episodes import workload_for

    cfg, example, rl, rules = _candidates(tmp_path)
    checkpoint = tmp_path / "final_model.zip"
    checkpoint.write_bytes(b"PK sb3")
    rl = replace(rl, checkpoint=checkpoint)
    assert [r.name for r in rules] == [
        "rule-workload_impact_greedy", "rule-workload_impact_greedy+hold", "rule-least_tokens+hold"
    ]  # fmt: skip
    assert len(rules) == len(RULE_CANDIDATES)
    registry = ModelRegistry()
    names = [rl.name, *(r.name for r in rules)]
    report = tiny_report(rules[0].policy_dir, names)
    rows = np.asarray(json.loads(example.read_text())["rows"], dtype=np.float64)
    signatures, columns = set(), set()
    for c in (rl, *rules):
        others = tuple(n for n in names if n != c.name)
        published = register_candidate(c, report, registry, exclude=others, gate=False)
        v = published.version
        assert v.tags[POLICY_TAG] == c.policy
        # MLflow's own fields (issue 19): the training pool as the run's input dataset, the SB3
        # checkpoint of an RL policy as a run artifact.
        (used,) = registry.client.get_run(v.run_id).inputs.dataset_inputs
        assert used.dataset.name == f"llm-router-train:{cfg.workload}"
        assert json.loads(used.dataset.profile)["num_rows"] == len(workload_for(cfg).train)
        saved = [a.path for a in registry.client.list_artifacts(v.run_id, "checkpoints")]
        assert saved == (["checkpoints/final_model.zip"] if c is rl else [])
        local = mlflow.artifacts.download_artifacts(v.model_uri, dst_path=str(tmp_path / f"dl{v.version}"))
        meta = Model.load(local)
        assert meta.signature.inputs.to_dict() == [
            {"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": (-1, rows.shape[1])}}
        ]
        signatures.add(json.dumps(meta.signature.to_dict(), sort_keys=True))
        columns.add(tuple(meta.metadata["snapshot_columns"]))
        model = mlflow.pyfunc.load_model(v.model_uri)
        got = model.predict(rows)
        assert got.dtype == np.int64
        assert got.shape == (len(rows),)
        assert set(got.tolist()) <= {-1, 0, 1}
        # The named frame the old signature took, through the unwrapped model (any column order).
        frame = pd.DataFrame(rows, columns=json.loads(example.read_text())["columns"])
        unwrapped = model.unwrap_python_model()
        np.testing.assert_array_equal(unwrapped.predict(None, frame[frame.columns[::-1]]), got)
    assert len(signatures) == 1  # one input schema for every kind
    assert len(columns) == 1

    # A version registered with the named-column signature (every version before the tensor one).
    from flows.models.gate import LLM_ROUTER
    from flows.registry import ModelPackage
    from training.rl import policy_serving

    frame = pd.DataFrame(rows[:1], columns=json.loads(example.read_text())["columns"])
    old = registry.publish(
        ModelPackage(
            name=LLM_ROUTER,
            serving_module=Path(policy_serving.__file__),
            model_class="RouterPolicyModel",
            artifacts={"policy_dir": rl.policy_dir},
            input_example=frame,
            output_example=policy_serving.predict_frame(policy_serving.load_policy(rl.policy_dir), frame),
            pip_requirements=["mlflow"],
            config={"old": True},
            metrics={},
            data_fingerprint="old-style",
        )
    )
    legacy = mlflow.pyfunc.load_model(old.model_uri)
    assert legacy.metadata.signature.inputs.input_names()[0] == "prompt_tokens"
    np.testing.assert_array_equal(
        legacy.predict(frame), mlflow.pyfunc.load_model(f"models:/{LLM_ROUTER}/1").predict(rows[:1])
    )


def test_mlflow_models_serve_answers_the_documented_snapshot(home: Path, tmp_path: Path):
    """A REST request built from the input example (``{"inputs": rows}``, columns in
    ``snapshot_columns`` order) gets the in-process ``predict``'s answer; the server leaves no
    process behind."""
    import mlflow

    from flows.models.router import register_candidate

    _, example, _, rules = _candidates(tmp_path)
    rule = rules[1]  # workload_impact_greedy+hold: latency model artifact and admission control
    registry = ModelRegistry()
    report = tiny_report(rule.policy_dir, [rule.name])
    v = register_candidate(rule, report, registry, gate=False).version
    registry.promote("llm-router", v.version)
    rows = np.asarray(json.loads(example.read_text())["rows"], dtype=np.float64)
    want = mlflow.pyfunc.load_model("models:/llm-router@champion").predict(rows)

    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # its uvicorn
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
         "models:/llm-router@champion", "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/ping", server, timeout_s=120, interval_s=0.3)
        body = json.dumps({"inputs": rows.tolist()}).encode()
        request = urllib.request.Request(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = json.loads(r.read())
        assert answer["predictions"] == want.tolist()
        assert len(set(want.tolist())) > 1
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _group_alive(server.pid):  # its uvicorn worker exits after the server (SIGTERM, then parent death)
        assert time.monotonic() < deadline, _group_members(server.pid)
        time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_members(pgid: int) -> str:
    """The processes left in process group ``pgid`` (for the failure message)."""
    out = subprocess.run(["ps", "-eo", "pid,pgid,cmd"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if line.split()[1:2] == [str(pgid)])
