"""Step 1 of the nightly flow, ``ingest-traces``: the data folder's trace files into the warehouse.

Who calls this: the flow (``flows.nightly.flow``), once per run. With the shared data folder present
the run ingests the real traces (the two Azure CSVs, CASTILLO, AlpacaEval, Dolly); without it, it
writes a seeded synthetic Azure-like workload under the data home and ingests that, labelled source
``synthetic``, and says so. Re-runs are idempotent (already-ingested files are skipped by content
hash; a malformed row is quarantined with its reason). Tasks: ``locate-traces``,
``write-synthetic-traces``, ``ingest-files`` (retried on I/O errors only),
``publish-ingest-artifact`` (artifact ``nightly-ingest``), ``summarize-warehouse``.
"""

from __future__ import annotations

from pathlib import Path

from flows import tasks
from flows.nightly.config import NightlyConfig
from flows.nightly.results import IngestResult


def ingest_step(cfg: NightlyConfig, db: str) -> IngestResult:
    """Locate (or synthesize) the traces, ingest them into ``db``, publish the counts, summarize."""
    from warehouse.ops import max_file_id
    from warehouse.settings import loadwise_home, shared_data_dir

    paths = tasks.locate_traces(str(Path(cfg.data_dir) if cfg.data_dir else shared_data_dir()))
    synthetic = not paths
    if synthetic:
        print(
            "no real traces in the data folder: generating a SYNTHETIC Azure-like workload "
            "(source 'synthetic')"
        )
        paths = tasks.write_synthetic(str(loadwise_home() / "synthetic"), cfg.synthetic_rows, cfg.seed)
    report = tasks.ingest_files(paths, db, source="synthetic" if synthetic else None)
    print(
        f"ingest: {report['rows_read']} rows read = {report['ingested']} ingested + {report['quarantined']} "
        f"quarantined; {report['duplicates_skipped']} rows in already-ingested files skipped"
    )
    tasks.publish_ingest(report, counts_key="nightly-ingest", skipped_key="nightly-ingest-skipped")
    summary = tasks.summarize(db)
    return IngestResult(db, synthetic, report, summary, max_file_id(db))
