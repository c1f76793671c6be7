"""The real public traces (skipped when ../shared/data is absent): counts match the data README."""

from __future__ import annotations

from pathlib import Path

import pytest

from warehouse.ingest import IngestReport, ingest
from warehouse.real_traces import real_trace_paths
from warehouse.store import connect_readonly


@pytest.fixture(scope="module")
def real(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IngestReport]:
    """All real traces of the pipeline, ingested once for this module (~10 s)."""
    db = tmp_path_factory.mktemp("real") / "w.duckdb"
    return db, ingest(real_trace_paths(shared_data), warehouse=db)


def _by_name(report: IngestReport) -> dict[str, tuple[int, int, int]]:
    return {Path(f.path).name: (f.rows_read, f.ingested, f.quarantined) for f in report.files}


def test_real_counts(real: tuple[Path, IngestReport]) -> None:
    _, report = real
    got = _by_name(report)
    assert got["AzureLLMInferenceTrace_code.csv"] == (8819, 8819, 0)
    assert got["AzureLLMInferenceTrace_conv.csv"] == (19366, 19366, 0)
    assert got["castillo_lengths.parquet"] == (675_650, 675_650, 0)  # 67,565 rows x 10 samples
    assert got["alpaca_eval_outputs_10models.parquet"] == (8049, 8047, 2)  # two empty outputs
    assert sum(v[0] for k, v in got.items() if k.startswith("dolly")) == 1400 + 1502 + 3002


def test_real_azure_percentiles_match_the_readme(real: tuple[Path, IngestReport]) -> None:
    db, _ = real
    con = connect_readonly(db)
    rows = con.execute(
        "SELECT task, prompt_p50, prompt_p99, output_p50, output_p99, requests FROM marts.token_percentiles "
        "WHERE source = 'azure' ORDER BY task"
    ).fetchall()
    span = con.execute("SELECT max(arrival_s) FROM marts.requests WHERE source = 'azure'").fetchone()[0]
    classes = dict(
        con.execute(
            "SELECT task, sum(share) FILTER (WHERE workload_class LIKE 'H%') FROM marts.workload_classes "
            "WHERE source = 'azure' GROUP BY task"
        ).fetchall()
    )
    con.close()
    # README: code 1469 / 7436 prompt, 13 / 251 output; conv 1020 / 4142, 129 / 601 (p99 method +-1)
    expected = [("code", 1469, 7436, 13, 251, 8819), ("conv", 1020, 4142, 129, 601, 19366)]
    for got, want in zip(rows, expected, strict=True):
        assert got[0] == want[0]
        assert got[5] == want[5]
        assert all(abs(a - b) <= 1 for a, b in zip(got[1:5], want[1:5], strict=True))
    assert 3000 < span < 3600  # one hour each
    assert classes["code"] > classes["conv"]  # code is the prefill-heavy service


def test_real_castillo_and_dolly_tasks(real: tuple[Path, IngestReport]) -> None:
    db, _ = real
    con = connect_readonly(db)
    tasks = {
        t
        for (t,) in con.execute(
            "SELECT DISTINCT task FROM marts.requests WHERE source = 'castillo'"
        ).fetchall()
    }
    splits = {
        s
        for (s,) in con.execute(
            "SELECT DISTINCT split FROM marts.requests WHERE source = 'castillo'"
        ).fetchall()
    }
    dolly = con.execute(
        "SELECT count(DISTINCT task), min(prompt_tokens) FROM marts.requests WHERE source = 'dolly'"
    ).fetchone()
    con.close()
    assert {"Alpaca", "ShareGPT", "DollyDataset/summarization"} <= tasks
    assert splits == {"train", "validate", "test"}
    assert dolly[0] == 8
    assert dolly[1] >= 1
