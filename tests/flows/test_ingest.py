"""The ``ingest-traces`` flow (flows/ingest.py): its logic as plain functions, the flow once under the
Prefect harness, its artifacts (counts per source; skipped files listed apart)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.warehouse.samples import SAMPLES, write_text
from warehouse.ingest import ingest


def test_the_flows_list_skipped_files_apart_from_the_counts(tmp_path: Path, wh: Path) -> None:
    """The Prefect flows' artifacts: counts per source leave skipped files out, a second table lists them."""
    from flows.ingest import counts_by_source, skipped_files

    SAMPLES["azure"].write(tmp_path / "d")
    write_text(tmp_path / "d" / "notes.txt", "hello\n")
    report = ingest([tmp_path / "d"], warehouse=wh).to_dict()
    assert [row["source"] for row in counts_by_source(report)] == ["azure"]
    (skipped,) = skipped_files(report)
    assert (Path(skipped["path"]).name, skipped["format"]) == ("notes.txt", "unknown")
    assert "matches no format" in skipped["reason"]


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
