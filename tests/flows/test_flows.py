"""The ingest and pipeline flows: logic as plain functions, the flows once under the Prefect harness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.warehouse.samples import SAMPLES
from warehouse.catalog import REAL_TRACES, real_trace_paths


def test_counts_by_source_sums_files() -> None:
    from flows.ingest import counts_by_source

    report = {
        "files": [
            {"source": "a", "rows_read": 3, "ingested": 2, "quarantined": 1, "duplicates_skipped": 0},
            {"source": "b", "rows_read": 0, "ingested": 0, "quarantined": 0, "duplicates_skipped": 5},
            {"source": "a", "rows_read": 4, "ingested": 4, "quarantined": 0, "duplicates_skipped": 0},
        ]
    }
    assert counts_by_source(report) == [
        {"source": "a", "files": 2, "rows_read": 7, "ingested": 6, "quarantined": 1, "duplicates_skipped": 0},
        {"source": "b", "files": 1, "rows_read": 0, "ingested": 0, "quarantined": 0, "duplicates_skipped": 5},
    ]


def test_retry_only_on_io() -> None:
    from prefect.states import Failed

    from flows.tasks import retry_on_io
    from warehouse.errors import DataCheckError, WarehouseBusyError

    assert retry_on_io(None, None, Failed(data=OSError("disk")))
    assert retry_on_io(None, None, Failed(data=WarehouseBusyError("locked")))
    assert not retry_on_io(None, None, Failed(data=DataCheckError(["bad"])))


def test_real_trace_catalog(tmp_path: Path) -> None:
    assert real_trace_paths(tmp_path / "absent") == []
    (tmp_path / "castillo").mkdir()
    (tmp_path / "castillo" / "castillo_lengths.parquet").write_bytes(b"x")
    assert real_trace_paths(tmp_path) == [tmp_path / "castillo" / "castillo_lengths.parquet"]
    assert len(REAL_TRACES) == 7


@pytest.mark.prefect
def test_ingest_flow_and_artifact(prefect_harness: None, tmp_path: Path) -> None:
    from prefect.artifacts import Artifact

    from flows.ingest import ingest_traces

    paths = [str(SAMPLES["azure"].write(tmp_path / "in")), str(SAMPLES["burstgpt"].write(tmp_path / "in"))]
    report = ingest_traces(paths, warehouse=str(tmp_path / "w.duckdb"))
    assert (report["rows_read"], report["ingested"], report["quarantined"]) == (6, 6, 0)
    artifact = Artifact.get("ingest-counts")
    assert artifact is not None
    assert {row["source"] for row in json.loads(artifact.data)} == {"azure", "burstgpt"}


@pytest.mark.prefect
def test_run_without_shared_data_uses_synthetic(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``loadwise run --config FILE``: the nightly flow on a synthetic warehouse, tiny RL router."""
    from flows.cli import app

    monkeypatch.setenv("LOADWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOADWISE_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tmp_path / "nightly.toml"
    config.write_text(
        'synthetic_rows = 1200\nprofile = "v100-llama2-7b-paper"\nrate_rps = 2.5\nnum_instances = 2\n'
        "eval_requests = 40\n[router]\ntotal_timesteps = 200\nepisode_requests = 30\nnet_arch = [8]\n"
        "batch_size = 32\nlearning_starts = 50\neval_every_episodes = 3\neval_episodes = 1\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--config", str(config), "--eval-seeds", "0,1"])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output
    assert "Workload classes" in result.output
    assert "nightly-retrain steps" in result.output
    assert "promotion gate:" in result.output
    assert (tmp_path / "home" / "warehouse.duckdb").exists()
    # The evaluation replayed every baseline and the challenger, stored in the warehouse.
    from training.routing.registry import router_names
    from warehouse.store import connect_readonly

    con = connect_readonly(tmp_path / "home" / "warehouse.duckdb")
    stored = {r[0] for r in con.execute("SELECT DISTINCT router FROM marts.eval_results").fetchall()}
    con.close()
    assert stored == {*router_names(), "challenger"}
    # The estimator (the paper's V100 preset) is registered and champion; no predictor without prompts.
    assert "impact-estimator" in result.output
    assert "first champion" in result.output
    assert (tmp_path / "home" / "mlflow.db").exists()
    again = runner.invoke(app, ["run", "--config", str(config), "--eval-seeds", "0,1", "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output[again.output.index("{") :])
    assert summary["ingest"]["ingested"] == 0
    assert summary["steps"]["train-router"] in ("cached", "skipped: llm-router v1, trained from these "
                                                "inputs, is already the champion")  # fmt: skip


def test_run_rejects_an_invalid_config(tmp_path: Path) -> None:
    from flows.cli import app

    config = tmp_path / "nightly.yaml"
    config.write_text("retrain: sometimes\nrouter: {workload: main}\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "invalid config" in result.output
    assert "retrain" in result.output
    config.write_text("router: {workload: main}\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "may not set ['workload']" in result.output
