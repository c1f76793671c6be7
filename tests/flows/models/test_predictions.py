"""Predictions are data (issue 15): ``loadwise predict`` writes a registered length predictor's
predictions to marts.length_predictions once per version and input; replays answer from them, and
``--predictor`` defaults to the registered champion and is named in the report and the JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from flows.registry import ModelRegistry
from tests.flows.cli.results import clean_exit, one_json
from tests.training.length.samples import TASKS, castillo_rows, tiny_config, write_warehouse


def _trace(path: Path, n: int = 60) -> Path:
    """A canonical trace with prompt texts of the tiny predictor's kind."""
    lines = []
    for i in range(n):
        p = (7 * i) % 36
        task = TASKS[p % len(TASKS)]
        text = (
            f"Please {'write a long essay' if p % 2 == 0 else 'answer briefly'} about topic {p} for {task}."
        )
        lines.append(json.dumps({"arrival_s": 0.3 * i, "prompt_tokens": 10 + p, "output_tokens": 20 + 13 * p,
                                 "task": task, "prompt_text": text}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_predict_stores_once_and_replays_read_the_registered_champion(home: Path, tmp_path: Path):
    from flows.cli import app
    from flows.models import train_and_register_predictor
    from warehouse.ingest import ingest
    from warehouse.predictions import stored_hashes
    from warehouse.settings import default_warehouse_path

    published = train_and_register_predictor(
        tiny_config(text_model="tfidf").model_dump(), write_warehouse(tmp_path / "c.duckdb", castillo_rows())
    )
    version = published.version.version
    trace = _trace(tmp_path / "trace.jsonl")
    warehouse = tmp_path / "w.duckdb"
    ingest([trace], warehouse=warehouse)
    runner = CliRunner()
    args = ["predict", "--warehouse", str(warehouse), "--where", "TRUE", "--json"]

    t0 = time.perf_counter()
    first = one_json(runner.invoke(app, args))
    first_s = time.perf_counter() - t0
    part = first["parts"]["warehouse where TRUE"]
    assert (first["model_name"], first["model_version"]) == ("length-predictor", version)
    assert (part["rows"], part["written"], part["cached"]) == (60, 60, 0)
    assert 0 < part["distinct_inputs"] <= 36  # each distinct prompt computed once
    assert len(stored_hashes(warehouse, "length-predictor", version)) == 60

    t0 = time.perf_counter()
    again = one_json(runner.invoke(app, args))["parts"]["warehouse where TRUE"]
    assert (again["written"], again["cached"], again["distinct_inputs"]) == (0, 60, 0)
    assert time.perf_counter() - t0 < first_s  # no model, no write session

    # a replay with no --predictor uses the registered champion (its stored predictions, written to the
    # default warehouse for the trace's rows first), and says so
    replay = ["compare", "--trace", str(trace), "--seeds", "0", "-n", "2", "--json"]
    out = one_json(runner.invoke(app, [*replay, "--routers", "round_robin,least_tokens"]))
    assert out["predictor"] == f"length-predictor v{version}"
    assert out["predictor_model"] == {"kind": "registered", "model_name": "length-predictor",
                                      "model_version": version, "path": None, "oracle": False}  # fmt: skip
    # every row of the trace (both pools: the training pool sets the short/long threshold), with the
    # ids the ingested warehouse has too (content-addressed: one file, one set of ids)
    assert set(stored_hashes(default_warehouse_path(), "length-predictor", version)) == set(
        stored_hashes(warehouse, "length-predictor", version)
    )

    oracle = one_json(runner.invoke(app, [*replay, "--routers", "least_tokens", "--predictor", "oracle"]))
    assert oracle["predictor"].startswith("oracle (ORACLE")
    assert oracle["routers"]["least_tokens"]["oracle"]
    bad = runner.invoke(app, ["compare", "--trace", str(trace), "--predictor", "nonsense"])
    clean_exit(bad)
    assert bad.exit_code == 2
    assert "--predictor must be" in bad.output
    missing = runner.invoke(app, ["compare", "--trace", str(trace), "--predictor", "registered:99"])
    clean_exit(missing)
    assert missing.exit_code == 1
    assert "no version '99'" in missing.output
    assert ModelRegistry().find("length-predictor", "champion") is not None
